"""Checked Vulkan calls (DESIGN R6): every failing VkResult becomes a typed VkinferError naming the call.

The `vulkan` cffi package raises its own exception classes (VkErrorOutOfDeviceMemory, ...); `call`
turns them into ours. Raw results from `lib` functions go through `check`.
"""

from __future__ import annotations

import vulkan as vk

from ..errors import OutOfDeviceMemory, VulkanError

ffi = vk.ffi
lib = vk.lib

# VkResult codes we may see, by value; the package's own table has wrong signs for extension codes.
RESULT_NAMES = {
    0: "VK_SUCCESS",
    1: "VK_NOT_READY",
    2: "VK_TIMEOUT",
    5: "VK_INCOMPLETE",
    -1: "VK_ERROR_OUT_OF_HOST_MEMORY",
    -2: "VK_ERROR_OUT_OF_DEVICE_MEMORY",
    -3: "VK_ERROR_INITIALIZATION_FAILED",
    -4: "VK_ERROR_DEVICE_LOST",
    -5: "VK_ERROR_MEMORY_MAP_FAILED",
    -6: "VK_ERROR_LAYER_NOT_PRESENT",
    -7: "VK_ERROR_EXTENSION_NOT_PRESENT",
    -8: "VK_ERROR_FEATURE_NOT_PRESENT",
    -9: "VK_ERROR_INCOMPATIBLE_DRIVER",
    -10: "VK_ERROR_TOO_MANY_OBJECTS",
    -11: "VK_ERROR_FORMAT_NOT_SUPPORTED",
    -12: "VK_ERROR_FRAGMENTED_POOL",
    -13: "VK_ERROR_UNKNOWN",
    -1000069000: "VK_ERROR_OUT_OF_POOL_MEMORY",
    -1000072003: "VK_ERROR_INVALID_EXTERNAL_HANDLE",
}

_EXC_TO_CODE = {
    "VkErrorOutOfHostMemory": -1,
    "VkErrorOutOfDeviceMemory": -2,
    "VkErrorInitializationFailed": -3,
    "VkErrorDeviceLost": -4,
    "VkErrorMemoryMapFailed": -5,
    "VkErrorLayerNotPresent": -6,
    "VkErrorExtensionNotPresent": -7,
    "VkErrorFeatureNotPresent": -8,
    "VkErrorIncompatibleDriver": -9,
    "VkErrorTooManyObjects": -10,
    "VkErrorFormatNotSupported": -11,
    "VkErrorFragmentedPool": -12,
    "VkErrorUnknown": -13,
    "VkErrorOutOfPoolMemory": -1000069000,
    "VkErrorInvalidExternalHandle": -1000072003,
}


def error_for(call_name: str, code: int, detail: str = "") -> VulkanError:
    name = RESULT_NAMES.get(code, f"VkResult {code}")
    cls = OutOfDeviceMemory if code in (-1, -2) else VulkanError
    return cls(call_name, code, name, detail)


def check(call_name: str, result: int, detail: str = "") -> int:
    """Raise for a negative VkResult returned by a raw `lib` call; return non-error codes."""
    if result < 0:
        raise error_for(call_name, result, detail)
    return result


def call(fn, *args, detail: str = ""):
    """Call a `vulkan` package wrapper, turning its exceptions into typed VulkanErrors."""
    try:
        return fn(*args)
    except vk.VkError as e:  # all of the package's error classes derive from VkError
        code = _EXC_TO_CODE.get(type(e).__name__, -13)
        raise error_for(getattr(fn, "__name__", str(fn)), code, detail) from None
