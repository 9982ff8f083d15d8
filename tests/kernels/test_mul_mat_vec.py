"""mul_mat_vec.comp on lavapipe against float64 `dequantize(W) @ x.T` (gguf/quants.py, itself
checked against the gguf package), for every weight type, 1..8 columns, odd row counts, the
smallest legal K, both reduction variants, the residual/bias epilogue and grids split in y.

Tolerance: |y - ref| <= 2^-24·[(K/8 + 4)·Σ_k|w·x| + 2·Σ_k|x|·(|w| + |m|)] (+ 2^-24·|residual|).
Each product is exact inside the fma, so the main error is f32 summation: a chain of K/8 fmas
per lane, then 3 butterfly adds — the classic bound γ_n·Σ|terms| with n = K/8 + 3 roundings,
plus one for slack. The second term covers the dequantization: the kernels compute d·q − m with
one fma where numpy (the reference) rounds twice, at most 2 ulp of |w| + |m| apart per weight
(m: the block minimum or offset); every other weight type is numpy-exact.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.errors import ContractError, UnsupportedError
from vkinfer.gguf import quants
from vkinfer.pipelines import mul_mat_vec as k
from vkinfer.vk.commands import one_shot

TYPES = [t.name.lower() for t in k.TYPES]
U = 2.0**-24


def _min_k(t) -> int:
    """Smallest legal K for a type: one block, or one 16-byte unit for the float types."""
    return max(quants.type_info(t).block_size, k.unit_elems(t))


def _weights(rng, t, rows, K):
    return quants.random_blocks(t, rows, K, rng)


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
    """All types, 3 columns, 37 rows (not a multiple of the 16 rows per workgroup); K = the
    smallest legal K (some lanes idle) and K = 40 units (5 per lane)."""
    for K in (_min_k(t), 40 * k.unit_elems(t)):
        w = _weights(rng, t, 37, K)
        x = rng.standard_normal((3, K)).astype(np.float32)
        _check(ops.mul_mat_vec(w, t, x), w, t, x)


GPU_DEFAULTS = {"WG": 64, "NR": 2, "UNROLL": 2, "PREFETCH": True}  # CPU devices use 1, 1, off


@pytest.mark.parametrize("t", ["q4_k", "q6_k", "q8_0", "f16", "q3_k", "iq4_nl"])
def test_gpu_defaults(rng, t):
    """The GPU default configuration (NR=2 row clamping, UNROLL/PREFETCH past the last unit)
    at the smallest K and at 9 units per lane plus one, against the reference and bitwise
    against the CPU defaults."""
    for K in (_min_k(t), 73 * k.unit_elems(t) if _min_k(t) < 256 else 9 * 256):
        w = _weights(rng, t, 37, K)
        x = rng.standard_normal((3, K)).astype(np.float32)
        y = ops.mul_mat_vec(w, t, x, **GPU_DEFAULTS)
        _check(y, w, t, x)
        np.testing.assert_array_equal(y.view(np.uint32), ops.mul_mat_vec(w, t, x).view(np.uint32))


@pytest.mark.parametrize("ncols", range(1, 9))
def test_columns(rng, ncols):
    """Every column count on Q4_K, 67 rows, K = 3 super-blocks."""
    w = _weights(rng, "q4_k", 67, 768)
    x = rng.standard_normal((ncols, 768)).astype(np.float32)
    _check(ops.mul_mat_vec(w, "q4_k", x), w, "q4_k", x)


@pytest.mark.parametrize("t", ["q6_k", "q8_0", "f16"])
def test_more_than_eight_columns(rng, t):
    """11 columns = a dispatch of 8 and one of 3."""
    w = _weights(rng, t, 21, 512)
    x = rng.standard_normal((11, 512)).astype(np.float32)
    _check(ops.mul_mat_vec(w, t, x), w, t, x)


@pytest.mark.parametrize("t", ["q4_k", "q8_0", "q3_k"])
def test_shmem_variant(rng, t):
    """The shared-memory reduction gives the subgroup variant's bits."""
    w = _weights(rng, t, 37, 512)
    x = rng.standard_normal((2, 512)).astype(np.float32)
    a = ops.mul_mat_vec(w, t, x, reduce="shmem")
    _check(a, w, t, x)
    b = ops.mul_mat_vec(w, t, x, reduce="subgroup")
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("t", ["q6_k", "bf16"])
def test_residual_and_bias(rng, t):
    K, rows = 512, 37
    w = _weights(rng, t, rows, K)
    x = rng.standard_normal((3, K)).astype(np.float32)
    r = rng.standard_normal((3, rows)).astype(np.float32)
    _check(ops.mul_mat_vec(w, t, x, residual=r), w, t, x, r)
    bias = rng.standard_normal(rows).astype(np.float32)
    _check(ops.mul_mat_vec(w, t, x, residual=bias), w, t, x, np.broadcast_to(bias, (3, rows)))
    # the residual added in the epilogue is one f32 add on top of the plain result
    plain = ops.mul_mat_vec(w, t, x)
    np.testing.assert_array_equal(ops.mul_mat_vec(w, t, x, residual=r), plain + r)


def test_in_place_residual_and_bias_stride(device, rng):
    """y += W x with y bound as both residual and output; r_stride 0 broadcasts a bias."""
    t, K, rows, nc = "q8_0", 256, 37, 2
    w = _weights(rng, t, rows, K)
    x = rng.standard_normal((nc, K)).astype(np.float32)
    y0 = rng.standard_normal((nc, rows)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    bw, bx, by, bb = (device.memory.alloc(a.nbytes) for a in (w, x, y0, bias))
    try:
        for b, a in ((bw, w), (bx, x), (by, y0), (bb, bias)):
            b.write(a)
        kp = k.pipeline(device, t, nc, residual=True)
        with one_shot(device) as rec:
            k.dispatch(rec, kp, bw, bx, by, rows, K, w.shape[1], residual=by)
        plain = ops.mul_mat_vec(w, t, x)
        np.testing.assert_array_equal(by.read(np.float32, (nc, rows)), plain + y0)
        with one_shot(device) as rec:
            k.dispatch(rec, kp, bw, bx, by, rows, K, w.shape[1], residual=bb, r_stride=0)
        np.testing.assert_array_equal(by.read(np.float32, (nc, rows)), plain + bias)
    finally:
        for b in (bw, bx, by, bb):
            b.free()


def test_grid_split_in_y(rng):
    """More than 65535 workgroups: 70000 rows at one row per workgroup (WG=8, NR=1)."""
    t, K, rows = "f32", 4, 70000
    w = _weights(rng, t, rows, K)
    x = rng.standard_normal((1, K)).astype(np.float32)
    y = ops.mul_mat_vec(w, t, x, WG=8, NR=1, reduce="shmem")
    _check(y, w, t, x)
    assert k.split_groups(70000) == (35000, 2)


def test_errors(rng):
    w = _weights(rng, "q4_k", 4, 256)
    x = rng.standard_normal((1, 256)).astype(np.float32)
    with pytest.raises(ValueError, match="144"):  # K=256 is 144 bytes, not 288
        ops.mul_mat_vec(np.concatenate([w, w], axis=1), "q4_k", x)
    with pytest.raises(ValueError, match="block size"):
        ops.mul_mat_vec(w, "q4_k", rng.standard_normal((1, 200)).astype(np.float32))
    with pytest.raises(UnsupportedError, match="q4_k"):  # lists the supported types
        ops.mul_mat_vec(w, "iq2_xxs", x)
    with pytest.raises(UnsupportedError, match="multiple of 8"):
        ops.mul_mat_vec(np.zeros((2, 12), np.uint8), "f16", np.zeros((1, 6), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        ops.mul_mat_vec(w.astype(np.int16), "q4_k", x)


def test_contract(device):
    with pytest.raises(ValueError, match="1..8"):
        k.pipeline(device, "q4_k", 9)
    with pytest.raises(ContractError, match="multiple of 8"):
        k.pipeline(device, "q4_k", 1, reduce="shmem", WG=12)
    assert set(k.KERNEL.supported_variants(device.info)) >= {"q4_k", "q4_k_shmem"}
    assert k.type_name("Q4_K") == "q4_k" and k.type_name(quants.T.Q8_0) == "q8_0"
