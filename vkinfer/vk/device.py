"""Device selection and the logical device: queue, command pool, descriptor pools, pipeline cache.

`VKINFER_DEVICE` picks a device by index or by a case-insensitive name substring; otherwise we
prefer discrete, then integrated, then virtual, then CPU devices.
"""

from __future__ import annotations

import atexit
import os
import threading

import vulkan as vk

from ..errors import DeviceNotFoundError
from .check import call, check, ffi, lib
from .instance import DeviceInfo, _chain, _new, get_instance, list_devices

_PREFERENCE = {"discrete": 0, "integrated": 1, "virtual": 2, "other": 3, "cpu": 4}


def _describe(devs: list[DeviceInfo]) -> str:
    return "; ".join(f"{d.index}: {d.name} ({d.type})" for d in devs) or "none"


def select_device(spec: str | None = None) -> DeviceInfo:
    """The device named by `spec` (or $VKINFER_DEVICE), else the preferred one."""
    devs = list_devices()
    if not devs:
        raise DeviceNotFoundError(
            "no Vulkan device with a compute queue was found. Install a Vulkan driver (for a "
            "CPU fallback on Debian/Ubuntu: apt-get install mesa-vulkan-drivers)."
        )
    spec = os.environ.get("VKINFER_DEVICE") if spec is None else spec
    if spec is None or spec == "":
        return min(devs, key=lambda d: (_PREFERENCE.get(d.type, 5), d.index))
    if spec.strip().isdigit():
        idx = int(spec)
        for d in devs:
            if d.index == idx:
                return d
        raise DeviceNotFoundError(
            f"VKINFER_DEVICE={spec!r}: no device with index {idx}. Devices: {_describe(devs)}")
    matches = [d for d in devs if spec.lower() in d.name.lower()]
    if not matches:
        raise DeviceNotFoundError(
            f"VKINFER_DEVICE={spec!r} matches no device name. Devices: {_describe(devs)}")
    return min(matches, key=lambda d: d.index)


class Device:
    """A logical device with one compute queue. Owns pools and caches shared by all kernels."""

    def __init__(self, info: DeviceInfo):
        self.info = info
        inst = get_instance()
        self.instance = inst
        self.physical = inst.physical[info.index]
        self.lock = threading.RLock()  # one queue: submissions are serialised

        exts = [e for e in ("VK_EXT_external_memory_host", "VK_EXT_memory_budget")
                if e in info.extensions]
        is13 = tuple(int(x) for x in info.api_version.split(".")[:2]) >= (1, 3)
        if not is13 and info.int_dot:
            exts.append("VK_KHR_shader_integer_dot_product")
        self.extensions = exts

        # Enable only what we use, and only what the device reports.
        q2 = _new("VkPhysicalDeviceFeatures2", vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2)
        q11 = _new("VkPhysicalDeviceVulkan11Features",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES)
        q12 = _new("VkPhysicalDeviceVulkan12Features",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES)
        q13 = _new("VkPhysicalDeviceVulkan13Features",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES)
        _chain(*([q2, q11, q12, q13] if is13 else [q2, q11, q12]))
        lib.vkGetPhysicalDeviceFeatures2(self.physical, q2)
        f2 = _new("VkPhysicalDeviceFeatures2", vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2)
        f11 = _new("VkPhysicalDeviceVulkan11Features",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES)
        f12 = _new("VkPhysicalDeviceVulkan12Features",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES)
        f13 = _new("VkPhysicalDeviceVulkan13Features",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES)
        wanted = [
            (q2.features, f2.features, ("shaderInt16", "shaderInt64", "shaderFloat64")),
            (q11, f11, ("storageBuffer16BitAccess", "uniformAndStorageBuffer16BitAccess")),
            (q12, f12, ("storageBuffer8BitAccess", "uniformAndStorageBuffer8BitAccess",
                        "shaderFloat16", "shaderInt8", "hostQueryReset", "vulkanMemoryModel",
                        "vulkanMemoryModelDeviceScope")),
        ]
        if is13:
            wanted.append((q13, f13, ("subgroupSizeControl", "computeFullSubgroups",
                                      "shaderIntegerDotProduct", "maintenance4")))
        self.features = {}
        for src, dst, names in wanted:
            for n in names:
                v = getattr(src, n)
                setattr(dst, n, v)
                self.features[n] = bool(v)
        _chain(*([f2, f11, f12, f13] if is13 else [f2, f11, f12]))
        self._feature_structs = (q2, q11, q12, q13, f2, f11, f12, f13)

        prio = ffi.new("float[1]", [1.0])
        qci = ffi.new("VkDeviceQueueCreateInfo*")
        qci.sType = vk.VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO
        qci.queueFamilyIndex = info.queue_family
        qci.queueCount = 1
        qci.pQueuePriorities = prio
        ext_c = [ffi.new("char[]", e.encode()) for e in exts]
        ext_arr = ffi.new("char*[]", ext_c)
        dci = ffi.new("VkDeviceCreateInfo*")
        dci.sType = vk.VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO
        dci.pNext = f2
        dci.queueCreateInfoCount = 1
        dci.pQueueCreateInfos = qci
        dci.enabledExtensionCount = len(exts)
        dci.ppEnabledExtensionNames = ext_arr
        out = ffi.new("VkDevice*")
        check("vkCreateDevice", lib.vkCreateDevice(self.physical, dci, ffi.NULL, out),
              detail=f"device {info.name}")
        self.handle = out[0]
        self.queue = vk.vkGetDeviceQueue(self.handle, info.queue_family, 0)
        self.command_pool = call(vk.vkCreateCommandPool, self.handle, vk.VkCommandPoolCreateInfo(
            queueFamilyIndex=info.queue_family,
            flags=vk.VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT), None)
        self._ext_fns = {}
        self._closed = False

        from .memory import MemoryManager
        from .pipeline import DescriptorAllocator, PipelineCache

        self.memory = MemoryManager(self)
        self.descriptors = DescriptorAllocator(self)
        self.pipeline_cache = PipelineCache(self)
        self.pipelines = {}  # (spirv key, spec tuple, ...) -> ComputePipeline
        self._scratch_cb = None
        self._fence = call(vk.vkCreateFence, self.handle, vk.VkFenceCreateInfo(), None)
        atexit.register(self.close)

    def device_fn(self, name: str):
        """An extension entry point, loaded once."""
        fn = self._ext_fns.get(name)
        if fn is None:
            fn = vk.vkGetDeviceProcAddr(self.handle, name)
            self._ext_fns[name] = fn
        return fn

    def clear_pipelines(self):
        """Destroy every cached pipeline (none may be referenced by pending or future
        recordings). Drivers limit the pipelines a device holds at once (the H100's failed
        with VK_ERROR_UNKNOWN after a few thousand); a new request rebuilds from the cache."""
        self.wait_idle()
        for p in self.pipelines.values():
            p.destroy()
        self.pipelines.clear()

    def wait_idle(self):
        check("vkDeviceWaitIdle", lib.vkDeviceWaitIdle(self.handle))

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            self.wait_idle()
            self.pipeline_cache.save()
        except Exception:  # best effort at exit; the process is going away anyway
            pass


_default: Device | None = None
_default_lock = threading.Lock()


def get_device(spec: str | None = None) -> Device:
    """The process-wide default device (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Device(select_device(spec))
        return _default
