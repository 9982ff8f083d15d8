"""mul_mat.comp (tiled prefill matmul) on lavapipe against float64 `dequantize(W) @ x.T`, for
every weight type, token counts 1, 9 and 33 (partial column tiles), odd row counts (partial row
tiles), the smallest legal K (some lane groups idle), other tile shapes, and the residual epilogue.

Tolerance: mul_mat_vec.error_bound (the same canonical reduction; see test_mul_mat_vec.py).
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


def _min_k(t) -> int:
    return max(quants.type_info(t).block_size, kv.unit_elems(t))


def _check(y, w_raw, t, x, residual=None):
    w = quants.dequantize(w_raw, t).astype(np.float64)
    ref = np.atleast_2d(x).astype(np.float64) @ w.T
    if residual is not None:
        ref = ref + residual
    tol = kv.error_bound(w_raw, t, x, residual)
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
