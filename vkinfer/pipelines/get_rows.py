"""get_rows: out[i, :] = dequantize(W[ids[i], :]), the embedding lookup, for every GGUF type the
matrix kernels read (block layouts: ggml-common.h via shaders/common/quants.glsl).

The ids live in a device buffer, so a recorded graph writes them per step (R3). The values are
bit-identical to vkinfer.gguf.quants.dequantize (and to the weights mul_mat_vec multiplies).
"""

from __future__ import annotations

import numpy as np

from ..errors import ContractError
from ..gguf import quants
from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require
from .mul_mat_vec import TYPES, type_defines, type_name, unit_elems

__all__ = ["KERNEL", "dispatch", "pipeline", "reference"]

MAX_Y = 65535


def _contract(spec, info):
    wg = spec["WG"]
    require(
        0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
        f"get_rows: WG={wg} exceeds the device's workgroup limits",
    )
    require(wg >= 16, f"get_rows: WG={wg} must be >= 16 (IQ4 codebook fill)")


KERNEL = Kernel(
    stem="get_rows",
    bindings=(
        Binding("w", "r", "uint8[rows, row_bytes] GGUF blocks"),
        Binding("ids", "r", "int32[n_ids]"),
        Binding("out", "w", "float[n_ids, out_stride]"),
    ),
    push=np.dtype(
        [
            ("rows", "<u4"),
            ("K", "<u4"),
            ("row_bytes", "<u4"),
            ("n_ids", "<u4"),
            ("out_stride", "<u4"),
        ]
    ),
    spec=(SpecConst("WG", 0, 64, choices=(32, 64, 128, 256), doc="units per workgroup"),),
    variants={t.name.lower(): Variant({**type_defines(t), "DQ_EXACT": 1}) for t in TYPES},
    contract=_contract,
    doc="embedding rows of a GGUF-typed table, dequantized to float32",
)


def shape_class(K: int, n_ids: int) -> str:
    """Row length (power-of-two bucket) and the id-count bucket: 1 (decode), 8 (verify),
    512 (prefill)."""
    n = 1 if n_ids <= 1 else 8 if n_ids <= 8 else 512
    return f"k{1 << max(0, int(K) - 1).bit_length()}-n{n}"


def pipeline(device, w_type, K: int | None = None, n_ids: int | None = None, **overrides):
    """The get_rows pipeline for a weight type; with K and n_ids, tuned values for that class."""
    cls = shape_class(K, n_ids) if K is not None and n_ids is not None else None
    return KERNEL.pipeline(device, type_name(w_type), shape_class=cls, **overrides)


def dispatch(
    rec,
    kp,
    w,
    ids,
    out,
    rows: int,
    K: int,
    row_bytes: int,
    n_ids: int,
    out_stride: int | None = None,
):
    """Record out[i, :K] = dequantize(W[ids[i]]) for i < n_ids (a zero row for a bad id)."""
    out_stride = K if out_stride is None else out_stride
    if out_stride % 4:
        raise ContractError(f"get_rows: out_stride={out_stride} must be a multiple of 4")
    if w.bound_bytes < -(-rows * row_bytes // 4) * 4:
        raise ContractError(
            f"get_rows: the weight binding is {w.bound_bytes} bytes; it must cover "
            f"rows * row_bytes = {rows * row_bytes} rounded up to 4"
        )
    t = quants.parse_type(kp.variant)
    gx = ceil_div(K // unit_elems(t), kp.spec["WG"])
    gy, gz = min(n_ids, MAX_Y), ceil_div(n_ids, MAX_Y)
    kp.record(
        rec,
        [w, ids, out],
        (gx, max(gy, 1), max(gz, 1)),
        rows=rows,
        K=K,
        row_bytes=row_bytes,
        n_ids=n_ids,
        out_stride=out_stride,
    )


def reference(w_raw, w_type, ids) -> np.ndarray:
    """numpy oracle: dequantize(W)[ids], float32 (zero rows for ids outside the table)."""
    w = quants.dequantize(np.asarray(w_raw, np.uint8), w_type)
    ids = np.asarray(ids, np.int64)
    ok = (ids >= 0) & (ids < w.shape[0])
    out = np.zeros((ids.size, w.shape[1]), np.float32)
    out[ok] = w[ids[ok]]
    return out
