"""shaders/conv1d.comp against the float64 reference: causal depthwise conv + SiLU, rolling
state, snapshot planes and src-plane resume (shared with gated_delta_net).

Tolerance: a d_conv-term f32 dot product and one exp: max|gpu - ref| / max|ref| <= 1e-5.
Snapshot and token-blocking checks are bit-exact (R5: the sum order is fixed per output)."""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer.errors import ContractError
from vkinfer.ops import gdn
from vkinfer.pipelines import conv1d as kc
from vkinfer.pipelines import gated_delta_net as kg
from vkinfer.vk.commands import one_shot

TOL = 1e-5


def close(a, ref, tol=TOL):
    err = np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


def data(rng, T, C, D=4, n_seq=None):
    lead = () if n_seq is None else (n_seq,)
    x = rng.standard_normal(lead + (T, C)).astype(np.float32)
    w = rng.standard_normal((C, D)).astype(np.float32)
    st = rng.standard_normal(lead + (D - 1, C)).astype(np.float32)
    return x, w, st


def ref(x, w, st, n_snap=0):
    y, s, sn = kc.reference(x[None], w, st[None], n_snap)
    return y[0], s[0], sn[:, 0]


@pytest.mark.parametrize("T", [1, 2, 3, 8])
@pytest.mark.parametrize("TB", [3, 8])
def test_matches_reference(device, rng, T, TB):
    x, w, st = data(rng, T, 70)  # 70 channels: not a multiple of the workgroup
    y, s, _ = gdn.conv1d(x, w, st, TB=TB, WG=32)
    ry, rs, _ = ref(x, w, st)
    close(y, ry)
    np.testing.assert_array_equal(s, rs.astype(np.float32))  # the state is copied, not computed


@pytest.mark.parametrize("D", [2, 4])
def test_kernel_widths(device, rng, D):
    x, w, st = data(rng, 5, 33, D=D)
    y, s, _ = gdn.conv1d(x, w, st, TB=max(D - 1, 2))
    ry, rs, _ = ref(x, w, st)
    close(y, ry)
    np.testing.assert_array_equal(s, rs.astype(np.float32))


def test_weight_zero_multiplies_oldest(device):
    C, D = 4, 4
    x = np.zeros((1, C), np.float32)
    st = np.stack([np.full(C, 10.0 * (m + 1), np.float32) for m in range(D - 1)])  # 10, 20, 30
    w = np.zeros((C, D), np.float32)
    w[:, 0] = 1.0
    y, s, _ = gdn.conv1d(x, w, st)
    np.testing.assert_allclose(y, 10.0 / (1 + np.exp(-10.0)), rtol=1e-6)
    np.testing.assert_array_equal(s, np.stack([st[1], st[2], x[0]]))


@pytest.mark.parametrize("T,K", [(3, 2), (4, 4), (2, 5), (7, 3)])
def test_snapshots_are_prefix_states(device, rng, T, K):
    x, w, st = data(rng, T, 40)
    y, s, sn = gdn.conv1d(x, w, st, snapshots=K, TB=3)
    assert sn.shape == (min(T, K), 3, 40)
    for i in range(min(T, K)):
        yi, si, _ = gdn.conv1d(x[:i + 1], w, st)
        np.testing.assert_array_equal(sn[i], si)
        np.testing.assert_array_equal(y[:i + 1], yi)
    _, rs, rsn = ref(x, w, st, K)
    np.testing.assert_array_equal(s, rs.astype(np.float32))
    np.testing.assert_array_equal(sn, rsn.astype(np.float32))


def test_token_blocking_is_batch_invariant(device, rng):
    x, w, st = data(rng, 9, 48)
    outs = [gdn.conv1d(x, w, st, TB=tb)[0] for tb in (3, 4, 16)]
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])


def test_resume_from_plane_with_strided_input(device, rng):
    """Two sequences, input as a strided view (x_off, x_stride), a verify step with snapshots,
    then a step that continues each sequence from its own plane."""
    n_seq, T, C, D, K = 2, 4, 24, 4, 4
    x, w, st = data(rng, T, C, n_seq=n_seq)
    stride, off = C + 7, 3
    xb = np.full((n_seq * T, stride), np.nan, np.float32)
    xb[:, off:off + C] = x.reshape(n_seq * T, C)
    kp = kc.KERNEL.pipeline(device, TB=3)
    plane = kc.plane_elems(n_seq, D, C)
    bufs = [device.memory.alloc(n) for n in (xb.nbytes, w.nbytes, 4 * plane * (1 + K),
                                             4 * n_seq * T * C, 64)]
    bx, bw, bst, by, bc = bufs
    try:
        bx.write(xb)
        bw.write(w)
        bst.write(st)

        def step(n_tokens, planes):
            bc.write(kg.ctl_words(n_tokens, planes))
            with one_shot(device) as rec:
                kc.dispatch(rec, kp, bx, bw, bst, by, bc, n_seq=n_seq, C=C, seq_rows=T,
                            x_stride=stride, x_off=off, n_snap=K)
            return by.read(np.float32, (n_seq, T, C))

        y1 = step(T, [0, 0])
        for s in range(n_seq):
            close(y1[s], ref(x[s], w, st[s])[0])
        x2 = rng.standard_normal((n_seq, T, C)).astype(np.float32)
        xb[:, off:off + C] = x2.reshape(n_seq * T, C)
        bx.write(xb)
        accepted = [3, 1]
        y2 = step(2, accepted)
        planes = bst.read(np.float32, (1 + K, n_seq, D - 1, C))
        for s, n_acc in enumerate(accepted):
            _, s_acc, _ = ref(x[s, :n_acc], w, st[s])
            ry, rs, _ = ref(x2[s, :2], w, s_acc)
            close(y2[s, :2], ry)
            np.testing.assert_array_equal(planes[kg.final_plane(2, K), s], rs.astype(np.float32))
    finally:
        for b in bufs:
            b.free()


def test_contract(device):
    with pytest.raises(ContractError):
        kc.KERNEL.pipeline(device, TB=2, D_CONV=4)  # TB < D_CONV - 1
    with pytest.raises(ContractError):
        kc.KERNEL.pipeline(device, D_CONV=1)
