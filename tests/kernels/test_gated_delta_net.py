"""shaders/gated_delta_net.comp against the float64 reference, every variant the device runs.

Tolerance: the kernel is an f32 recurrence (S_V-term dot products, T chained state updates) and
the oracle is float64, so we compare max|gpu - ref| / max|ref| <= 1e-5 (observed <= 4e-7 on
lavapipe for S_V up to 128 and T up to 64). Prefix/snapshot and R5 checks are bit-exact: a token's arithmetic must not depend on
how many tokens share the dispatch.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer.errors import ContractError, DeviceFeatureError
from vkinfer.ops import gdn
from vkinfer.pipelines import gated_delta_net as kg
from vkinfer.runtime.graph import RecordedGraph
from vkinfer.vk.shader import get_spirv

TOL = 1e-5


def close(a, ref, tol=TOL):
    err = np.max(np.abs(np.asarray(a, np.float64) - ref)) / max(np.max(np.abs(ref)), 1e-30)
    assert err <= tol, f"relative error {err:.2e} > {tol:.0e}"


def inputs(rng, T, H_k, H, S, n_seq=None):
    lead = () if n_seq is None else (n_seq,)
    q = rng.standard_normal(lead + (T, H_k, S)).astype(np.float32)
    k = rng.standard_normal(lead + (T, H_k, S)).astype(np.float32)
    v = rng.standard_normal(lead + (T, H, S)).astype(np.float32)
    g = (-rng.uniform(0.01, 1.0, lead + (T, H))).astype(np.float32)  # log decay <= 0
    beta = rng.uniform(0.05, 1.0, lead + (T, H)).astype(np.float32)
    state = (0.3 * rng.standard_normal(lead + (H, S, S))).astype(np.float32)
    return q, k, v, g, beta, state


def ref(q, k, v, g, beta, state, layout="qwen35", n_snap=0, eps=1e-6):
    one = q.ndim == 3
    a = [x[None] if one else x for x in (q, k, v, g, beta, state)]
    out, st, sn = kg.reference(*a, head_map=layout, eps=eps, n_snap=n_snap)
    return (out[0], st[0], sn[:, 0]) if one else (out, st, sn)


def variant_lanes(info, s_v=16):
    """(variant, LANES, WG) for every supported variant and lanes_per_column in 1, 2, 4, 8 with
    a contract-valid workgroup (the smallest one of at least one subgroup)."""
    out = []
    for var in kg.KERNEL.supported_variants(info):
        for lanes in (1, 2, 4, 8):
            cfgs = kg.valid_configs(info, var, s_v, lanes=(lanes,))
            cfgs = [c for c in cfgs if c["WG"] >= info.subgroup_size] or cfgs
            if cfgs:
                out.append((var, lanes, cfgs[0]["WG"]))
    return out


def test_every_variant_compiles():
    for name, var in kg.KERNEL.variants.items():
        spirv, _ = get_spirv(kg.KERNEL.stem, var.defines)
        assert spirv[:4] == b"\x03\x02\x23\x07", name


def test_variants_and_lanes(device, rng):
    cfgs = variant_lanes(device.info)
    assert {"shmem"} <= {c[0] for c in cfgs}
    # with 32-wide subgroups one lane per column would need 32 columns of a 16-wide state
    want = {1, 2, 4, 8} if device.info.max_subgroup_size <= 16 else {2, 4, 8}
    assert want <= {c[1] for c in cfgs if c[0] == "shmem"}
    T, H_k, H, S, K = 3, 2, 4, 16, 2
    a = inputs(rng, T, H_k, H, S)
    r_out, r_st, r_sn = ref(*a, n_snap=K)
    for var, lanes, wg in cfgs:
        out, st, sn = gdn.gated_delta_net(*a, snapshots=K, variant=var, LANES=lanes, WG=wg)
        close(out, r_out)
        close(st, r_st)
        close(sn, r_sn)


@pytest.mark.parametrize("T", [1, 3, 8])
@pytest.mark.parametrize("S", [16, 64])
@pytest.mark.parametrize("heads", [(2, 4), (2, 2)], ids=["hk2-hv4", "hk2-hv2"])
def test_shapes(device, rng, T, S, heads):
    a = inputs(rng, T, heads[0], heads[1], S)
    out, st, _ = gdn.gated_delta_net(*a)
    r_out, r_st, _ = ref(*a)
    close(out, r_out)
    close(st, r_st)


def test_head_size_128(device, rng):
    a = inputs(rng, 2, 1, 2, 128)
    out, st, sn = gdn.gated_delta_net(*a, snapshots=1)
    r_out, r_st, r_sn = ref(*a, n_snap=1)
    close(out, r_out)
    close(st, r_st)
    close(sn, r_sn)


def test_head_mappings_differ_and_match(device, rng):
    a = inputs(rng, 3, 2, 4, 16)
    o35, _, _ = gdn.gated_delta_net(*a, layout="qwen35")
    onx, snx, _ = gdn.gated_delta_net(*a, layout="qwen3next")
    close(o35, ref(*a, layout="qwen35")[0])
    close(onx, ref(*a, layout="qwen3next")[0])
    close(snx, ref(*a, layout="qwen3next")[1])
    # h=1 uses key head 1 (tiled) vs key head 0 (grouped): the results must differ.
    assert np.max(np.abs(o35 - onx)) > 1e-2
    # Heads 0 and 3 use the same key head in both mappings.
    np.testing.assert_array_equal(o35[:, [0, 3]], onx[:, [0, 3]])


def test_eps_and_scale(device, rng):
    q, k, v, g, beta, st = inputs(rng, 2, 2, 2, 16)
    q[0, 0] *= 1e-3  # eps matters for small vectors
    out, _, _ = gdn.gated_delta_net(q, k, v, g, beta, st, eps=1e-4, scale=0.5)
    r = kg.reference(q[None], k[None], v[None], g[None], beta[None], st[None], eps=1e-4,
                     scale=0.5)[0][0]
    close(out, r)


def test_snapshots_equal_prefix_runs(device, rng):
    """Snapshot slot i == the state after running tokens 0..i alone, bit for bit (R4, R5);
    token outputs do not depend on the batch size either."""
    T, K = 5, 4
    a = inputs(rng, T, 2, 4, 16)
    out, st, sn = gdn.gated_delta_net(*a, snapshots=K)
    assert sn.shape == (K, 4, 16, 16)
    for i in range(K):
        pre = [x[:i + 1] for x in a[:5]] + [a[5]]
        o_i, s_i, _ = gdn.gated_delta_net(*pre)
        np.testing.assert_array_equal(sn[i], s_i)
        np.testing.assert_array_equal(out[:i + 1], o_i)
    close(st, ref(*a)[1])


def test_final_state_lives_in_last_snapshot_when_covered(device, rng):
    a = inputs(rng, 3, 2, 2, 16)
    _, st, sn = gdn.gated_delta_net(*a, snapshots=4)
    np.testing.assert_array_equal(st, sn[2])
    assert kg.final_plane(3, 4) == 3 and kg.final_plane(5, 4) == 0 and kg.final_plane(1, 0) == 0


def _bufs(device, arrays):
    out = []
    for a in arrays:
        b = device.memory.alloc(max(a.nbytes, 16))
        b.write(np.ascontiguousarray(a))
        out.append(b)
    return out


def test_resume_from_snapshot_recorded_graph(device, rng):
    """R3 + R4: one recording, replayed. A verify step of 4 tokens writes snapshot planes; the
    next step reads its initial state from plane n_accepted (per sequence) with no copy."""
    n_seq, T, H_k, H, S, K = 2, 4, 2, 4, 16, 4
    q, k, v, g, beta, st0 = inputs(rng, T, H_k, H, S, n_seq=n_seq)
    name, spec = kg.choose(device.info, S)
    kp = kg.KERNEL.pipeline(device, name, **spec)
    plane = kg.plane_elems(n_seq, H, S)
    bq, bk, bv, bg, bb = _bufs(device, (q, k, v, g, beta))
    bst = device.memory.alloc(4 * plane * (1 + K))
    bst.write(st0)
    bo = device.memory.alloc(4 * n_seq * T * H * S)
    step = np.dtype([("n_tokens", "<u4"), ("src_plane", "<u4", (n_seq,))])
    graph = RecordedGraph(device, step)
    with graph.record() as rec:
        kg.dispatch(rec, kp, bq, bk, bv, bg, bb, bst, bo, graph.step, n_seq=n_seq, H=H, H_k=H_k,
                    seq_rows=T, qk_stride=H_k * S, v_stride=H * S, n_snap=K)
    try:
        graph.run(n_tokens=T, src_plane=[0, 0])
        out1 = bo.read(np.float32, (n_seq, T, H, S))
        r_out1, _, _ = ref(q, k, v, g, beta, st0, n_snap=K)
        close(out1, r_out1)

        accepted = [2, 4]  # sequence 0 keeps 2 tokens, sequence 1 all 4
        q2, k2, v2, g2, b2, _ = inputs(rng, T, H_k, H, S, n_seq=n_seq)
        for buf, arr in zip((bq, bk, bv, bg, bb), (q2, k2, v2, g2, b2)):
            buf.write(arr)
        graph.run(n_tokens=1, src_plane=accepted)
        out2 = bo.read(np.float32, (n_seq, T, H, S))[:, :1]
        planes = bst.read(np.float32, (1 + K, n_seq, H, S, S))
        for s, n_acc in enumerate(accepted):
            take = [x[s:s + 1, :n_acc] for x in (q, k, v, g, beta)]
            _, st_acc, _ = ref(*take, st0[s:s + 1])
            new = [x[s:s + 1, :1] for x in (q2, k2, v2, g2, b2)]
            r_out2, r_st2, _ = ref(*new, st_acc)
            close(out2[s], r_out2[0])
            close(planes[kg.final_plane(1, K), s], r_st2[0])
    finally:
        for b in (bq, bk, bv, bg, bb, bst, bo):
            b.free()


def test_reads_q_k_v_from_conv_output(device, rng):
    """q, k, v as strided views of one conv output row [Q | K | V] (no copies)."""
    T, H_k, H, S = 3, 2, 4, 16
    q, k, v, g, beta, st = inputs(rng, T, H_k, H, S)
    key_dim, conv_dim = H_k * S, 2 * H_k * S + H * S
    pad = 5  # an extra leading offset, as if the conv output were a slice of a bigger buffer
    conv = np.zeros((T, conv_dim + 3), np.float32)
    conv[:, 0:key_dim] = q.reshape(T, -1)
    conv[:, key_dim:2 * key_dim] = k.reshape(T, -1)
    conv[:, 2 * key_dim:conv_dim] = v.reshape(T, -1)
    flat = np.concatenate([np.full(pad, np.nan, np.float32), conv.reshape(-1)])
    name, spec = kg.choose(device.info, S)
    kp = kg.KERNEL.pipeline(device, name, **spec)
    bx, bg, bb, bst, bc = _bufs(device, (flat, g, beta, st, kg.ctl_words(T, [0])))
    bo = device.memory.alloc(4 * T * H * S)
    try:
        from vkinfer.vk.commands import one_shot

        with one_shot(device) as rec:
            kg.dispatch(rec, kp, bx, bx, bx, bg, bb, bst, bo, bc, n_seq=1, H=H, H_k=H_k,
                        seq_rows=T, qk_stride=conv_dim + 3, v_stride=conv_dim + 3, q_off=pad,
                        k_off=pad + key_dim, v_off=pad + 2 * key_dim)
        r_out, r_st, _ = ref(q, k, v, g, beta, st)
        close(bo.read(np.float32, (T, H, S)), r_out)
        close(bst.read(np.float32, (H, S, S)), r_st)
    finally:
        for b in (bx, bg, bb, bst, bc, bo):
            b.free()


def test_contract(device):
    info = device.info
    with pytest.raises(ContractError):
        kg.KERNEL.pipeline(device, "shmem", S_V=16, LANES=32, WG=32)  # LANES > S_V
    with pytest.raises(ContractError):
        kg.KERNEL.pipeline(device, "shmem", S_V=16, LANES=4, WG=128)  # 32 columns > S_V
    with pytest.raises(ContractError):
        kg.KERNEL.pipeline(device, "shmem", S_V=16, LANES=3, WG=24)
    if "subgroup" in kg.KERNEL.supported_variants(info):
        with pytest.raises(ContractError):
            kg.KERNEL.pipeline(device, "subgroup", S_V=64, LANES=info.subgroup_size // 2,
                               WG=info.subgroup_size)
    if "shuffle" in kg.KERNEL.supported_variants(info):
        with pytest.raises(ContractError):
            kg.KERNEL.pipeline(device, "shuffle", S_V=64, LANES=2 * info.max_subgroup_size,
                               WG=2 * info.max_subgroup_size)


def test_unsupported_variants_raise(device):
    info = device.info
    missing = set(kg.KERNEL.variants) - set(kg.KERNEL.supported_variants(info))
    if not info.clustered_subgroup:
        assert "clustered" in missing  # lavapipe: no clustered subgroup operations
    for name in missing:
        with pytest.raises(DeviceFeatureError):
            kg.KERNEL.pipeline(device, name, S_V=16, LANES=4, WG=info.subgroup_size)
        with pytest.raises(DeviceFeatureError):
            gdn.gated_delta_net(*inputs(np.random.default_rng(0), 1, 1, 1, 16), variant=name)


def test_tuning_entry_is_used(device, rng):
    """R7: a tuning-database entry for the shape class replaces the built-in default."""
    from vkinfer import tuning

    info, S, H = device.info, 32, 3
    cls = kg.shape_class(S, H)
    untuned = kg.choose(info, S, n_heads=H)
    pick = next(c for c in kg.valid_configs(info, "shmem", S)
                if ("shmem", {"S_V": S, "LANES": c["LANES"], "WG": c["WG"]}) != untuned)
    tuning.store(info, kg.KERNEL, "shmem", cls, {"WG": pick["WG"], "LANES": pick["LANES"]})
    try:
        assert kg.choose(info, S, n_heads=H) == (
            "shmem", {"S_V": S, "LANES": pick["LANES"], "WG": pick["WG"]})
        a = inputs(rng, 2, 1, H, S)
        close(gdn.gated_delta_net(*a)[0], ref(*a)[0])
    finally:
        db = tuning.load()
        db.get(tuning.device_key(info), {}).pop(tuning.entry_key(kg.KERNEL.stem, "shmem", cls))
        tuning.save(db)
    assert kg.choose(info, S, n_heads=H)[0] == kg.choose(info, S)[0]
