"""shaders/gated_rms_norm.comp against the float64 reference.

Tolerance: an S_V-term f32 sum of squares, inversesqrt and exp: max|gpu - ref| / max|ref| <= 1e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer.errors import ContractError
from vkinfer.ops import gdn
from vkinfer.pipelines import gated_rms_norm as kn
from vkinfer.vk.commands import one_shot

TOL = 1e-5


def close(a, ref, tol=TOL):
    err = np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


@pytest.mark.parametrize("S", [16, 64, 128])
@pytest.mark.parametrize("WG", [8, 32, 128])
def test_matches_reference(device, rng, S, WG):
    T, H = 3, 5
    o = rng.standard_normal((T, H, S)).astype(np.float32)
    z = rng.standard_normal((T, H, S)).astype(np.float32)
    w = rng.standard_normal(S).astype(np.float32)
    close(gdn.gated_rms_norm(o, z, w, 1e-6, WG=WG), kn.reference(o, z, w, 1e-6))


def test_eps_and_rows_independent(device, rng):
    o = (1e-3 * rng.standard_normal((4, 2, 16))).astype(np.float32)
    z = rng.standard_normal((4, 2, 16)).astype(np.float32)
    w = rng.standard_normal(16).astype(np.float32)
    y = gdn.gated_rms_norm(o, z, w, 1e-5)
    close(y, kn.reference(o, z, w, 1e-5))
    np.testing.assert_array_equal(gdn.gated_rms_norm(o[:1], z[:1], w, 1e-5), y[:1])  # R5


def test_strided_gate(device, rng):
    """z read from a wider buffer at an offset (e.g. a fused projection output)."""
    T, H, S = 2, 3, 16
    o = rng.standard_normal((T, H, S)).astype(np.float32)
    z = rng.standard_normal((T, H, S)).astype(np.float32)
    w = rng.standard_normal(S).astype(np.float32)
    stride, off = H * S + 11, 4
    zb = np.full((T, stride), np.nan, np.float32)
    zb[:, off:off + H * S] = z.reshape(T, -1)
    kp = kn.KERNEL.pipeline(device, S_V=S)
    bufs = [device.memory.alloc(a.nbytes) for a in (o, zb, w, o)]
    try:
        for b, a in zip(bufs[:3], (o, zb, w)):
            b.write(a)
        with one_shot(device) as rec:
            kn.dispatch(rec, kp, *bufs, rows=T, H=H, eps=1e-6, z_off=off, z_stride=stride)
        close(bufs[3].read(np.float32, o.shape), kn.reference(o, z, w, 1e-6))
    finally:
        for b in bufs:
            b.free()


def test_contract(device):
    with pytest.raises(ContractError):
        kn.KERNEL.pipeline(device, WG=48)
