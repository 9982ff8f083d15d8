"""elementwise: the ops on a decode step's hot path, per element-count class (the family's
shape_class): swiglu of the FFN, the residual add, the attention output gate."""

from __future__ import annotations

import numpy as np

from ...pipelines import elementwise as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 50  # lower is tuned first (a budget goes to what matters most)

RTOL = 2e-5  # tests/kernels/test_elementwise.py


class ElementwiseCase(Case):
    family = "elementwise"

    def workload(self, device, rng, purpose):
        n = self.n if purpose == "time" else self.n + 5
        op = self.variants[0]
        wl = Workload(device, rng)
        wl.meta["n"] = n
        wl.input("a", (2.0 * rng.standard_normal(n)).astype(np.float32))
        if op in fam.BINARY:
            wl.input("b", (2.0 * rng.standard_normal(n)).astype(np.float32))
        wl.output("y", 4 * n)
        return wl

    def record(self, rec, kp, wl):
        fam.dispatch(rec, kp, wl["a"], wl["y"], wl.meta["n"], 1, b=wl.bufs.get("b"))

    def verify(self, kp, wl):
        h = wl.host
        want = fam.reference(kp.variant, h["a"], h.get("b"))
        atol = 1e-6 * float(np.abs(h["a"]).max())
        return compare("y", wl.read("y", np.float32, want.shape), want, RTOL, atol)


def cases(info):
    if is_cpu(info):
        spec = [("swiglu", 4096), ("add", 4096)]
    else:  # FFN 17408 (27B), expert FFN 512 x 8 routed, hidden 5120, attention gate 24 x 256
        spec = [("swiglu", 17408), ("swiglu", 4096), ("add", 5120), ("add", 2048),
                ("sigmoid_mul", 6144)]
    out = []
    for op, n in spec:
        nb = 4 * n * (3 if op in fam.BINARY else 2)
        out.append(ElementwiseCase(fam.KERNEL, fam.shape_class(n, 1), (op,), n=n, bytes=nb,
                                   shape=f"{op} n={n}"))
    return out
