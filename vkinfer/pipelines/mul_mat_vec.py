"""mul_mat_vec: y[c, r] = Σ_k W[r, k]·x[c, k] (+ residual) for 1..8 columns, W in a GGUF type.

The decode (1 column) and MTP-verify (2..8 columns) matrix kernel: each weight byte is read once
for all columns. Block layouts: ggml-common.h, decoded by shaders/common/quants.glsl; block sizes
come from vkinfer/gguf/quants.py (R1) as the QK / BLOCK_BYTES defines.

Numerics (R5): every output is the canonical reduction of quants.glsl — LANES = 8 lanes per row,
lane l summing units l, l+8, … with fma in increasing k, then the butterfly s[l] + s[l^m] — so a
column's bits do not depend on NUM_COLS, WG, NR, UNROLL, PREFETCH, the reduction variant, or on
whether mul_mat (the tiled prefill kernel) computed it. None of the tunables changes numerics.

Variants: one per weight type, named like the type ("q4_k"), reducing with subgroup shuffles;
"<type>_shmem" reduces through shared memory (devices without shuffles or with subgroups < 8).
"""

from __future__ import annotations

import math

import numpy as np
from gguf import GGMLQuantizationType as T

from ..errors import ContractError
from ..gguf import quants
from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require

LANES = 8  # canonical lanes per row (shaders/common/quants.glsl); fixed: it defines the numbers
MAX_COLS = 8
MAX_GROUPS_X = 65535

# Kernel weight types, most used first (Q4_K_M / Q8_0 files).
TYPES = (
    T.Q4_K,
    T.Q5_K,
    T.Q6_K,
    T.Q8_0,
    T.F16,
    T.BF16,
    T.F32,
    T.Q4_0,
    T.Q4_1,
    T.Q5_0,
    T.Q5_1,
    T.Q2_K,
    T.Q3_K,
    T.IQ4_NL,
    T.IQ4_XS,
)
assert set(TYPES) == set(quants.SUPPORTED_TYPES), "kernel types and gguf/quants.py disagree"


def type_name(t) -> str:
    """'q4_k' for GGMLQuantizationType.Q4_K (also accepts names and ids)."""
    return quants.parse_type(t, supported_only=True).name.lower()


def unit_elems(t) -> int:
    """Elements in one canonical unit (quants.glsl UNIT_ELEMS): 16 bytes for the float types,
    one 32-element block, or one eighth of a 256-element super-block."""
    info = quants.type_info(t)
    if not info.quantized:
        return 16 // info.type_size
    return 32


def type_defines(t) -> dict:
    """The #defines that select a weight type in quants.glsl."""
    info = quants.type_info(t)
    return {f"QTYPE_{info.name}": 1, "QK": info.block_size, "BLOCK_BYTES": info.type_size}


def check_k(t, K: int, what: str = "mul_mat"):
    """Raise ContractError unless rows of K elements of type t suit the kernels."""
    info = quants.type_info(t)
    u = unit_elems(t)
    require(
        K > 0 and K % info.block_size == 0,
        f"{what}: K={K} is not a whole number of {info.name} blocks of {info.block_size}",
    )
    require(
        K % u == 0,
        f"{what}: K={K} must be a multiple of {u} for {info.name} (16-byte loads of the rows)",
    )


def split_groups(n: int) -> tuple[int, int]:
    """n workgroups as gx * gy >= n with gx <= 65535 (the shader linearises y * gx + x)."""
    if n <= MAX_GROUPS_X:
        return (max(n, 1), 1)
    gy = ceil_div(n, MAX_GROUPS_X)
    return (ceil_div(n, gy), gy)


def _pow2_bucket(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(n, 1))))


def _gpu(value, cpu_value):
    """A spec default that is smaller on CPU devices (lavapipe): there unrolling buys nothing
    and costs JIT time in every test run. The numbers never depend on it."""
    return lambda info: cpu_value if getattr(info, "type", "") == "cpu" else value


def _contract(spec, info):
    wg, nr, nc, un = spec["WG"], spec["NR"], spec["NUM_COLS"], spec["UNROLL"]
    require(wg % LANES == 0 and wg > 0, f"mul_mat_vec: WG={wg} must be a multiple of {LANES}")
    require(
        wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
        f"mul_mat_vec: WG={wg} exceeds the device's workgroup limits",
    )
    require(1 <= nc <= MAX_COLS, f"mul_mat_vec: NUM_COLS={nc} must be 1..{MAX_COLS}")
    require(1 <= nr <= 8, f"mul_mat_vec: NR={nr} must be 1..8")
    require(1 <= un <= 8, f"mul_mat_vec: UNROLL={un} must be 1..8")


def _variant_contract(variant, spec, info):
    if variant.endswith("_shmem"):
        need = spec["WG"] * spec["NR"] * spec["NUM_COLS"] * 4
        require(
            need <= info.max_compute_shared_memory,
            f"mul_mat_vec/{variant}: {need} bytes of shared memory exceed the device's "
            f"{info.max_compute_shared_memory}",
        )
    else:
        require(
            info.min_subgroup_size >= LANES,
            f"mul_mat_vec/{variant}: subgroups of {info.min_subgroup_size} < {LANES} lanes",
        )
        require(
            spec["WG"] % info.max_subgroup_size == 0,
            f"mul_mat_vec/{variant}: WG={spec['WG']} is not a multiple of the subgroup size "
            f"{info.max_subgroup_size}",
        )


def _variants() -> dict:
    v = {}
    for t in TYPES:
        n = t.name.lower()
        v[n] = Variant({**type_defines(t), "SUBGROUP_REDUCE": 1})
        v[f"{n}_shmem"] = Variant(type_defines(t))
    return v


_VARIANTS = _variants()

KERNEL = Kernel(
    stem="mul_mat_vec",
    bindings=(
        Binding("w", "r", "uint8[rows, row_bytes] GGUF blocks"),
        Binding("x", "r", "float[NUM_COLS, x_stride]"),
        Binding("y", "w", "float[NUM_COLS, y_stride]"),
        Binding("residual", "r", "float[NUM_COLS, r_stride] (ADD_RESIDUAL; bind y when unused)"),
    ),
    push=np.dtype(
        [
            ("rows", "<u4"),
            ("K", "<u4"),
            ("row_bytes", "<u4"),
            ("x_stride", "<u4"),
            ("y_stride", "<u4"),
            ("r_stride", "<u4"),
        ]
    ),
    spec=(
        SpecConst("WG", 0, 64, choices=(32, 64, 128, 256), doc="invocations (8 lanes per row)"),
        SpecConst("NR", 1, _gpu(2, 1), choices=(1, 2, 4), doc="rows per invocation (x reuse)"),
        SpecConst("NUM_COLS", 2, 1, doc="activation columns, 1..8 (set by the caller)"),
        SpecConst("UNROLL", 3, _gpu(2, 1), choices=(1, 2, 4), doc="units loaded ahead per lane"),
        SpecConst("ADD_RESIDUAL", 4, False, doc="y = W x + residual"),
        SpecConst(
            "PREFETCH",
            5,
            _gpu(True, False),
            choices=(False, True),
            doc="load the next units while multiplying the current ones",
        ),
    ),
    variants=_VARIANTS,
    op_requires={n: ("shuffle",) for n in _VARIANTS if not n.endswith("_shmem")},
    contract=_contract,
    variant_contract=_variant_contract,
    doc="quantized matrix × 1..8 vectors, canonical (batch-invariant) reduction",
)


def shape_class(rows: int, K: int, ncols: int) -> str:
    """Tuning class: columns, and rows / K rounded up to powers of two."""
    return f"c{ncols}-r{_pow2_bucket(rows)}-k{_pow2_bucket(K)}"


def variant_for(info, w_type, reduce: str | None = None) -> str:
    """The subgroup variant of a type when the device can run it, else the shared-memory one;
    `reduce` = 'subgroup' or 'shmem' forces one."""
    n = type_name(w_type)
    if reduce == "shmem":
        return f"{n}_shmem"
    if reduce == "subgroup":
        return n
    if n in KERNEL.supported_variants(info) and info.min_subgroup_size >= LANES:
        return n
    return f"{n}_shmem"


def pipeline(
    device,
    w_type,
    ncols: int,
    rows: int | None = None,
    K: int | None = None,
    residual: bool = False,
    reduce: str | None = None,
    **overrides,
):
    """The pipeline for one weight type and column count. Resolution: spec defaults < tuning
    database (by shape class, when rows and K are given) < overrides. Falls back to the
    shared-memory variant when the subgroup one's contract fails and `reduce` is not forced."""
    if not 1 <= ncols <= MAX_COLS:
        raise ValueError(f"mul_mat_vec: {ncols} columns; one dispatch takes 1..{MAX_COLS}")
    variant = variant_for(device.info, w_type, reduce)
    sc = shape_class(rows, K, ncols) if rows is not None and K is not None else None
    ov = {**overrides, "NUM_COLS": ncols, "ADD_RESIDUAL": bool(residual)}
    try:
        return KERNEL.pipeline(device, variant, shape_class=sc, **ov)
    except ContractError:
        if reduce is not None or variant.endswith("_shmem"):
            raise
        return KERNEL.pipeline(device, f"{variant}_shmem", shape_class=sc, **ov)


def groups(kp, rows: int) -> tuple[int, int]:
    per_wg = kp.spec["WG"] // LANES * kp.spec["NR"]
    return split_groups(ceil_div(rows, per_wg))


def dispatch(
    rec,
    kp,
    w,
    x,
    y,
    rows: int,
    K: int,
    row_bytes: int,
    residual=None,
    x_stride: int | None = None,
    y_stride: int | None = None,
    r_stride: int | None = None,
):
    """Record y[c, :rows] = W·x[c] (+ residual[c]) for c < kp.spec['NUM_COLS'].

    w: buffer of rows × row_bytes GGUF bytes; x: float (cols, x_stride); y: float (cols, y_stride);
    residual: float (cols, r_stride) when the pipeline was built with residual=True (r_stride 0:
    one bias vector for every column)."""
    x_stride = K if x_stride is None else x_stride
    y_stride = rows if y_stride is None else y_stride
    if x_stride % 4:
        raise ContractError(f"mul_mat_vec: x_stride={x_stride} must be a multiple of 4")
    if w.bound_bytes < -(-rows * row_bytes // 4) * 4:
        raise ContractError(
            f"mul_mat_vec: the weight binding is {w.bound_bytes} bytes; it must cover "
            f"rows * row_bytes = {rows * row_bytes} rounded up to 4 (the shader "
            "reads whole words)"
        )
    if kp.spec["ADD_RESIDUAL"] and residual is None:
        raise ValueError("mul_mat_vec: pipeline adds a residual but none was given")
    r_stride = rows if r_stride is None else r_stride
    kp.record(
        rec,
        [w, x, y, residual if residual is not None else y],
        groups(kp, rows),
        rows=rows,
        K=K,
        row_bytes=row_bytes,
        x_stride=x_stride,
        y_stride=y_stride,
        r_stride=r_stride,
    )


def reference(w_raw, w_type, x, residual=None) -> np.ndarray:
    """float64 oracle: dequantize(W) @ x.T (+ residual), as float32 (cols, rows)."""
    w = quants.dequantize(np.asarray(w_raw, np.uint8), w_type).astype(np.float64)
    x = np.atleast_2d(np.asarray(x, np.float32)).astype(np.float64)
    y = x @ w.T
    if residual is not None:
        y = y + np.asarray(residual, np.float64)
    return y.astype(np.float32)
