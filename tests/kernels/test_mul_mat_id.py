"""mul_mat_id (MoE expert matvec) vs its float64 reference and, bit for bit, vs mul_mat_vec on
the selected expert's slice, on lavapipe.

Tolerances: each (t, j) is the canonical reduction of mul_mat_vec, bounded by
mul_mat_vec.error_bound (derived there: exact products inside fma, float32 summation chains).
The weighted sum adds k + 2 roundings of terms at most |weight|·(|y| + bound). The bitwise checks
are exact (R5: a column's bits do not depend on the batch or on the kernel that ran it).
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer.errors import ContractError
from vkinfer.gguf import quants
from vkinfer.ops import moe_route, mul_mat_id, mul_mat_id_weighted, mul_mat_vec
from vkinfer.pipelines import moe_route as route_k
from vkinfer.pipelines import mul_mat_id as k
from vkinfer.pipelines.mul_mat_vec import TYPES, error_bound, unit_elems
from vkinfer.runtime.graph import RecordedGraph

EPS = 2.0**-24
E, ROWS = 4, 37
# Token t, slot j -> expert: repeats across tokens, a repeat inside a token, the last expert.
IDS = np.array([[3, 0], [1, 3], [2, 2]], np.int32)


def smallest_k(t) -> int:
    info = quants.type_info(t)
    return max(info.block_size, unit_elems(t))


def _experts(t, rng, n_expert=E, rows=ROWS, K=None):
    K = smallest_k(t) if K is None else K
    raw = quants.random_blocks(t, n_expert * rows, K, rng)
    return raw.reshape(n_expert, rows, -1), K


def _bound(raw, t, x, ids, extra=0):
    """Per-output error bound for y [T, k, rows]: mul_mat_vec.error_bound of each (t, j), plus
    `extra` roundings of Σ|w||x| (the weighted sum's)."""
    T, kk = ids.shape
    out = np.empty((T, kk, raw.shape[1]))
    for tt in range(T):
        for j in range(kk):
            xt = x[tt] if x.ndim == 2 else x[tt, j]
            w = raw[ids[tt, j]]
            out[tt, j] = error_bound(w, t, xt[None])[0]
            if extra:
                wd = np.abs(quants.dequantize(w, t).astype(np.float64))
                out[tt, j] += extra * EPS * (wd @ np.abs(xt.astype(np.float64)))
    return out


def _mul_mat_vec_bits(raw, t, x, ids):
    """y[t, j] from mul_mat_vec (one column per call) on expert ids[t, j]'s slice."""
    T, kk = ids.shape
    out = np.empty((T, kk, raw.shape[1]), np.float32)
    for tt in range(T):
        for j in range(kk):
            out[tt, j] = mul_mat_vec(raw[ids[tt, j]], t, x[tt] if x.ndim == 2 else x[tt, j])[0]
    return out


@pytest.mark.parametrize("per_slot", [False, True], ids=["shared_x", "per_slot_x"])
@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name.lower())
def test_every_type_matches_reference_and_mul_mat_vec_bits(device, rng, t, per_slot):
    raw, K = _experts(t, rng)
    T, kk = IDS.shape
    x = rng.standard_normal((T, kk, K) if per_slot else (T, K)).astype(np.float32)
    y = mul_mat_id(raw, t, x, IDS)
    assert y.shape == (T, kk, ROWS)
    ref = k.reference(raw, t, x, IDS)
    assert np.all(np.abs(y.astype(np.float64) - ref) <= _bound(raw, t, x, IDS))
    np.testing.assert_array_equal(
        y.view(np.uint32), _mul_mat_vec_bits(raw, t, x, IDS).view(np.uint32)
    )
    # The grouped (prefill) form: the same bits (items of 2 pairs: a partial item, and
    # experts with several items).
    yg = mul_mat_id(raw, t, x, IDS, grouped=True, cols=2)
    np.testing.assert_array_equal(yg.view(np.uint32), y.view(np.uint32))


@pytest.mark.parametrize("t", TYPES, ids=lambda t: t.name.lower())
def test_weighted_sum_every_type(device, rng, t):
    """The fused epilogue: bit-exact vs the per-slot results combined in numpy float32 (same
    order, no fma), and within tolerance of float64; ACCUMULATE adds into y."""
    raw, K = _experts(t, rng)
    T, kk = IDS.shape
    x = rng.standard_normal((T, kk, K)).astype(np.float32)
    w = rng.uniform(0.05, 1.0, (T, kk)).astype(np.float32)
    y0 = rng.standard_normal((T, ROWS)).astype(np.float32)
    slots = mul_mat_id(raw, t, x, IDS)
    got = mul_mat_id_weighted(raw, t, x, IDS, w, y=y0)
    exact = k.reference_weighted_from_slots(slots, w, y0)
    np.testing.assert_array_equal(got.view(np.uint32), exact.view(np.uint32))
    ref = k.reference_weighted(raw, t, x, IDS, w, y0)
    b = (_bound(raw, t, x, IDS, extra=kk + 2) * w[:, :, None]).sum(1) + 2 * EPS * np.abs(y0)
    assert np.all(np.abs(got.astype(np.float64) - ref) <= b)


@pytest.mark.parametrize(
    "t", [quants.parse_type("q4_k"), quants.parse_type("q6_k")], ids=lambda t: t.name.lower()
)
def test_tunables_and_variants_do_not_change_bits(device, rng, t):
    """Longer rows (several units per lane), odd rows, every reduction variant and a spread of
    WG / NR / UNROLL / PREFETCH give the same bits as mul_mat_vec."""
    raw, K = _experts(t, rng, n_expert=5, rows=45, K=3 * 256)
    ids = np.array([[4, 1, 0], [2, 4, 3]], np.int32)
    x = rng.standard_normal((2, 3, K)).astype(np.float32)
    want = _mul_mat_vec_bits(raw, t, x, ids).view(np.uint32)
    reduces = ["shmem"] + (["subgroup"] if k.variant_for(device.info, t) == t.name.lower() else [])
    for reduce in reduces:
        for wg, nr, un, pf in ((32, 1, 2, True), (128, 4, 1, False), (64, 1, 4, False)):
            y = mul_mat_id(
                raw, t, x, ids, reduce=reduce, WG=wg, NR=nr, UNROLL=un, PREFETCH=pf, XPREFETCH=pf
            )
            np.testing.assert_array_equal(
                y.view(np.uint32), want, err_msg=f"{reduce} {wg=} {nr=} {un=}"
            )
        wts = np.full(ids.shape, 0.25, np.float32)
        got = mul_mat_id_weighted(raw, t, x, ids, wts, reduce=reduce, WG=32, NR=4)
        exact = k.reference_weighted_from_slots(want.view(np.float32), wts)
        np.testing.assert_array_equal(got.view(np.uint32), exact.view(np.uint32))
        yg = mul_mat_id(raw, t, x, ids, reduce=reduce, grouped=True, cols=4, WG=128, NR=2)
        np.testing.assert_array_equal(yg.view(np.uint32), want)


def test_prefill_many_tokens(device, rng):
    """The same kernel over a prefill chunk: 40 tokens × 4 of 8 experts, realistic routing."""
    t = quants.parse_type("q4_k")
    raw, K = _experts(t, rng, n_expert=8, rows=24, K=512)
    T, kk = 40, 4
    ids = np.stack([rng.choice(8, kk, replace=False) for _ in range(T)]).astype(np.int32)
    x = rng.standard_normal((T, K)).astype(np.float32)
    y = mul_mat_id(raw, t, x, ids)
    assert np.all(
        np.abs(y.astype(np.float64) - k.reference(raw, t, x, ids)) <= _bound(raw, t, x, ids)
    )
    # Batch invariance: token 17 alone gives the same bits.
    np.testing.assert_array_equal(mul_mat_id(raw, t, x[17:18], ids[17:18]), y[17:18])
    w = rng.uniform(0, 1, (T, kk)).astype(np.float32)
    xs = rng.standard_normal((T, kk, K)).astype(np.float32)
    got = mul_mat_id_weighted(raw, t, xs, ids, w)
    np.testing.assert_array_equal(
        got, k.reference_weighted_from_slots(mul_mat_id(raw, t, xs, ids), w)
    )
    # Grouped by expert (each expert's rows read once per 8 pairs): the same bits, so prefill
    # and decode agree (R5); the combine pass equals the fused weighted epilogue.
    for cols in (8, 3):
        np.testing.assert_array_equal(mul_mat_id(raw, t, x, ids, grouped=True, cols=cols), y)
    y0 = rng.standard_normal((T, 24)).astype(np.float32)
    np.testing.assert_array_equal(
        mul_mat_id_weighted(raw, t, xs, ids, w, y=y0, grouped=True),
        mul_mat_id_weighted(raw, t, xs, ids, w, y=y0),
    )


def test_router_to_experts_on_gpu_replayed(device, rng):
    """R3: router → gate/up experts → weighted down experts, recorded once; each replay routes
    new logits written into a device buffer, and the ids never leave the GPU."""
    t_gu, t_dn = quants.parse_type("q4_k"), quants.parse_type("q6_k")
    n_exp, kk, D, F, T = 8, 2, 256, 256, 2
    gate_raw, _ = _experts(t_gu, rng, n_expert=n_exp, rows=F, K=D)
    down_raw, _ = _experts(t_dn, rng, n_expert=n_exp, rows=D, K=F)
    dev = device
    x = rng.standard_normal((T, D)).astype(np.float32)

    def upload(a):
        b = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
        buf = dev.memory.alloc(b.nbytes + 16)
        buf.write(b)
        return buf

    bg, bd, bx = upload(gate_raw), upload(down_raw), upload(x)
    blog = dev.memory.alloc(T * n_exp * 4)
    bids, bwts = dev.memory.alloc(T * kk * 4), dev.memory.alloc(T * kk * 4)
    bh, by = dev.memory.alloc(T * kk * F * 4), dev.memory.alloc(T * D * 4)
    kr = route_k.pipeline(dev, route_k.variant_for(dev.info, "softmax"))
    kg = k.pipeline(dev, t_gu)
    kd = k.pipeline(dev, t_dn, weighted=True)
    g = RecordedGraph(dev)
    with g.record() as rec:
        route_k.dispatch(rec, kr, blog, bids, bwts, n_exp, kk, T)
        k.dispatch(
            rec,
            kg,
            bg,
            bx,
            bids,
            bh,
            w_type=t_gu,
            rows=F,
            K=D,
            n_expert=n_exp,
            n_slots=kk,
            tokens=T,
        )
        k.dispatch(
            rec,
            kd,
            bd,
            bh,
            bids,
            by,
            w_type=t_dn,
            rows=D,
            K=F,
            n_expert=n_exp,
            n_slots=kk,
            tokens=T,
            weights=bwts,
            per_slot_input=True,
        )
    seen = set()
    for _ in range(3):
        lg = rng.standard_normal((T, n_exp)).astype(np.float32) * 3
        blog.write(lg)
        g.run()
        ids, wts = moe_route(lg, kk)  # the op gives the same bits as the graph's router
        np.testing.assert_array_equal(bids.read(np.int32, (T, kk)), ids)
        np.testing.assert_array_equal(bwts.read(np.float32, (T, kk)), wts)
        h = mul_mat_id(gate_raw, t_gu, x, ids)
        np.testing.assert_array_equal(bh.read(np.float32, (T, kk, F)), h)
        np.testing.assert_array_equal(
            by.read(np.float32, (T, D)), mul_mat_id_weighted(down_raw, t_dn, h, ids, wts)
        )
        seen.add(tuple(ids.reshape(-1)))
    assert len(seen) > 1
    for b in (bg, bd, bx, blog, bids, bwts, bh, by):
        b.free()


def test_out_of_range_id_is_clamped(device, rng):
    t = quants.parse_type("q8_0")
    raw, K = _experts(t, rng)
    x = rng.standard_normal((1, K)).astype(np.float32)
    dev = device
    bw = dev.memory.alloc(raw.nbytes + 16)
    bw.write(raw.reshape(-1))
    bx, bi, by = dev.memory.alloc(x.nbytes), dev.memory.alloc(8), dev.memory.alloc(2 * ROWS * 4)
    bx.write(x)
    bi.write(np.array([[E + 5, -1]], np.int32))  # both past the end as uint: expert E-1
    kp = k.pipeline(dev, t)
    from vkinfer.vk.commands import one_shot

    with one_shot(dev) as rec:
        k.dispatch(
            rec, kp, bw, bx, bi, by, w_type=t, rows=ROWS, K=K, n_expert=E, n_slots=2, tokens=1
        )
    y = by.read(np.float32, (1, 2, ROWS))
    want = mul_mat_id(raw, t, x, np.array([[E - 1, E - 1]]))
    np.testing.assert_array_equal(y, want)
    for b in (bw, bx, bi, by):
        b.free()


def test_contracts(device, rng):
    t = quants.parse_type("q4_k")
    raw, K = _experts(t, rng)
    with pytest.raises(ValueError):
        mul_mat_id(raw, t, np.zeros((1, K + 1), np.float32), [[0, 1]])
    with pytest.raises(ValueError):
        mul_mat_id(raw, t, np.zeros((1, K), np.float32), [[0, E]])
    with pytest.raises(ContractError):
        k.pipeline(device, t, weighted=False, accumulate=True)
    with pytest.raises(ContractError):
        k.pipeline(device, t, reduce="shmem", WG=36)
    with pytest.raises(ContractError):
        k.check_k(t, 128, "mul_mat_id")
