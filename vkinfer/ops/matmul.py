"""ops.matmul: GGUF-quantized weight × float32 activations, and embedding row lookup, on the GPU.

    mul_mat(w_raw, w_type, x)        (n, K) -> (n, rows); matvec for n <= 8, tiled above
    mul_mat_vec(w_raw, w_type, x)    force shaders/mul_mat_vec.comp (8 columns per dispatch)
    mul_mat_tiled(w_raw, w_type, x)  force shaders/mul_mat.comp
    get_rows(w_raw, w_type, ids)     (n,) int ids -> (n, K) dequantized rows

`w_raw` is the tensor as GGUF stores it: uint8 (rows, bytes_per_row); `w_type` a
`gguf.GGMLQuantizationType`, its id, or its case-insensitive name ("q4_k"). Both matrix paths
give the same bits for the same column (DESIGN R5).
"""

from __future__ import annotations

import numpy as np

from ..errors import ContractError, UnsupportedError
from ..gguf import quants
from ..pipelines import get_rows as kg
from ..pipelines import mul_mat as km
from ..pipelines import mul_mat_vec as kv
from ._base import op_session, run

__all__ = ["get_rows", "mul_mat", "mul_mat_tiled", "mul_mat_vec"]


def _weights(w_raw, w_type, K: int | None, what: str):
    """Validated (type, uint8 weights, K)."""
    t = quants.parse_type(w_type, supported_only=True)
    info = quants.type_info(t)
    w = np.asarray(w_raw)
    if w.dtype != np.uint8 or w.ndim != 2:
        raise ValueError(
            f"{what}: w_raw must be uint8 (rows, bytes_per_row); got {w.dtype} {w.shape}"
        )
    if K is None:
        if w.shape[1] % info.type_size:
            raise ValueError(
                f"{what}: rows of {w.shape[1]} bytes are not whole {info.name} "
                f"blocks of {info.type_size} bytes"
            )
        K = w.shape[1] // info.type_size * info.block_size
    if K % info.block_size:
        raise ValueError(
            f"{what}: K={K} is not a multiple of the {info.name} block size {info.block_size}"
        )
    want = quants.row_bytes(t, K)
    if w.shape[1] != want:
        raise ValueError(
            f"{what}: a {info.name} row of K={K} elements is {want} bytes; w_raw "
            f"rows are {w.shape[1]}"
        )
    try:
        kv.check_k(t, K, what)
    except ContractError as e:
        raise UnsupportedError(str(e)) from None
    if w.shape[0] == 0:
        raise ValueError(f"{what}: w_raw has no rows")
    return t, np.ascontiguousarray(w), K


def _upload_weights(tmp, w):
    """Upload with the size rounded up to 16 bytes: the shaders read whole 32-bit words (and
    uvec4s), so the bound range must cover the last partial word of e.g. a Q6_K tensor."""
    flat = w.reshape(-1)
    pad = -flat.size % 16
    return tmp.upload(np.concatenate([flat, np.zeros(pad, np.uint8)]) if pad else flat)


def _activations(x, what: str):
    x = np.asarray(x, np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{what}: x must be (n, K) float32; got shape {x.shape}")
    return np.ascontiguousarray(x)


def _residual(residual, n: int, rows: int, what: str):
    if residual is None:
        return None
    r = np.asarray(residual, np.float32)
    r = np.broadcast_to(r, (n, rows)) if r.ndim <= 2 else r
    if r.shape != (n, rows):
        raise ValueError(f"{what}: residual must broadcast to ({n}, {rows}); got {r.shape}")
    return np.ascontiguousarray(r)


def mul_mat(w_raw, w_type, x, residual=None, device=None, **spec) -> np.ndarray:
    """x @ dequantize(W).T (+ residual): float32 (n, rows). n <= 8 runs the matvec kernel,
    more the tiled kernel; the bits are the same either way."""
    x = _activations(x, "mul_mat")
    if x.shape[0] <= kv.MAX_COLS:
        return mul_mat_vec(w_raw, w_type, x, residual=residual, device=device, **spec)
    return mul_mat_tiled(w_raw, w_type, x, residual=residual, device=device, **spec)


def mul_mat_vec(
    w_raw, w_type, x, residual=None, device=None, reduce: str | None = None, **spec
) -> np.ndarray:
    """Like mul_mat, always through shaders/mul_mat_vec.comp (at most 8 columns per dispatch;
    `reduce` = 'subgroup' or 'shmem' forces a reduction variant; `spec` overrides WG, NR, ...)."""
    x = _activations(x, "mul_mat_vec")
    t, w, K = _weights(w_raw, w_type, x.shape[1], "mul_mat_vec")
    rows, n = w.shape[0], x.shape[0]
    res = _residual(residual, n, rows, "mul_mat_vec")
    if n == 0:
        return np.zeros((0, rows), np.float32)
    with op_session(device) as (dev, tmp):
        bw = _upload_weights(tmp, w)
        chunks = []  # (x buffer, y buffer, residual buffer, columns): 8 columns per dispatch
        for c0 in range(0, n, kv.MAX_COLS):
            c1 = min(n, c0 + kv.MAX_COLS)
            chunks.append(
                (
                    tmp.upload(x[c0:c1]),
                    tmp.empty((c1 - c0) * rows * 4),
                    tmp.upload(res[c0:c1]) if res is not None else None,
                    c1 - c0,
                )
            )
        pipes = {
            nc: kv.pipeline(dev, t, nc, rows, K, residual=res is not None, reduce=reduce, **spec)
            for nc in {c[3] for c in chunks}
        }

        def record(rec):
            for bx, by, br, nc in chunks:
                kv.dispatch(rec, pipes[nc], bw, bx, by, rows, K, w.shape[1], residual=br)

        run(dev, record)
        return np.concatenate([by.read(np.float32, (nc, rows)) for _, by, _, nc in chunks])


def mul_mat_tiled(w_raw, w_type, x, residual=None, device=None, **spec) -> np.ndarray:
    """Like mul_mat, always through shaders/mul_mat.comp (any n; `spec` overrides BM, BN, ...)."""
    x = _activations(x, "mul_mat_tiled")
    t, w, K = _weights(w_raw, w_type, x.shape[1], "mul_mat_tiled")
    rows, n = w.shape[0], x.shape[0]
    res = _residual(residual, n, rows, "mul_mat_tiled")
    if n == 0:
        return np.zeros((0, rows), np.float32)
    with op_session(device) as (dev, tmp):
        bw, bx = _upload_weights(tmp, w), tmp.upload(x)
        by = tmp.empty(n * rows * 4)
        br = tmp.upload(res) if res is not None else None
        kp = km.pipeline(dev, t, rows, K, n, residual=res is not None, **spec)
        run(dev, lambda rec: km.dispatch(rec, kp, bw, bx, by, rows, K, w.shape[1], n, residual=br))
        return by.read(np.float32, (n, rows))


def get_rows(w_raw, w_type, ids, device=None, **spec) -> np.ndarray:
    """Dequantized rows W[ids]: float32 (len(ids), K), by shaders/get_rows.comp."""
    t, w, K = _weights(w_raw, w_type, None, "get_rows")
    ids = np.asarray(ids)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"get_rows: ids must be a 1-D integer array; got {ids.dtype} {ids.shape}")
    rows = w.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= rows):
        raise ValueError(f"get_rows: ids must be in [0, {rows}); got {ids.min()}..{ids.max()}")
    n = ids.size
    if n == 0:
        return np.zeros((0, K), np.float32)
    with op_session(device) as (dev, tmp):
        bw, bi = _upload_weights(tmp, w), tmp.upload(ids.astype(np.int32))
        bo = tmp.empty(n * K * 4)
        kp = kg.pipeline(dev, t, K=K, n_ids=n, **spec)
        run(dev, lambda rec: kg.dispatch(rec, kp, bw, bi, bo, rows, K, w.shape[1], n))
        return bo.read(np.float32, (n, K))
