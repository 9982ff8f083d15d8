"""Compute pipelines with specialization constants, descriptor sets, and the persisted
VkPipelineCache (keyed by device UUID + driver version, R7)."""

from __future__ import annotations

import hashlib
import os
import struct

import vulkan as vk

from ..paths import cache_dir
from .check import call, check, ffi, lib

STAGE_COMPUTE = vk.VK_SHADER_STAGE_COMPUTE_BIT
STORAGE = vk.VK_DESCRIPTOR_TYPE_STORAGE_BUFFER


def handle_id(h) -> int:
    return int(ffi.cast("uintptr_t", h))


class PipelineCache:
    def __init__(self, device):
        self.device = device
        info = device.info
        self.path = cache_dir() / "pipelines" / f"{info.uuid}-{info.driver_version}.bin"
        data = b""
        if self.path.exists():
            data = self.path.read_bytes()
        ci = ffi.new("VkPipelineCacheCreateInfo*")
        ci.sType = vk.VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO
        keep = ffi.from_buffer(data) if data else ffi.NULL
        ci.initialDataSize = len(data)
        ci.pInitialData = keep
        out = ffi.new("VkPipelineCache*")
        r = lib.vkCreatePipelineCache(device.handle, ci, ffi.NULL, out)
        if r < 0 and data:  # a corrupt or foreign cache file: start empty
            ci.initialDataSize, ci.pInitialData = 0, ffi.NULL
            r = lib.vkCreatePipelineCache(device.handle, ci, ffi.NULL, out)
        check("vkCreatePipelineCache", r)
        self.handle = out[0]
        self.dirty = False

    def save(self):
        if not self.dirty:
            return
        size = ffi.new("size_t*")
        check("vkGetPipelineCacheData",
              lib.vkGetPipelineCacheData(self.device.handle, self.handle, size, ffi.NULL))
        buf = ffi.new("char[]", size[0])
        check("vkGetPipelineCacheData",
              lib.vkGetPipelineCacheData(self.device.handle, self.handle, size, buf))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(ffi.buffer(buf, size[0])[:])
        os.replace(tmp, self.path)
        self.dirty = False


def _spec_bytes(values: list[tuple[int, object]]) -> tuple[bytes, list[tuple[int, int]]]:
    """Pack (constant_id, value) pairs as 4-byte entries: int → int32/uint32, float → f32,
    bool → VkBool32."""
    data, entries = b"", []
    for cid, v in values:
        if isinstance(v, bool):
            data += struct.pack("<I", int(v))
        elif isinstance(v, float):
            data += struct.pack("<f", v)
        elif v < 0:
            data += struct.pack("<i", v)
        else:
            data += struct.pack("<I", v)
        entries.append((cid, len(data) - 4))
    return data, entries


class ComputePipeline:
    """A compute pipeline, its layout (n storage buffers + a push-constant range)."""

    def __init__(self, device, spirv: bytes, name: str, n_bindings: int, push_size: int,
                 spec: list[tuple[int, object]], require_full_subgroups: bool = False):
        self.device, self.name = device, name
        self.n_bindings, self.push_size = n_bindings, push_size
        self.spec = dict(spec)
        dev = device.handle
        self.module = call(vk.vkCreateShaderModule, dev, vk.VkShaderModuleCreateInfo(
            codeSize=len(spirv), pCode=spirv), None, detail=name)
        binds = [vk.VkDescriptorSetLayoutBinding(
            binding=i, descriptorType=STORAGE, descriptorCount=1, stageFlags=STAGE_COMPUTE)
            for i in range(n_bindings)]
        self.set_layout = call(vk.vkCreateDescriptorSetLayout, dev,
                               vk.VkDescriptorSetLayoutCreateInfo(pBindings=binds), None)
        ranges = [vk.VkPushConstantRange(stageFlags=STAGE_COMPUTE, offset=0, size=push_size)] \
            if push_size else []
        self.layout = call(vk.vkCreatePipelineLayout, dev, vk.VkPipelineLayoutCreateInfo(
            pSetLayouts=[self.set_layout], pPushConstantRanges=ranges or None), None)

        data, entries = _spec_bytes(spec)
        keep = []
        stage = ffi.new("VkPipelineShaderStageCreateInfo*")
        stage.sType = vk.VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO
        stage.stage = STAGE_COMPUTE
        stage.module = self.module
        entry = ffi.new("char[]", b"main")
        stage.pName = entry
        if entries:
            me = ffi.new("VkSpecializationMapEntry[]", len(entries))
            for i, (cid, off) in enumerate(entries):
                me[i].constantID, me[i].offset, me[i].size = cid, off, 4
            raw = ffi.new("char[]", data)
            si = ffi.new("VkSpecializationInfo*")
            si.mapEntryCount, si.pMapEntries = len(entries), me
            si.dataSize, si.pData = len(data), raw
            stage.pSpecializationInfo = si
            keep += [me, raw, si]
        if require_full_subgroups and device.features.get("computeFullSubgroups"):
            # VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT: the vulkan package
            # lacks the core name and its _EXT alias is None, so use the spec value.
            stage.flags = 0x00000002
        ci = ffi.new("VkComputePipelineCreateInfo*")
        ci.sType = vk.VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO
        ci.stage = stage[0]
        ci.layout = self.layout
        out = ffi.new("VkPipeline*")
        check("vkCreateComputePipelines", lib.vkCreateComputePipelines(
            dev, device.pipeline_cache.handle, 1, ci, ffi.NULL, out), detail=name)
        device.pipeline_cache.dirty = True
        self.handle = out[0]
        del keep

    def destroy(self):
        """Release the pipeline, its layouts, module and descriptor sets."""
        dev = self.device.handle
        self.device.descriptors.free_layout(self.set_layout)
        lib.vkDestroyPipeline(dev, self.handle, ffi.NULL)
        lib.vkDestroyPipelineLayout(dev, self.layout, ffi.NULL)
        lib.vkDestroyDescriptorSetLayout(dev, self.set_layout, ffi.NULL)
        lib.vkDestroyShaderModule(dev, self.module, ffi.NULL)


def get_pipeline(device, spirv: bytes, key: str, name: str, n_bindings: int, push_size: int,
                 spec: list[tuple[int, object]], require_full_subgroups: bool = False):
    """Pipelines are cached per device by (SPIR-V key, specialization values)."""
    ck = (key, tuple(spec), n_bindings, push_size, require_full_subgroups)
    p = device.pipelines.get(ck)
    if p is None:
        p = ComputePipeline(device, spirv, name, n_bindings, push_size, spec,
                            require_full_subgroups)
        device.pipelines[ck] = p
    return p


def evict_pipeline(device, pipeline: ComputePipeline):
    """Destroy a cached pipeline no recording uses any more (the autotuner's rejected
    candidates). The caller guarantees no pending command buffer references it."""
    for k, p in list(device.pipelines.items()):
        if p is pipeline:
            del device.pipelines[k]
    device.wait_idle()
    pipeline.destroy()


class DescriptorAllocator:
    """Descriptor sets from growing pools, cached by (layout, bound ranges): a recorded graph
    binds the same ranges every replay, so a set is written once."""

    SETS_PER_POOL = 1024

    def __init__(self, device):
        self.device = device
        self.pools = []
        self.left = 0
        self.cache = {}
        self.pool_of = {}
        self.by_buffer = {}

    def _new_pool(self):
        sizes = [vk.VkDescriptorPoolSize(type=STORAGE, descriptorCount=self.SETS_PER_POOL * 8)]
        pool = call(vk.vkCreateDescriptorPool, self.device.handle, vk.VkDescriptorPoolCreateInfo(
            flags=vk.VK_DESCRIPTOR_POOL_CREATE_FREE_DESCRIPTOR_SET_BIT,
            maxSets=self.SETS_PER_POOL, pPoolSizes=sizes), None)
        self.pools.append(pool)
        self.left = self.SETS_PER_POOL

    def get(self, pipeline: ComputePipeline, ranges: list) -> object:
        key = (handle_id(pipeline.set_layout),
               tuple((handle_id(r.handle), r.offset, r.size) for r in ranges))
        ds = self.cache.get(key)
        if ds is not None:
            return ds
        if self.left == 0:
            self._new_pool()
        dev = self.device.handle
        ai = ffi.new("VkDescriptorSetAllocateInfo*")
        ai.sType = vk.VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO
        ai.descriptorPool = self.pools[-1]
        ai.descriptorSetCount = 1
        lay = ffi.new("VkDescriptorSetLayout[1]", [pipeline.set_layout])
        ai.pSetLayouts = lay
        out = ffi.new("VkDescriptorSet[1]")
        r = lib.vkAllocateDescriptorSets(dev, ai, out)
        if r < 0:  # pool exhausted in some other dimension: start a new one and retry once
            self._new_pool()
            ai.descriptorPool = self.pools[-1]
            check("vkAllocateDescriptorSets", lib.vkAllocateDescriptorSets(dev, ai, out))
        self.left -= 1
        ds = out[0]
        n = len(ranges)
        infos = ffi.new("VkDescriptorBufferInfo[]", n)
        writes = ffi.new("VkWriteDescriptorSet[]", n)
        for i, r in enumerate(ranges):
            infos[i].buffer, infos[i].offset, infos[i].range = r.handle, r.offset, r.bound_bytes
            w = writes[i]
            w.sType = vk.VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET
            w.dstSet, w.dstBinding, w.descriptorCount = ds, i, 1
            w.descriptorType = STORAGE
            w.pBufferInfo = infos + i
        lib.vkUpdateDescriptorSets(dev, n, writes, 0, ffi.NULL)
        self.cache[key] = ds
        self.pool_of[key] = self.pools[-1]
        for r in ranges:
            self.by_buffer.setdefault(handle_id(r.handle), []).append(key)
        return ds

    def free_layout(self, set_layout):
        """Free every cached set made for `set_layout` (its pipeline is being destroyed)."""
        lid = handle_id(set_layout)
        for key in [k for k in self.cache if k[0] == lid]:
            ds = self.cache.pop(key)
            arr = ffi.new("VkDescriptorSet[1]", [ds])
            lib.vkFreeDescriptorSets(self.device.handle, self.pool_of.pop(key), 1, arr)

    def forget_buffer(self, vk_buffer):
        """Drop cached sets that point at a buffer about to be destroyed (its handle may be
        reused)."""
        for key in self.by_buffer.pop(handle_id(vk_buffer), []):
            self.cache.pop(key, None)


def spirv_hash(spirv: bytes) -> str:
    return hashlib.sha256(spirv).hexdigest()[:16]
