"""get_rows: the embedding lookup of one decode token (and a prefill chunk) per weight type."""

from __future__ import annotations

import numpy as np

from ...gguf import quants
from ...pipelines import get_rows as fam
from ...pipelines import mul_mat_vec as mv
from . import Case, Workload, compare, is_cpu

PRIORITY = 60  # lower is tuned first (a budget goes to what matters most)


shape_class = fam.shape_class


class GetRowsCase(Case):
    family = "get_rows"

    def workload(self, device, rng, purpose):
        t = self.w_type
        rows, K, n = (self.rows, self.K, self.n_ids) if purpose == "time" else (
            23, min(self.K, 2048), 5)
        wl = Workload(device, rng)
        rb = quants.row_bytes(t, K)
        w = quants.random_blocks(t, rows, K, rng)
        wl.meta.update(rows=rows, K=K, n=n, row_bytes=rb)
        if purpose == "check":
            wl.meta["w_rows"] = w
        wl.input("w", w, size=-(-w.nbytes // 4) * 4, keep=purpose == "check")
        wl.input("ids", rng.integers(0, rows, n).astype(np.int32))
        wl.output("out", 4 * n * K)
        return wl

    def record(self, rec, kp, wl):
        m = wl.meta
        fam.dispatch(rec, kp, wl["w"], wl["ids"], wl["out"], m["rows"], m["K"], m["row_bytes"],
                     m["n"])

    def verify(self, kp, wl):
        m = wl.meta
        want = fam.reference(m["w_rows"], self.w_type, wl.host["ids"])
        return compare("out", wl.read("out", np.float32, want.shape), want, 0, 0)


def cases(info):
    if is_cpu(info):
        plan = [(mv.T.Q4_K, 1000, 1024, 1)]
    else:  # Qwen3.6: vocab 248320, hidden 5120 / 2048; token embedding Q4_K
        plan = [(t, 248320, K, n) for t in (mv.T.Q4_K, mv.T.Q6_K, mv.T.Q8_0)
                for K in (5120, 2048) for n in (1, 512)]
    return [GetRowsCase(fam.KERNEL, shape_class(K, n), (mv.type_name(t),), w_type=t, rows=r,
                        K=K, n_ids=n, bytes=n * (quants.row_bytes(t, K) + 4 * K),
                        shape=f"{mv.type_name(t)} K={K} ids={n}")
            for t, r, K, n in plan]
