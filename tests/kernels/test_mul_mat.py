"""mul_mat.comp (tiled prefill matmul) on lavapipe against float64 `dequantize(W) @ x.T`, for
every weight type, token counts 1, 9 and 33 (partial column tiles), odd row counts (partial row
tiles), the smallest legal K (some lane groups idle), other tile shapes, and the residual epilogue.

Tolerance: the same as test_mul_mat_vec.py, 2^-24·[(K/8 + 4)·Σ|w·x| + 2·Σ|x|·(|w| + |m|)]: exact
products inside fma, K/8 fma roundings per lane group and 3 tree adds, plus the one-fma
dequantization of the types with a block minimum (numpy rounds twice).
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.errors import ContractError
from vkinfer.gguf import quants
from vkinfer.pipelines import mul_mat as k
from vkinfer.pipelines import mul_mat_vec as kv

TYPES = [t.name.lower() for t in kv.TYPES]
U = 2.0**-24


def _min_k(t) -> int:
    return max(quants.type_info(t).block_size, kv.unit_elems(t))


def _min_part(w_raw, t):
    """|m| per element: W dequantized with its quant bits zeroed (the block minimum or offset)."""
    info = quants.type_info(t)
    if not info.quantized:
        return 0.0
    z = np.ascontiguousarray(w_raw).copy()
    b = z.reshape(-1).view(info.block_dtype())
    for f in ("qs", "qh", "ql", "hmask"):
        if f in b.dtype.names:
            b[f] = 0
    return np.abs(quants.dequantize(z, t).astype(np.float64))


def _check(y, w_raw, t, x, residual=None):
    w = quants.dequantize(w_raw, t).astype(np.float64)
    x64 = np.atleast_2d(x).astype(np.float64)
    ref = x64 @ w.T
    n = w.shape[1] / 8 + 4
    bound = n * (np.abs(x64) @ np.abs(w).T)
    # the kernels dequantize d·q − m with one fma where numpy rounds twice: <= 2 ulp per weight
    bound += 2 * (np.abs(x64) @ (np.abs(w) + _min_part(w_raw, t)).T)
    if residual is not None:
        ref = ref + residual
        bound = bound + np.abs(residual)
    tol = U * bound + 1e-30
    err = np.abs(y.astype(np.float64) - ref)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert np.all(err <= tol), f"{t}: max err/tol {np.max(err / tol):.3g}"


@pytest.mark.parametrize("t", TYPES)
def test_every_type(rng, t):
    """9 tokens, 37 rows; K = smallest legal and 40 units (5 per lane group)."""
    for K in (_min_k(t), 40 * kv.unit_elems(t)):
        w = quants.random_blocks(t, 37, K, rng)
        x = rng.standard_normal((9, K)).astype(np.float32)
        _check(ops.mul_mat_tiled(w, t, x), w, t, x)


@pytest.mark.parametrize("n", [1, 33])
@pytest.mark.parametrize("t", ["q4_k", "q8_0"])
def test_token_counts(rng, t, n):
    w = quants.random_blocks(t, 67, 768, rng)
    x = rng.standard_normal((n, 768)).astype(np.float32)
    y = ops.mul_mat_tiled(w, t, x)
    _check(y, w, t, x)
    if n > 8:  # the dispatcher picks this kernel above 8 tokens
        np.testing.assert_array_equal(ops.mul_mat(w, t, x), y)


@pytest.mark.parametrize(
    "tile",
    [
        {"BM": 64, "BN": 32, "TM": 8, "TN": 8, "SLAB": 8},  # the GPU default
        {"BM": 32, "BN": 32, "TM": 4, "TN": 8, "SLAB": 4},
    ],
)
def test_tile_shapes(rng, tile):
    """Other tiles give the default tile's bits (tiles never change the numbers). The defaults
    are smaller on CPU devices, so the GPU default tile is tested here explicitly."""
    t = "q6_k"
    w = quants.random_blocks(t, 45, 512, rng)
    x = rng.standard_normal((19, 512)).astype(np.float32)
    y = ops.mul_mat_tiled(w, t, x, **tile)
    _check(y, w, t, x)
    np.testing.assert_array_equal(y.view(np.uint32), ops.mul_mat_tiled(w, t, x).view(np.uint32))


def test_residual(rng):
    t = "q5_k"
    w = quants.random_blocks(t, 37, 256, rng)
    x = rng.standard_normal((10, 256)).astype(np.float32)
    r = rng.standard_normal((10, 37)).astype(np.float32)
    y = ops.mul_mat_tiled(w, t, x, residual=r)
    _check(y, w, t, x, r)
    np.testing.assert_array_equal(y, ops.mul_mat_tiled(w, t, x) + r)


def test_contract(device):
    with pytest.raises(ContractError, match="WG"):
        k.pipeline(device, "q4_k", WG=128)  # 8 * (64/8) * (32/8) = 256
    with pytest.raises(ContractError, match="SLAB"):
        k.pipeline(device, "q4_k", SLAB=12)
    with pytest.raises(ContractError, match="multiple"):
        k.pipeline(device, "q4_k", BN=48)  # T = 8 * 6 = 48 does not divide BM = 64
    assert k.shape_class(4096, 4096, 512) == "n512-r4096-k4096"
