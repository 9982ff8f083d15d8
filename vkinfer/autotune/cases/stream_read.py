"""stream_read: the bandwidth probe (tools/bench_device.py). One class, "stream": a buffer much
larger than the caches, read once per dispatch."""

from __future__ import annotations

import numpy as np

from ...pipelines import stream_read as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 90  # tuned last: a probe, not on the inference path

SHAPE_CLASS = "stream"


class StreamReadCase(Case):
    family = "stream_read"

    def workload(self, device, rng, purpose):
        if purpose == "time":
            n, groups = self.n_vec4, self.groups
        else:  # odd sizes the reference can do quickly: partial last stride, uneven groups
            n, groups = 4097, 7
        wl = Workload(device, rng)
        wl.meta.update(n=n, groups=groups)
        if purpose == "time":  # a random 1 MiB tile: generating GiBs of randomness is slow
            tile = rng.integers(1, 2**32, size=1 << 18, dtype=np.uint32)
            src = np.resize(tile, n * 4)
        else:
            src = rng.integers(1, 2**32, size=n * 4, dtype=np.uint32)
        wl.input("src", src)
        wl.output("dst", groups * 16)
        return wl

    def record(self, rec, kp, wl):
        fam.dispatch(rec, kp, wl["src"], wl["dst"], wl.meta["n"], wl.meta["groups"])

    def verify(self, kp, wl):
        g = wl.meta["groups"]
        want = fam.reference(wl.host["src"], g, kp.spec["WG"])
        return compare("dst", wl.read("dst", np.uint32, (g, 4)), want)


def cases(info):
    if is_cpu(info):
        nbytes, groups = 8 << 20, 32
    else:
        lim = info.max_storage_buffer_range
        nbytes, groups = min(256 << 20, lim - lim % 16), 2048
    return [StreamReadCase(fam.KERNEL, SHAPE_CLASS, n_vec4=nbytes // 16, groups=groups,
                           bytes=nbytes, shape=f"{nbytes >> 20} MiB, {groups} groups")]
