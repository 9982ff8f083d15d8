"""softmax: row softmax per row length (the family's shape_class is n only): a router-sized row
and a vocabulary row (sampling)."""

from __future__ import annotations

import numpy as np

from ...pipelines import softmax as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 60  # lower is tuned first (a budget goes to what matters most)

RTOL, ATOL = 2e-5, 1e-9  # tests/kernels/test_softmax.py


class SoftmaxCase(Case):
    family = "softmax"

    def workload(self, device, rng, purpose):
        rows = self.rows if purpose == "time" else min(self.rows, 3)
        wl = Workload(device, rng)
        wl.meta["rows"] = rows
        wl.input("x", (3.0 * rng.standard_normal((rows, self.n))).astype(np.float32))
        wl.output("y", 4 * rows * self.n)
        return wl

    def record(self, rec, kp, wl):
        fam.dispatch(rec, kp, wl["x"], wl["y"], self.n, wl.meta["rows"], 0.5)

    def verify(self, kp, wl):
        x = wl.host["x"]
        return compare("y", wl.read("y", np.float32, x.shape), fam.reference(x, 0.5), RTOL, ATOL)


def cases(info):
    sizes = [(256, 1), (32768, 1)] if is_cpu(info) else [(256, 1), (248320, 1)]
    return [SoftmaxCase(fam.KERNEL, fam.shape_class(n, r), n=n, rows=r, bytes=8 * n * r,
                        shape=f"n={n} rows={r}") for n, r in sizes]
