"""flash_attn: attention of query rows over a layer's KV cache (shaders/flash_attn.comp and
shaders/flash_attn_reduce.comp), FlashAttention-2's online softmax (Dao, arXiv:2307.08691) with
a split over the KV length and a reduce pass (llama.cpp's split-K, reference/llamacpp-facts.md
§3.8), GQA folding, causal mask from per-step positions, optional sliding window (Gemma 3) and
logit softcap (Gemma 2).

Layouts (owner of the convention):
  * q, out: float32 [n_q, n_head, head_dim]. Query head h uses KV head h // (n_head / n_head_kv).
  * K and V cache of one layer: [kv_len_max, n_head_kv, head_dim] in F16, or in Q8_0 as GGUF
    blocks (head_dim / 32 blocks of {fp16 d, int8 qs[32]} per (position, head) row).
  * q_pos: int32[n_q] absolute positions; lens: int32[2] = {kv_len, n_q}. Both are written per
    step (R3); push constants only hold maxima and per-layer constants.

Two modes of the same shader (spec constant SPLIT):
  * split (decode, verify: 1..16 tokens): one workgroup per (KV span, row tile, KV head) writes
    (m, l, unnormalised O) per chunk; flash_attn_reduce folds them. Fills a GPU at any context.
  * direct (prefill): each workgroup walks its chunks and folds them in registers.

The split rule: a row whose valid positions end at n - 1 cuts the KV positions into chunks of
chunk_size(n) absolute positions (the smallest power-of-two multiple of CHUNK giving at most
NCHUNK chunks, capped at CHUNK_MAX): many small chunks at short context (parallelism), few large
ones at long context (partial-result traffic). It is a function of the row's own position, not
of kv_len or of the other rows. Chunks are folded in order with the same code in both modes.
Every masked score is an exact no-op, so a row's bits depend only on its own query, its own
valid KV range and the cache (R5): not on how many rows share the dispatch, not on
BR/WG/VE/SPLIT, not on kv_len beyond its position. Decode of the token at position p
(kv_len = p + 1), verify of p..p+K (kv_len = p + K + 1) and prefill give the same bits for that
token, provided the pipelines share the numerics-defining constants NUMERIC_SPEC (HD, BC, CHUNK,
CHUNK_MAX, NCHUNK, DL); `pipelines()` takes them from one tuning class per layer shape.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import ContractError
from ..gguf.quants import type_info
from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require

KV_TYPES = ("f16", "q8_0")
NUMERIC_SPEC = ("HD", "BC", "CHUNK", "CHUNK_MAX", "NCHUNK", "DL")
MAX_SPLIT_ROWS = 16  # query tokens up to which ops/tests use split mode by default


def _q8_0():
    return type_info("Q8_0")


def cache_row_bytes(kv_type: str, n_head_kv: int, head_dim: int) -> int:
    """Bytes of one cache position (all KV heads) for K or V."""
    if kv_type == "f16":
        return n_head_kv * head_dim * 2
    if kv_type == "q8_0":
        qi = _q8_0()
        if head_dim % qi.block_size:
            raise ContractError(f"flash_attn: Q8_0 cache needs head_dim % {qi.block_size} == 0, "
                                f"got {head_dim}")
        return n_head_kv * head_dim // qi.block_size * qi.type_size
    raise ValueError(f"flash_attn: kv_type {kv_type!r} not in {KV_TYPES}")


def cache_nbytes(kv_type: str, kv_len_max: int, n_head_kv: int, head_dim: int) -> int:
    return kv_len_max * cache_row_bytes(kv_type, n_head_kv, head_dim)


# --- specs -----------------------------------------------------------------------------------

def _pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def shared_bytes(spec: dict, variant: str) -> int:
    """Shared memory of flash_attn.comp: the staged K-or-V block, the query rows, the block's
    scores, per-row state, and the exchange buffer of the shared-memory variant."""
    br, hd, bc, wg = spec["BR"], spec["HD"], spec["BC"], spec["WG"]
    if variant.startswith("q8_0"):
        row = -(-(hd // 32 * 34) // 4) * 4
    else:
        row = hd * 2
    n = bc * row + br * hd * 4 + br * bc * 4 + 7 * br * 4
    if variant.endswith("_shmem"):
        n += 2 * wg * 4
    return n


def chunk_size(spec: dict, n: int) -> int:
    """Chunk size of a row whose valid positions end at n - 1 (fa_chunk in
    shaders/common/flash_attn.glsl): the smallest power-of-two multiple of CHUNK giving at most
    NCHUNK chunks, capped at CHUNK_MAX."""
    want = -(-max(int(n), 1) // spec["NCHUNK"])
    c = spec["CHUNK"]
    while c < want and c < spec["CHUNK_MAX"]:
        c *= 2
    return c


def _contract(spec, info):
    wg, hd, br, bc, chunk, dl, ve = (spec[k] for k in ("WG", "HD", "BR", "BC", "CHUNK", "DL",
                                                       "VE"))
    cmax, nch = spec["CHUNK_MAX"], spec["NCHUNK"]
    require(wg > 0, "flash_attn: WG=0; use flash_attn.pipelines() (it derives WG from HD) "
                    "or pass WG")
    require(_pow2(wg) and wg <= info.max_workgroup_invocations
            and wg <= info.max_workgroup_size[0],
            f"flash_attn: WG={wg} must be a power of two within the device's workgroup limits")
    require(_pow2(dl) and wg % dl == 0 and hd % (8 * dl) == 0,
            f"flash_attn: DL={dl} must be a power of two dividing WG={wg} with HD % (8 DL) == 0 "
            f"(HD={hd})")
    require(dl <= info.min_subgroup_size,
            f"flash_attn: DL={dl} lanes must fit in a subgroup ({info.min_subgroup_size})")
    ncg = wg // dl
    require(_pow2(bc) and bc % ncg == 0 and bc % dl == 0,
            f"flash_attn: BC={bc} must be a power of two, a multiple of WG/DL={ncg} column "
            f"groups and of DL={dl}")
    require(_pow2(chunk) and chunk % bc == 0 and _pow2(cmax) and cmax >= chunk,
            f"flash_attn: CHUNK={chunk} and CHUNK_MAX={cmax} must be powers of two with "
            f"BC={bc} <= CHUNK <= CHUNK_MAX")
    require(nch >= 1, f"flash_attn: NCHUNK={nch} must be >= 1")
    require(1 <= br <= wg, f"flash_attn: BR={br} must be in 1..WG={wg}")
    require(ve in (4, 8) and hd % ve == 0 and wg % (hd // ve) == 0,
            f"flash_attn: VE={ve} must be 4 or 8 with WG={wg} a multiple of HD/VE={hd // ve}")


def _variant_contract(variant, spec, info):
    need = shared_bytes(spec, variant)
    require(need <= info.max_compute_shared_memory,
            f"flash_attn/{variant}: {need} bytes of shared memory (BR={spec['BR']}, "
            f"HD={spec['HD']}, BC={spec['BC']}) exceed the device's "
            f"{info.max_compute_shared_memory}")
    if variant.startswith("q8_0"):
        require(spec["HD"] % _q8_0().block_size == 0,
                f"flash_attn/{variant}: HD={spec['HD']} must be a multiple of 32")


def _dl_default(info) -> int:
    # 8 lanes: 1 exchange per score per lane (transposed butterfly) against HD/8 products each.
    return max(1, min(8, info.min_subgroup_size))


_STEP_BINDINGS = (Binding("q_pos", "r", "int32[n_q_max] absolute positions (per step)"),
                  Binding("lens", "r", "int32[2] {kv_len, n_q} (per step)"))

FLASH = Kernel(
    stem="flash_attn",
    bindings=(Binding("q", "r", "float[n_q_max, n_head, HD]"),
              Binding("k_cache", "r", "F16 or Q8_0 [kv_len_max, n_head_kv, HD]"),
              Binding("v_cache", "r", "F16 or Q8_0 [kv_len_max, n_head_kv, HD]"),
              *_STEP_BINDINGS,
              Binding("out", "w", "float[n_q_max, n_head, HD] (direct mode)"),
              Binding("part_o", "w", "float[n_q_max, n_head, n_chunks_max, HD] (split mode)"),
              Binding("part_ml", "w", "float[n_q_max, n_head, n_chunks_max, 2] (split mode)")),
    push=np.dtype([("n_q_max", "<u4"), ("n_head", "<u4"), ("n_head_kv", "<u4"),
                   ("kv_len_max", "<u4"), ("n_chunks_max", "<u4"), ("window", "<u4"),
                   ("scale", "<f4"), ("softcap", "<f4")]),
    spec=(SpecConst("WG", 0, 0, choices=(64, 128, 256),
                    doc="workgroup size; 0 = derive min(HD, 128) in pipelines()"),
          SpecConst("HD", 1, 128, doc="head dim (shape, not tuned)"),
          SpecConst("BR", 2, 8, choices=(4, 6, 8, 12, 16), doc="query rows per workgroup"),
          SpecConst("BC", 3, 32, choices=(16, 32, 64), doc="KV columns per block (numerics)"),
          SpecConst("CHUNK", 4, 32, choices=(32, 64, 128),
                    doc="smallest chunk of KV positions (numerics)"),
          SpecConst("DL", 5, _dl_default, choices=(4, 8),
                    doc="lanes per score dot product (numerics)"),
          SpecConst("SPLIT", 6, True, doc="write chunk partials for the reduce pass"),
          SpecConst("VE", 7, 4, choices=(4, 8), doc="output elements per thread in P V"),
          SpecConst("CHUNK_MAX", 8, 512, choices=(256, 512, 1024),
                    doc="largest chunk of KV positions (numerics)"),
          SpecConst("NCHUNK", 9, 64, choices=(32, 64, 128),
                    doc="chunks a row aims at (numerics)"),
          SpecConst("PREFETCH", 10, True, choices=(False, True),
                    doc="load the next block while computing the current one")),
    variants={
        "f16": Variant({}, requires=("storage16",)),
        "q8_0": Variant({"KV_Q8_0": 1}, requires=("storage16",)),
        "f16_shmem": Variant({"SHMEM_REDUCE": 1}, requires=("storage16",)),
        "q8_0_shmem": Variant({"KV_Q8_0": 1, "SHMEM_REDUCE": 1}, requires=("storage16",)),
    },
    op_requires={"f16": ("shuffle",), "q8_0": ("shuffle",)},
    contract=_contract,
    variant_contract=_variant_contract,
    doc="flash attention over a KV cache, split-K or one pass",
)


def _reduce_contract(spec, info):
    wg, hd = spec["WG"], spec["HD"]
    require(0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"flash_attn_reduce: WG={wg} exceeds the device's workgroup limits")
    require(hd % wg == 0 and wg <= 64,
            f"flash_attn_reduce: HD={hd} must be a multiple of WG={wg}, and WG <= 64")


REDUCE = Kernel(
    stem="flash_attn_reduce",
    bindings=(*_STEP_BINDINGS,
              Binding("part_o", "r", "float[n_q_max, n_head, n_chunks_max, HD]"),
              Binding("part_ml", "r", "float[n_q_max, n_head, n_chunks_max, 2]"),
              Binding("out", "w", "float[n_q_max, n_head, HD]")),
    push=np.dtype([("n_q_max", "<u4"), ("n_head", "<u4"), ("n_chunks_max", "<u4"),
                   ("kv_len_max", "<u4"), ("window", "<u4")]),
    spec=(SpecConst("WG", 0, 32, choices=(16, 32, 64),
                    doc="elements per workgroup and chunks per batch"),
          SpecConst("HD", 1, 128, doc="head dim"),
          SpecConst("CHUNK", 2, 32, doc="must equal flash_attn's CHUNK"),
          SpecConst("CHUNK_MAX", 3, 512, doc="must equal flash_attn's CHUNK_MAX"),
          SpecConst("NCHUNK", 4, 64, doc="must equal flash_attn's NCHUNK")),
    contract=_reduce_contract,
    doc="split-K reduce of flash_attn partials",
)

KERNELS = {"flash_attn": FLASH, "flash_attn_reduce": REDUCE}
CHUNK_SPEC = ("CHUNK", "CHUNK_MAX", "NCHUNK")  # shared by the main and the reduce pipeline


# --- host helpers ----------------------------------------------------------------------------

def numerics_class(head_dim: int, group: int, kv_type: str) -> str:
    """Tuning class of the numerics-defining constants (BC, CHUNK, CHUNK_MAX, NCHUNK, DL): one
    per layer shape, shared by every mode and token count so decode, verify and prefill agree
    bit for bit."""
    return f"hd{head_dim}-g{group}-{kv_type}"


def rows_bucket(rows: int) -> int:
    return 1 << max(0, int(rows) - 1).bit_length()


def shape_class(head_dim: int, group: int, kv_type: str, split: bool, rows: int = 8) -> str:
    """Tuning class of WG, BR and VE: layer shape, mode, rows per KV head (n_q * group)
    rounded up to a power of two."""
    return (f"{numerics_class(head_dim, group, kv_type)}-{'split' if split else 'direct'}"
            f"-r{rows_bucket(rows)}")


def auto_wg(head_dim: int) -> int:
    wg = min(head_dim, 128)
    while head_dim % wg:
        wg //= 2
    return max(wg, 1)


def variant_for(info, kv_type: str, reduce: str | None = None) -> str:
    """'f16'/'q8_0' (subgroup shuffles) when the device has them, else the shared-memory
    variant; `reduce` = 'subgroup' or 'shmem' forces one."""
    if kv_type not in KV_TYPES:
        raise ValueError(f"flash_attn: kv_type {kv_type!r} not in {KV_TYPES}")
    if reduce == "shmem":
        return f"{kv_type}_shmem"
    if reduce == "subgroup" or kv_type in FLASH.supported_variants(info):
        return kv_type
    return f"{kv_type}_shmem"


def pipelines(device, head_dim: int, kv_type: str = "f16", split: bool = True, group: int = 1,
              rows: int | None = None, reduce: str | None = None, **overrides):
    """(main, reduce-or-None) pipelines for one layer shape and mode; `rows` = n_q_max * group
    (query rows per KV head) of the recording, used to pick BR.

    Resolution: spec defaults < tuning database < overrides. The numerics constants
    (NUMERIC_SPEC) come from numerics_class(), WG/BR/VE from shape_class(), so every mode and
    token count of a layer agrees bit for bit while WG/BR/VE are tuned per mode. Untuned: WG =
    auto_wg(head_dim); DL lowered until HD % (8 DL) == 0; BC = 32 (at most a given CHUNK),
    halved while one row's tile (BR = 1) does not fit in shared memory (both depend on the layer
    shape and device only); BR
    = default_br() (balanced tiles of at most 16 rows). On a ContractError with the subgroup variant and no
    explicit `reduce`, falls back to the shared-memory variant."""
    variant = variant_for(device.info, kv_type, reduce)
    rows = 8 if rows is None else max(1, int(rows))
    try:
        return _pipelines(device, variant, head_dim, kv_type, split, group, rows, overrides)
    except ContractError:
        if reduce is not None or variant.endswith("_shmem"):
            raise
        return _pipelines(device, f"{kv_type}_shmem", head_dim, kv_type, split, group, rows,
                          overrides)


def _numerics_defaults(info, variant: str, vals: dict, fixed: set):
    """DL and BC from the layer shape and device when neither tuned nor given."""
    hd = vals["HD"]
    if "DL" not in fixed:
        while vals["DL"] > 1 and hd % (8 * vals["DL"]):
            vals["DL"] //= 2
    if "BC" not in fixed:
        # a given CHUNK bounds BC (chunks are whole blocks)
        if "CHUNK" in fixed:
            vals["BC"] = min(vals["BC"], vals["CHUNK"])
        # the same BC for every shared-memory variant of a type: the bits must not change
        kind = "q8_0" if variant.startswith("q8_0") else "f16"
        while vals["BC"] > 8 and shared_bytes({**vals, "BR": 1}, kind + "_shmem") > \
                info.max_compute_shared_memory:
            vals["BC"] //= 2


def _pipelines(device, variant, head_dim, kv_type, split, group, rows, overrides):
    from .. import tuning

    info = device.info
    sc = shape_class(head_dim, group, kv_type, split, rows)
    tuned_num = tuning.lookup(info, FLASH, variant, numerics_class(head_dim, group, kv_type))
    tuned = tuning.lookup(info, FLASH, variant, sc) or {}
    vals = FLASH.defaults(info)
    num = {k: v for k, v in (tuned_num or {}).items() if k in NUMERIC_SPEC}
    vals.update(num)
    vals.update({k: v for k, v in tuned.items() if k in vals and k not in NUMERIC_SPEC})
    unknown = set(overrides) - set(vals)
    if unknown:
        raise TypeError(f"flash_attn: unknown specialization constants {sorted(unknown)}")
    vals.update(overrides)
    vals["HD"], vals["SPLIT"] = head_dim, bool(split)
    if vals["WG"] == 0:
        vals["WG"] = auto_wg(head_dim)
    _numerics_defaults(info, variant, vals, set(num) | set(overrides))
    if "CHUNK" not in num and "CHUNK" not in overrides:
        vals["CHUNK"] = max(vals["CHUNK"], vals["BC"])
    if "BR" not in overrides and "BR" not in tuned:
        vals["BR"] = default_br(info, variant, vals, rows)
    kp = FLASH.pipeline(device, variant, **vals)
    kr = reduce_pipeline(device, kp) if split else None
    return kp, kr


def default_br(info, variant: str, vals: dict, rows: int) -> int:
    """Untuned BR: the rows per KV head split into the fewest tiles of at most 16 rows (8 on
    CPU devices, where compile time grows with the unrolled BR) that fit the contract (shared
    memory), balanced: e.g. 24 rows with room for 13 -> 2 tiles of 12, 6 rows -> 1 tile of 6."""
    cap = min(8 if info.type == "cpu" else 16, vals["WG"], max(1, int(rows)))
    while cap > 1:
        try:
            FLASH.check_variant(variant, {**vals, "BR": cap}, info)
            break
        except ContractError:
            cap -= 1
    tiles = -(-max(1, int(rows)) // cap)
    return -(-max(1, int(rows)) // tiles)


def reduce_pipeline(device, kp, wg: int | None = None):
    """flash_attn_reduce for the main pipeline `kp` (same HD and chunk rule); WG from the
    tuning database ("hd<HD>") unless given."""
    from .. import tuning

    hd = kp.spec["HD"]
    if wg is None:
        wg = (tuning.lookup(device.info, REDUCE, "default", f"hd{hd}") or {}).get("WG") or \
            min(REDUCE.defaults(device.info)["WG"], hd)
    while hd % wg:
        wg //= 2
    return REDUCE.pipeline(device, "default", WG=wg, HD=hd,
                           **{k: kp.spec[k] for k in CHUNK_SPEC})


def n_chunks(kp, kv_len_max: int) -> int:
    """The most chunks a row of a cache of kv_len_max positions has (rows' chunk sizes follow
    chunk_size()); also the most spans of a split dispatch. Within a run of equal chunk size
    the count grows with n, so the maximum is at a run's end or at kv_len_max."""
    s = kp.spec if hasattr(kp, "spec") else kp
    n_max = max(int(kv_len_max), 1)
    ends = {n_max}
    c = s["CHUNK"]
    while c < s["CHUNK_MAX"]:
        ends.add(min(n_max, c * s["NCHUNK"]))
        c *= 2
    return max(-(-n // chunk_size(s, n)) for n in ends)


def partial_nbytes(kp, n_q_max: int, n_head: int, kv_len_max: int) -> tuple[int, int]:
    """Bytes of the part_o and part_ml scratch buffers of a split-mode dispatch."""
    slots = n_q_max * n_head * n_chunks(kp, kv_len_max)
    return slots * kp.spec["HD"] * 4, slots * 2 * 4


def check_shapes(n_head: int, n_head_kv: int, head_dim: int, kv_type: str):
    require(n_head_kv > 0 and n_head % n_head_kv == 0,
            f"flash_attn: n_head={n_head} must be a multiple of n_head_kv={n_head_kv}")
    if kv_type == "q8_0":
        require(head_dim % _q8_0().block_size == 0,
                f"flash_attn: Q8_0 cache needs head_dim % 32 == 0, got {head_dim}")


def dispatch(rec, kp, kr, q, k_cache, v_cache, q_pos, lens, out, part_o=None, part_ml=None, *,
             n_q_max: int, n_head: int, n_head_kv: int, kv_len_max: int,
             scale: float | None = None, softcap: float = 0.0, window: int = 0,
             passes: str = "all"):
    """Record attention of up to n_q_max query tokens (the count and kv_len are read from
    `lens` at run time, positions from `q_pos`). Split-mode pipelines (kr not None) need the
    part_o/part_ml scratch (`partial_nbytes`) and record two dispatches; direct mode one.
    passes="main" or "reduce" records only that pass (benchmarks)."""
    hd = kp.spec["HD"]
    check_shapes(n_head, n_head_kv, hd, "q8_0" if kp.variant.startswith("q8_0") else "f16")
    split = bool(kp.spec["SPLIT"])
    require(split == (kr is not None), "flash_attn: split pipelines need the reduce pipeline "
                                       "(and direct ones none)")
    require(kr is None or all(kr.spec[k] == kp.spec[k] for k in CHUNK_SPEC + ("HD",)),
            "flash_attn: the reduce pipeline's chunk rule and HD must equal the main "
            "pipeline's")
    g = n_head // n_head_kv
    nch = n_chunks(kp, kv_len_max)
    scale = 1.0 / math.sqrt(hd) if scale is None else float(scale)
    if split:
        require(part_o is not None and part_ml is not None,
                "flash_attn: split mode needs part_o and part_ml scratch buffers")
    else:
        part_o = part_o or out
        part_ml = part_ml or out
    tiles = ceil_div(n_q_max * g, kp.spec["BR"])
    if passes in ("all", "main"):
        kp.record(rec, [q, k_cache, v_cache, q_pos, lens, out, part_o, part_ml],
                  (nch if split else 1, tiles, n_head_kv),
                  n_q_max=n_q_max, n_head=n_head, n_head_kv=n_head_kv, kv_len_max=kv_len_max,
                  n_chunks_max=nch, window=window, scale=scale, softcap=softcap)
    if split and passes in ("all", "reduce"):
        kr.record(rec, [q_pos, lens, part_o, part_ml, out],
                  (n_q_max * n_head, hd // kr.spec["WG"]),
                  n_q_max=n_q_max, n_head=n_head, n_chunks_max=nch, kv_len_max=kv_len_max,
                  window=window)


# --- numpy ---------------------------------------------------------------------------------------

def to_cache(x, kv_type: str) -> np.ndarray:
    """float rows [..., head_dim] -> cache bytes/values: float16 array for F16, uint8
    [..., head_dim / 32 * 34] GGUF Q8_0 blocks (ggml's reference rounding) for Q8_0."""
    from ..gguf.quants import quantize

    x = np.asarray(x, np.float32)
    if kv_type == "f16":
        return x.astype(np.float16)
    if kv_type == "q8_0":
        return quantize(x, "Q8_0")
    raise ValueError(f"flash_attn: kv_type {kv_type!r} not in {KV_TYPES}")


def from_cache(c, kv_type: str, head_dim: int) -> np.ndarray:
    """Cache contents -> float32 values the kernel computes with (exact dequantization)."""
    from ..gguf.quants import dequantize

    if kv_type == "f16":
        return np.asarray(c).view(np.float16).astype(np.float32)
    c = np.asarray(c).view(np.uint8)
    return dequantize(c, "Q8_0").reshape(*c.shape[:-1], head_dim)


def valid_mask(q_pos, kv_len: int, window: int = 0) -> np.ndarray:
    """bool [n_q, kv_len]: which KV positions each query attends."""
    qp = np.asarray(q_pos, np.int64)[:, None]
    j = np.arange(kv_len)[None, :]
    m = j <= qp
    if window > 0:
        m &= j > qp - window
    return m


def reference(q, k, v, q_pos, kv_len: int, scale: float | None = None, softcap: float = 0.0,
              window: int = 0) -> np.ndarray:
    """float64 attention. q [n_q, n_head, hd]; k, v [>= kv_len, n_head_kv, hd] dequantized
    cache values. Rows with nothing to attend give 0."""
    q = np.asarray(q, np.float64)
    k = np.asarray(k, np.float64)[:kv_len]
    v = np.asarray(v, np.float64)[:kv_len]
    _, n_head, hd = q.shape
    g = n_head // k.shape[1]
    scale = 1.0 / math.sqrt(hd) if scale is None else float(scale)
    kh = np.repeat(k, g, axis=1)  # [kv, n_head, hd]
    vh = np.repeat(v, g, axis=1)
    s = np.einsum("thd,jhd->htj", q, kh) * scale
    if softcap > 0:
        s = softcap * np.tanh(s / softcap)
    m = valid_mask(q_pos, kv_len, window)[None]
    s = np.where(m, s, -np.inf)
    mx = s.max(axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    p = np.where(m, np.exp(s - mx), 0.0)
    den = p.sum(axis=-1, keepdims=True)
    o = np.einsum("htj,jhd->thd", p, vh)
    return o / np.where(den > 0, den, 1.0).transpose(1, 0, 2)


__all__ = [
    "FLASH",
    "KERNELS",
    "KV_TYPES",
    "NUMERIC_SPEC",
    "REDUCE",
    "auto_wg",
    "cache_nbytes",
    "cache_row_bytes",
    "chunk_size",
    "default_br",
    "dispatch",
    "from_cache",
    "n_chunks",
    "partial_nbytes",
    "pipelines",
    "reduce_pipeline",
    "reference",
    "shape_class",
    "to_cache",
    "valid_mask",
    "variant_for",
]
