"""rms_norm: RMSNorm and its fused forms per row length (the family's shape_class is n only).

Classes: the hidden-size norm of one decode token (plain and with the fused residual add), the
per-head q/k norm of attention, and the L2 norm of GDN's q and k heads."""

from __future__ import annotations

import numpy as np

from ...pipelines import rms_norm as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 50  # lower is tuned first (a budget goes to what matters most)

EPS = 1e-6
RTOL, ATOL = 2e-5, 1e-7  # tests/kernels/test_rms_norm.py uses 1e-5 (2e-5 gated)


class RmsNormCase(Case):
    family = "rms_norm"

    def workload(self, device, rng, purpose):
        tokens, heads, n = (self.tokens, self.heads, self.n) if purpose == "time" else \
            (min(self.tokens, 2), min(self.heads, 3), self.n)
        v = self.variants[0]
        wl = Workload(device, rng)
        wl.meta.update(tokens=tokens, heads=heads)
        shape = (tokens, heads, n)
        wl.input("x", rng.standard_normal(shape).astype(np.float32))
        if v in fam.USES_W:
            wl.input("w", rng.uniform(0.5, 1.5, n).astype(np.float32))
        if v in fam.USES_R:
            wl.input("r", rng.standard_normal(shape).astype(np.float32))
        if v in fam.USES_S:
            wl.output("s", 4 * tokens * heads * n)
        wl.output("y", 4 * tokens * heads * n)
        return wl

    def record(self, rec, kp, wl):
        b = wl.bufs
        fam.dispatch(rec, kp, b["x"], b["y"], self.n, EPS, wl.meta["tokens"], wl.meta["heads"],
                     w=b.get("w"), r=b.get("r"), s=b.get("s"))

    def verify(self, kp, wl):
        h, v = wl.host, kp.variant
        shape = h["x"].shape
        w = h.get("w")
        if v == "l2":
            want, s = fam.reference(h["x"], eps=EPS, mode="l2"), None
        elif v == "gated":
            want, s = fam.reference(h["x"], w, EPS, gate=h["r"]), None
        elif v in fam.USES_S:
            want, s = fam.reference(h["x"], w, EPS, r=h["r"])
        else:
            want, s = fam.reference(h["x"], w, EPS), None
        bad = compare("y", wl.read("y", np.float32, shape), want, RTOL, ATOL)
        if bad is None and s is not None:
            bad = compare("s", wl.read("s", np.float32, shape), s, 0, 0)
        return bad


def _case(n, tokens, heads, variant):
    b = 4 * n * tokens * heads
    nb = b * (2 + (variant in fam.USES_R) + (variant in fam.USES_S)) + 4 * n * (
        variant in fam.USES_W)
    return RmsNormCase(fam.KERNEL, fam.shape_class(n, tokens * heads), (variant,),
                       n=n, tokens=tokens, heads=heads, bytes=nb,
                       shape=f"n={n} tokens={tokens} heads={heads}")


def cases(info):
    if is_cpu(info):
        spec = [(1024, 1, 1, "default"), (1024, 1, 1, "residual"), (64, 1, 8, "default"),
                (32, 1, 4, "l2")]
    else:  # Qwen3.6 27B / 35B-A3B: hidden 5120 / 2048, attention head 256, GDN head 128
        spec = [(5120, 1, 1, "default"), (5120, 1, 1, "residual"), (2048, 1, 1, "default"),
                (2048, 1, 1, "residual"), (256, 1, 24, "default"), (128, 1, 16, "l2")]
    return [_case(*s) for s in spec]
