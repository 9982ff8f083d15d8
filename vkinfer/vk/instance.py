"""The Vulkan instance and what each physical device can do (the `vkinfer devices` report).

Facts come from Vulkan queries only (DESIGN §4): unified memory is an integrated/CPU device type or
every device-local heap being host-visible; resizable BAR is a device-local + host-visible type
on a discrete card covering (most of) its device-local heap.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, field

import vulkan as vk

from .check import call, ffi, lib

DEVICE_TYPES = {
    vk.VK_PHYSICAL_DEVICE_TYPE_OTHER: "other",
    vk.VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: "integrated",
    vk.VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: "discrete",
    vk.VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: "virtual",
    vk.VK_PHYSICAL_DEVICE_TYPE_CPU: "cpu",
}

SUBGROUP_OPS = [
    (vk.VK_SUBGROUP_FEATURE_BASIC_BIT, "basic"),
    (vk.VK_SUBGROUP_FEATURE_VOTE_BIT, "vote"),
    (vk.VK_SUBGROUP_FEATURE_ARITHMETIC_BIT, "arithmetic"),
    (vk.VK_SUBGROUP_FEATURE_BALLOT_BIT, "ballot"),
    (vk.VK_SUBGROUP_FEATURE_SHUFFLE_BIT, "shuffle"),
    (vk.VK_SUBGROUP_FEATURE_SHUFFLE_RELATIVE_BIT, "shuffle_relative"),
    (vk.VK_SUBGROUP_FEATURE_CLUSTERED_BIT, "clustered"),
    (vk.VK_SUBGROUP_FEATURE_QUAD_BIT, "quad"),
]

MEM_DEVICE_LOCAL = vk.VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT
MEM_HOST_VISIBLE = vk.VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT
MEM_HOST_COHERENT = vk.VK_MEMORY_PROPERTY_HOST_COHERENT_BIT
MEM_HOST_CACHED = vk.VK_MEMORY_PROPERTY_HOST_CACHED_BIT
HEAP_DEVICE_LOCAL = vk.VK_MEMORY_HEAP_DEVICE_LOCAL_BIT

API_VERSION = vk.VK_MAKE_VERSION(1, 3, 0)

# Extensions we enable when present; each unlocks a path described where it is used.
WANTED_EXTENSIONS = (
    "VK_EXT_external_memory_host",
    "VK_EXT_memory_budget",
    "VK_KHR_shader_integer_dot_product",
    "VK_KHR_cooperative_matrix",
    "VK_EXT_subgroup_size_control",
)


@dataclass
class MemoryType:
    index: int
    heap: int
    flags: int

    @property
    def device_local(self) -> bool:
        return bool(self.flags & MEM_DEVICE_LOCAL)

    @property
    def host_visible(self) -> bool:
        return bool(self.flags & MEM_HOST_VISIBLE)

    @property
    def host_coherent(self) -> bool:
        return bool(self.flags & MEM_HOST_COHERENT)

    @property
    def host_cached(self) -> bool:
        return bool(self.flags & MEM_HOST_CACHED)


@dataclass
class DeviceInfo:
    """Everything we learn about a physical device before creating it."""

    index: int
    name: str
    type: str
    vendor_id: int
    device_id: int
    driver_version: int
    driver_name: str
    driver_info: str
    api_version: str
    uuid: str
    subgroup_size: int
    min_subgroup_size: int
    max_subgroup_size: int
    subgroup_ops: list
    clustered_subgroup: bool
    fp16: bool
    int8: bool
    storage16: bool
    storage8: bool
    int_dot: bool
    coopmat: bool
    subgroup_size_control: bool
    uma: bool
    rebar: bool
    external_memory_host: bool
    memory_budget: bool
    min_imported_host_pointer_alignment: int
    heaps: list
    max_storage_buffer_range: int
    max_compute_shared_memory: int
    max_workgroup_invocations: int
    max_workgroup_size: list
    max_workgroup_count: list
    min_storage_buffer_offset_alignment: int
    timestamp_period: float
    timestamp_valid_bits: int
    queue_family: int
    extensions: list = field(default_factory=list)
    memory_types: list = field(default_factory=list)

    def report(self) -> dict:
        """The JSON-able device report of `vkinfer devices --json`."""
        d = asdict(self)
        d.pop("memory_types")
        d.pop("extensions")
        d["memory_types"] = [
            {"heap": t.heap, "device_local": t.device_local, "host_visible": t.host_visible,
             "host_coherent": t.host_coherent, "host_cached": t.host_cached}
            for t in self.memory_types
        ]
        return d


def _c_str(chars) -> str:
    if isinstance(chars, str):  # the package already decoded it
        return chars
    return ffi.string(chars).decode("utf-8", "replace")


def _ver(v: int) -> str:
    return f"{vk.VK_VERSION_MAJOR(v)}.{vk.VK_VERSION_MINOR(v)}.{vk.VK_VERSION_PATCH(v)}"


def _chain(*structs):
    """Link cffi structs through pNext; the caller keeps them alive."""
    for a, b in zip(structs, structs[1:]):
        a.pNext = b
    return structs[0]


def _new(ctype: str, stype: int):
    s = ffi.new(ctype + "*")
    s.sType = stype
    return s


class Instance:
    """One VkInstance per process; holds the physical devices and their reports."""

    def __init__(self):
        app = vk.VkApplicationInfo(
            pApplicationName="vkinfer", applicationVersion=1, pEngineName="vkinfer",
            engineVersion=1, apiVersion=API_VERSION,
        )
        self.handle = call(vk.vkCreateInstance, vk.VkInstanceCreateInfo(pApplicationInfo=app), None)
        try:
            physicals = call(vk.vkEnumeratePhysicalDevices, self.handle)
        except Exception:
            physicals = []
        self.physical = list(physicals)
        self.devices = [self._query(i, p) for i, p in enumerate(self.physical)]

    def _query(self, index: int, phys) -> DeviceInfo:
        props = vk.vkGetPhysicalDeviceProperties(phys)
        exts = {_c_str(e.extensionName) for e in
                call(vk.vkEnumerateDeviceExtensionProperties, phys, None)}
        api = props.apiVersion
        is13 = vk.VK_VERSION_MINOR(api) >= 3 or vk.VK_VERSION_MAJOR(api) > 1

        # properties2 chain
        p2 = _new("VkPhysicalDeviceProperties2", vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2)
        sub = _new("VkPhysicalDeviceSubgroupProperties",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES)
        idp = _new("VkPhysicalDeviceIDProperties", vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_ID_PROPERTIES)
        drv = _new("VkPhysicalDeviceDriverProperties",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES)
        chain = [p2, sub, idp, drv]
        ssc = None
        if is13 or "VK_EXT_subgroup_size_control" in exts:
            ssc = _new("VkPhysicalDeviceSubgroupSizeControlProperties",
                       vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES)
            chain.append(ssc)
        emh = None
        if "VK_EXT_external_memory_host" in exts:
            emh = _new("VkPhysicalDeviceExternalMemoryHostPropertiesEXT",
                       vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_EXTERNAL_MEMORY_HOST_PROPERTIES_EXT)
            chain.append(emh)
        _chain(*chain)
        lib.vkGetPhysicalDeviceProperties2(phys, p2)

        # features2 chain
        f2 = _new("VkPhysicalDeviceFeatures2", vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2)
        f11 = _new("VkPhysicalDeviceVulkan11Features",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_1_FEATURES)
        f12 = _new("VkPhysicalDeviceVulkan12Features",
                   vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_2_FEATURES)
        fchain = [f2, f11, f12]
        f13 = None
        if is13:
            f13 = _new("VkPhysicalDeviceVulkan13Features",
                       vk.VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_VULKAN_1_3_FEATURES)
            fchain.append(f13)
        _chain(*fchain)
        lib.vkGetPhysicalDeviceFeatures2(phys, f2)

        mp = vk.vkGetPhysicalDeviceMemoryProperties(phys)
        types = [MemoryType(i, mp.memoryTypes[i].heapIndex, mp.memoryTypes[i].propertyFlags)
                 for i in range(mp.memoryTypeCount)]
        heaps = []
        for h in range(mp.memoryHeapCount):
            heap = mp.memoryHeaps[h]
            dl = bool(heap.flags & HEAP_DEVICE_LOCAL)
            hv = any(t.heap == h and t.host_visible for t in types)
            heaps.append({"size_bytes": int(heap.size), "device_local": dl, "host_visible": hv})

        dtype = DEVICE_TYPES.get(props.deviceType, "other")
        dl_heaps = [i for i, h in enumerate(heaps) if h["device_local"]]
        all_dl_mappable = bool(dl_heaps) and all(
            any(t.heap == h and t.device_local and t.host_visible for t in types)
            for h in dl_heaps)
        # A discrete card is never unified memory, even when BAR maps all of VRAM.
        uma = dtype in ("integrated", "cpu") or (dtype != "discrete" and all_dl_mappable)
        rebar = False
        if dtype == "discrete":
            # A device-local + host-visible type whose heap is most of VRAM (not the 256 MiB window).
            biggest = max((heaps[h]["size_bytes"] for h in dl_heaps), default=0)
            rebar = any(t.device_local and t.host_visible and
                        heaps[t.heap]["size_bytes"] >= 0.5 * biggest for t in types)

        ops = [n for bit, n in SUBGROUP_OPS if sub.supportedOperations & bit]
        compute_stage = bool(sub.supportedStages & vk.VK_SHADER_STAGE_COMPUTE_BIT)
        if not compute_stage:
            ops = []
        qfs = vk.vkGetPhysicalDeviceQueueFamilyProperties(phys)
        qfi = next((i for i, q in enumerate(qfs) if q.queueFlags & vk.VK_QUEUE_COMPUTE_BIT), -1)
        lim = props.limits
        int_dot = bool(f13.shaderIntegerDotProduct) if f13 is not None else (
            "VK_KHR_shader_integer_dot_product" in exts)
        return DeviceInfo(
            index=index,
            name=_c_str(props.deviceName),
            type=dtype,
            vendor_id=int(props.vendorID),
            device_id=int(props.deviceID),
            driver_version=int(props.driverVersion),
            driver_name=_c_str(drv.driverName),
            driver_info=_c_str(drv.driverInfo),
            api_version=_ver(api),
            uuid=bytes(ffi.buffer(idp.deviceUUID, 16)).hex(),
            subgroup_size=int(sub.subgroupSize),
            min_subgroup_size=int(ssc.minSubgroupSize) if ssc else int(sub.subgroupSize),
            max_subgroup_size=int(ssc.maxSubgroupSize) if ssc else int(sub.subgroupSize),
            subgroup_ops=ops,
            clustered_subgroup="clustered" in ops and "arithmetic" in ops,
            fp16=bool(f12.shaderFloat16),
            int8=bool(f12.shaderInt8),
            storage16=bool(f11.storageBuffer16BitAccess),
            storage8=bool(f12.storageBuffer8BitAccess),
            int_dot=int_dot,
            coopmat="VK_KHR_cooperative_matrix" in exts,
            subgroup_size_control=bool(f13.subgroupSizeControl and f13.computeFullSubgroups)
            if f13 is not None else False,
            uma=bool(uma),
            rebar=bool(rebar),
            external_memory_host="VK_EXT_external_memory_host" in exts,
            memory_budget="VK_EXT_memory_budget" in exts,
            min_imported_host_pointer_alignment=int(emh.minImportedHostPointerAlignment) if emh else 0,
            heaps=heaps,
            max_storage_buffer_range=int(lim.maxStorageBufferRange),
            max_compute_shared_memory=int(lim.maxComputeSharedMemorySize),
            max_workgroup_invocations=int(lim.maxComputeWorkGroupInvocations),
            max_workgroup_size=[int(x) for x in lim.maxComputeWorkGroupSize],
            max_workgroup_count=[int(x) for x in lim.maxComputeWorkGroupCount],
            min_storage_buffer_offset_alignment=int(lim.minStorageBufferOffsetAlignment),
            timestamp_period=float(lim.timestampPeriod),
            timestamp_valid_bits=int(qfs[qfi].timestampValidBits) if qfi >= 0 else 0,
            queue_family=qfi,
            extensions=sorted(exts),
            memory_types=types,
        )


@functools.lru_cache(maxsize=1)
def get_instance() -> Instance:
    return Instance()


def list_devices() -> list[DeviceInfo]:
    """Every Vulkan physical device with a compute queue."""
    return [d for d in get_instance().devices if d.queue_family >= 0]
