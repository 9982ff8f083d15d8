"""mul_mat: tiled y[c, r] = Σ_k W[r, k]·x[c, k] (+ residual) for any number of columns (prefill).

W stays in its GGUF type (ggml-common.h block layouts, decoded by shaders/common/quants.glsl);
each workgroup stages a slab of dequantized weights and activations in shared memory and keeps a
TM×TN register tile per invocation.

Numerics (R5): the invocations form LANES = 8 groups, group l accumulating exactly the units of
canonical lane l (see mul_mat_vec.py and quants.glsl; for quantized types the factored per-run
form, with the run's integers q staged instead of weights and each run's scale and offset beside
them) and the 8 partials are combined by the same butterfly, so every column is bit-identical to
what mul_mat_vec computes for it. BM, BN, TM, TN, SLAB and WG only change the speed.
"""

from __future__ import annotations

import numpy as np

from ..errors import ContractError
from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require
from .mul_mat_vec import (
    LANES,
    TYPES,
    _gpu,
    pow2_bucket,
    reference,
    runs,
    type_defines,
    type_name,
    unit_elems,
)

__all__ = ["KERNEL", "dispatch", "pipeline", "reference", "shape_class"]

SLABS = (4, 8, 16, 32)


def _contract(spec, info):
    wg, bm, bn, tm, tn, slab = (spec[k] for k in ("WG", "BM", "BN", "TM", "TN", "SLAB"))
    require(
        bm > 0 and bn > 0 and tm > 0 and tn > 0 and bm % tm == 0 and bn % tn == 0,
        f"mul_mat: BM={bm}, BN={bn} must be multiples of TM={tm}, TN={tn}",
    )
    t = (bm // tm) * (bn // tn)
    require(wg == LANES * t, f"mul_mat: WG={wg} must be {LANES} * (BM/TM) * (BN/TN) = {LANES * t}")
    require(
        wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
        f"mul_mat: WG={wg} exceeds the device's workgroup limits",
    )
    require(
        bm % t == 0,
        f"mul_mat: BM={bm} must be a multiple of (BM/TM)*(BN/TN)={t} "
        "(whole weight units per invocation)",
    )
    require(slab in SLABS, f"mul_mat: SLAB={slab} not in {SLABS}")

    # the lane reduction reuses the slab area: LANES/2 groups × T invocations × TN floats
    require(
        (LANES // 2) * t * tn <= LANES * min(slab, 4) * (bm + bn),
        "mul_mat: the register tile is too large for the reduction area",
    )


def smem_bytes(t, spec: dict) -> int:
    """Shared memory of one workgroup: per lane, a slab of weights (or integers q) and of
    activations, padded by 4 floats each, and for quantized types the scale and offset of each
    (row, run) the slab touches."""
    se = min(spec["SLAB"], unit_elems(t))
    n = LANES * (se * (spec["BM"] + spec["BN"]) + 8)
    if runs(t):
        re = unit_elems(t) // runs(t)
        n += 2 * LANES * max(1, se // re) * spec["BM"]
    return 4 * n


def _variant_contract(variant, spec, info):
    smem = smem_bytes(variant, spec)
    require(
        smem <= info.max_compute_shared_memory,
        f"mul_mat/{variant}: {smem} bytes of shared memory exceed the device's "
        f"{info.max_compute_shared_memory}",
    )


KERNEL = Kernel(
    stem="mul_mat",
    bindings=(
        Binding("w", "r", "uint8[rows, row_bytes] GGUF blocks"),
        Binding("x", "r", "float[ncols, x_stride]"),
        Binding("y", "w", "float[ncols, y_stride]"),
        Binding("residual", "r", "float[ncols, r_stride] (ADD_RESIDUAL; bind y when unused)"),
    ),
    push=np.dtype(
        [
            ("rows", "<u4"),
            ("K", "<u4"),
            ("row_bytes", "<u4"),
            ("ncols", "<u4"),
            ("x_stride", "<u4"),
            ("y_stride", "<u4"),
            ("r_stride", "<u4"),
        ]
    ),
    spec=(
        SpecConst("WG", 0, 256, doc="= 8 * (BM/TM) * (BN/TN); derived by pipeline()"),
        SpecConst("BM", 1, _gpu(64, 32), choices=(32, 64, 128), doc="weight rows per tile"),
        SpecConst("BN", 2, _gpu(32, 16), choices=(16, 32, 64), doc="columns (tokens) per tile"),
        SpecConst("TM", 3, _gpu(8, 4), choices=(4, 8), doc="rows per invocation"),
        SpecConst("TN", 4, _gpu(8, 4), choices=(4, 8), doc="columns per invocation"),
        SpecConst("SLAB", 5, 8, choices=SLABS, doc="elements of each unit staged per step"),
        SpecConst("ADD_RESIDUAL", 6, False, doc="y = W x + residual"),
    ),
    variants={t.name.lower(): Variant(type_defines(t)) for t in TYPES},
    contract=_contract,
    variant_contract=_variant_contract,
    doc="quantized matrix × many vectors (prefill), canonical (batch-invariant) reduction",
)


def shape_class(rows: int, K: int, ncols: int) -> str:
    """Tuning class: rows, K and columns rounded up to powers of two."""
    return f"n{pow2_bucket(ncols)}-r{pow2_bucket(rows)}-k{pow2_bucket(K)}"


def pipeline(
    device,
    w_type,
    rows: int | None = None,
    K: int | None = None,
    ncols: int | None = None,
    residual: bool = False,
    **overrides,
):
    """The pipeline for one weight type. Resolution: spec defaults < tuning database (by shape
    class, when rows, K and ncols are given) < overrides; WG is derived from the tile unless
    given."""
    variant = type_name(w_type)
    sc = shape_class(rows, K, ncols) if None not in (rows, K, ncols) else None
    values = KERNEL.resolve_spec(device, variant, sc, overrides)
    if "WG" not in overrides:
        values["WG"] = (
            LANES * (values["BM"] // max(values["TM"], 1)) * (values["BN"] // max(values["TN"], 1))
        )
    values["ADD_RESIDUAL"] = bool(residual)
    return KERNEL.pipeline(device, variant, **values)


def dispatch(
    rec,
    kp,
    w,
    x,
    y,
    rows: int,
    K: int,
    row_bytes: int,
    ncols: int,
    residual=None,
    x_stride: int | None = None,
    y_stride: int | None = None,
    r_stride: int | None = None,
):
    """Record y[c, :rows] = W·x[c] (+ residual[c]) for c < ncols (see mul_mat_vec.dispatch)."""
    x_stride = K if x_stride is None else x_stride
    y_stride = rows if y_stride is None else y_stride
    r_stride = rows if r_stride is None else r_stride
    if x_stride % 4:
        raise ContractError(f"mul_mat: x_stride={x_stride} must be a multiple of 4")
    if w.bound_bytes < -(-rows * row_bytes // 4) * 4:
        raise ContractError(
            f"mul_mat: the weight binding is {w.bound_bytes} bytes; it must cover "
            f"rows * row_bytes = {rows * row_bytes} rounded up to 4 (the shader "
            "reads whole words)"
        )
    if kp.spec["ADD_RESIDUAL"] and residual is None:
        raise ValueError("mul_mat: pipeline adds a residual but none was given")
    gx, gy = ceil_div(rows, kp.spec["BM"]), ceil_div(ncols, kp.spec["BN"])
    lim = 65535
    if gx > lim or gy > lim:
        raise ContractError(f"mul_mat: grid {gx}x{gy} exceeds {lim}; split the call")
    kp.record(
        rec,
        [w, x, y, residual if residual is not None else y],
        (gx, max(gy, 1)),
        rows=rows,
        K=K,
        row_bytes=row_bytes,
        ncols=ncols,
        x_stride=x_stride,
        y_stride=y_stride,
        r_stride=r_stride,
    )
