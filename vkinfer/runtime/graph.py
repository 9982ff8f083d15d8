"""RecordedGraph: a command buffer recorded once and replayed every step (DESIGN R3).

Per-step values (position, KV length, token count, accepted count, ...) live in a small
host-visible device buffer, `step`, laid out by a numpy structured dtype. `run(**values)` writes
them and submits the same command buffer again: no recording, no descriptor updates, one
vkQueueSubmit. Kernels read what they need from `step` (bind `graph.step` like any buffer, or
`graph.step_field(name)` for one field's range).
"""

from __future__ import annotations

import contextlib

import numpy as np

from ..vk.commands import Recorder, TimestampPool
from ..vk.memory import BufferRange
from ..vk.sync import Fence, submit


class RecordedGraph:
    def __init__(self, device, step_dtype: np.dtype | None = None, timestamps: bool = False):
        self.device = device
        self.step_dtype = np.dtype(step_dtype) if step_dtype is not None else np.dtype(
            [("pad", "<u4")])
        kind = "device" if device.memory.device_mappable else "host"
        self.step = device.memory.alloc(max(self.step_dtype.itemsize, 16), kind)
        self.values = self.step.view(np.uint8)[: self.step_dtype.itemsize].view(self.step_dtype)
        self.values[...] = 0
        self.rec = Recorder(device)
        self.fence = Fence(device)
        self.timer = TimestampPool(device, 2) if timestamps else None
        self.recorded = False
        self.in_flight = False

    def step_field(self, name: str) -> BufferRange:
        """The byte range of one step field, to bind on its own."""
        off = self.step_dtype.fields[name][1]
        return self.step.range(off, self.step_dtype.fields[name][0].itemsize)

    @contextlib.contextmanager
    def record(self):
        """Record the graph: `with g.record() as rec: kernel.dispatch(rec, ...)`."""
        rec = self.rec.begin()
        if self.timer:
            rec.reset_queries(self.timer)
            rec.timestamp(self.timer, 0)
        yield rec
        if self.timer:
            rec.timestamp(self.timer, 1)
        rec.end()
        self.recorded = True

    def submit(self, **values):
        """Write per-step values and submit; returns at once (see wait())."""
        if not self.recorded:
            raise RuntimeError("RecordedGraph.submit before record()")
        if self.in_flight:
            self.wait()
        for k, v in values.items():
            self.values[k] = v
        self.fence.reset()
        submit(self.device, [self.rec.cb], self.fence)
        self.in_flight = True

    def wait(self):
        if self.in_flight:
            self.fence.wait()
            self.in_flight = False

    def run(self, **values):
        """Submit with these per-step values and wait for completion."""
        self.submit(**values)
        self.wait()

    def gpu_time_ns(self) -> float:
        """GPU time of the last replay (needs timestamps=True)."""
        if self.timer is None:
            raise RuntimeError("graph was created without timestamps")
        return self.timer.elapsed_ns()
