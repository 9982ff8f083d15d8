"""Typed errors. Every failure a user can cause or meet names what went wrong and what to do."""


class VkinferError(Exception):
    """Base of every error vkinfer raises on purpose."""


class GGUFError(VkinferError):
    """A GGUF file is malformed, truncated or inconsistent."""


class UnsupportedError(VkinferError):
    """A tensor type, architecture or option combination vkinfer does not handle."""


class DeviceFeatureError(VkinferError):
    """The Vulkan device lacks a feature a kernel needs and no fallback variant exists."""


class DeviceNotFoundError(VkinferError):
    """No Vulkan device, or none matching VKINFER_DEVICE."""


class VulkanError(VkinferError):
    """A Vulkan call returned an error code."""

    def __init__(self, call: str, result: int, name: str, detail: str = ""):
        self.call, self.result, self.name = call, result, name
        msg = f"{call} failed with {name} ({result})"
        super().__init__(msg + (f": {detail}" if detail else ""))


class OutOfDeviceMemory(VulkanError):
    """An allocation did not fit; the message says how much was asked and how much is free."""


class ShaderCompileError(VkinferError):
    """GLSL did not compile; the message starts with file:line."""


class ContractError(VkinferError):
    """A kernel's specialization constants or shapes break the shader's stated contract (R2)."""
