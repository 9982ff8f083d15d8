"""moe_route vs its numpy reference (llamacpp-facts §2.6) on lavapipe.

Tolerances: ids must match exactly (test logits are drawn so that no two selection scores are
within 1e-4 of each other at the k-th boundary, far above float32 rounding of p); weights are
compared with rtol 2e-6 / atol 1e-7: float32 exp/division/sum of <= 512 terms against a float64
reference (observed error ~1e-7 absolute for weights <= 1).
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer.errors import ContractError, DeviceFeatureError
from vkinfer.ops import moe_route, shared_expert_gate
from vkinfer.pipelines import moe_route as k
from vkinfer.vk.commands import one_shot

RTOL, ATOL = 2e-6, 1e-7


def _well_separated(rng, T, E, kk, gating, bias=None, spread=2.0):
    """Random logits whose selection scores have a clear gap around each of the top-k ranks."""
    for _ in range(100):
        lg = (rng.standard_normal((T, E)) * spread).astype(np.float32)
        x = lg.astype(np.float64)
        if gating == "softmax":
            z = np.exp(x - x.max(1, keepdims=True))
            p = z / z.sum(1, keepdims=True)
        else:
            p = 1 / (1 + np.exp(-x))
        s = p if bias is None else p + bias[None, :].astype(np.float64)
        srt = -np.sort(-s, axis=1)[:, : min(kk + 1, E)]
        if E == kk or np.all(np.abs(np.diff(srt, axis=1)) > 1e-4 * np.abs(srt[:, :1])):
            return lg
    # seeded draws: this never happens for the shapes below; fail loudly rather than skip
    pytest.fail(f"could not draw well-separated logits for T={T} E={E} k={kk}")


def _variants(device, gating):
    return [
        v
        for v in (gating, f"{gating}_shmem")
        if v == f"{gating}_shmem" or k.has_subgroup_arithmetic(device.info)
    ]


CASES = [(T, E, kk) for T in (1, 5) for E, kk in ((4, 2), (8, 2), (8, 8), (64, 8), (256, 8))]


@pytest.mark.parametrize("T,E,kk", CASES)
@pytest.mark.parametrize("subgroup", [True, False], ids=["subgroup", "shmem"])
def test_qwen_route(device, rng, T, E, kk, subgroup):
    if subgroup and not k.has_subgroup_arithmetic(device.info):
        pytest.skip("no subgroup arithmetic")
    lg = _well_separated(rng, T, E, kk, "softmax")
    ids, w = moe_route(lg, kk, mode="qwen", subgroup=subgroup)
    ri, rw = k.reference(lg, kk, "softmax")
    np.testing.assert_array_equal(ids, ri)
    np.testing.assert_allclose(w, rw, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("T,E,kk", CASES)
@pytest.mark.parametrize("subgroup", [True, False], ids=["subgroup", "shmem"])
def test_glm_route(device, rng, T, E, kk, subgroup):
    if subgroup and not k.has_subgroup_arithmetic(device.info):
        pytest.skip("no subgroup arithmetic")
    bias = (rng.standard_normal(E) * 0.05).astype(np.float32)
    lg = _well_separated(rng, T, E, kk, "sigmoid", bias)
    ids, w = moe_route(lg, kk, mode="glm", bias=bias, norm=True, scale=2.5, subgroup=subgroup)
    ri, rw = k.reference(lg, kk, "sigmoid", bias=bias, norm=True, scale=2.5)
    np.testing.assert_array_equal(ids, ri)
    np.testing.assert_allclose(w, rw, rtol=RTOL, atol=ATOL)


def test_large_expert_count_and_k16(device, rng):
    lg = _well_separated(rng, 3, 512, 16, "softmax")
    ids, w = moe_route(lg, 16, mode="qwen")
    ri, rw = k.reference(lg, 16, "softmax")
    np.testing.assert_array_equal(ids, ri)
    np.testing.assert_allclose(w, rw, rtol=RTOL, atol=ATOL)


def test_variants_and_workgroup_sizes_agree_bitwise(device, rng):
    """The argmax is exact, so every variant and WG selects the same experts; the softmax sums
    use a fixed tree whose shape depends on WG, so weights are compared per WG across variants."""
    lg = _well_separated(rng, 4, 256, 8, "softmax")
    out = {}
    for var in _variants(device, "softmax"):
        for wg in (8, 64, 256):
            out[(var, wg)] = moe_route(lg, 8, subgroup=not var.endswith("shmem"), WG=wg)
    ids0 = out[next(iter(out))][0]
    for (var, wg), (ids, w) in out.items():
        np.testing.assert_array_equal(ids, ids0)
        np.testing.assert_array_equal(w, out[("softmax_shmem", wg)][1])


def test_ties_go_to_the_lowest_index(device):
    # Equal logits are equal probabilities in any precision: the stable order must win.
    lg = np.array(
        [[1.0, 3.0, 3.0, 0.5, 3.0, 3.0, -1.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]],
        np.float32,
    )
    for mode, gating in (("qwen", "softmax"), ("glm", "sigmoid")):
        for subgroup in (True, False):
            if subgroup and not k.has_subgroup_arithmetic(device.info):
                continue
            ids, w = moe_route(lg, 3, mode=mode, subgroup=subgroup)
            np.testing.assert_array_equal(ids, [[1, 2, 4], [0, 1, 2]])
            np.testing.assert_array_equal(ids, k.reference(lg, 3, gating)[0])
            np.testing.assert_allclose(w, 1 / 3, rtol=1e-6)


def test_ties_across_workgroup_stride(device):
    # With WG=8, experts 3, 11 and 19 fall to the same invocation and 5 to another: the lowest
    # index must still win across invocations and subgroups.
    lg = np.zeros((1, 64), np.float32)
    lg[0, [19, 11, 5, 3, 40]] = 2.0
    for subgroup in (True, False):
        if subgroup and not k.has_subgroup_arithmetic(device.info):
            continue
        ids, _ = moe_route(lg, 4, subgroup=subgroup, WG=8)
        np.testing.assert_array_equal(ids, [[3, 5, 11, 19]])


def test_bias_changes_selection_not_weights(device, rng):
    E, kk = 16, 4
    lg = _well_separated(rng, 2, E, kk, "sigmoid")
    ids0, w0 = moe_route(lg, kk, mode="glm", norm=False)
    # A large bias on the two lowest-scoring experts forces them into the selection.
    low = np.argsort(lg[0])[:2]
    bias = np.zeros(E, np.float32)
    bias[low] = 10.0
    ids1, w1 = moe_route(lg, kk, mode="glm", bias=bias, norm=False)
    assert set(low) <= set(ids1[0]) and not set(low) & set(ids0[0])
    p = 1 / (1 + np.exp(-lg.astype(np.float64)))
    # Unnormalised weights are the unbiased sigmoid of the chosen experts.
    np.testing.assert_allclose(w1, np.take_along_axis(p, ids1, 1), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(w0, np.take_along_axis(p, ids0, 1), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    "norm,scale", [(False, 0.0), (False, 1.0), (True, 1.0), (False, 2.5), (True, 0.5)]
)
def test_norm_and_scale_flags(device, rng, norm, scale):
    E, kk = 8, 3
    bias = (rng.standard_normal(E) * 0.1).astype(np.float32)
    lg = _well_separated(rng, 5, E, kk, "sigmoid", bias)
    ids, w = moe_route(lg, kk, mode="glm", bias=bias, norm=norm, scale=scale)
    ri, rw = k.reference(lg, kk, "sigmoid", bias=bias, norm=norm, scale=scale)
    np.testing.assert_array_equal(ids, ri)
    np.testing.assert_allclose(w, rw, rtol=RTOL, atol=ATOL)
    if norm:
        np.testing.assert_allclose(w.sum(1), 1.0 if scale in (0.0, 1.0) else scale, rtol=1e-6)


def test_norm_clamps_tiny_sums(device):
    # Sigmoid weights ~1e-9: Σw < 6.1035e-5, so the clamp (not the sum) divides.
    lg = np.full((1, 4), -20.0, np.float32)
    lg[0, 0] = -21.0
    ids, w = moe_route(lg, 2, mode="glm", norm=True)
    ri, rw = k.reference(lg, 2, "sigmoid", norm=True)
    np.testing.assert_array_equal(ids, ri)
    np.testing.assert_allclose(w, rw, rtol=1e-5)
    assert w.sum() < 1e-3


def test_fused_shared_gate_column_and_strided_logits(device, rng):
    """Router + shared-gate rows in one matvec output: l[t] = [experts..., gate]; ids/weights
    are unchanged by the extra column and gate[t] = sigmoid(l[t, E])."""
    T, E, kk = 5, 64, 8
    lg = _well_separated(rng, T, E, kk, "softmax")
    g = rng.standard_normal(T).astype(np.float32) * 3
    full = np.concatenate([lg, g[:, None]], axis=1)
    dev = device
    bl = dev.memory.alloc(full.nbytes)
    bl.write(full)
    bi, bw, bg = dev.memory.alloc(T * kk * 4), dev.memory.alloc(T * kk * 4), dev.memory.alloc(T * 4)
    kp = k.pipeline(dev, k.variant_for(dev.info, "softmax"))
    with one_shot(dev) as rec:
        k.dispatch(rec, kp, bl, bi, bw, E, kk, T, gate=bg, gate_col=E, logit_stride=E + 1)
    ri, rw = k.reference(lg, kk, "softmax")
    np.testing.assert_array_equal(bi.read(np.int32, (T, kk)), ri)
    np.testing.assert_allclose(bw.read(np.float32, (T, kk)), rw, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(
        bg.read(np.float32, (T,)), k.reference_shared_gate(g), rtol=1e-6, atol=1e-7
    )
    for b in (bl, bi, bw, bg):
        b.free()


def test_shared_expert_gate_op(device, rng):
    x = np.concatenate([rng.standard_normal(70) * 4, [-100.0, 100.0, 0.0]]).astype(np.float32)
    np.testing.assert_allclose(
        shared_expert_gate(x), k.reference_shared_gate(x), rtol=1e-6, atol=1e-7
    )


def test_contract(device):
    with pytest.raises(ContractError):
        moe_route(np.zeros((1, 4), np.float32), 5)
    with pytest.raises(ContractError):
        moe_route(np.zeros((1, 600), np.float32), 8)
    with pytest.raises(ContractError):
        moe_route(np.zeros((1, 64), np.float32), 17)
    with pytest.raises(ContractError):
        k.pipeline(device, "softmax_shmem", WG=48)


def test_subgroup_variant_needs_arithmetic(device):
    if k.has_subgroup_arithmetic(device.info):
        k.pipeline(device, "softmax")  # builds
    else:
        with pytest.raises(DeviceFeatureError):
            k.pipeline(device, "softmax")


@pytest.mark.parametrize(
    "T,kk,E,cols", [(1, 8, 256, 8), (5, 2, 4, 3), (40, 8, 256, 8), (3, 4, 8, 1), (100, 8, 16, 8)]
)
def test_group_work_list(device, rng, T, kk, E, cols):
    """mul_mat_id's GROUPED work list: pairs sorted by expert (then pair index), items of up
    to `cols` pairs; words past the last item are unspecified."""
    ids = np.stack([rng.choice(E, kk, replace=False) for _ in range(T)]).astype(np.int32)
    _, pairs_off, words = k.group_layout(T, kk, E, cols)
    bi, bg = device.memory.alloc(ids.nbytes), device.memory.alloc(4 * words)
    bi.write(ids)
    kp = k.group_pipeline(device, cols)
    with one_shot(device) as rec:
        k.dispatch_group(rec, kp, bi, bg, E, kk, T)
    got, ref = bg.read(np.uint32, (words,)), k.reference_group(ids, E, cols)
    n = int(ref[0])
    np.testing.assert_array_equal(got[: 4 + 2 * n], ref[: 4 + 2 * n])
    np.testing.assert_array_equal(got[pairs_off:], ref[pairs_off:])
    bi.free(), bg.free()
