"""elementwise.comp against pipelines/elementwise.reference on lavapipe: every op, odd shapes,
broadcasting, views (halves of a fused tensor, the interleaved attention gate), extreme inputs,
f16 conversion, and the 2-D grid fold past 65535 workgroups.

Tolerances, with reasons:
- add, mul, scale, copy: exact. One IEEE f32 op, correctly rounded, equals the float64 result
  rounded once (the exact product or sum of two f32 fits in float64).
- silu, sigmoid_mul, swiglu: rtol 2e-5. exp is allowed 3 + 2|x| ulp in Vulkan; |x| ≲ 20 here.
- gelu, geglu, softcap: rtol 2e-5 plus atol 1e-6·max|x|. 1 + tanh(u) cancels for x ≪ 0, so
  tanh's absolute error (~1e-7) shows up absolutely, not relatively.
- to_f16 / to_f32: exact on lavapipe (round to nearest even; f16 → f32 is exact).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.errors import ContractError, DeviceFeatureError
from vkinfer.pipelines import elementwise as k
from vkinfer.vk.commands import one_shot

SHAPES = [(1, 1), (1, 7), (3, 33), (37, 100), (5, 129), (2, 3, 17)]
EXACT = {"add", "mul"}
TOL = {"silu": (2e-5, 0), "sigmoid_mul": (2e-5, 0), "swiglu": (2e-5, 0),
       "gelu": (2e-5, 1e-6), "geglu": (2e-5, 1e-6), "softcap": (2e-5, 1e-6)}


def _data(rng, shape, spread=4.0):
    return (rng.standard_normal(shape) * spread).astype(np.float32)


def _check(op, got, ref, x):
    if op in EXACT or op in ("scale", "copy"):
        np.testing.assert_array_equal(got, ref)
    else:
        rtol, atol = TOL[op]
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol * float(np.abs(x).max()))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_binary_ops(rng, shape):
    a, b = _data(rng, shape), _data(rng, shape)
    for op in ("add", "mul", "swiglu", "geglu", "sigmoid_mul"):
        _check(op, getattr(ops, op)(a, b), k.reference(op, a, b), a)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_unary_ops(rng, shape):
    x = _data(rng, shape)
    for op in ("silu", "gelu"):
        _check(op, getattr(ops, op)(x), k.reference(op, x), x)
    _check("scale", ops.scale(x, -0.37), k.reference("scale", x, p0=-0.37), x)
    _check("softcap", ops.softcap(x * 10, 30.0), k.reference("softcap", x * 10, p0=30.0), x * 10)


def test_broadcasting(rng):
    a = _data(rng, (37, 33))
    row, per_row = _data(rng, (33,)), _data(rng, (37, 1))
    np.testing.assert_array_equal(ops.add(a, row), k.reference("add", a, row))  # bias
    np.testing.assert_array_equal(ops.mul(a, row), k.reference("mul", a, row))  # norm weight
    np.testing.assert_array_equal(ops.mul(a, per_row), k.reference("mul", a, per_row))  # routing
    # a scale read from a device buffer (one element, broadcast to everything)
    np.testing.assert_array_equal(ops.scale(a, np.array([0.125], np.float32)), a * np.float32(0.125))


def test_glu_on_halves_of_one_tensor(rng):
    # [rows, 2n] = [gate | up], as the fused ffn_gate_up output; read through views, no split copy
    for n in (1, 7, 129):
        gu = _data(rng, (3, 2 * n))
        for op in ("swiglu", "geglu"):
            _check(op, getattr(ops, op)(gu), k.reference(op, gu[:, :n], gu[:, n:]), gu)


def test_sigmoid_gate_from_interleaved_qfull(device, rng):
    # o [T, H·hd] times sigmoid of the gate halves of Qfull [T, H, q | gate] (pitfall 6), in place
    T, H, hd = 3, 4, 16
    o, qf = _data(rng, (T, H * hd)), _data(rng, (T, H, 2 * hd))
    bo, bq = device.memory.alloc(o.nbytes), device.memory.alloc(qf.nbytes)
    bo.write(o), bq.write(qf)
    kp = k.KERNEL.pipeline(device, "sigmoid_mul")
    with one_shot(device) as rec:  # rows = T·H heads of hd; the gate of head r at r·2hd + hd
        k.dispatch(rec, kp, bo, bo, hd, T * H, b=bq, b_view=(hd, 2 * hd, 1))
    ref = k.reference("sigmoid_mul", o.reshape(T, H, hd), qf[..., hd:]).reshape(T, H * hd)
    _check("sigmoid_mul", bo.read(np.float32, o.shape), ref, o)
    bo.free(), bq.free()


def test_extreme_inputs_stay_finite(rng):
    x = np.array([[-1e30, -1e4, -100.0, -88.0, -20.0, -1e-3, -1e-30, 0.0, 1e-30, 1e-3, 20.0,
                   88.0, 100.0, 1e4, 1e30]], np.float32)
    for op in ("silu", "gelu"):
        got = getattr(ops, op)(x)
        assert np.isfinite(got).all(), (op, got)
        np.testing.assert_allclose(got, k.reference(op, x), rtol=2e-5, atol=1e-30)
    got = ops.softcap(x, 30.0)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, k.reference("softcap", x, p0=30.0), rtol=2e-5, atol=1e-30)
    got = ops.sigmoid_mul(np.ones_like(x), x)
    np.testing.assert_allclose(got, k.reference("sigmoid_mul", np.ones_like(x), x), rtol=2e-5,
                               atol=1e-30)


def test_f16_conversion(rng):
    x = np.concatenate([_data(rng, (1000,), 100.0), [0.0, -0.0, 65504.0, -65504.0, 1e-3, 6.1e-5]])
    x = x.astype(np.float32).reshape(2, -1)
    h = ops.to_f16(x)
    assert h.dtype == np.float16
    np.testing.assert_array_equal(h, x.astype(np.float16))
    np.testing.assert_array_equal(ops.to_f32(h), h.astype(np.float32))
    np.testing.assert_array_equal(ops.to_f32(h[:, :7]), h[:, :7].astype(np.float32))  # odd size


def test_f16_variants_need_16bit_storage(device):
    info = dataclasses.replace(device.info, storage16=False)
    fake = type("FakeDevice", (), {"info": info})()
    for v in ("to_f16", "to_f32"):
        with pytest.raises(DeviceFeatureError):
            k.KERNEL.pipeline(fake, v)
    assert set(k.KERNEL.supported_variants(info)) == set(k.KERNEL.variants) - {"to_f16", "to_f32"}
    for v in k.KERNEL.supported_variants(device.info):
        k.KERNEL.pipeline(device, v)


@pytest.mark.parametrize("wg", k.KERNEL.spec[0].choices)
@pytest.mark.parametrize("ept", k.KERNEL.spec[1].choices)
def test_every_spec_choice(rng, wg, ept):
    a, b = _data(rng, (3, 129)), _data(rng, (3, 129))
    _check("swiglu", ops.swiglu(a, b, WG=wg, EPT=ept), k.reference("swiglu", a, b), a)


def test_grid_folds_past_65535_workgroups(rng):
    # 64 lanes × 1 element: 66000 workgroups, more than one grid dimension may hold
    n = 64 * 66000
    x = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_array_equal(ops.scale(x, 2.0, WG=64, EPT=1), x * 2)
    assert k.grid(n, 64) == (65535, 2)


def test_contract(device):
    with pytest.raises(ContractError):
        k.KERNEL.pipeline(device, "add", EPT=32)
    with pytest.raises(ContractError):
        k.KERNEL.pipeline(device, "add", WG=4096)
