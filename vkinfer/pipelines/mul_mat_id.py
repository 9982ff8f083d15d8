"""mul_mat_id: the MoE expert matvec, y[t, j] = W_{ids[t, j]} · x[t(, j)], for every GGUF weight
type mul_mat_vec supports, with the expert ids read on the GPU from moe_route's output (R3).
Optional fused epilogue (WEIGHTED): y[t] (+)= Σ_j weights[t, j]·W_{ids[t, j]}·x[t, j], the
"weighted sum of experts" after the down projection (llamacpp-facts §2.6 step 8; llama.cpp's
mul_mat_vec_id with the MUL_MAT_ID + MUL fusion and the MULTI_ADD of the expert outputs, §3.6).

Expert weights are one 3-D GGUF tensor [n_expert, rows, row_bytes] in one buffer; a workgroup
reads only its expert's rows. Decode and MTP verify (T <= 8): one dispatch over (row blocks ×
slots × tokens). Prefill: the same kernel over all tokens — correct, but each (token, slot)
re-reads its expert's rows (no grouping of tokens by expert yet).

Numerics (R5): every (t, j) follows the canonical reduction of shaders/common/quants.glsl, the
same loop as mul_mat_vec, so y[t, j] is bit-identical to mul_mat_vec of the expert's slice with
x[t, j] (tests check it). WEIGHTED sums weights[t, j]·y[t, j] in increasing j without fma
contraction; `reference_weighted_from_slots` reproduces it bit for bit in numpy.
"""

from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from ..gguf import quants
from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require
from .mul_mat_vec import (
    LANES,
    check_k,
    default_chunk,
    pow2_bucket,
    reduction_contract,
    reduction_variant,
    reduction_variants,
    type_defines,
    type_name,
)

__all__ = [
    "KERNEL",
    "combine_pipeline",
    "dispatch",
    "dispatch_combine",
    "dispatch_grouped",
    "expert_stride",
    "pipeline",
    "reference",
    "reference_weighted",
    "reference_weighted_from_slots",
]


def _gpu(value, cpu_value):
    """A spec default that is smaller on CPU devices (lavapipe): unrolling buys nothing there and
    costs JIT time in every test run. The numbers never depend on it."""
    return lambda info: cpu_value if getattr(info, "type", "") == "cpu" else value


def _contract(spec, info):
    wg, nr, un = spec["WG"], spec["NR"], spec["UNROLL"]
    require(wg % LANES == 0 and wg > 0, f"mul_mat_id: WG={wg} must be a multiple of {LANES}")
    require(
        wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
        f"mul_mat_id: WG={wg} exceeds the device's workgroup limits",
    )
    require(1 <= nr <= 8, f"mul_mat_id: NR={nr} must be 1..8")
    require(1 <= un <= 8, f"mul_mat_id: UNROLL={un} must be 1..8")
    ch = spec["CHUNK"]
    require(ch >= un and ch % un == 0, f"mul_mat_id: CHUNK={ch} must be a multiple of UNROLL={un}")
    require(
        not (spec["WEIGHTED"] and spec["GROUPED"]),
        "mul_mat_id: GROUPED has per-slot output; combine it with the 'combine' variant",
    )
    require(1 <= spec["NUM_COLS"] <= MAX_COLS, f"mul_mat_id: NUM_COLS must be 1..{MAX_COLS}")
    require(spec["GROUPED"] or spec["NUM_COLS"] == 1, "mul_mat_id: NUM_COLS > 1 needs GROUPED")


def _check_accumulate(variant, spec):
    require(
        variant == COMBINE or spec["WEIGHTED"] or not spec["ACCUMULATE"],
        "mul_mat_id: ACCUMULATE needs WEIGHTED (or the combine variant)",
    )


def _variant_contract(variant, spec, info):
    _check_accumulate(variant, spec)
    if variant == COMBINE:
        require(
            not spec["WEIGHTED"] and not spec["GROUPED"] and spec["NUM_COLS"] == 1,
            "mul_mat_id/combine: WEIGHTED, GROUPED and NUM_COLS do not apply",
        )
        return
    _reduction_contract(variant, spec, info)


_VARIANTS = reduction_variants()
_reduction_contract = reduction_contract("mul_mat_id")
_SUBGROUP_OPS = {n: ("shuffle",) for n in _VARIANTS if not n.endswith("_shmem")}
# The weighted sum of GROUPED's per-slot output; never reads weights (F32 defines, unused).
COMBINE = "combine"
_VARIANTS[COMBINE] = Variant({**type_defines(T.F32), "COMBINE": 1})
MAX_COLS = 8

PUSH = np.dtype(
    [
        (f, "<u4")
        for f in (
            "rows",
            "K",
            "row_bytes",
            "expert_stride",
            "n_expert",
            "n_slots",
            "ids_stride",
            "x_tstride",
            "x_sstride",
            "y_tstride",
            "y_sstride",
        )
    ]
)

KERNEL = Kernel(
    stem="mul_mat_id",
    bindings=(
        Binding("w", "r", "uint8[n_expert, rows, row_bytes] GGUF blocks"),
        Binding("x", "r", "float: x[t, j, :] at t*x_tstride + j*x_sstride (x_sstride 0: shared)"),
        Binding("ids", "r", "int32[T, ids_stride] selected experts"),
        Binding("weights", "r", "float[T, ids_stride] routing weights (WEIGHTED; bind ids else)"),
        Binding("y", "b", "float[T, n_slots, rows] or, WEIGHTED, float[T, rows]"),
    ),
    push=PUSH,
    spec=(
        SpecConst("WG", 0, 64, choices=(32, 64, 128, 256), doc="invocations (8 lanes per row)"),
        SpecConst("NR", 1, _gpu(2, 1), choices=(1, 2, 4), doc="rows per 8-lane group"),
        SpecConst("UNROLL", 2, _gpu(2, 1), choices=(1, 2, 4), doc="units per lane per step"),
        SpecConst("WEIGHTED", 3, False, doc="y[t] = sum_j w[t,j] * W_e x (set by the caller)"),
        SpecConst("ACCUMULATE", 4, False, doc="WEIGHTED/combine: add into y (set by the caller)"),
        SpecConst("GROUPED", 5, False, doc="prefill: expert work list (set by the caller)"),
        SpecConst("NUM_COLS", 6, 1, doc="GROUPED: pairs per work item (caller; = GROUP_COLS)"),
        SpecConst(
            "PREFETCH",
            7,
            _gpu(True, False),
            choices=(False, True),
            doc="issue the next step's loads before the current step's arithmetic",
        ),
        SpecConst(
            "CHUNK",
            8,
            2,
            choices=(1, 2, 4, 8, 16),
            doc="units per lane per chunk of activations staged in shared memory",
        ),
        SpecConst(
            "XPREFETCH",
            9,
            False,
            choices=(False, True),
            doc="issue the next chunk's activation loads before the current chunk's arithmetic",
        ),
    ),
    variants=_VARIANTS,
    op_requires=_SUBGROUP_OPS,
    contract=_contract,
    variant_contract=_variant_contract,
    doc="MoE expert matvec over the router's selected experts (+ weighted sum)",
)


def shape_class(
    rows: int, K: int, n_slots: int, weighted: bool = False, grouped_cols: int = 0
) -> str:
    """Tuning class: slots (w: weighted, gN: grouped with N columns), rows and K as powers of 2."""
    g = f"g{grouped_cols}" if grouped_cols else ""
    return f"s{n_slots}{'w' if weighted else ''}{g}-r{pow2_bucket(rows)}-k{pow2_bucket(K)}"


def variant_for(info, w_type, reduce: str | None = None, shape_class: str | None = None) -> str:
    """mul_mat_id's reduction variant (mul_mat_vec.reduction_variant)."""
    return reduction_variant(KERNEL, info, w_type, reduce, shape_class)


def pipeline(
    device,
    w_type,
    weighted: bool = False,
    accumulate: bool = False,
    grouped: bool = False,
    cols: int = 8,
    rows: int | None = None,
    K: int | None = None,
    n_slots: int | None = None,
    reduce: str | None = None,
    **overrides,
):
    """The pipeline for one weight type: per-slot output (default), WEIGHTED (+ACCUMULATE), or
    GROUPED with `cols` pairs per work item (the work list's GROUP_COLS). Resolution: spec
    defaults < tuning database (by shape class, when rows, K and n_slots are given) <
    overrides; CHUNK, unless tuned or given, follows UNROLL and K (mul_mat_vec.default_chunk). Falls back to the shared-memory variant when the subgroup one's contract fails
    and `reduce` is not forced."""
    from .. import tuning
    from ..errors import ContractError

    sc = (
        shape_class(rows, K, n_slots, weighted, cols if grouped else 0)
        if None not in (rows, K, n_slots)
        else None
    )
    variant = variant_for(device.info, w_type, reduce, sc)
    ov = {
        **overrides,
        "WEIGHTED": bool(weighted),
        "ACCUMULATE": bool(accumulate),
        "GROUPED": bool(grouped),
        "NUM_COLS": int(cols) if grouped else 1,
    }

    def build(var):
        values = KERNEL.resolve_spec(device, var, sc, ov)
        tuned = tuning.lookup(device.info, KERNEL, var, sc) if sc is not None else None
        if "CHUNK" not in overrides and "CHUNK" not in (tuned or {}):  # follows UNROLL
            values["CHUNK"] = default_chunk(
                w_type, values["NUM_COLS"], values["UNROLL"], K, values["WG"], values["XPREFETCH"]
            )
        return KERNEL.pipeline(device, var, **values)

    try:
        return build(variant)
    except ContractError:
        if reduce is not None or variant.endswith("_shmem"):
            raise
        return build(f"{variant}_shmem")


def combine_pipeline(device, accumulate: bool = False, **overrides):
    """The 'combine' pipeline: y[t] (+)= Σ_j weights[t, j]·ys[t, j] (GROUPED's output)."""
    return KERNEL.pipeline(device, COMBINE, ACCUMULATE=bool(accumulate), **overrides)


def expert_stride(w_type, rows: int, K: int) -> int:
    """Bytes from one expert's matrix to the next in a packed [n_expert, rows, K] tensor."""
    return rows * quants.row_bytes(w_type, K)


def row_blocks(kp, rows: int) -> int:
    return ceil_div(rows, kp.spec["WG"] // LANES * kp.spec["NR"])


def dispatch(
    rec,
    kp,
    w,
    x,
    ids,
    y,
    *,
    w_type,
    rows: int,
    K: int,
    n_expert: int,
    n_slots: int,
    tokens: int,
    weights=None,
    per_slot_input: bool = False,
    ids_stride: int | None = None,
    x_tstride: int | None = None,
    x_sstride: int | None = None,
    y_tstride: int | None = None,
    y_sstride: int | None = None,
    expert_stride_bytes: int | None = None,
):
    """Record the expert matvec for `tokens` tokens × `n_slots` selected experts.

    w: [n_expert, rows, row_bytes] GGUF bytes; ids (and weights): [tokens, ids_stride] on the GPU.
    x: shared input [tokens, K] (x_sstride 0) or, per_slot_input, [tokens, n_slots, K].
    y: [tokens, n_slots, rows], or [tokens, rows] with a WEIGHTED pipeline (which needs
    `weights`; an ACCUMULATE pipeline adds into y). Strides are in elements."""
    check_k(w_type, K, "mul_mat_id")
    weighted = kp.spec["WEIGHTED"]
    require(not kp.spec["GROUPED"], "mul_mat_id.dispatch: use dispatch_grouped for GROUPED")
    require(
        kp.variant.split("_shmem")[0] == type_name(w_type),
        f"mul_mat_id: pipeline {kp.variant} does not match weight type {type_name(w_type)}",
    )
    require(
        weighted == (weights is not None),
        "mul_mat_id: give weights exactly when the pipeline is WEIGHTED",
    )
    require(1 <= n_slots and n_expert >= 1 and rows >= 1, "mul_mat_id: empty shape")
    ids_stride = n_slots if ids_stride is None else ids_stride
    require(ids_stride >= n_slots, "mul_mat_id: ids_stride < n_slots")
    if x_sstride is None:
        x_sstride = K if per_slot_input else 0
    if x_tstride is None:
        x_tstride = n_slots * K if per_slot_input else K
    if y_sstride is None:
        y_sstride = rows
    if y_tstride is None:
        y_tstride = rows if weighted else n_slots * rows
    require(
        x_tstride % 4 == 0 and x_sstride % 4 == 0,
        "mul_mat_id: x strides must be multiples of 4 floats (16-byte loads)",
    )
    es = expert_stride(w_type, rows, K) if expert_stride_bytes is None else expert_stride_bytes
    require(n_expert * es < 2**32, "mul_mat_id: expert tensor must be < 4 GiB (32-bit offsets)")
    nb = row_blocks(kp, rows)
    lim = rec.device.info.max_workgroup_count
    require(
        nb <= lim[0] and n_slots <= lim[1] and tokens <= lim[2],
        f"mul_mat_id: grid {nb}x{n_slots}x{tokens} exceeds the device limit {lim}",
    )
    kp.record(
        rec,
        [w, x, ids, ids if weights is None else weights, y],
        (nb, 1 if weighted else n_slots, tokens),
        rows=rows,
        K=K,
        row_bytes=quants.row_bytes(w_type, K),
        expert_stride=es,
        n_expert=n_expert,
        n_slots=n_slots,
        ids_stride=ids_stride,
        x_tstride=x_tstride,
        x_sstride=x_sstride,
        y_tstride=y_tstride,
        y_sstride=y_sstride,
    )


def dispatch_grouped(
    rec,
    kp,
    w,
    x,
    groups,
    y,
    *,
    w_type,
    rows: int,
    K: int,
    n_expert: int,
    n_slots: int,
    tokens: int,
    per_slot_input: bool = False,
    x_tstride: int | None = None,
    x_sstride: int | None = None,
    y_tstride: int | None = None,
    y_sstride: int | None = None,
    expert_stride_bytes: int | None = None,
):
    """Record the GROUPED expert matmul over the work list `groups` (written for these tokens
    by moe_route.dispatch_group with GROUP_COLS = kp.spec['NUM_COLS']): y [tokens, n_slots,
    rows] as dispatch() would give, each expert's rows read once per item of up to NUM_COLS
    (token, slot) pairs. Max-size grid with early exit: the work list's size stays on the GPU."""
    from . import moe_route

    check_k(w_type, K, "mul_mat_id")
    require(kp.spec["GROUPED"], "mul_mat_id.dispatch_grouped needs a GROUPED pipeline")
    require(
        kp.variant.split("_shmem")[0] == type_name(w_type),
        f"mul_mat_id: pipeline {kp.variant} does not match weight type {type_name(w_type)}",
    )
    x_sstride = (K if per_slot_input else 0) if x_sstride is None else x_sstride
    x_tstride = (n_slots * K if per_slot_input else K) if x_tstride is None else x_tstride
    y_sstride = rows if y_sstride is None else y_sstride
    y_tstride = n_slots * rows if y_tstride is None else y_tstride
    require(
        x_tstride % 4 == 0 and x_sstride % 4 == 0,
        "mul_mat_id: x strides must be multiples of 4 floats (16-byte loads)",
    )
    es = expert_stride(w_type, rows, K) if expert_stride_bytes is None else expert_stride_bytes
    require(n_expert * es < 2**32, "mul_mat_id: expert tensor must be < 4 GiB (32-bit offsets)")
    max_items = moe_route.group_layout(tokens, n_slots, n_expert, kp.spec["NUM_COLS"])[0]
    nb = row_blocks(kp, rows)
    lim = rec.device.info.max_workgroup_count
    require(
        nb <= lim[0] and max_items <= lim[1],
        f"mul_mat_id: grouped grid {nb}x{max_items} exceeds the device limit {lim}",
    )
    kp.record(
        rec,
        [w, x, groups, groups, y],
        (nb, max_items, 1),
        rows=rows,
        K=K,
        row_bytes=quants.row_bytes(w_type, K),
        expert_stride=es,
        n_expert=n_expert,
        n_slots=n_slots,
        ids_stride=0,
        x_tstride=x_tstride,
        x_sstride=x_sstride,
        y_tstride=y_tstride,
        y_sstride=y_sstride,
    )


def dispatch_combine(
    rec,
    kp,
    ys,
    weights,
    y,
    *,
    rows: int,
    n_slots: int,
    tokens: int,
    ids_stride: int | None = None,
    ys_tstride: int | None = None,
    ys_sstride: int | None = None,
    y_tstride: int | None = None,
):
    """Record y[t] (+)= Σ_j weights[t, j]·ys[t, j] with a combine_pipeline: the WEIGHTED
    epilogue's exact arithmetic (a token gets the same bits as through a WEIGHTED dispatch)."""
    require(kp.variant == COMBINE, "mul_mat_id.dispatch_combine needs the combine pipeline")
    ys_sstride = rows if ys_sstride is None else ys_sstride
    ys_tstride = n_slots * rows if ys_tstride is None else ys_tstride
    kp.record(
        rec,
        [ys, ys, weights, weights, y],
        (ceil_div(rows, kp.spec["WG"]), 1, tokens),
        rows=rows,
        K=0,
        row_bytes=0,
        expert_stride=0,
        n_expert=1,
        n_slots=n_slots,
        ids_stride=n_slots if ids_stride is None else ids_stride,
        x_tstride=ys_tstride,
        x_sstride=ys_sstride,
        y_tstride=rows if y_tstride is None else y_tstride,
        y_sstride=0,
    )


def _experts_f64(w_raw3d, w_type):
    w = np.asarray(w_raw3d, np.uint8)
    return quants.dequantize(w, w_type).astype(np.float64)  # [n_expert, rows, K]


def _inputs(x, T, n_slots):
    x = np.asarray(x, np.float32).astype(np.float64)
    if x.ndim == 2:  # shared input [T, K]
        return np.broadcast_to(x[:, None, :], (T, n_slots, x.shape[-1]))
    return x  # [T, n_slots, K]


def reference(w_raw3d, w_type, x, ids) -> np.ndarray:
    """float64 oracle: y[t, j] = dequantize(W[ids[t, j]]) @ x[t(, j)], as float32 [T, k, rows].

    w_raw3d: uint8 [n_expert, rows, row_bytes]; x: [T, K] (shared) or [T, k, K] (per slot)."""
    ids = np.asarray(ids, np.int64)
    T, k = ids.shape
    w = _experts_f64(w_raw3d, w_type)
    xs = _inputs(x, T, k)
    return np.einsum("tjrk,tjk->tjr", w[ids], xs).astype(np.float32)


def reference_weighted(w_raw3d, w_type, x, ids, weights, y0=None) -> np.ndarray:
    """float64 oracle of the WEIGHTED form: y[t] = (y0[t] +) Σ_j weights[t, j]·W_e·x[t(, j)]."""
    ids = np.asarray(ids, np.int64)
    T, k = ids.shape
    w = _experts_f64(w_raw3d, w_type)
    ys = np.einsum("tjrk,tjk->tjr", w[ids], _inputs(x, T, k))
    out = np.einsum("tj,tjr->tr", np.asarray(weights, np.float64), ys)
    if y0 is not None:
        out = out + np.asarray(y0, np.float64)
    return out.astype(np.float32)


def reference_weighted_from_slots(y_slots, weights, y0=None) -> np.ndarray:
    """The WEIGHTED epilogue's exact float32 arithmetic applied to per-slot results
    y_slots [T, k, rows]: acc = 0; acc = acc + w_j·y_j for j = 0..k-1; then y0 + acc. With the
    per-slot results of the GPU this reproduces the fused kernel bit for bit."""
    ys = np.asarray(y_slots, np.float32)
    w = np.asarray(weights, np.float32)
    acc = np.zeros((ys.shape[0], ys.shape[2]), np.float32)
    for j in range(ys.shape[1]):
        acc = acc + w[:, j : j + 1] * ys[:, j, :]
    if y0 is not None:
        acc = np.asarray(y0, np.float32) + acc
    return acc
