"""rms_norm.comp against pipelines/rms_norm.reference on lavapipe: every variant, odd widths
and row counts, per-head rows inside fused tensors, in-place aliasing, batch invariance (R5).

Tolerance: rtol 1e-5. Each output is x·scale·w (·silu(g)), a product with no cancellation, so
its relative error is that of scale plus a few roundings: the f32 sum of n squares (per-lane
partials then a tree) errs by at most ~(n/WG + log2 WG)·2^-24 ≈ 3e-6 for n = 4096, inversesqrt
adds 2 ulp, exp in silu 3 + 2|x| ulp (≤ ~1e-6 here).
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.errors import ContractError
from vkinfer.ops import norms
from vkinfer.pipelines import rms_norm as k
from vkinfer.vk.commands import one_shot

RTOL, ATOL = 1e-5, 1e-7
EPS = 1e-6
ROWS = (1, 3, 37)
WIDTHS = (1, 7, 33, 100, 129)


def _data(rng, *shape):
    # random, non-zero, mixed magnitudes
    return (rng.standard_normal(shape) * rng.uniform(0.1, 3.0)).astype(np.float32)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("n", WIDTHS)
def test_rms_norm_weight(rng, rows, n):
    x, w = _data(rng, rows, n), _data(rng, n)
    np.testing.assert_allclose(ops.rms_norm(x, w, EPS), k.reference(x, w, EPS), RTOL, ATOL)


@pytest.mark.parametrize("rows,n", [(1, 1), (3, 7), (37, 33), (5, 129), (2, 4096)])
def test_rms_norm_variants(rng, rows, n):
    x, w, r = _data(rng, rows, n), _data(rng, n), _data(rng, rows, n)
    np.testing.assert_allclose(ops.rms_norm(x, None, EPS), k.reference(x, None, EPS), RTOL, ATOL)
    for wt in (w, None):
        y, h = ops.rms_norm(x, wt, EPS, residual=r)
        y_ref, h_ref = k.reference(x, wt, EPS, r=r)
        np.testing.assert_array_equal(h, h_ref)  # one f32 add, the same op as numpy's
        np.testing.assert_allclose(y, y_ref, RTOL, ATOL)
    np.testing.assert_allclose(norms.rms_norm_gated(x, w, r, EPS),
                               k.reference(x, w, EPS, gate=r), 2 * RTOL, ATOL)
    np.testing.assert_allclose(ops.l2_norm(x, EPS), k.reference(x, eps=EPS, mode="l2"), RTOL, ATOL)


def test_l2_norm_eps_inside_the_sum(rng):
    # pitfall 3: x / sqrt(Σx² + eps), not RMS; with a large eps the difference is visible
    x = _data(rng, 3, 16) * 0.01
    y = ops.l2_norm(x, 1e-3)
    np.testing.assert_allclose(y, x / np.sqrt((x.astype(np.float64) ** 2).sum(-1, keepdims=True)
                                              + 1e-3), RTOL, ATOL)


@pytest.mark.parametrize("wg", k.KERNEL.spec[0].choices)
def test_every_workgroup_size(rng, wg):
    x, w = _data(rng, 3, 129), _data(rng, 129)
    np.testing.assert_allclose(ops.rms_norm(x, w, EPS, WG=wg), k.reference(x, w, EPS), RTOL, ATOL)


def test_head_rms_norm(rng):
    x, w = _data(rng, 5, 3, 33), _data(rng, 33)
    np.testing.assert_allclose(ops.head_rms_norm(x, w, EPS), k.reference(x, w, EPS), RTOL, ATOL)


def _run(device, variant, arrays, **kw):
    """Upload arrays, dispatch, return (buffers, pipeline) for reading back."""
    bufs = {}
    for name, a in arrays.items():
        bufs[name] = device.memory.alloc(a.nbytes)
        bufs[name].write(a)
    kp = k.KERNEL.pipeline(device, variant, **kw.pop("spec", {}))
    with one_shot(device) as rec:
        k.dispatch(rec, kp, **{n: bufs[v] if isinstance(v, str) else v for n, v in kw.items()})
    return bufs


def test_per_head_norm_in_place_on_interleaved_qfull(device, rng):
    # Qfull is [T, H, q(hd) | gate(hd)] (pitfall 6): normalise the q halves in place, gates kept
    T, H, hd = 3, 4, 32
    qf = _data(rng, T, H, 2 * hd)
    w = _data(rng, hd)
    view = (0, H * 2 * hd, 2 * hd)
    b = _run(device, "default", {"qf": qf, "w": w}, x="qf", y="qf", w="w", n=hd, eps=EPS,
             tokens=T, heads=H, x_view=view, y_view=view)
    got = b["qf"].read(np.float32, qf.shape)
    np.testing.assert_allclose(got[..., :hd], k.reference(qf[..., :hd], w, EPS), RTOL, ATOL)
    np.testing.assert_array_equal(got[..., hd:], qf[..., hd:])
    for buf in b.values():
        buf.free()


def test_residual_sum_in_place_over_x(device, rng):
    # h = x + attn_out written back over the residual stream x, y = norm(h)·w elsewhere
    T, n = 5, 100
    x, r, w = _data(rng, T, n), _data(rng, T, n), _data(rng, n)
    y0 = np.zeros_like(x)
    b = _run(device, "residual", {"x": x, "r": r, "w": w, "y": y0}, x="x", r="r", w="w", s="x",
             y="y", n=n, eps=EPS, tokens=T)
    y_ref, h_ref = k.reference(x, w, EPS, r=r)
    np.testing.assert_array_equal(b["x"].read(np.float32, x.shape), h_ref)
    np.testing.assert_allclose(b["y"].read(np.float32, x.shape), y_ref, RTOL, ATOL)
    for buf in b.values():
        buf.free()


@pytest.mark.parametrize("variant", ["default", "residual", "gated", "l2"])
def test_batch_invariance(rng, variant):
    # R5: a row's result is bitwise the same alone or as row 3 of 5
    n = 129
    x, w, r = _data(rng, 5, n), _data(rng, n), _data(rng, 5, n)
    if variant == "default":
        f = lambda rows: ops.rms_norm(x[rows], w, EPS)
    elif variant == "residual":
        f = lambda rows: ops.rms_norm(x[rows], w, EPS, residual=r[rows])[0]
    elif variant == "gated":
        f = lambda rows: norms.rms_norm_gated(x[rows], w, r[rows], EPS)
    else:
        f = lambda rows: ops.l2_norm(x[rows], EPS)
    many = f(slice(0, 5))
    one = f(slice(3, 4))
    np.testing.assert_array_equal(one[0], many[3])


def test_contract_and_arguments(device):
    with pytest.raises(ContractError):
        k.KERNEL.pipeline(device, WG=48)  # not a power of two
    with pytest.raises(ContractError):
        k.KERNEL.pipeline(device, WG=4096)
    kp = k.KERNEL.pipeline(device, "residual")
    b = device.memory.alloc(64)
    with one_shot(device) as rec, pytest.raises(ContractError):
        k.dispatch(rec, kp, b, b, 4, EPS, 1, w=b)  # residual variant without r and s
    b.free()


def test_every_variant_builds(device):
    for v in k.KERNEL.variants:
        assert k.KERNEL.pipeline(device, v).variant == v
    assert set(k.KERNEL.supported_variants(device.info)) == set(k.KERNEL.variants)
