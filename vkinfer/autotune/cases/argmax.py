"""argmax: greedy sampling over a vocabulary row (decode) and over the K+1 rows of an MTP
verify; both passes (chunks, merge) are timed together with the same values, as
`argmax.pipelines()` builds them."""

from __future__ import annotations

import numpy as np

from ...pipelines import argmax as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 60  # lower is tuned first (a budget goes to what matters most)


class ArgmaxCase(Case):
    family = "argmax"

    def workload(self, device, rng, purpose):
        rows, n = (self.rows, self.n) if purpose == "time" else (min(self.rows, 3), self.n)
        wl = Workload(device, rng)
        wl.meta["rows"] = rows
        x = rng.standard_normal((rows, n)).astype(np.float32)
        if purpose == "check" and rows > 1:
            x[1, n // 3] = x[1, 2 * n // 3] = 100.0  # a tie: the lowest index must win
        wl.input("x", x)
        wl.output("part", max(4, fam.part_bytes(rows, max(fam.KERNEL.spec[1].choices))))
        wl.output("out", 4 * rows)
        return wl

    def record(self, rec, kp, wl):
        km = fam.KERNEL.pipeline(wl.device, "merge", **kp.spec)
        fam.dispatch(rec, (kp, km), wl["x"], wl["part"], wl["out"], self.n, wl.meta["rows"])

    def verify(self, kp, wl):
        x = wl.host["x"]
        return compare("out", wl.read("out", np.int32, (x.shape[0],)), fam.reference(x))


def cases(info):
    sizes = [(32768, 1)] if is_cpu(info) else [(248320, 1), (248320, 4)]
    return [ArgmaxCase(fam.KERNEL, fam.shape_class(n, r), ("default",), n=n, rows=r,
                       bytes=4 * n * r, shape=f"n={n} rows={r}") for n, r in sizes]
