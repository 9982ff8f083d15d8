"""rope: rotary embedding of one decode token's q and k heads (partial rotary, as Qwen3.6:
head dim 256, rotary dim 64), per the family's shape_class (head dim, heads)."""

from __future__ import annotations

import numpy as np

from ...pipelines import rope as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 55  # lower is tuned first (a budget goes to what matters most)


class RopeCase(Case):
    family = "rope"

    def workload(self, device, rng, purpose):
        T = self.tokens if purpose == "time" else 2
        wl = Workload(device, rng)
        wl.meta["T"] = T
        wl.input("x", rng.standard_normal((T, self.heads, self.hd)).astype(np.float32))
        wl.input("pos", rng.integers(0, 40000, T).astype(np.int32))
        wl.input("freq", fam.freq_table(self.n_rot, 1e7))
        wl.output("y", 4 * T * self.heads * self.hd)
        return wl

    def record(self, rec, kp, wl):
        fam.dispatch(rec, kp, wl["x"], wl["pos"], wl["freq"], wl["y"], wl.meta["T"], self.heads,
                     self.hd, self.n_rot)

    def verify(self, kp, wl):
        h = wl.host
        want = fam.reference(h["x"], h["pos"], self.n_rot, 1e7, neox=kp.variant != "normal")
        got = wl.read("y", np.float32, want.shape)
        # tests/kernels/test_rope.py: atol 2e-6·max|x|
        return compare("y", got, want, 0.0, 2e-6 * float(np.abs(h["x"]).max()))


def cases(info):
    shapes = [(64, 4, 32)] if is_cpu(info) else [(256, 24, 64), (256, 4, 64), (256, 16, 64)]
    out = []
    for hd, heads, n_rot in shapes:
        out += [RopeCase(fam.KERNEL, fam.shape_class(hd, heads), (v,), hd=hd, heads=heads,
                         n_rot=n_rot, tokens=1, bytes=8 * hd * heads,
                         shape=f"hd={hd} heads={heads} n_rot={n_rot} T=1")
                for v in ("neox", "normal")]
    return out
