"""vkinfer: LLM inference on Vulkan compute shaders, from Python.

Public API so far: `list_devices()` (the device report). Model loading (`load`, `Engine`) comes
with the model issues.
"""

from __future__ import annotations

__version__ = "0.1.0"


def list_devices():
    """Every Vulkan device with a compute queue, as DeviceInfo records (see vkinfer.vk.instance)."""
    from .vk.instance import list_devices as _ld

    return _ld()


__all__ = ["list_devices", "__version__"]
