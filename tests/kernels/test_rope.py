"""rope.comp against pipelines/rope.reference on lavapipe: NeoX and normal pairing, partial
rotary, large and negative positions, linear scaling, in place on views of a fused qkv tensor,
and positions read from a recorded graph's step buffer (R3).

Tolerance: |got − ref| ≤ 2e-6·max|x|. The reference takes exact cos/sin (float64) of the same
f32 angle the shader forms; the shader's reduction and series err by ~1.5e-7 rad, and the f32
rotation x0·c − x1·s adds a few ulp of max(|x0|, |x1|) (it can cancel, so the bound is absolute).
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.errors import ContractError
from vkinfer.pipelines import rope as k
from vkinfer.runtime.graph import RecordedGraph
from vkinfer.vk.commands import one_shot


def _close(got, ref, x):
    np.testing.assert_allclose(got, ref, rtol=0, atol=2e-6 * float(np.abs(x).max()))


# (tokens, heads, head_dim, n_rot): full, partial (qwen: hd/4, GLM: hd/2), tiny, odd counts
SHAPES = [(1, 1, 2, 2), (3, 5, 64, 16), (37, 3, 128, 64), (2, 2, 6, 4), (5, 1, 128, 128),
          (7, 3, 256, 64)]


@pytest.mark.parametrize("neox", [True, False], ids=["neox", "normal"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_rope_matches_reference(rng, shape, neox):
    T, H, D, n_rot = shape
    x = rng.standard_normal((T, H, D)).astype(np.float32)
    pos = rng.integers(0, 4096, T)
    got = ops.rope(x, pos, n_rot, base=10000.0, neox=neox)
    _close(got, k.reference(x, pos, n_rot, 10000.0, neox=neox), x)
    # partial rotary: channels >= n_rot pass through bit for bit
    np.testing.assert_array_equal(got[..., n_rot:], x[..., n_rot:])


@pytest.mark.parametrize("base", [10000.0, 1e6, 1e7])
def test_large_and_negative_positions(rng, base):
    # angles up to ~1e6 rad: the builtin cos/sin lose ~1e-3 there; the shader's reduction doesn't
    T, H, D = 9, 2, 64
    x = rng.standard_normal((T, H, D)).astype(np.float32)
    pos = np.array([0, 1, 99_999, 100_000, 131_071, 262_144, 1_000_000, -5, -100_000])
    for neox in (True, False):
        got = ops.rope(x, pos, 64, base=base, neox=neox)
        _close(got, k.reference(x, pos, 64, base, neox=neox), x)


def test_position_zero_is_identity_and_pairs_keep_norm(rng):
    x = rng.standard_normal((2, 3, 32)).astype(np.float32)
    got = ops.rope(x, [0, 70_000], 32)
    np.testing.assert_array_equal(got[0], x[0])
    half = 16
    n_in = x[1, :, :half] ** 2 + x[1, :, half:] ** 2
    n_out = got[1, :, :half] ** 2 + got[1, :, half:] ** 2
    np.testing.assert_allclose(n_out, n_in, rtol=2e-6, atol=1e-6)


def test_linear_scale_and_frequency_denominator(rng):
    # θ_i = pos · base^(−2i/n_rot) / scale: the denominator is n_rot, not head_dim (pitfall 7)
    x = rng.standard_normal((4, 2, 64)).astype(np.float32)
    pos = np.array([3, 17, 500, 9000])
    got = ops.rope(x, pos, 16, base=1e6, scale=4.0)
    _close(got, k.reference(x, pos, 16, 1e6, scale=4.0), x)
    np.testing.assert_allclose(k.freq_table(16, 1e6, 4.0)[1], 1e6 ** (-2 / 16) / 4, rtol=1e-7)
    _close(ops.rope(x, pos * 4, 16, base=1e6), ops.rope(x, pos, 16, base=1e6, scale=0.25), x)


@pytest.mark.parametrize("wg", k.KERNEL.spec[0].choices)
def test_every_workgroup_size(rng, wg):
    x = rng.standard_normal((3, 3, 36)).astype(np.float32)
    pos = [5, 6, 7]
    _close(ops.rope(x, pos, 20, WG=wg), k.reference(x, pos, 20), x)


def test_in_place_on_fused_qkv_views(device, rng):
    # one [T, (Hq + 2·Hkv)·hd] tensor; rope q and k in place through views, v untouched
    T, Hq, Hkv, hd, n_rot = 5, 4, 2, 32, 16
    width = (Hq + 2 * Hkv) * hd
    qkv = rng.standard_normal((T, width)).astype(np.float32)
    pos = np.array([10, 11, 12, 40_000, 7], np.int32)
    buf, bp = device.memory.alloc(qkv.nbytes), device.memory.alloc(pos.nbytes)
    bf = device.memory.alloc(4 * n_rot // 2)
    buf.write(qkv), bp.write(pos), bf.write(k.freq_table(n_rot, 1e6))
    kp = k.KERNEL.pipeline(device, "neox")
    with one_shot(device) as rec:
        qv = (0, width, hd)
        kv = (Hq * hd, width, hd)
        k.dispatch(rec, kp, buf, bp, bf, buf, T, Hq, hd, n_rot, x_view=qv, y_view=qv)
        k.dispatch(rec, kp, buf, bp, bf, buf, T, Hkv, hd, n_rot, x_view=kv, y_view=kv)
    got = buf.read(np.float32, qkv.shape)
    q = qkv[:, : Hq * hd].reshape(T, Hq, hd)
    kk = qkv[:, Hq * hd: (Hq + Hkv) * hd].reshape(T, Hkv, hd)
    _close(got[:, : Hq * hd].reshape(T, Hq, hd), k.reference(q, pos, n_rot, 1e6), q)
    _close(got[:, Hq * hd: (Hq + Hkv) * hd].reshape(T, Hkv, hd), k.reference(kk, pos, n_rot, 1e6),
           kk)
    np.testing.assert_array_equal(got[:, (Hq + Hkv) * hd:], qkv[:, (Hq + Hkv) * hd:])
    for b in (buf, bp, bf):
        b.free()


def test_out_of_place_from_interleaved_qfull(device, rng):
    # Qfull [T, H, q(hd) | gate(hd)]: read q through a head stride of 2·hd, write contiguous
    T, H, hd, n_rot = 3, 3, 16, 8
    qf = rng.standard_normal((T, H, 2 * hd)).astype(np.float32)
    pos = np.array([1, 2, 3], np.int32)
    bx, by = device.memory.alloc(qf.nbytes), device.memory.alloc(4 * T * H * hd)
    bp, bf = device.memory.alloc(pos.nbytes), device.memory.alloc(4 * n_rot // 2)
    bx.write(qf), bp.write(pos), bf.write(k.freq_table(n_rot))
    kp = k.KERNEL.pipeline(device, "normal")
    with one_shot(device) as rec:
        k.dispatch(rec, kp, bx, bp, bf, by, T, H, hd, n_rot, x_view=(0, H * 2 * hd, 2 * hd))
    q = np.ascontiguousarray(qf[..., :hd])
    _close(by.read(np.float32, (T, H, hd)), k.reference(q, pos, n_rot, neox=False), q)
    for b in (bx, by, bp, bf):
        b.free()


def test_positions_come_from_the_step_buffer(device, rng):
    # R3: record once, replay with new positions written to the graph's step buffer
    T, H, hd, n_rot = 4, 2, 32, 32
    x = rng.standard_normal((T, H, hd)).astype(np.float32)
    bx, by = device.memory.alloc(x.nbytes), device.memory.alloc(x.nbytes)
    bf = device.memory.alloc(4 * n_rot // 2)
    bx.write(x), bf.write(k.freq_table(n_rot))
    g = RecordedGraph(device, np.dtype([("pos", "<i4", (T,))]))
    kp = k.KERNEL.pipeline(device)
    with g.record() as rec:
        k.dispatch(rec, kp, bx, g.step_field("pos"), bf, by, T, H, hd, n_rot)
    for pos in ([0, 1, 2, 3], [100, 101, 102, 150_000]):
        g.run(pos=np.array(pos, np.int32))
        _close(by.read(np.float32, x.shape), k.reference(x, pos, n_rot), x)
    for b in (bx, by, bf):
        b.free()


def test_contract(device):
    with pytest.raises(ContractError):
        k.KERNEL.pipeline(device, WG=4096)
    x = np.zeros((1, 1, 8), np.float32)
    with pytest.raises(ContractError):
        ops.rope(x, [0], 3)  # odd n_rot
    with pytest.raises(ContractError):
        ops.rope(x, [0], 10)  # n_rot > head_dim
