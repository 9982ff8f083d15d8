"""ops.gdn.gated_rms_norm (the GDN output norm, rms_norm.comp's "gated" variant) against the
float64 formula rms_norm(o over S)·w ⊙ silu(z) with w shared by the heads.

Tolerance: an S-term f32 sum of squares, inversesqrt and exp: max|gpu - ref| / max|ref| <= 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer.ops import gdn

TOL = 1e-5


def reference(o, z, w, eps):
    o, z, w = (np.asarray(a, np.float64) for a in (o, z, w))
    n = o / np.sqrt(np.mean(o * o, axis=-1, keepdims=True) + eps)
    return n * w * (z / (1.0 + np.exp(-z)))


def close(a, ref, tol=TOL):
    err = np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("S", [16, 64, 128])
def test_matches_reference(device, rng, S):
    T, H = 3, 5
    o = rng.standard_normal((T, H, S)).astype(np.float32)
    z = rng.standard_normal((T, H, S)).astype(np.float32)
    w = rng.standard_normal(S).astype(np.float32)
    close(gdn.gated_rms_norm(o, z, w, 1e-6), reference(o, z, w, 1e-6))


def test_small_values_and_rows_independent(device, rng):
    o = (1e-3 * rng.standard_normal((4, 2, 16))).astype(np.float32)
    z = rng.standard_normal((4, 2, 16)).astype(np.float32)
    w = rng.standard_normal(16).astype(np.float32)
    y = gdn.gated_rms_norm(o, z, w, 1e-5)
    close(y, reference(o, z, w, 1e-5))
    np.testing.assert_array_equal(gdn.gated_rms_norm(o[:1], z[:1], w, 1e-5), y[:1])  # R5


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="must be"):
        gdn.gated_rms_norm(np.ones((2, 3, 16)), np.ones((2, 3, 16)), np.ones(8))
