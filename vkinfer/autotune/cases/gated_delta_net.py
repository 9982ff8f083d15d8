"""gated_delta_net: the GDN recurrence per (head size, value heads) class, decode (T=1) timed.

Every reduction variant the device runs is tuned (WG × LANES, S_V fixed by the class); the
variants have the same semantics, so `tuning.best_variant()` picks among them. The untuned
baseline of each variant is what `choose()` picks without a database entry.
"""

from __future__ import annotations

import numpy as np

from ...pipelines import gated_delta_net as fam
from . import Case, Workload, compare_rel, is_cpu

PRIORITY = 10  # lower is tuned first (a budget goes to what matters most)

TOL = 1e-5  # as tests/kernels/test_gated_delta_net.py: f32 recurrence vs a float64 oracle

# (H_v, H_k, S) per model: shared/reference shapes (Qwen3.6-27B, Qwen3.6-35B-A3B)
GPU_SHAPES = ((48, 16, 128), (32, 16, 128))
CPU_SHAPES = ((4, 2, 32),)  # lavapipe JIT-compiles each candidate: S=128 costs ~1 s apiece


class GDNCase(Case):
    family = "gated_delta_net"

    def defaults(self, variant, info):
        try:
            _, vals = fam.choose(info, self.S, variant)
        except Exception:  # no valid default for this variant: the Kernel's defaults
            return {}
        return {k: v for k, v in vals.items() if k != "S_V"}

    def workload(self, device, rng, purpose):
        S = self.S
        if purpose == "time":
            T, H, H_k = self.tokens, self.H, self.H_k
        else:  # two tokens through a grouped head map: the state update and the output
            T, H, H_k = 2, 2 * max(1, min(self.H_k, 2)), max(1, min(self.H_k, 2))
        wl = Workload(device, rng)
        wl.meta.update(T=T, H=H, H_k=H_k)
        wl.input("q", rng.standard_normal((T, H_k, S)).astype(np.float32))
        wl.input("k", rng.standard_normal((T, H_k, S)).astype(np.float32))
        wl.input("v", rng.standard_normal((T, H, S)).astype(np.float32))
        wl.input("g", (-rng.uniform(0.01, 1.0, (T, H))).astype(np.float32))
        wl.input("beta", rng.uniform(0.05, 1.0, (T, H)).astype(np.float32))
        wl.input("state", (0.3 * rng.standard_normal((H, S, S))).astype(np.float32))
        wl.input("ctl", fam.ctl_words(T, np.zeros(1)))
        wl.output("out", 4 * T * H * S)
        return wl

    def record(self, rec, kp, wl):
        m = wl.meta
        fam.dispatch(rec, kp, wl["q"], wl["k"], wl["v"], wl["g"], wl["beta"], wl["state"],
                     wl["out"], wl["ctl"], n_seq=1, H=m["H"], H_k=m["H_k"], seq_rows=m["T"],
                     qk_stride=m["H_k"] * self.S, v_stride=m["H"] * self.S, n_snap=0)

    def verify(self, kp, wl):
        h, m, S = wl.host, wl.meta, self.S
        out, st, _ = fam.reference(h["q"][None], h["k"][None], h["v"][None], h["g"][None],
                                   h["beta"][None], h["state"][None])
        return (compare_rel("out", wl.read("out", np.float32, (m["T"], m["H"], S)), out[0], TOL)
                or compare_rel("state", wl.read("state", np.float32, (m["H"], S, S)), st[0],
                               TOL))


def cases(info):
    out = []
    for H, H_k, S in (CPU_SHAPES if is_cpu(info) else GPU_SHAPES):
        T = 1
        state_bytes = H * S * S * 4
        out.append(GDNCase(
            fam.KERNEL, fam.shape_class(S, H), tuple(fam.KERNEL.variants),
            fixed={"S_V": S}, S=S, H=H, H_k=H_k, tokens=T,
            bytes=2 * state_bytes + 4 * T * (2 * H_k * S + 2 * H * S + 2 * H),
            shape=f"S={S} H_v={H} H_k={H_k} T={T}"))
    return out
