"""Helpers shared by the ops modules: temporary device buffers around one submit."""

from __future__ import annotations

import contextlib

import numpy as np

from ..vk.commands import one_shot
from ..vk.device import get_device


class Temps:
    """Buffers allocated for one op call, freed together."""

    def __init__(self, device):
        self.device, self.bufs = device, []

    def upload(self, arr) -> object:
        a = np.ascontiguousarray(arr)
        b = self.device.memory.alloc(max(a.nbytes, 4))
        if a.nbytes:
            b.write(a)
        self.bufs.append(b)
        return b

    def empty(self, nbytes: int, fill: int | None = None) -> object:
        b = self.device.memory.alloc(max(int(nbytes), 4))
        if fill is not None and b.host is not None:
            b.host[:] = fill
        self.bufs.append(b)
        return b

    def free(self):
        for b in self.bufs:
            b.free()
        self.bufs.clear()


@contextlib.contextmanager
def op_session(device=None):
    """Yields (device, temps); the temporaries are freed when the block exits."""
    dev = device or get_device()
    t = Temps(dev)
    try:
        yield dev, t
    finally:
        t.free()


def run(device, fn):
    """Record fn(rec) into a one-shot command buffer, submit and wait."""
    with one_shot(device) as rec:
        fn(rec)
