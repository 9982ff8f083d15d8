"""gated_rms_norm: the GDN output norm rms_norm(o)·w ⊙ silu(z) of one decode token, per
(head size, value heads). pipelines/gated_rms_norm.py has no shape_class(); callers should use
this one (the same string as gated_delta_net.shape_class)."""

from __future__ import annotations

import numpy as np

from ...pipelines import gated_rms_norm as fam
from . import Case, Workload, compare_rel, is_cpu

PRIORITY = 50  # lower is tuned first (a budget goes to what matters most)

EPS = 1e-6
TOL = 1e-5  # tests/kernels/test_gated_rms_norm.py


def shape_class(s_v: int, n_heads: int) -> str:
    return f"sv{s_v}-h{n_heads}"


class GatedRmsNormCase(Case):
    family = "gated_rms_norm"

    def workload(self, device, rng, purpose):
        rows, H, S = (1, self.H, self.S) if purpose == "time" else (2, min(self.H, 3), self.S)
        wl = Workload(device, rng)
        wl.meta.update(rows=rows, H=H)
        wl.input("o", rng.standard_normal((rows, H, S)).astype(np.float32))
        wl.input("z", rng.standard_normal((rows, H, S)).astype(np.float32))
        wl.input("w", rng.uniform(0.5, 1.5, S).astype(np.float32))
        wl.output("y", 4 * rows * H * S)
        return wl

    def record(self, rec, kp, wl):
        fam.dispatch(rec, kp, wl["o"], wl["z"], wl["w"], wl["y"], rows=wl.meta["rows"],
                     H=wl.meta["H"], eps=EPS)

    def verify(self, kp, wl):
        h = wl.host
        want = fam.reference(h["o"], h["z"], h["w"], EPS)
        return compare_rel("y", wl.read("y", np.float32, want.shape), want, TOL)


def cases(info):
    shapes = [(32, 4)] if is_cpu(info) else [(128, 48), (128, 32)]
    return [GatedRmsNormCase(fam.KERNEL, shape_class(S, H), fixed={"S_V": S}, S=S, H=H,
                             bytes=4 * H * S * 4, shape=f"S={S} H={H} rows=1")
            for S, H in shapes]
