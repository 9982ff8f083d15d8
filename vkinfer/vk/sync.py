"""Fences and queue submission."""

from __future__ import annotations

import vulkan as vk

from .check import call, check, ffi, lib

WAIT_FOREVER = 2**64 - 1


class Fence:
    def __init__(self, device):
        self.device = device
        self.handle = call(vk.vkCreateFence, device.handle, vk.VkFenceCreateInfo(), None)

    def wait(self, timeout_ns: int = WAIT_FOREVER):
        arr = ffi.new("VkFence[1]", [self.handle])
        r = lib.vkWaitForFences(self.device.handle, 1, arr, 1, timeout_ns)
        if r == 2:  # VK_TIMEOUT
            raise TimeoutError(f"GPU work did not finish within {timeout_ns / 1e9:.1f} s")
        check("vkWaitForFences", r)

    def reset(self):
        arr = ffi.new("VkFence[1]", [self.handle])
        check("vkResetFences", lib.vkResetFences(self.device.handle, 1, arr))

    def destroy(self):
        lib.vkDestroyFence(self.device.handle, self.handle, ffi.NULL)


def submit(device, command_buffers: list, fence: Fence | None = None):
    """One vkQueueSubmit of the given primary command buffers."""
    arr = ffi.new("VkCommandBuffer[]", command_buffers)
    si = ffi.new("VkSubmitInfo*")
    si.sType = vk.VK_STRUCTURE_TYPE_SUBMIT_INFO
    si.commandBufferCount = len(command_buffers)
    si.pCommandBuffers = arr
    with device.lock:
        check("vkQueueSubmit", lib.vkQueueSubmit(
            device.queue, 1, si, fence.handle if fence is not None else ffi.NULL))
