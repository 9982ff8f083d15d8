"""mul_mat_id: the MoE expert matvec (decode: one token × k routed experts) per weight type and
the family's shape_class(rows, K, n_slots, weighted): the gate/up projections (shared input,
one output per slot) and the down projection with the fused weighted sum. Subgroup and
shared-memory reductions form a group, as for mul_mat_vec."""

from __future__ import annotations

import numpy as np

from ...gguf import quants
from ...pipelines import mul_mat_id as fam
from ...pipelines import mul_mat_vec as mv
from ...pipelines.mul_mat_vec import error_bound
from . import Case, Workload, compare, is_cpu

PRIORITY = 30  # lower is tuned first (a budget goes to what matters most)


class MatVecIdCase(Case):
    def derive(self, values):
        """CHUNK follows UNROLL as in mul_mat_id.pipeline() (mul_mat_vec.default_chunk)."""
        v = dict(values)
        v["CHUNK"] = mv.default_chunk(self.w_type, v["NUM_COLS"], v["UNROLL"], self.K, v["WG"],
                                      v["XPREFETCH"])
        return v

    family = "mul_mat_id"

    def workload(self, device, rng, purpose):
        t, E, k = self.w_type, self.n_expert, self.k
        if purpose == "time":
            rows, K, T = self.rows, self.K, self.tokens
        else:
            u = max(quants.type_info(t).block_size, mv.unit_elems(t))
            # a few experts keep the check cheap, but never fewer than the k each token picks
            rows, K, T, E = 37, u * max(1, 256 // u) if u <= 256 else u, 2, min(E, max(6, k))
        wl = Workload(device, rng)
        wl.meta.update(rows=rows, K=K, T=T, E=E)
        w = quants.random_blocks(t, E * rows, K, rng).reshape(E, rows, -1)
        if purpose == "check":
            wl.meta["w3"] = w
        wl.input("w", w, size=-(-w.nbytes // 4) * 4, keep=purpose == "check")
        shape = (T, k, K) if self.per_slot else (T, K)
        wl.input("x", rng.standard_normal(shape).astype(np.float32))
        ids = np.stack([rng.permutation(E)[:k] for _ in range(T)]).astype(np.int32)
        wl.input("ids", ids)
        if self.weighted:
            wl.input("weights", rng.uniform(0.05, 0.5, (T, k)).astype(np.float32))
            wl.output("y", 4 * T * rows)
        else:
            wl.output("y", 4 * T * k * rows)
        return wl

    def record(self, rec, kp, wl):
        m = wl.meta
        fam.dispatch(rec, kp, wl["w"], wl["x"], wl["ids"], wl["y"], w_type=self.w_type,
                     rows=m["rows"], K=m["K"], n_expert=m["E"], n_slots=self.k, tokens=m["T"],
                     weights=wl.bufs.get("weights"), per_slot_input=self.per_slot)

    def verify(self, kp, wl):
        m, h = wl.meta, wl.host
        w = quants.dequantize(m["w3"], self.w_type).astype(np.float64)
        x = h["x"].astype(np.float64)
        xs = x if self.per_slot else np.broadcast_to(x[:, None, :], (m["T"], self.k, m["K"]))
        ids = h["ids"].astype(np.int64)
        we = w[ids]  # [T, k, rows, K]
        ref = np.einsum("tjrk,tjk->tjr", we, xs)
        tol = np.empty_like(ref)  # mul_mat_vec's bound of each (t, j)
        for t in range(m["T"]):
            for j in range(self.k):
                tol[t, j] = error_bound(m["w3"][ids[t, j]], self.w_type, xs[t, j][None])[0]
        if self.weighted:
            wt = h["weights"].astype(np.float64)
            ref = np.einsum("tj,tjr->tr", wt, ref)
            tol = np.einsum("tj,tjr->tr", wt, tol) + 1e-6 * np.abs(ref)
            got = wl.read("y", np.float32, (m["T"], m["rows"]))
        else:
            got = wl.read("y", np.float32, (m["T"], self.k, m["rows"]))
        got = got.astype(np.float64)
        if not np.isfinite(got).all():
            return "y: not finite"
        over = np.abs(got - ref) > tol + 1e-30
        if over.any():
            return compare("y", got, ref, 0, 0) or "y: beyond the bound"
        return None


def cases(info):
    from .mul_mat_vec import variants_for

    if is_cpu(info):
        # (type, rows, K, experts, k, weighted, per-slot input)
        plan = [(mv.T.Q4_K, 128, 256, 16, 4, False, False),
                (mv.T.Q6_K, 256, 128 * 2, 16, 4, True, True)]
        sweep = {"WG": (32, 64), "NR": (1, 2), "UNROLL": (1, 2)}
    else:  # Qwen3.6-35B-A3B: 256 experts, 8 routed, expert FFN 512, hidden 2048
        plan = [(mv.T.Q4_K, 512, 2048, 256, 8, False, False),
                (mv.T.Q6_K, 2048, 512, 256, 8, True, True),
                (mv.T.Q8_0, 512, 2048, 256, 8, False, False),
                (mv.T.Q8_0, 2048, 512, 256, 8, True, True)]
        # CHUNK is derived (derive()), not swept: the tunables' full product is too large
        sweep = {"WG": (32, 64, 128, 256), "NR": (1, 2, 4), "UNROLL": (1, 2, 4),
                 "PREFETCH": (False, True)}
    out = []
    for t, rows, K, E, k, weighted, per_slot in plan:
        out.append(MatVecIdCase(
            fam.KERNEL, fam.shape_class(rows, K, k, weighted), variants_for(info, t),
            fixed={"WEIGHTED": weighted, "ACCUMULATE": False}, sweep=sweep, w_type=t,
            rows=rows, K=K, n_expert=E, k=k, tokens=1, weighted=weighted, per_slot=per_slot,
            bytes=k * rows * quants.row_bytes(t, K) + 4 * (k * K + k * rows),
            shape=f"{mv.type_name(t)} {rows}x{K} experts={E} k={k}"
                  f"{' weighted' if weighted else ''}"))
    return out
