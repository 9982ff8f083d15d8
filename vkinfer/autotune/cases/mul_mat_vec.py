"""mul_mat_vec: the decode / MTP-verify matrix kernel, per weight type × columns (1..8) ×
rows/K class — the family's shape_class(rows, K, ncols). Every (type, class, columns) unit sweeps
WG × NR × UNROLL for both reductions of the type (subgroup shuffles and shared memory; same
numbers, so they form a group and `tuning.best_variant()` picks).

Units run most used first (Q4_K, Q6_K, Q8_0, Q5_K, F16, then the other types), and within a type
class by class, 1 column first, so a budget spends itself on what decode uses most. The baseline
is mul_mat_vec.default_spec (what pipeline() uses untuned); CHUNK is derived from each
candidate as pipeline() derives it (default_chunk), not swept. GPU classes
are the Qwen3.6-27B projections (hidden 5120, FFN 17408) plus 4096 × 4096 and the Q6_K output
head (248320 × 5120); a CPU device gets one small class with a narrow sweep.
"""

from __future__ import annotations

import numpy as np

from ...gguf import quants
from ...pipelines import mul_mat_vec as fam
from . import Case, Workload, is_cpu

PRIORITY = 0  # tuned first: decode streams every weight through it

def check_matvec(name: str, y, w_raw, t, x, residual=None) -> str | None:
    """tests/kernels/test_mul_mat_vec.py's bound: mul_mat_vec.error_bound, the float32 summation
    error of the canonical reduction."""
    w = quants.dequantize(np.asarray(w_raw, np.uint8), t).astype(np.float64)
    x64 = np.atleast_2d(np.asarray(x, np.float32)).astype(np.float64)
    ref = x64 @ w.T
    if residual is not None:
        ref = ref + residual
    tol = fam.error_bound(w_raw, t, x, residual)
    y = np.asarray(y, np.float64).reshape(ref.shape)
    if not np.isfinite(y).all():
        return f"{name}: {int((~np.isfinite(y)).sum())} of {y.size} not finite"
    ratio = np.abs(y - ref) / tol
    if (ratio > 1).any():
        return f"{name}: {int((ratio > 1).sum())} of {y.size} beyond the bound " \
               f"(worst {float(ratio.max()):.3g}x)"
    return None


class MatVecCase(Case):
    family = "mul_mat_vec"

    def share_key(self):
        return (self.w_type, self.rows, self.K)  # every column count reads the same matrix

    def defaults(self, variant, info):
        return fam.default_spec(info, self.w_type, self.ncols, self.rows, self.K)

    def derive(self, values):
        """CHUNK follows UNROLL, WG and XPREFETCH as in mul_mat_vec.pipeline() (default_chunk):
        it is not swept."""
        v = dict(values)
        v["CHUNK"] = fam.default_chunk(self.w_type, self.ncols, v["UNROLL"], self.K, v["WG"],
                                       v["XPREFETCH"])
        return v

    def workload(self, device, rng, purpose):
        t, nc = self.w_type, fam.MAX_COLS  # x and y for the most columns; a case uses ncols
        if purpose == "time":
            rows, K = self.rows, self.K
        else:  # rows not a multiple of any workgroup's rows; K a few units per lane
            u = max(quants.type_info(t).block_size, fam.unit_elems(t))
            rows, K = 37, u * max(1, 512 // u) if u <= 512 else u
        wl = Workload(device, rng)
        rb = quants.row_bytes(t, K)
        wl.meta.update(rows=rows, K=K, row_bytes=rb)
        w = quants.random_blocks(t, rows, K, rng)
        check = purpose == "check"
        wl.input("w", w, size=-(-w.nbytes // 4) * 4, keep=check)  # whole words: see dispatch
        if check:
            wl.meta["w_rows"] = w  # (rows, row_bytes) for the reference
        wl.input("x", rng.standard_normal((nc, K)).astype(np.float32))
        wl.output("y", 4 * nc * rows)
        return wl

    def record(self, rec, kp, wl):
        m = wl.meta
        fam.dispatch(rec, kp, wl["w"], wl["x"], wl["y"], m["rows"], m["K"], m["row_bytes"])

    def verify(self, kp, wl):
        m, nc = wl.meta, self.ncols
        y = wl.read("y", np.float32, (fam.MAX_COLS, m["rows"]))
        bad = check_matvec("y", y[:nc], m["w_rows"], self.w_type, wl.host["x"][:nc])
        if bad is None and nc < fam.MAX_COLS and not np.isnan(y[nc:]).all():
            bad = f"y: wrote columns beyond NUM_COLS={nc}"  # reset() filled them with NaN
        return bad


def _order(types):
    first = [fam.T.Q4_K, fam.T.Q6_K, fam.T.Q8_0, fam.T.Q5_K, fam.T.F16]
    return [t for t in first if t in types] + [t for t in types if t not in first]


def variants_for(info, w_type) -> tuple:
    """The type's reductions this device can try: both when it has subgroup shuffles of at
    least 8 lanes, else only the shared-memory one."""
    n = fam.type_name(w_type)
    sub = n in fam.KERNEL.supported_variants(info) and info.min_subgroup_size >= fam.LANES
    return (n, f"{n}_shmem") if sub else (f"{n}_shmem",)


def cases(info):
    cpu = is_cpu(info)
    if cpu:
        # lavapipe: one small class, a narrow sweep; all 8 column counts for Q4_K
        plan = [(fam.T.Q4_K, (512, 1024), range(1, 9)), (fam.T.Q8_0, (512, 1024), (1, 8)),
                (fam.T.Q6_K, (512, 1024), (1,)), (fam.T.F16, (512, 1024), (1,))]
        sweep = {"WG": (32, 64), "NR": (1, 2), "UNROLL": (1, 2)}
    else:
        main = [(5120, 5120), (17408, 5120), (5120, 17408), (4096, 4096)]
        plan = [(t, rk, range(1, 9)) for t in _order(fam.TYPES)[:5] for rk in main]
        plan.insert(3 * 4, (fam.T.Q6_K, (248320, 5120), range(1, 9)))  # the output head
        plan += [(t, (4096, 4096), range(1, 9)) for t in _order(fam.TYPES)[5:]]
        # CHUNK is derived (derive()), not swept: the tunables' full product is too large
        sweep = {"WG": (64, 128, 256), "NR": (1, 2, 4), "UNROLL": (1, 2),
                 "PREFETCH": (False, True), "XPREFETCH": (False, True)}
    out = []
    for t, (rows, K), cols in plan:
        for nc in cols:
            nbytes = rows * quants.row_bytes(t, K) + 4 * nc * (K + rows)
            out.append(MatVecCase(
                fam.KERNEL, fam.shape_class(rows, K, nc), variants_for(info, t),
                fixed={"NUM_COLS": nc, "ADD_RESIDUAL": False}, sweep=sweep, w_type=t,
                rows=rows, K=K, ncols=nc, bytes=nbytes,
                shape=f"{fam.type_name(t)} {rows}x{K} cols={nc}"))
    return out
