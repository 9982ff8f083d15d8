"""mul_mat: the tiled prefill matrix kernel per weight type at prefill sizes (the family's
shape_class(rows, K, ncols)): sweeps the tile BM × BN × TM × TN × SLAB, WG derived from the tile
as `mul_mat.pipeline()` does. Numerics equal mul_mat_vec's, so the same bound checks it."""

from __future__ import annotations

import numpy as np

from ...gguf import quants
from ...pipelines import mul_mat as fam
from ...pipelines import mul_mat_vec as mv
from . import Case, Workload, is_cpu
from .mul_mat_vec import _order, check_matvec

PRIORITY = 40  # lower is tuned first (a budget goes to what matters most)


class MatMulCase(Case):
    family = "mul_mat"

    def derive(self, values):
        v = dict(values)
        v["WG"] = fam.LANES * (v["BM"] // max(v["TM"], 1)) * (v["BN"] // max(v["TN"], 1))
        return v

    def workload(self, device, rng, purpose):
        t = self.w_type
        if purpose == "time":
            rows, K, n = self.rows, self.K, self.ncols
        else:  # partial tiles in both directions
            u = max(quants.type_info(t).block_size, mv.unit_elems(t))
            rows, K, n = 37, u * max(1, 512 // u) if u <= 512 else u, 19
        rb = quants.row_bytes(t, K)
        wl = Workload(device, rng)
        wl.meta.update(rows=rows, K=K, n=n, row_bytes=rb)
        w = quants.random_blocks(t, rows, K, rng)
        if purpose == "check":
            wl.meta["w_rows"] = w
        wl.input("w", w, size=-(-w.nbytes // 4) * 4, keep=purpose == "check")
        wl.input("x", rng.standard_normal((n, K)).astype(np.float32))
        wl.output("y", 4 * n * rows)
        return wl

    def record(self, rec, kp, wl):
        m = wl.meta
        fam.dispatch(rec, kp, wl["w"], wl["x"], wl["y"], m["rows"], m["K"], m["row_bytes"],
                     m["n"])

    def verify(self, kp, wl):
        m = wl.meta
        y = wl.read("y", np.float32, (m["n"], m["rows"]))
        return check_matvec("y", y, m["w_rows"], self.w_type, wl.host["x"])


def cases(info):
    if is_cpu(info):
        plan = [(mv.T.Q4_K, 256, 512, 64), (mv.T.Q8_0, 256, 512, 64)]
        sweep = {"BM": (32, 64), "BN": (16, 32), "TM": (4, 8), "TN": (4, 8), "SLAB": (8,)}
    else:  # a 512-token prefill chunk through the Qwen3.6-27B projections and 4096 x 4096
        main = [(5120, 5120), (17408, 5120), (5120, 17408), (4096, 4096)]
        plan = [(t, r, k, 512) for t in _order(mv.TYPES)[:5] for r, k in main]
        sweep = None
    return [MatMulCase(fam.KERNEL, fam.shape_class(r, k, n), (mv.type_name(t),),
                       fixed={"ADD_RESIDUAL": False}, sweep=sweep, w_type=t, rows=r, K=k,
                       ncols=n, bytes=r * quants.row_bytes(t, k) + 4 * n * (k + r),
                       shape=f"{mv.type_name(t)} {r}x{k} cols={n}")
            for t, r, k, n in plan]
