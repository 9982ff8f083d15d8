"""kv_store: writing one decode token's K and V rows into an F16 or Q8_0
cache, per the family's shape_class (KV heads, head dim). Bit-exact against the reference."""

from __future__ import annotations

import numpy as np

from ...pipelines import flash_attn as fa
from ...pipelines import kv_store as fam
from . import Case, Workload, compare, is_cpu

PRIORITY = 55  # lower is tuned first (a budget goes to what matters most)


class KvStoreCase(Case):
    family = "kv_store"

    def workload(self, device, rng, purpose):
        n, kv_max = (self.tokens, self.kv_max) if purpose == "time" else (3, 37)
        n_kv, hd, kv_type = self.n_kv, self.hd, self.variants[0]
        wl = Workload(device, rng)
        wl.meta.update(n=n, kv_max=kv_max)
        for name in ("k_new", "v_new"):
            wl.input(name, rng.standard_normal((n, n_kv, hd)).astype(np.float32))
        wl.input("pos", rng.permutation(kv_max)[:n].astype(np.int32))
        wl.input("lens", np.array([0, n], np.int32))
        for name in ("k_cache", "v_cache"):
            old = rng.standard_normal((kv_max, n_kv, hd)).astype(np.float32)
            wl.input(name, np.ascontiguousarray(fa.to_cache(old, kv_type)))
        return wl

    def record(self, rec, kp, wl):
        m = wl.meta
        fam.dispatch(rec, kp, wl["k_new"], wl["v_new"], wl["pos"], wl["lens"], wl["k_cache"],
                     wl["v_cache"], n_max=m["n"], n_head_kv=self.n_kv, head_dim=self.hd,
                     kv_len_max=m["kv_max"])

    def verify(self, kp, wl):
        h, kv_type = wl.host, kp.variant
        for c, new in (("k_cache", "k_new"), ("v_cache", "v_new")):
            want = fam.reference(h[c], h[new], h["pos"], kv_type=kv_type)
            bad = compare(c, wl.read(c, want.dtype, want.shape), want)
            if bad:
                return bad
        return None


def cases(info):
    # Qwen3.6 27B: 4 KV heads, 35B-A3B: 2; head dim 256. The family's class has no token
    # count: one decode token is what is timed.
    shapes = [(1, 64)] if is_cpu(info) else [(4, 256), (2, 256)]
    kinds = ("f16",) if is_cpu(info) else fa.KV_TYPES
    kv_max = 256 if is_cpu(info) else 4096
    return [KvStoreCase(fam.KERNEL, fam.shape_class(n_kv, hd), (kv_type,), n_kv=n_kv, hd=hd,
                        tokens=1, kv_max=kv_max,
                        bytes=8 * n_kv * hd + 2 * fa.cache_row_bytes(kv_type, n_kv, hd),
                        shape=f"{kv_type} kv_heads={n_kv} hd={hd} tokens=1")
            for n_kv, hd in shapes for kv_type in kinds]
