"""softmax.comp against pipelines/softmax.reference on lavapipe: odd widths and row counts,
scale, -inf entries and rows, in place on strided rows, batch invariance (R5).

Tolerance: rtol 2e-5, atol 1e-9. Each output is exp(z − m)·(1/Σ): exp is allowed 3 + 2|z − m| ulp
(|z − m| ≲ 30 here, ≤ 63 ulp ≈ 4e-6), the f32 sum of n ≤ 5000 terms (per-lane partials then a
tree) a few 1e-6, the reciprocal and product 2 ulp. Probabilities are relative quantities, so
the bound is relative; atol only covers values below f32's normal range.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.errors import ContractError
from vkinfer.pipelines import softmax as k
from vkinfer.vk.commands import one_shot

RTOL, ATOL = 2e-5, 1e-9


@pytest.mark.parametrize("rows", [1, 3, 37])
@pytest.mark.parametrize("n", [1, 7, 33, 100, 129])
def test_softmax_matches_reference(rng, rows, n):
    x = (rng.standard_normal((rows, n)) * 3).astype(np.float32)
    np.testing.assert_allclose(ops.softmax(x), k.reference(x), RTOL, ATOL)


def test_scale_wide_rows_and_sums_to_one(rng):
    x = (rng.standard_normal((3, 5000)) * 10).astype(np.float32)
    y = ops.softmax(x, scale=0.25)
    np.testing.assert_allclose(y, k.reference(x, 0.25), RTOL, ATOL)
    np.testing.assert_allclose(y.astype(np.float64).sum(-1), 1.0, rtol=1e-5)


def test_large_logits_and_minus_infinity(rng):
    x = (rng.standard_normal((4, 40)) * 3).astype(np.float32)
    x[0] += 1e4  # stability: no overflow after the max is subtracted
    x[1, ::3] = -np.inf  # masked entries get exactly 0
    x[2] = -np.inf  # a fully masked row gives zeros, not NaN
    y = ops.softmax(x)
    np.testing.assert_allclose(y, k.reference(x), RTOL, ATOL)
    assert (y[1, ::3] == 0).all() and (y[2] == 0).all() and np.isfinite(y).all()


@pytest.mark.parametrize("wg", k.KERNEL.spec[0].choices)
def test_every_workgroup_size(rng, wg):
    x = rng.standard_normal((3, 129)).astype(np.float32)
    np.testing.assert_allclose(ops.softmax(x, WG=wg), k.reference(x), RTOL, ATOL)


def test_batch_invariance(rng):
    x = (rng.standard_normal((5, 129)) * 3).astype(np.float32)
    np.testing.assert_array_equal(ops.softmax(x[3:4])[0], ops.softmax(x)[3])


def test_in_place_on_strided_rows(device, rng):
    # rows of 10 inside rows of 16 (e.g. router logits with padding); the padding is untouched
    x = rng.standard_normal((6, 16)).astype(np.float32)
    b = device.memory.alloc(x.nbytes)
    b.write(x)
    kp = k.KERNEL.pipeline(device, WG=32)
    with one_shot(device) as rec:
        k.dispatch(rec, kp, b, b, 10, 6, 2.0, x_view=(3, 16), y_view=(3, 16))
    got = b.read(np.float32, x.shape)
    np.testing.assert_allclose(got[:, 3:13], k.reference(x[:, 3:13], 2.0), RTOL, ATOL)
    np.testing.assert_array_equal(got[:, :3], x[:, :3])
    np.testing.assert_array_equal(got[:, 13:], x[:, 13:])
    b.free()


def test_contract(device):
    with pytest.raises(ContractError):
        k.KERNEL.pipeline(device, WG=96)
