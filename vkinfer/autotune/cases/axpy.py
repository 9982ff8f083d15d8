"""axpy: y += alpha[k]·x over a hidden-size vector (MoE expert accumulation)."""

from __future__ import annotations

import numpy as np

from ...pipelines import axpy as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 70  # lower is tuned first (a budget goes to what matters most)


shape_class = fam.shape_class


class AxpyCase(Case):
    family = "axpy"

    def workload(self, device, rng, purpose):
        n = self.n if purpose == "time" else self.n_check
        wl = Workload(device, rng)
        wl.meta["n"] = n
        wl.input("x", rng.standard_normal(n).astype(np.float32))
        wl.input("alpha", np.array([0.37, -1.25], np.float32))
        wl.input("y", rng.standard_normal(n).astype(np.float32))
        return wl

    def record(self, rec, kp, wl):
        fam.dispatch(rec, kp, wl["x"], wl["alpha"], wl["y"], wl.meta["n"], alpha_index=1)

    def verify(self, kp, wl):
        h = wl.host
        want = fam.reference(h["x"], h["alpha"], h["y"], 1, bool(kp.spec["ACCUMULATE"]))
        # one float32 multiply-add per element: a few ulps
        return compare("y", wl.read("y", np.float32, want.shape), want, 1e-6, 1e-6)


def cases(info):
    sizes = (4096,) if is_cpu(info) else (2048, 4096, 8192)
    return [AxpyCase(fam.KERNEL, shape_class(n), n=n, n_check=n + 3 if is_cpu(info) else 4099,
                     bytes=3 * 4 * n, shape=f"n={n}") for n in sizes]
