"""conv1d: GDN's causal depthwise convolution (+SiLU) over the q/k/v channels, decode (T=1)
and a prefill chunk. pipelines/conv1d.py has no shape_class(); callers should use this one."""

from __future__ import annotations

import numpy as np

from ...pipelines import conv1d as fam
from ...pipelines import gated_delta_net as kg
from . import Case, Workload, compare_rel, is_cpu

PRIORITY = 50  # lower is tuned first (a budget goes to what matters most)

TOL = 1e-5  # tests/kernels/test_conv1d.py
D_CONV = 4


shape_class = fam.shape_class


class Conv1dCase(Case):
    family = "conv1d"

    def workload(self, device, rng, purpose):
        C, T = (self.C, self.tokens) if purpose == "time" else (min(self.C, 67), min(
            self.tokens, 11))
        wl = Workload(device, rng)
        wl.meta.update(C=C, T=T)
        wl.input("x", rng.standard_normal((T, C)).astype(np.float32))
        wl.input("w", rng.standard_normal((C, D_CONV)).astype(np.float32))
        wl.input("state", rng.standard_normal((D_CONV - 1, C)).astype(np.float32))
        wl.input("ctl", kg.ctl_words(T, np.zeros(1)))
        wl.output("y", 4 * T * C)
        return wl

    def record(self, rec, kp, wl):
        C, T = wl.meta["C"], wl.meta["T"]
        fam.dispatch(rec, kp, wl["x"], wl["w"], wl["state"], wl["y"], wl["ctl"], n_seq=1, C=C,
                     seq_rows=T, x_stride=C)

    def verify(self, kp, wl):
        h, C, T = wl.host, wl.meta["C"], wl.meta["T"]
        y, st, _ = fam.reference(h["x"][None], h["w"], h["state"][None])
        return (compare_rel("y", wl.read("y", np.float32, (T, C)), y[0], TOL)
                or compare_rel("state", wl.read("state", np.float32, (D_CONV - 1, C)), st[0],
                               TOL))


def cases(info):
    # q/k/v channels of the GDN conv: 27B 2·16·128 + 48·128 = 10240; 35B-A3B 8192
    shapes = [(512, 1), (512, 64)] if is_cpu(info) else [(10240, 1), (8192, 1), (10240, 512)]
    return [Conv1dCase(fam.KERNEL, shape_class(C, T), fixed={"D_CONV": D_CONV}, C=C, tokens=T,
                       bytes=4 * C * (2 * T + D_CONV + 2 * (D_CONV - 1)),
                       shape=f"C={C} T={T} d_conv={D_CONV}") for C, T in shapes]
