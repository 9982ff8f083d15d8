"""Command recording: dispatches with automatic barriers, copies, timestamps.

Barriers are inserted only where a dispatch reads or writes a byte range that an earlier,
not-yet-synchronised dispatch wrote (or writes a range one read): independent dispatches such as
the q, k and v projections run without barriers between them.
"""

from __future__ import annotations

import contextlib

import vulkan as vk

from .check import check, ffi, lib
from .pipeline import ComputePipeline, handle_id
from .sync import Fence, submit

# Barriers name only the stages involved: the stages of the work recorded since the last barrier
# (compute and/or transfer) and the stage of the operation that needs it (a dispatch, an indirect
# dispatch's argument read, a copy). NVIDIA charges noticeably more for a barrier whose masks
# include transfer stages when none is involved. Host access needs no barrier inside a command
# buffer: queue submission and fences order it.
COMPUTE = vk.VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT
TRANSFER = vk.VK_PIPELINE_STAGE_TRANSFER_BIT
INDIRECT = vk.VK_PIPELINE_STAGE_DRAW_INDIRECT_BIT
ALL_STAGES = COMPUTE | TRANSFER | INDIRECT
SRC_ACCESS = {COMPUTE: vk.VK_ACCESS_SHADER_WRITE_BIT, TRANSFER: vk.VK_ACCESS_TRANSFER_WRITE_BIT}
DST_ACCESS = {COMPUTE: vk.VK_ACCESS_SHADER_READ_BIT | vk.VK_ACCESS_SHADER_WRITE_BIT,
              TRANSFER: vk.VK_ACCESS_TRANSFER_READ_BIT | vk.VK_ACCESS_TRANSFER_WRITE_BIT,
              INDIRECT: vk.VK_ACCESS_INDIRECT_COMMAND_READ_BIT}


def _access(stages: int, table: dict) -> int:
    return sum(bits for stage, bits in table.items() if stages & stage)


def allocate_command_buffer(device):
    ai = ffi.new("VkCommandBufferAllocateInfo*")
    ai.sType = vk.VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO
    ai.commandPool = device.command_pool
    ai.level = vk.VK_COMMAND_BUFFER_LEVEL_PRIMARY
    ai.commandBufferCount = 1
    out = ffi.new("VkCommandBuffer[1]")
    check("vkAllocateCommandBuffers", lib.vkAllocateCommandBuffers(device.handle, ai, out))
    return out[0]


def _span(r) -> tuple[int, int, int]:
    return (handle_id(r.handle), r.offset, r.offset + r.size)


def _overlaps(a, spans) -> bool:
    return any(a[0] == b[0] and a[1] < b[2] and b[1] < a[2] for b in spans)


class Recorder:
    """Records into one primary command buffer. Reusable: `begin()` resets it."""

    def __init__(self, device, cb=None):
        self.device = device
        self.cb = cb if cb is not None else allocate_command_buffer(device)
        self.pending_writes: list = []
        self.pending_reads: list = []
        self.pending_stages = 0  # stages of the work recorded since the last barrier
        self.n_dispatches = 0
        self.n_barriers = 0
        self._bound = None

    def begin(self, one_time: bool = False):
        lib.vkResetCommandBuffer(self.cb, 0)
        bi = ffi.new("VkCommandBufferBeginInfo*")
        bi.sType = vk.VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO
        bi.flags = vk.VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT if one_time else 0
        check("vkBeginCommandBuffer", lib.vkBeginCommandBuffer(self.cb, bi))
        self.pending_writes, self.pending_reads = [], []
        self.pending_stages = 0
        self.n_dispatches = self.n_barriers = 0
        self._bound = None
        return self

    def end(self):
        check("vkEndCommandBuffer", lib.vkEndCommandBuffer(self.cb))

    def barrier(self, dst_stages: int = ALL_STAGES):
        """A memory barrier between the work recorded so far and work of `dst_stages` after."""
        src = self.pending_stages or (COMPUTE | TRANSFER)
        mb = ffi.new("VkMemoryBarrier*")
        mb.sType = vk.VK_STRUCTURE_TYPE_MEMORY_BARRIER
        mb.srcAccessMask = _access(src, SRC_ACCESS)
        mb.dstAccessMask = _access(dst_stages, DST_ACCESS)
        lib.vkCmdPipelineBarrier(self.cb, src, dst_stages, 0, 1, mb, 0, ffi.NULL, 0, ffi.NULL)
        self.pending_writes, self.pending_reads = [], []
        self.pending_stages = 0
        self.n_barriers += 1

    def _hazard(self, reads, writes, stage: int = COMPUTE):
        if any(_overlaps(r, self.pending_writes) for r in reads) or any(
                _overlaps(w, self.pending_writes) or _overlaps(w, self.pending_reads)
                for w in writes):
            self.barrier(stage)
        self.pending_reads += reads
        self.pending_writes += writes
        self.pending_stages |= COMPUTE if stage & INDIRECT else stage

    def dispatch(self, pipeline: ComputePipeline, ranges: list, push: bytes,
                 groups: tuple[int, int, int], access: str | None = None):
        """Record one dispatch. `access` holds 'r', 'w' or 'b' (both) per binding."""
        if len(ranges) != pipeline.n_bindings:
            raise ValueError(f"{pipeline.name}: {len(ranges)} buffers for "
                             f"{pipeline.n_bindings} bindings")
        access = access or "b" * len(ranges)
        spans = [_span(r) for r in ranges]
        reads = [s for s, a in zip(spans, access) if a in "rb"]
        writes = [s for s, a in zip(spans, access) if a in "wb"]
        self._hazard(reads, writes)
        ds = self.device.descriptors.get(pipeline, ranges)
        if self._bound is not pipeline:
            lib.vkCmdBindPipeline(self.cb, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.handle)
            self._bound = pipeline
        dsa = ffi.new("VkDescriptorSet[1]", [ds])
        lib.vkCmdBindDescriptorSets(self.cb, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout,
                                    0, 1, dsa, 0, ffi.NULL)
        if pipeline.push_size:
            if len(push) != pipeline.push_size:
                raise ValueError(f"{pipeline.name}: push constants are {len(push)} bytes, "
                                 f"layout wants {pipeline.push_size}")
            lib.vkCmdPushConstants(self.cb, pipeline.layout, vk.VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                   len(push), ffi.from_buffer(push))
        gx, gy, gz = (int(g) for g in groups)
        lim = self.device.info.max_workgroup_count
        if gx > lim[0] or gy > lim[1] or gz > lim[2]:
            raise ValueError(f"{pipeline.name}: dispatch {gx}x{gy}x{gz} exceeds the device "
                             f"limit {lim}")
        if gx and gy and gz:
            lib.vkCmdDispatch(self.cb, gx, gy, gz)
        self.n_dispatches += 1

    def dispatch_indirect(self, pipeline: ComputePipeline, ranges: list, push: bytes,
                          args, args_offset: int = 0, access: str | None = None):
        """Like dispatch, with the group counts read from `args` (3 x uint32) at run time."""
        access = access or "b" * len(ranges)
        spans = [_span(r) for r in ranges]
        self._hazard([s for s, a in zip(spans, access) if a in "rb"] + [_span(args)],
                     [s for s, a in zip(spans, access) if a in "wb"], COMPUTE | INDIRECT)
        ds = self.device.descriptors.get(pipeline, ranges)
        lib.vkCmdBindPipeline(self.cb, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.handle)
        self._bound = pipeline
        dsa = ffi.new("VkDescriptorSet[1]", [ds])
        lib.vkCmdBindDescriptorSets(self.cb, vk.VK_PIPELINE_BIND_POINT_COMPUTE, pipeline.layout,
                                    0, 1, dsa, 0, ffi.NULL)
        if pipeline.push_size:
            lib.vkCmdPushConstants(self.cb, pipeline.layout, vk.VK_SHADER_STAGE_COMPUTE_BIT, 0,
                                   len(push), ffi.from_buffer(push))
        lib.vkCmdDispatchIndirect(self.cb, args.handle, args.offset + args_offset)
        self.n_dispatches += 1

    def copy(self, src, dst, size: int, src_offset: int = 0, dst_offset: int = 0):
        s = (handle_id(src.handle), src.offset + src_offset, src.offset + src_offset + size)
        d = (handle_id(dst.handle), dst.offset + dst_offset, dst.offset + dst_offset + size)
        self._hazard([s], [d], TRANSFER)
        reg = ffi.new("VkBufferCopy*")
        reg.srcOffset, reg.dstOffset, reg.size = src.offset + src_offset, dst.offset + dst_offset, size
        lib.vkCmdCopyBuffer(self.cb, src.handle, dst.handle, 1, reg)

    def fill(self, dst, value: int = 0, size: int | None = None, offset: int = 0):
        size = dst.size - offset if size is None else size
        size -= size % 4
        self._hazard([], [(handle_id(dst.handle), dst.offset + offset, dst.offset + offset + size)],
                     TRANSFER)
        lib.vkCmdFillBuffer(self.cb, dst.handle, dst.offset + offset, size, value & 0xFFFFFFFF)

    def timestamp(self, pool, index: int):
        lib.vkCmdWriteTimestamp(self.cb, vk.VK_PIPELINE_STAGE_BOTTOM_OF_PIPE_BIT,
                                pool.handle, index)

    def reset_queries(self, pool, first: int = 0, count: int | None = None):
        lib.vkCmdResetQueryPool(self.cb, pool.handle, first, pool.count if count is None else count)


class TimestampPool:
    """GPU timestamps; `elapsed_ns(a, b)` converts ticks with the device's timestampPeriod."""

    def __init__(self, device, count: int):
        self.device, self.count = device, count
        ci = ffi.new("VkQueryPoolCreateInfo*")
        ci.sType = vk.VK_STRUCTURE_TYPE_QUERY_POOL_CREATE_INFO
        ci.queryType = vk.VK_QUERY_TYPE_TIMESTAMP
        ci.queryCount = count
        out = ffi.new("VkQueryPool*")
        check("vkCreateQueryPool", lib.vkCreateQueryPool(device.handle, ci, ffi.NULL, out))
        self.handle = out[0]

    def results(self) -> list[int]:
        data = ffi.new("uint64_t[]", self.count)
        flags = vk.VK_QUERY_RESULT_64_BIT | vk.VK_QUERY_RESULT_WAIT_BIT
        check("vkGetQueryPoolResults", lib.vkGetQueryPoolResults(
            self.device.handle, self.handle, 0, self.count, 8 * self.count, data, 8, flags))
        bits = self.device.info.timestamp_valid_bits
        mask = (1 << bits) - 1 if 0 < bits < 64 else (1 << 64) - 1
        return [int(data[i]) & mask for i in range(self.count)]

    def elapsed_ns(self, a: int = 0, b: int = 1, results=None) -> float:
        r = results if results is not None else self.results()
        return (r[b] - r[a]) * self.device.info.timestamp_period

    def destroy(self):
        lib.vkDestroyQueryPool(self.device.handle, self.handle, ffi.NULL)


@contextlib.contextmanager
def one_shot(device):
    """Record, submit and wait for a throwaway piece of work (uploads, tests, ops).
    Nested use (a staged write inside a recording) takes a second recorder from the free list."""
    free = device.__dict__.setdefault("_one_shot_free", [])
    rec, fence = free.pop() if free else (Recorder(device), Fence(device))
    try:
        rec.begin(one_time=True)
        yield rec
        rec.end()
        fence.reset()
        submit(device, [rec.cb], fence)
        fence.wait()
    finally:
        free.append((rec, fence))
