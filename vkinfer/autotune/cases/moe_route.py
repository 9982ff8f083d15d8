"""moe_route: the router epilogue (gating, top-k, renormalise) per the family's (experts, k)
class, one decode token. The subgroup and shared-memory forms of a gating select identically,
so each gating's two variants form a group (tuning.best_variant picks)."""

from __future__ import annotations

import numpy as np

from ...pipelines import moe_route as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 50  # lower is tuned first (a budget goes to what matters most)

RTOL, ATOL = 2e-6, 1e-7  # tests/kernels/test_moe_route.py


class MoeRouteCase(Case):
    family = "moe_route"

    def workload(self, device, rng, purpose):
        T = self.tokens if purpose == "time" else 3
        E, k = self.E, self.k
        wl = Workload(device, rng)
        wl.meta["T"] = T
        # distinct logits: a tie would make the selection order a matter of rounding
        lg = np.stack([rng.permutation(E) for _ in range(T)]).astype(np.float32) * (4.0 / E)
        lg += rng.uniform(0, 1e-3, lg.shape).astype(np.float32)
        wl.input("logits", lg)
        wl.output("ids", 4 * T * k)
        wl.output("weights", 4 * T * k)
        return wl

    def record(self, rec, kp, wl):
        fam.dispatch(rec, kp, wl["logits"], wl["ids"], wl["weights"], self.E, self.k,
                     wl.meta["T"])

    def verify(self, kp, wl):
        T, k = wl.meta["T"], self.k
        gating = kp.variant.removesuffix("_shmem")
        ids, w = fam.reference(wl.host["logits"], k, gating)
        return (compare("ids", wl.read("ids", np.int32, (T, k)), ids)
                or compare("weights", wl.read("weights", np.float32, (T, k)), w, RTOL, ATOL))


def cases(info):
    sub = fam.has_subgroup_arithmetic(info)
    # the family's class has no token count: one decode token is what is timed
    shapes = [(64, 4, 1)] if is_cpu(info) else [(256, 8, 1), (128, 8, 1)]
    gatings = ("softmax",) if is_cpu(info) else ("softmax", "sigmoid")
    out = []
    for E, k, T in shapes:
        for g in gatings:
            vs = (g, f"{g}_shmem") if sub else (f"{g}_shmem",)
            out.append(MoeRouteCase(fam.ROUTE_KERNEL, fam.shape_class(E, k), vs, E=E, k=k, tokens=T,
                                    bytes=4 * T * (E + 2 * k), shape=f"E={E} k={k} T={T}"))
    return out
