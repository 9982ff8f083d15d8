"""Memory manager (DESIGN §4): memory-type choice, block sub-allocation, mapping, host import.

Every block is one VkDeviceMemory with one VkBuffer bound over all of it; a `Buffer` is a
(block, offset, size) range of it, so descriptors bind the block's buffer at an offset. On unified
memory and resizable-BAR devices, device buffers are host-visible and written through a mapping
(no staging); otherwise writes and reads go through a host-visible staging buffer.
"""

from __future__ import annotations

import bisect

import numpy as np
import vulkan as vk

from ..errors import OutOfDeviceMemory, UnsupportedError, VulkanError
from .check import check, error_for, ffi, lib
from .instance import MEM_DEVICE_LOCAL, MEM_HOST_CACHED, MEM_HOST_COHERENT, MEM_HOST_VISIBLE

BUFFER_USAGE = (vk.VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | vk.VK_BUFFER_USAGE_TRANSFER_SRC_BIT
                | vk.VK_BUFFER_USAGE_TRANSFER_DST_BIT | vk.VK_BUFFER_USAGE_INDIRECT_BUFFER_BIT)
HOST_ALLOCATION = vk.VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT
DEFAULT_BLOCK = 64 << 20


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB" if n >= 1 << 20 else f"{n / 1024:.1f} KiB"


def align_up(x: int, a: int) -> int:
    return (x + a - 1) // a * a


class Block:
    """One device allocation with a buffer over all of it and a first-fit free list."""

    def __init__(self, mm: MemoryManager, size: int, type_index: int, memory, buffer,
                 mapped_ptr=None, imported: bool = False, keepalive=None):
        self.mm, self.size, self.type_index = mm, size, type_index
        self.memory, self.buffer = memory, buffer
        self.imported = imported
        self.keepalive = keepalive  # the host object an imported block points into
        self.ptr = mapped_ptr
        self.host = None if mapped_ptr is None else np.frombuffer(
            ffi.buffer(mapped_ptr, size), dtype=np.uint8)
        self.free_list = [(0, size)]  # sorted (offset, size), never adjacent

    def take(self, size: int, align: int) -> int | None:
        for i, (off, sz) in enumerate(self.free_list):
            start = align_up(off, align)
            if start + size <= off + sz:
                pieces = []
                if start > off:
                    pieces.append((off, start - off))
                if start + size < off + sz:
                    pieces.append((start + size, off + sz - start - size))
                self.free_list[i:i + 1] = pieces
                return start
        return None

    def give(self, off: int, size: int):
        i = bisect.bisect_left(self.free_list, (off, 0))
        self.free_list.insert(i, (off, size))
        # merge with the right, then with the left neighbour
        if i + 1 < len(self.free_list) and off + size == self.free_list[i + 1][0]:
            self.free_list[i] = (off, size + self.free_list[i + 1][1])
            del self.free_list[i + 1]
        if i > 0 and self.free_list[i - 1][0] + self.free_list[i - 1][1] == off:
            self.free_list[i - 1] = (self.free_list[i - 1][0],
                                     self.free_list[i - 1][1] + self.free_list[i][1])
            del self.free_list[i]

    @property
    def free_bytes(self) -> int:
        return sum(s for _, s in self.free_list)


class Buffer:
    """A range of a block. `host` is a uint8 numpy view when the memory is mapped."""

    def __init__(self, block: Block, offset: int, size: int):
        self.block, self.offset, self.size = block, offset, size
        self.freed = False

    @property
    def handle(self):
        return self.block.buffer

    @property
    def bound_bytes(self) -> int:
        return bound_bytes(self)

    @property
    def host(self) -> np.ndarray | None:
        if self.block.host is None:
            return None
        return self.block.host[self.offset:self.offset + self.size]

    def view(self, dtype, shape=None) -> np.ndarray:
        """A numpy view of the mapped bytes (host-visible memory only)."""
        h = self.host
        if h is None:
            raise UnsupportedError("buffer is not host-visible; use read()/write()")
        a = h.view(dtype)
        return a if shape is None else a[: int(np.prod(shape))].reshape(shape)

    def write(self, data, offset: int = 0):
        b = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        if offset + b.nbytes > self.size:
            raise ValueError(f"write of {b.nbytes} bytes at {offset} exceeds buffer of {self.size}")
        if self.block.host is not None:
            self.host[offset:offset + b.nbytes] = b
        else:
            self.block.mm.staged_write(self, b, offset)

    def read(self, dtype=np.uint8, shape=None, offset: int = 0) -> np.ndarray:
        dtype = np.dtype(dtype)
        n = self.size - offset if shape is None else int(np.prod(shape)) * dtype.itemsize
        if self.block.host is not None:
            out = self.host[offset:offset + n].copy()
        else:
            out = self.block.mm.staged_read(self, n, offset)
        out = out.view(dtype)
        return out if shape is None else out.reshape(shape)

    def range(self, offset: int, size: int) -> BufferRange:
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"range [{offset}, {offset + size}) outside a buffer of {self.size} "
                             "bytes")
        align = self.block.mm.info.min_storage_buffer_offset_alignment
        if (self.offset + offset) % align:
            raise ValueError(f"a bound range must start at a multiple of {align} bytes "
                             f"(minStorageBufferOffsetAlignment); got offset {offset}")
        return BufferRange(self, offset, size)

    def free(self):
        if not self.freed:
            self.freed = True
            self.block.mm.release(self)


class BufferRange:
    """A sub-range of a Buffer, for binding part of a tensor (offset must meet the device's
    minStorageBufferOffsetAlignment)."""

    def __init__(self, buf: Buffer, offset: int, size: int):
        self.buf, self.rel, self.size = buf, offset, size

    @property
    def block(self):
        return self.buf.block

    @property
    def handle(self):
        return self.buf.handle

    @property
    def offset(self):
        return self.buf.offset + self.rel

    @property
    def bound_bytes(self) -> int:
        return bound_bytes(self)


def bound_bytes(r) -> int:
    """Bytes a descriptor for `r` covers: its size rounded up to 16 within its block, because
    shaders read whole 32-bit words (and 16-byte vectors) and quant blocks of 18 or 34 bytes
    end mid-word; a range ending mid-word reads zeros on some drivers."""
    return min((max(r.size, 4) + 15) & ~15, r.block.size - r.offset)


class MemoryManager:
    """Chooses memory types, sub-allocates blocks and accounts usage against the heaps."""

    def __init__(self, device):
        self.device = device
        info = device.info
        self.info = info
        self.types = info.memory_types
        self.heap_sizes = [h["size_bytes"] for h in info.heaps]
        self.used = [0] * len(self.heap_sizes)
        self.align = max(16, info.min_storage_buffer_offset_alignment)
        self.block_size = min(DEFAULT_BLOCK, info.max_storage_buffer_range)
        self.blocks: dict[str, list[Block]] = {"device": [], "host": []}
        self._staging: Buffer | None = None
        probe = self._create_buffer(4096)
        req = vk.vkGetBufferMemoryRequirements(device.handle, probe)
        self.type_bits = req.memoryTypeBits
        vk.vkDestroyBuffer(device.handle, probe, None)
        self.device_type = self._choose("device")
        self.host_type = self._choose("host")

    # --- memory types -----------------------------------------------------------------------
    def _choose(self, kind: str) -> int:
        cands = [t for t in self.types if self.type_bits & (1 << t.index)]
        if kind == "device":
            # Device-local and mappable first (UMA, resizable BAR): no staging copies.
            prefs = [MEM_DEVICE_LOCAL | MEM_HOST_VISIBLE | MEM_HOST_COHERENT, MEM_DEVICE_LOCAL,
                     MEM_HOST_VISIBLE | MEM_HOST_COHERENT]
            if not (self.info.uma or self.info.rebar):
                prefs = prefs[1:]
        else:
            prefs = [MEM_HOST_VISIBLE | MEM_HOST_COHERENT | MEM_HOST_CACHED,
                     MEM_HOST_VISIBLE | MEM_HOST_COHERENT]
        for want in prefs:
            best = [t for t in cands if t.flags & want == want]
            if best:
                # the largest heap among equals (rebar exposes a small 256 MiB window too)
                return max(best, key=lambda t: self.heap_sizes[t.heap]).index
        raise UnsupportedError(f"no suitable memory type for {kind} buffers on {self.info.name}")

    @property
    def device_mappable(self) -> bool:
        return bool(self.types[self.device_type].flags & MEM_HOST_VISIBLE)

    def heap_free(self, heap: int) -> int:
        """Free bytes in a heap: the driver's budget when VK_EXT_memory_budget is there."""
        if self.info.memory_budget:
            mp2 = ffi.new("VkPhysicalDeviceMemoryProperties2*")
            mp2.sType = vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2
            bud = ffi.new("VkPhysicalDeviceMemoryBudgetPropertiesEXT*")
            bud.sType = vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT
            mp2.pNext = bud
            lib.vkGetPhysicalDeviceMemoryProperties2(self.device.physical, mp2)
            return max(0, int(bud.heapBudget[heap]) - int(bud.heapUsage[heap]))
        return max(0, self.heap_sizes[heap] - self.used[heap])

    # --- raw allocation ---------------------------------------------------------------------
    def _create_buffer(self, size: int, external: bool = False):
        ci = ffi.new("VkBufferCreateInfo*")
        ci.sType = vk.VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO
        ci.size = size
        ci.usage = BUFFER_USAGE
        ci.sharingMode = vk.VK_SHARING_MODE_EXCLUSIVE
        ext = None
        if external:
            ext = ffi.new("VkExternalMemoryBufferCreateInfo*")
            ext.sType = vk.VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO
            ext.handleTypes = HOST_ALLOCATION
            ci.pNext = ext
        out = ffi.new("VkBuffer*")
        check("vkCreateBuffer", lib.vkCreateBuffer(self.device.handle, ci, ffi.NULL, out),
              detail=f"{size} bytes")
        return out[0]

    def _allocate(self, size: int, type_index: int, pnext=None, what: str = ""):
        heap = self.types[type_index].heap
        free = self.heap_free(heap)
        if pnext is None and size > free:
            raise OutOfDeviceMemory(
                "vkAllocateMemory", -2, "VK_ERROR_OUT_OF_DEVICE_MEMORY",
                f"{what} needs {_mib(size)} but heap {heap} has {_mib(free)} free of "
                f"{_mib(self.heap_sizes[heap])}")
        ai = ffi.new("VkMemoryAllocateInfo*")
        ai.sType = vk.VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO
        ai.allocationSize = size
        ai.memoryTypeIndex = type_index
        if pnext is not None:
            ai.pNext = pnext
        out = ffi.new("VkDeviceMemory*")
        r = lib.vkAllocateMemory(self.device.handle, ai, ffi.NULL, out)
        if r < 0:
            raise error_for("vkAllocateMemory", r,
                            f"{what} needs {_mib(size)}; heap {heap} has {_mib(free)} free of "
                            f"{_mib(self.heap_sizes[heap])}")
        self.used[heap] += size
        return out[0]

    def _map(self, memory, size: int):
        pp = ffi.new("void**")
        check("vkMapMemory", lib.vkMapMemory(self.device.handle, memory, 0, size, 0, pp))
        return pp[0]

    def _new_block(self, kind: str, size: int) -> Block:
        tidx = self.device_type if kind == "device" else self.host_type
        buf = self._create_buffer(size)
        req = vk.vkGetBufferMemoryRequirements(self.device.handle, buf)
        mem = self._allocate(max(size, req.size), tidx, what=f"a {kind} block")
        check("vkBindBufferMemory", lib.vkBindBufferMemory(self.device.handle, buf, mem, 0))
        ptr = self._map(mem, size) if self.types[tidx].flags & MEM_HOST_VISIBLE else None
        b = Block(self, size, tidx, mem, buf, ptr)
        self.blocks[kind].append(b)
        return b

    # --- public API -------------------------------------------------------------------------
    def alloc(self, size: int, kind: str = "device") -> Buffer:
        """A buffer of at least `size` bytes, aligned for use as a storage-buffer binding."""
        size = max(int(size), 4)
        need = align_up(size, 16)
        if need > self.info.max_storage_buffer_range:
            raise UnsupportedError(
                f"a single buffer of {_mib(need)} exceeds this device's maxStorageBufferRange "
                f"({_mib(self.info.max_storage_buffer_range)}); split the tensor")
        for b in self.blocks[kind]:
            off = b.take(need, self.align)
            if off is not None:
                return Buffer(b, off, size)
        b = self._new_block(kind, max(self.block_size, align_up(need, 1 << 16)))
        off = b.take(need, self.align)
        return Buffer(b, off, size)

    def release(self, buf: Buffer):
        blk = buf.block
        if blk.imported:
            self._destroy_block(blk)
            return
        blk.give(buf.offset, align_up(buf.size, 16) if buf.size > 0 else 16)

    def _destroy_block(self, blk: Block):
        dev = self.device.handle
        self.device.descriptors.forget_buffer(blk.buffer)
        vk.vkDestroyBuffer(dev, blk.buffer, None)
        if blk.ptr is not None and not blk.imported:
            lib.vkUnmapMemory(dev, blk.memory)
        lib.vkFreeMemory(dev, blk.memory, ffi.NULL)
        self.used[self.types[blk.type_index].heap] -= blk.size
        for lst in self.blocks.values():
            if blk in lst:
                lst.remove(blk)

    def trim(self):
        """Give back blocks that hold no buffers."""
        for kind, lst in self.blocks.items():
            for b in list(lst):
                if b.free_list == [(0, b.size)]:
                    self._destroy_block(b)

    def usage(self) -> list[dict]:
        return [{"heap": i, "size_bytes": s, "used_by_vkinfer": self.used[i],
                 "free_bytes": self.heap_free(i)} for i, s in enumerate(self.heap_sizes)]

    def import_host(self, address: int, size: int, keepalive=None) -> Buffer:
        """Wrap host memory (e.g. mmapped GGUF pages) as a device buffer without copying.

        `address` and `size` must be multiples of minImportedHostPointerAlignment; `keepalive`
        is held so the memory outlives the buffer."""
        info = self.info
        if not info.external_memory_host:
            raise UnsupportedError(f"{info.name} lacks VK_EXT_external_memory_host")
        a = info.min_imported_host_pointer_alignment
        if address % a or size % a:
            raise ValueError(f"host import needs {a}-byte aligned address and size "
                             f"(got address % {a} = {address % a}, size % {a} = {size % a})")
        props = ffi.new("VkMemoryHostPointerPropertiesEXT*")
        props.sType = vk.VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT
        fn = self.device.device_fn("vkGetMemoryHostPointerPropertiesEXT")
        ptr = ffi.cast("void*", address)
        fn(self.device.handle, HOST_ALLOCATION, ptr, props)
        bits = props.memoryTypeBits
        if not bits:
            raise UnsupportedError("the driver reports no memory type can import this pointer")
        cands = [t for t in self.types if bits & (1 << t.index)]
        tidx = max(cands, key=lambda t: (t.device_local, self.heap_sizes[t.heap])).index
        imp = ffi.new("VkImportMemoryHostPointerInfoEXT*")
        imp.sType = vk.VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT
        imp.handleType = HOST_ALLOCATION
        imp.pHostPointer = ptr
        buf = self._create_buffer(size, external=True)
        try:
            mem = self._allocate(size, tidx, pnext=imp, what="host import")
        except VulkanError as e:
            vk.vkDestroyBuffer(self.device.handle, buf, None)
            # NVIDIA refuses file-backed (mmapped) pages; callers fall back to a copy.
            raise UnsupportedError(
                f"{info.name} refused to import {_mib(size)} of host memory at 0x{address:x} "
                f"({e.name}); some drivers import only anonymous memory, not mmapped files"
            ) from None
        check("vkBindBufferMemory", lib.vkBindBufferMemory(self.device.handle, buf, mem, 0))
        blk = Block(self, size, tidx, mem, buf, ptr, imported=True, keepalive=keepalive)
        blk.free_list = []
        self.blocks["host"].append(blk)
        return Buffer(blk, 0, size)

    # --- staging for non-mappable device memory ---------------------------------------------
    def _staging_buffer(self, n: int) -> Buffer:
        if self._staging is None or self._staging.size < n:
            if self._staging is not None:
                self._staging.free()
            self._staging = self.alloc(max(n, 16 << 20), "host")
        return self._staging

    def staged_write(self, buf: Buffer, data: np.ndarray, offset: int):
        from .commands import one_shot

        chunk = 64 << 20
        for start in range(0, data.nbytes, chunk):
            piece = data[start:start + chunk]
            st = self._staging_buffer(piece.nbytes)
            st.host[: piece.nbytes] = piece
            with one_shot(self.device) as rec:
                rec.copy(st, buf, piece.nbytes, 0, offset + start)

    def staged_read(self, buf: Buffer, n: int, offset: int) -> np.ndarray:
        from .commands import one_shot

        st = self._staging_buffer(n)
        with one_shot(self.device) as rec:
            rec.copy(buf, st, n, offset, 0)
        return st.host[:n].copy()
