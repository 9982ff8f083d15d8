"""kv_store: write new K and V rows (float32) into a layer's KV cache at positions read from a
device buffer (shaders/kv_store.comp), as F16 or GGUF Q8_0 blocks — the cache layout of
pipelines/flash_attn.py.

Rounding matches the numpy reference bit for bit on every device: f32 -> f16 round-to-nearest-
even (numpy astype), Q8_0 as ggml's quantize_row_q8_0_ref (the gguf package's quantizer, which
`reference()` calls). Positions come from a per-step buffer (R3); tokens t >= lens[1] and
positions outside the cache are skipped, so one recording serves every step.
"""

from __future__ import annotations

import numpy as np

from .flash_attn import KV_TYPES, cache_row_bytes, to_cache
from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require


def _contract(spec, info):
    wg = spec["WG"]
    require(0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"kv_store: WG={wg} exceeds the device's workgroup limits")


KERNEL = Kernel(
    stem="kv_store",
    bindings=(Binding("k_new", "r", "float[n_max, n_head_kv, head_dim]"),
              Binding("v_new", "r", "float[n_max, n_head_kv, head_dim]"),
              Binding("pos", "r", "int32[n_max] cache positions (per step)"),
              Binding("lens", "r", "int32[2] {kv_len, n} (per step; n new tokens)"),
              Binding("k_cache", "w", "F16 or Q8_0 [kv_len_max, n_head_kv, head_dim]"),
              Binding("v_cache", "w", "F16 or Q8_0 [kv_len_max, n_head_kv, head_dim]")),
    push=np.dtype([("n_max", "<u4"), ("n_head_kv", "<u4"), ("head_dim", "<u4"),
                   ("kv_len_max", "<u4")]),
    spec=(SpecConst("WG", 0, 64, choices=(32, 64, 128, 256)),),
    variants={"f16": Variant({}, requires=("storage16",)),
              "q8_0": Variant({"KV_Q8_0": 1}, requires=("storage16",))},
    contract=_contract,
    doc="store K/V rows into an F16 or Q8_0 cache",
)


def shape_class(n_head_kv: int, head_dim: int) -> str:
    return f"kv{n_head_kv}-hd{head_dim}"


def dispatch(rec, kp, k_new, v_new, pos, lens, k_cache, v_cache, *, n_max: int, n_head_kv: int,
             head_dim: int, kv_len_max: int):
    """Record the store of up to n_max tokens (the count is lens[1] at run time)."""
    require(head_dim % 32 == 0, f"kv_store: head_dim={head_dim} must be a multiple of 32")
    groups = n_max * n_head_kv * head_dim // 32
    kp.record(rec, [k_new, v_new, pos, lens, k_cache, v_cache],
              (ceil_div(groups, kp.spec["WG"]),), n_max=n_max, n_head_kv=n_head_kv,
              head_dim=head_dim, kv_len_max=kv_len_max)


def reference(cache, new, pos, n: int | None = None, kv_type: str = "f16") -> np.ndarray:
    """The cache after storing `new` [n_max, n_head_kv, head_dim] rows at `pos`: a copy of
    `cache` (float16 [kv, n_kv, hd] or uint8 [kv, n_kv * hd / 32 * 34]... any shape whose first
    axis is the position) with rows replaced."""
    if kv_type not in KV_TYPES:
        raise ValueError(f"kv_store: kv_type {kv_type!r} not in {KV_TYPES}")
    new = np.asarray(new, np.float32)
    n = new.shape[0] if n is None else n
    out = np.array(cache, copy=True)
    rows = to_cache(new[:n], kv_type)
    row_bytes = cache_row_bytes(kv_type, new.shape[1], new.shape[2])
    flat = out.reshape(out.shape[0], -1).view(np.uint8)
    assert flat.shape[1] == row_bytes, (flat.shape, row_bytes)
    src = np.ascontiguousarray(rows).view(np.uint8).reshape(n, row_bytes)
    for t in range(n):
        p = int(pos[t])
        if 0 <= p < out.shape[0]:
            flat[p] = src[t]
    return out
