"""mul_mat_vec: y[c, r] = Σ_k W[r, k]·x[c, k] (+ residual) for 1..8 columns, W in a GGUF type.

The decode (1 column) and MTP-verify (2..8 columns) matrix kernel: each weight byte is read once
for all columns. Block layouts: ggml-common.h, decoded by shaders/common/quants.glsl; block sizes
come from vkinfer/gguf/quants.py (R1) as the QK / BLOCK_BYTES defines.

Numerics (R5): every output is the canonical reduction of quants.glsl — LANES = 8 lanes per row,
lane l summing units l, l+8, …, each unit of a quantized type in the factored form (per run of
one scale: s = Σ fma(q, x), then acc = fma(s, dl, acc) and, with a block minimum, acc =
fma(Σx, mn, acc)), then the butterfly s[l] + s[l^m] — so a column's bits do not depend on
NUM_COLS, WG, NR, UNROLL, PREFETCH, the reduction variant, or on whether mul_mat (the tiled
prefill kernel) or mul_mat_id computed it. None of the tunables changes numerics.

Activations are staged in shared memory per step (shaders/common/matvec.glsl), so each
configuration also needs 2·NUM_COLS·UNROLL·UNIT_ELEMS floats of it (smem_bytes()).

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


# Runs per unit of each quantized type (shaders/common/quants.glsl #define RUNS; a test checks
# the two agree) and the types with a block minimum (HAS_MIN): the factored canonical form.
_RUNS = {T.Q4_K: 2, T.Q5_K: 2, T.Q6_K: 2, T.Q2_K: 4, T.Q3_K: 4}
_HAS_MIN = {T.Q4_1, T.Q5_1, T.Q2_K, T.Q4_K, T.Q5_K}


def runs(t) -> int:
    """Runs per unit (quants.glsl RUNS): the elements sharing one scale inside a unit; 0 for the
    float types, whose units are plain fma chains."""
    info = quants.type_info(t)
    return _RUNS.get(info.type, 1) if info.quantized else 0


def has_min(t) -> bool:
    """Whether a type's weights are dl·q + mn with a block minimum mn (quants.glsl HAS_MIN)."""
    return quants.type_info(t).type in _HAS_MIN


def smem_bytes(t, spec: dict, shmem_reduce: bool) -> int:
    """Shared memory of one workgroup (common/matvec.glsl): a chunk of staged activations
    (CHUNK units per lane, every column), the run sums of the types with a minimum, and the
    lane reduction without shuffles."""
    nc, ch = spec["NUM_COLS"], spec["CHUNK"]
    n = nc * ch * LANES * unit_elems(t) * 4
    if has_min(t):
        n += nc * ch * runs(t) * LANES * 4
    if shmem_reduce:
        n += spec["WG"] * spec["NR"] * nc * 4
    return n


# Shared memory the default chunk may take: the whole row for one column of K <= 4096 (Q4_K:
# 16 KiB of activations + 1 KiB of run sums), and about that much otherwise (the SM keeps
# several workgroups resident).
CHUNK_BYTES = 17 << 10


def default_chunk(
    t, ncols: int, unroll: int, K: int | None, wg: int = 128, xprefetch: bool = False
) -> int:
    """Units per lane per staged chunk (common/matvec.glsl): as many as CHUNK_BYTES hold for
    `ncols` columns (with XPREFETCH: as the `wg` invocations' registers hold a chunk ahead, 8
    vec4 each), no more than the row needs; a multiple of `unroll`."""
    nruns = max(runs(t), 1)
    per_unit = ncols * LANES * unit_elems(t) * 4 + (ncols * nruns * LANES * 4 if has_min(t) else 0)
    ch = CHUNK_BYTES // per_unit
    if xprefetch:
        run_pieces = unit_elems(t) // 4 // nruns
        ch = min(ch, max(1, 8 // run_pieces) * wg // (ncols * nruns * LANES))
    if K:
        ch = min(ch, -(-(K // unit_elems(t)) // LANES))
    return max(unroll, ch // unroll * unroll)


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


def pow2_bucket(n: int) -> int:
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
    ch = spec["CHUNK"]
    require(ch >= un and ch % un == 0, f"mul_mat_vec: CHUNK={ch} must be a multiple of UNROLL={un}")


def reduction_contract(stem: str):
    """The variant rules of the kernels built on quants.glsl's 8-lane row reduction
    (mul_mat_vec, mul_mat_id): shared memory fits; the subgroup variant needs subgroups of at
    least 8 lanes and whole subgroups per workgroup."""

    def check(variant, spec, info):
        shmem = variant.endswith("_shmem")
        need = smem_bytes(variant.removesuffix("_shmem"), spec, shmem)
        require(
            need <= info.max_compute_shared_memory,
            f"{stem}/{variant}: {need} bytes of shared memory exceed the device's "
            f"{info.max_compute_shared_memory} (fewer NUM_COLS x UNROLL)",
        )
        if not shmem:
            require(
                info.min_subgroup_size >= LANES,
                f"{stem}/{variant}: subgroups of {info.min_subgroup_size} < {LANES} lanes",
            )
            require(
                spec["WG"] % info.max_subgroup_size == 0,
                f"{stem}/{variant}: WG={spec['WG']} is not a multiple of the subgroup size "
                f"{info.max_subgroup_size}",
            )

    return check


def reduction_variants() -> dict:
    """Per weight type: the subgroup-shuffle reduction and the shared-memory one (same bits)."""
    v = {}
    for t in TYPES:
        n = t.name.lower()
        v[n] = Variant({**type_defines(t), "SUBGROUP_REDUCE": 1})
        v[f"{n}_shmem"] = Variant(type_defines(t))
    return v


_variant_contract = reduction_contract("mul_mat_vec")
_VARIANTS = reduction_variants()

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
        # WG, NR, UNROLL, PREFETCH: pipeline() takes default_spec() (per type and columns) over
        # these, which are what a bare KERNEL.pipeline() gets
        SpecConst("WG", 0, _gpu(128, 64), choices=(32, 64, 128, 256), doc="invocations"),
        SpecConst("NR", 1, _gpu(4, 1), choices=(1, 2, 4), doc="rows per invocation (x reuse)"),
        SpecConst("NUM_COLS", 2, 1, doc="activation columns, 1..8 (set by the caller)"),
        SpecConst("UNROLL", 3, 1, choices=(1, 2, 4), doc="units loaded ahead per lane"),
        SpecConst("ADD_RESIDUAL", 4, False, doc="y = W x + residual"),
        SpecConst(
            "PREFETCH",
            5,
            _gpu(True, False),
            choices=(False, True),
            doc="load the next units while multiplying the current ones",
        ),
        SpecConst(
            "CHUNK",
            6,
            2,
            choices=(1, 2, 4, 8, 16, 32),
            doc="units per lane per chunk of activations staged in shared memory",
        ),
        SpecConst(
            "XPREFETCH",
            7,
            False,
            choices=(False, True),
            doc="issue the next chunk's activation loads before the current chunk's arithmetic",
        ),
    ),
    variants=_VARIANTS,
    op_requires={n: ("shuffle",) for n in _VARIANTS if not n.endswith("_shmem")},
    contract=_contract,
    variant_contract=_variant_contract,
    doc="quantized matrix × 1..8 vectors, canonical (batch-invariant) reduction",
)


def default_spec(info, w_type, ncols: int, rows: int | None = None, K: int | None = None) -> dict:
    """The untuned WG, NR, UNROLL, PREFETCH for one call (pipeline() uses them below the tuning
    database; the autotuner starts from them). Registers per invocation grow with NR·NUM_COLS
    (accumulators) and with UNROLL·NR·(1 + PREFETCH) raw units, so the many-column shapes get
    fewer rows and units per invocation. CPU devices (lavapipe): the smallest configuration
    (unrolling only costs JIT time there). The numbers never depend on these."""
    if getattr(info, "type", "") == "cpu":
        spec = {"WG": 64, "NR": 1, "UNROLL": 1, "PREFETCH": False}
    else:
        # H100 measurements (docs/perf-notes-matvec.md): 64 rows per workgroup (WG 128, NR 4)
        # is best from 14336 rows up at every column count; a few thousand rows need more
        # workgroups than that gives (the GPU is filled by workgroups, not by longer ones): 16
        # rows, with the next chunk's activations prefetched (about one warp per scheduler:
        # nothing else hides the staging latency; with more rows the registers cost more). The
        # next step's weights are prefetched only for the types with a block minimum (small
        # raw units) at 1-2 columns; elsewhere the registers cost more than the latency.
        small = rows is not None and rows <= 8192
        spec = {
            "WG": 64 if small else 128,
            "NR": 2 if small else 4,
            "UNROLL": 2 if small and ncols == 1 else 1,
            "PREFETCH": ncols <= 2 and has_min(w_type),
            "XPREFETCH": small,
        }
    spec["CHUNK"] = default_chunk(
        w_type, ncols, spec["UNROLL"], K, spec["WG"], spec.get("XPREFETCH", False)
    )
    return spec


def shape_class(rows: int, K: int, ncols: int) -> str:
    """Tuning class: columns, and rows / K rounded up to powers of two."""
    return f"c{ncols}-r{pow2_bucket(rows)}-k{pow2_bucket(K)}"


def reduction_variant(kernel, info, w_type, reduce: str | None = None,
                      shape_class: str | None = None) -> str:
    """The reduction variant of a type for `kernel` (mul_mat_vec or mul_mat_id): forced by
    `reduce` ('subgroup' | 'shmem'); else the faster one in the tuning database for
    `shape_class` (same bits either way); else the subgroup variant when the device can run it,
    the shared-memory one otherwise."""
    n = type_name(w_type)
    if reduce == "shmem":
        return f"{n}_shmem"
    if reduce == "subgroup":
        return n
    default = n if n in kernel.supported_variants(info) and info.min_subgroup_size >= LANES \
        else f"{n}_shmem"
    if shape_class is None:
        return default
    from .. import tuning

    return tuning.best_variant(info, kernel, shape_class, (n, f"{n}_shmem"), default=default)


def variant_for(info, w_type, reduce: str | None = None, shape_class: str | None = None) -> str:
    """mul_mat_vec's reduction variant (see reduction_variant)."""
    return reduction_variant(KERNEL, info, w_type, reduce, shape_class)


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
    """The pipeline for one weight type and column count. Resolution: spec defaults <
    default_spec() (per device, type and columns) < tuning database (by shape class, when rows
    and K are given) < overrides. Falls back to the shared-memory variant when the subgroup
    one's contract fails and `reduce` is not forced."""
    if not 1 <= ncols <= MAX_COLS:
        raise ValueError(f"mul_mat_vec: {ncols} columns; one dispatch takes 1..{MAX_COLS}")
    from .. import tuning

    sc = shape_class(rows, K, ncols) if rows is not None and K is not None else None
    variant = variant_for(device.info, w_type, reduce, sc)

    def build(var):
        values = default_spec(device.info, w_type, ncols, rows, K)
        tuned = tuning.lookup(device.info, KERNEL, var, sc) if sc is not None else None
        values.update({k: v for k, v in (tuned or {}).items() if k in values})
        values.update(overrides)
        values.update(NUM_COLS=ncols, ADD_RESIDUAL=bool(residual))
        if "CHUNK" not in overrides and "CHUNK" not in (tuned or {}):  # follows UNROLL
            values["CHUNK"] = default_chunk(
                w_type, ncols, values["UNROLL"], K, values["WG"], values.get("XPREFETCH", False)
            )
        return KERNEL.pipeline(device, var, **values)

    try:
        return build(variant)
    except ContractError:
        if reduce is not None or variant.endswith("_shmem"):
            raise
        return build(f"{variant}_shmem")


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


U = 2.0**-24  # float32 unit roundoff


def _offsets(w_raw, t) -> np.ndarray | float:
    """|mn| per weight (float64, W's shape): the block minimum of the HAS_MIN types (W
    dequantized with its quant bits zeroed), else 0."""
    if not has_min(t):
        return 0.0
    z = np.ascontiguousarray(w_raw, np.uint8).copy()
    b = z.reshape(-1).view(quants.type_info(t).block_dtype())
    for f in ("qs", "qh"):
        if f in b.dtype.names:
            b[f] = 0
    return np.abs(quants.dequantize(z, t).astype(np.float64))


def error_bound(w_raw, w_type, x, residual=None) -> np.ndarray:
    """Bound on |y - reference(...)| for the canonical reduction, (cols, rows) float64.

    Every product is exact inside its fma; the error is float32 rounding of sums, at most
    n·u·Σ|terms| for a chain of n roundings (first order). Float types: a chain of K/8 fmas per
    lane and 3 butterfly adds, n = K/8 + 4 over Σ|w·x|. Quantized types (factored form): per
    run a chain of RE = UNIT_ELEMS/RUNS fmas (Σq·x) and adds (Σx), 2 fmas per run into the lane's
    accumulator (2·RUNS per unit, ⌈units/8⌉ units per lane), 3 butterfly adds; every term is at
    most |x|·(|dl·q| + |mn|) <= |x|·(|w| + 2|mn|), so n = RE + 2·RUNS·⌈units/8⌉ + 5 over
    Σ|x|·(|w| + 2|mn|). A residual adds one rounding of |y + residual|."""
    t = quants.parse_type(w_type)
    w = quants.dequantize(np.asarray(w_raw, np.uint8), t).astype(np.float64)
    ax = np.abs(np.atleast_2d(np.asarray(x, np.float32)).astype(np.float64))
    K = w.shape[1]
    if not runs(t):
        bound = (K / LANES + 4) * U * (ax @ np.abs(w).T)
    else:
        nunits = K // unit_elems(t)
        n = unit_elems(t) / runs(t) + 2 * runs(t) * -(-nunits // LANES) + 5
        bound = n * U * (ax @ (np.abs(w) + 2 * _offsets(w_raw, t)).T)
    if residual is not None:
        ref = ax @ np.abs(w).T + np.abs(np.asarray(residual, np.float64))
        bound = bound + U * ref
    return bound + 1e-30


def reference(w_raw, w_type, x, residual=None) -> np.ndarray:
    """float64 oracle: dequantize(W) @ x.T (+ residual), as float32 (cols, rows)."""
    w = quants.dequantize(np.asarray(w_raw, np.uint8), w_type).astype(np.float64)
    x = np.atleast_2d(np.asarray(x, np.float32)).astype(np.float64)
    y = x @ w.T
    if residual is not None:
        y = y + np.asarray(residual, np.float64)
    return y.astype(np.float32)
