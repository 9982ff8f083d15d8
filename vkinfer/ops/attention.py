"""ops.attention: flash attention over a KV cache and the KV-cache store, numpy in and out,
computed by shaders/flash_attn.comp (+ flash_attn_reduce.comp) and shaders/kv_store.comp.

Cache arguments take either form:
  * float arrays [kv_len_max, n_head_kv, head_dim] (float32/float64): converted on the host to
    the `kv_type` cache exactly as kv_store would write them (F16: round to nearest even; Q8_0:
    ggml's reference quantizer), then uploaded;
  * raw cache arrays: float16 [kv_len_max, n_head_kv, head_dim] (an F16 cache) or uint8
    [kv_len_max, n_head_kv, head_dim / 32 * 34] (a Q8_0 cache, GGUF blocks); kv_type is then
    taken from the dtype.
"""

from __future__ import annotations

import numpy as np

from ..pipelines import flash_attn as fa
from ..pipelines import kv_store as ks
from ._base import op_session, run

__all__ = ["as_cache", "flash_attn", "kv_store"]


def as_cache(x, kv_type: str = "f16", head_dim: int | None = None) -> tuple[np.ndarray, str]:
    """(raw cache array, kv_type) from a float array or a raw cache (see module docstring)."""
    x = np.asarray(x)
    if x.dtype == np.float16:
        return np.ascontiguousarray(x), "f16"
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x), "q8_0"
    if x.dtype.kind == "f":
        return np.ascontiguousarray(fa.to_cache(x, kv_type)), kv_type
    raise TypeError(f"cache arrays are float (to convert), float16 (F16) or uint8 (Q8_0); "
                    f"got {x.dtype}")


def flash_attn(q, k_cache, v_cache, q_pos, kv_len: int | None = None, scale: float | None = None,
               softcap: float = 0.0, window: int = 0, kv_type: str = "f16", *,
               mode: str = "auto", n_q_max: int | None = None, n_head_kv: int | None = None,
               reduce: str | None = None, device=None, **spec) -> np.ndarray:
    """Attention of q [n_q, n_head, head_dim] (float32) at absolute positions q_pos [n_q] over
    the first kv_len positions (default: all) of the K/V cache; returns float32
    [n_q, n_head, head_dim]. Causal (a query attends positions <= its own), optional sliding
    `window` (positions > q_pos - window) and logit `softcap`; scale defaults to 1/sqrt(hd).

    mode: "split" (split-K + reduce; decode/verify), "direct" (one pass; prefill) or "auto"
    (split up to 16 tokens). n_q_max sizes the grid (>= n_q; the extra rows exit early).
    reduce: "subgroup"/"shmem" forces the lane-reduction variant. **spec: specialization
    overrides (WG, BR, VE, PREFETCH; the numerics: BC, DL and the chunk rule CHUNK, CHUNK_MAX,
    NCHUNK)."""
    q = np.ascontiguousarray(q, np.float32)
    n_q, n_head, hd = q.shape
    kc, kv_type = as_cache(k_cache, kv_type, hd)
    vc, vt = as_cache(v_cache, kv_type, hd)
    if vt != kv_type:
        raise ValueError(f"K cache is {kv_type} but V cache is {vt}")
    kv_len_max = kc.shape[0]
    if n_head_kv is None:
        n_head_kv = kc.shape[1] if kc.ndim >= 3 else None
    if n_head_kv is None:
        raise ValueError("pass n_head_kv for a 2-D raw cache")
    fa.check_shapes(n_head, n_head_kv, hd, kv_type)
    kv_len = kv_len_max if kv_len is None else int(kv_len)
    q_pos = np.asarray(q_pos, np.int32).reshape(-1)
    if q_pos.size != n_q:
        raise ValueError(f"q_pos has {q_pos.size} entries for {n_q} query tokens")
    n_q_max = max(n_q, n_q_max or n_q)
    if mode == "auto":
        mode = "split" if n_q <= fa.MAX_SPLIT_ROWS else "direct"
    if mode not in ("split", "direct"):
        raise ValueError(f"mode {mode!r}: 'split', 'direct' or 'auto'")
    split = mode == "split"
    with op_session(device) as (dev, t):
        g = n_head // n_head_kv
        kp, kr = fa.pipelines(dev, hd, kv_type, split=split, group=g, rows=n_q_max * g,
                              reduce=reduce, **spec)
        qbuf = np.zeros((n_q_max, n_head, hd), np.float32)
        qbuf[:n_q] = q
        pos = np.zeros(n_q_max, np.int32)
        pos[:n_q] = q_pos
        bq, bk, bv = t.upload(qbuf), t.upload(kc), t.upload(vc)
        bpos, blens = t.upload(pos), t.upload(np.array([kv_len, n_q], np.int32))
        bout = t.empty(n_q_max * n_head * hd * 4, fill=0)
        po = pm = None
        if split:
            ob, mb = fa.partial_nbytes(kp, n_q_max, n_head, kv_len_max)
            po, pm = t.empty(ob), t.empty(mb)
        run(dev, lambda rec: fa.dispatch(
            rec, kp, kr, bq, bk, bv, bpos, blens, bout, po, pm, n_q_max=n_q_max, n_head=n_head,
            n_head_kv=n_head_kv, kv_len_max=kv_len_max, scale=scale, softcap=softcap,
            window=window))
        return bout.read(np.float32, (n_q_max, n_head, hd))[:n_q].copy()


def kv_store(k_cache, v_cache, k_new, v_new, pos, n: int | None = None, kv_type: str = "f16",
             *, device=None, **spec) -> tuple[np.ndarray, np.ndarray]:
    """Store k_new, v_new (float32 [n_max, n_head_kv, head_dim]) at cache positions pos [n_max]
    (the first n tokens; default all) into copies of the caches (float arrays are converted
    first, see module docstring); returns the new raw caches (float16 or uint8 arrays)."""
    k_new = np.ascontiguousarray(k_new, np.float32)
    v_new = np.ascontiguousarray(v_new, np.float32)
    n_max, n_head_kv, hd = k_new.shape
    kc, kv_type = as_cache(k_cache, kv_type, hd)
    vc, _ = as_cache(v_cache, kv_type, hd)
    n = n_max if n is None else int(n)
    pos = np.asarray(pos, np.int32).reshape(-1)
    with op_session(device) as (dev, t):
        kp = ks.KERNEL.pipeline(dev, kv_type, shape_class=ks.shape_class(n_head_kv, hd), **spec)
        bkn, bvn, bpos = t.upload(k_new), t.upload(v_new), t.upload(pos)
        blens = t.upload(np.array([0, n], np.int32))
        bk, bv = t.upload(kc), t.upload(vc)
        run(dev, lambda rec: ks.dispatch(rec, kp, bkn, bvn, bpos, blens, bk, bv, n_max=n_max,
                                         n_head_kv=n_head_kv, head_dim=hd,
                                         kv_len_max=kc.shape[0]))
        return (bk.read(kc.dtype, kc.shape).copy(), bv.read(vc.dtype, vc.shape).copy())
