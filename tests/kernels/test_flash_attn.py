"""flash_attn.comp (+ flash_attn_reduce.comp) against pipelines/flash_attn.reference on lavapipe:
head dims 32/64/128/256, GQA ratios 1/2/4/6, KV lengths 1..257, 1/3/16 query tokens (split-K
decode/verify) and ~40-token prefill (one pass), F16 and Q8_0 caches, sliding window, softcap,
several splits, rows whose chunk sizes differ in one dispatch, a graph recorded once and replayed
at growing KV lengths (R3), and bit-exact batch invariance (R5).

Tolerance: |got - ref| <= 1e-5 * max|V| + 1e-5 * |ref|. The reference is float64 attention on
the very values the cache holds (f16 -> f32 is exact, Q8_0 is dequantized exactly as the shader
does), so the only error is f32 accumulation of ~hd products and ~kv_len terms and the f32 exp;
an output is a convex combination of V rows, so max|V| is its natural scale. The softcap
cases allow 3e-5: cap * tanh adds ~1e-7 * cap of absolute logit error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from vkinfer.errors import ContractError, DeviceFeatureError
from vkinfer.ops.attention import as_cache, flash_attn, kv_store
from vkinfer.pipelines import flash_attn as fa
from vkinfer.pipelines import kv_store as ks
from vkinfer.runtime.graph import RecordedGraph


def _data(rng, n_q, n_head, n_kv, hd, kv_len_max, kv_type, scale=1.0):
    q = (rng.standard_normal((n_q, n_head, hd)) * scale).astype(np.float32)
    k = rng.standard_normal((kv_len_max, n_kv, hd)).astype(np.float32)
    v = rng.standard_normal((kv_len_max, n_kv, hd)).astype(np.float32)
    kc, _ = as_cache(k, kv_type)
    vc, _ = as_cache(v, kv_type)
    return q, kc, vc


def _ref(q, kc, vc, pos, kv_len, kv_type, **kw):
    hd = q.shape[-1]
    return fa.reference(q, fa.from_cache(kc, kv_type, hd), fa.from_cache(vc, kv_type, hd), pos,
                        kv_len, **kw)


def _check(got, ref, vc, kv_type, tol=1e-5):
    vmax = float(np.abs(fa.from_cache(vc, kv_type, got.shape[-1])).max())
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * vmax)


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


# --- decode / verify (split-K) -----------------------------------------------------------------

DECODE = [(ratio, kv_len, n_q)
          for ratio in (1, 2, 4, 6)
          for kv_len, n_q in ((1, 1), (31, 3), (100, 16), (257, 1 + ratio % 3 * 2))]


@pytest.mark.parametrize("kv_type", fa.KV_TYPES)
@pytest.mark.parametrize("case", DECODE, ids=lambda c: f"g{c[0]}-kv{c[1]}-q{c[2]}")
def test_decode_hd64(rng, kv_type, case):
    ratio, kv_len, n_q = case
    n_kv = 2 if ratio < 6 else 1
    q, kc, vc = _data(rng, n_q, ratio * n_kv, n_kv, 64, kv_len + 5, kv_type)
    pos = np.arange(kv_len - n_q, kv_len)
    got = flash_attn(q, kc, vc, pos, kv_len, mode="split")
    _check(got, _ref(q, kc, vc, pos, kv_len, kv_type), vc, kv_type)


@pytest.mark.parametrize("shape", [(32, 4, 2, 37, 2), (128, 4, 2, 100, 3), (128, 8, 8, 65, 16)],
                         ids=lambda s: f"hd{s[0]}-h{s[1]}-kv{s[2]}")
@pytest.mark.parametrize("kv_type", fa.KV_TYPES)
def test_decode_other_head_dims(rng, shape, kv_type):
    hd, n_head, n_kv, kv_len, n_q = shape
    q, kc, vc = _data(rng, n_q, n_head, n_kv, hd, kv_len, kv_type)
    pos = np.arange(kv_len - n_q, kv_len)
    got = flash_attn(q, kc, vc, pos, mode="split")
    _check(got, _ref(q, kc, vc, pos, kv_len, kv_type), vc, kv_type)


def test_head_dim_256_gemma3_like(rng):
    # Gemma 3 270M: 4 query heads, 1 KV head (ratio 4), head dim 256, sliding window 512
    # (here 24 to make it bite), scale 1/sqrt(256). One split decode, one prefill.
    q, kc, vc = _data(rng, 2, 4, 1, 256, 48, "f16")
    pos = np.array([45, 46])
    got = flash_attn(q, kc, vc, pos, 47, window=24, mode="split")
    _check(got, _ref(q, kc, vc, pos, 47, "f16", window=24), vc, "f16")
    qp, _, _ = _data(rng, 20, 4, 1, 256, 1, "f16")
    pos = np.arange(20)
    got = flash_attn(qp, kc, vc, pos, 20, window=8, mode="direct")
    _check(got, _ref(qp, kc, vc, pos, 20, "f16", window=8), vc, "f16")


# --- prefill (one pass) ----------------------------------------------------------------------

@pytest.mark.parametrize("kv_type", fa.KV_TYPES)
@pytest.mark.parametrize("opts", [{}, {"window": 16}, {"softcap": 30.0}, {"scale": 0.3}],
                         ids=lambda o: "-".join(f"{k}{v}" for k, v in o.items()) or "causal")
def test_prefill_40_tokens(rng, kv_type, opts):
    q, kc, vc = _data(rng, 40, 4, 2, 64, 40, kv_type, scale=2.0)
    pos = np.arange(40)
    got = flash_attn(q, kc, vc, pos, 40, mode="direct", BR=16, **opts)
    tol = 3e-5 if "softcap" in opts else 1e-5
    _check(got, _ref(q, kc, vc, pos, 40, kv_type, **opts), vc, kv_type, tol)


def test_prefill_head_dim_128(rng):
    q, kc, vc = _data(rng, 24, 4, 2, 128, 30, "q8_0")
    pos = np.arange(6, 30)
    got = flash_attn(q, kc, vc, pos, 30, mode="direct")
    _check(got, _ref(q, kc, vc, pos, 30, "q8_0"), vc, "q8_0")


def test_prefill_continues_a_cache(rng):
    # a second prompt chunk at positions 60..99 over a 100-long cache, several chunks per row
    q, kc, vc = _data(rng, 40, 6, 1, 64, 128, "f16")
    pos = np.arange(60, 100)
    got = flash_attn(q, kc, vc, pos, 100, mode="direct", BR=16, CHUNK=32)
    _check(got, _ref(q, kc, vc, pos, 100, "f16"), vc, "f16")


# --- masks and options in split mode -----------------------------------------------------------

@pytest.mark.parametrize("kv_type", fa.KV_TYPES)
def test_window_and_softcap_split(rng, kv_type):
    q, kc, vc = _data(rng, 3, 4, 2, 64, 200, kv_type, scale=3.0)
    pos = np.array([150, 151, 152])
    for opts in ({"window": 37}, {"softcap": 20.0}, {"window": 100, "softcap": 50.0},
                 {"window": 1}):
        got = flash_attn(q, kc, vc, pos, 153, mode="split", CHUNK=64, **opts)
        tol = 3e-5 if "softcap" in opts else 1e-5
        _check(got, _ref(q, kc, vc, pos, 153, kv_type, **opts), vc, kv_type, tol)


def test_many_splits(rng):
    # CHUNK = BC = 32 forces 9 chunks at kv_len 257 (and 65 positions with window)
    q, kc, vc = _data(rng, 3, 4, 2, 64, 257, "f16")
    pos = np.array([200, 255, 256])
    small = flash_attn(q, kc, vc, pos, mode="split", CHUNK=32, BC=32)
    _check(small, _ref(q, kc, vc, pos, 257, "f16"), vc, "f16")
    big = flash_attn(q, kc, vc, pos, mode="split", CHUNK=256)
    _check(small, big, vc, "f16")
    assert fa.n_chunks(fa.pipelines(_device(), 64, "f16", CHUNK=32, BC=32)[0], 257) == 9
    got = flash_attn(q, kc, vc, pos, mode="split", CHUNK=32, BC=32, window=65)
    _check(got, _ref(q, kc, vc, pos, 257, "f16", window=65), vc, "f16")


def test_reduce_in_batches(device, rng):
    # 19 chunks of 32 folded by a reduce of WG 16 (two batches of the prefix-max scan) give the
    # bits of the default single-batch reduce
    from vkinfer.ops._base import op_session, run

    q, kc, vc = _data(rng, 2, 4, 2, 64, 600, "f16")
    pos = np.array([598, 599], np.int32)
    kp, kr64 = fa.pipelines(device, 64, "f16", split=True, group=2, rows=4, CHUNK=32,
                            CHUNK_MAX=32)
    kr16 = fa.reduce_pipeline(device, kp, wg=16)
    assert fa.n_chunks(kp, 600) == 19 and kr16.spec["WG"] == 16
    outs = []
    with op_session(device) as (dev, t):
        bq, bk, bv = t.upload(q), t.upload(kc), t.upload(vc)
        bpos, blens = t.upload(pos), t.upload(np.array([600, 2], np.int32))
        po, pm = (t.empty(n) for n in fa.partial_nbytes(kp, 2, 4, 600))
        for kr in (kr64, kr16):
            bout = t.empty(2 * 4 * 64 * 4, fill=0)
            run(dev, lambda rec, kr=kr, bout=bout: fa.dispatch(
                rec, kp, kr, bq, bk, bv, bpos, blens, bout, po, pm, n_q_max=2, n_head=4,
                n_head_kv=2, kv_len_max=600))
            outs.append(bout.read(np.float32, (2, 4, 64)))
    np.testing.assert_array_equal(_bits(outs[0]), _bits(outs[1]))
    _check(outs[1], _ref(q, kc, vc, pos, 600, "f16"), vc, "f16")


def test_positions_not_at_the_end(rng):
    # queries earlier than the cache end (a replayed verify step): the mask, not kv_len, decides
    q, kc, vc = _data(rng, 3, 2, 1, 64, 90, "q8_0")
    pos = np.array([10, 47, 3])
    got = flash_attn(q, kc, vc, pos, 90, mode="split", CHUNK=32)
    _check(got, _ref(q, kc, vc, pos, 90, "q8_0"), vc, "q8_0")


# --- batch invariance (R5), bit for bit ----------------------------------------------------------

@pytest.mark.parametrize("kv_type", fa.KV_TYPES)
def test_batch_invariance_bits(rng, kv_type):
    """A row alone (decode, kv_len = p + 1) == the same row with 3 and 16 others (verify,
    kv_len = p + 4 / p + 17) == prefill (one pass) == the shared-memory variant == other BR."""
    q, kc, vc = _data(rng, 17, 6, 1, 64, 300, kv_type)
    p0 = 230
    pos = np.arange(p0, p0 + 17)
    kw = {"CHUNK": 64}
    alone = flash_attn(q[:1], kc, vc, pos[:1], p0 + 1, mode="split", **kw)
    with3 = flash_attn(q[:4], kc, vc, pos[:4], p0 + 4, mode="split", **kw)
    with16 = flash_attn(q, kc, vc, pos, p0 + 17, mode="split", **kw)
    np.testing.assert_array_equal(_bits(alone[0]), _bits(with3[0]))
    np.testing.assert_array_equal(_bits(alone[0]), _bits(with16[0]))
    np.testing.assert_array_equal(_bits(with3), _bits(with16[:4]))
    # other rows and a longer cache than needed
    np.testing.assert_array_equal(
        _bits(flash_attn(q[5:6], kc, vc, pos[5:6], 300, mode="split", **kw)), _bits(with16[5:6]))
    variants = [
        flash_attn(q, kc, vc, pos, p0 + 17, mode="direct", BR=16, **kw),
        flash_attn(q, kc, vc, pos, p0 + 17, mode="split", BR=4, **kw),
        # tiles of any size: the butterfly then ends with plain (non-halving) steps
        flash_attn(q, kc, vc, pos, p0 + 17, mode="split", BR=5, **kw),
        flash_attn(q, kc, vc, pos, p0 + 17, mode="direct", BR=6, **kw),
        flash_attn(q, kc, vc, pos, p0 + 17, mode="split", BR=3, PREFETCH=False, **kw),
        flash_attn(q, kc, vc, pos, p0 + 17, mode="split", reduce="shmem", **kw),
        flash_attn(q, kc, vc, pos, p0 + 17, mode="split", n_q_max=24, **kw),
        # other thread mappings of the P V phase and of the score phase's column groups
        flash_attn(q, kc, vc, pos, p0 + 17, mode="split", VE=8, **kw),
        flash_attn(q, kc, vc, pos, p0 + 17, mode="direct" if kv_type == "f16" else "split",
                   WG=128, **kw),
    ]
    if kv_type == "f16":  # the largest tile once (slow to compile on lavapipe)
        variants.append(flash_attn(q, kc, vc, pos, p0 + 17, mode="split", BR=32, **kw))
    for v in variants:
        np.testing.assert_array_equal(_bits(v), _bits(with16))
    _check(with16, _ref(q, kc, vc, pos, p0 + 17, kv_type), vc, kv_type)


def test_batch_invariance_with_window(rng):
    q, kc, vc = _data(rng, 16, 4, 2, 32, 200, "f16")
    pos = np.arange(150, 166)
    kw = {"CHUNK": 32, "window": 40}
    many = flash_attn(q, kc, vc, pos, 166, mode="split", **kw)
    for i in (0, 7, 15):
        one = flash_attn(q[i:i + 1], kc, vc, pos[i:i + 1], pos[i] + 1, mode="split", **kw)
        np.testing.assert_array_equal(_bits(one), _bits(many[i:i + 1]))
    pre = flash_attn(q, kc, vc, pos, 166, mode="direct", **kw)
    np.testing.assert_array_equal(_bits(pre), _bits(many))


@pytest.mark.parametrize("kv_type", fa.KV_TYPES)
def test_rows_of_different_chunk_sizes(rng, kv_type):
    """Chunk size follows each row's own position (CHUNK 32, at most NCHUNK = 2 chunks): rows at
    positions 60..67 use chunks of 32 up to position 63 and of 64 from 64 on. Verify rows, one
    row alone, a longer cache and prefill all give the same bits."""
    kw = {"CHUNK": 32, "NCHUNK": 2, "CHUNK_MAX": 128}
    q, kc, vc = _data(rng, 8, 4, 2, 64, 140, kv_type)
    pos = np.arange(60, 68)
    many = flash_attn(q, kc, vc, pos, 68, mode="split", **kw)
    for i in (0, 3, 4, 7):
        one = flash_attn(q[i:i + 1], kc, vc, pos[i:i + 1], pos[i] + 1, mode="split", **kw)
        np.testing.assert_array_equal(_bits(one), _bits(many[i:i + 1]))
    np.testing.assert_array_equal(
        _bits(flash_attn(q, kc, vc, pos, 140, mode="split", **kw)), _bits(many))
    np.testing.assert_array_equal(
        _bits(flash_attn(q, kc, vc, pos, 68, mode="direct", **kw)), _bits(many))
    _check(many, _ref(q, kc, vc, pos, 68, kv_type), vc, kv_type)
    kp = fa.pipelines(_device(), 64, kv_type, **kw)[0]
    assert [fa.chunk_size(kp.spec, n) for n in (1, 64, 65, 128, 129, 1000)] == \
        [32, 32, 64, 64, 128, 128]
    assert fa.n_chunks(kp, 140) == 2 and fa.n_chunks(kp, 300) == 3


# --- record once, replay (R3) ---------------------------------------------------------------------

def _device():
    from vkinfer.vk.device import get_device

    return get_device()


@pytest.mark.parametrize("kv_type", fa.KV_TYPES)
def test_recorded_decode_steps(device, rng, kv_type):
    """kv_store + flash_attn recorded once at kv_len_max; each replay writes the new token's
    K/V rows, its position and kv_len into device buffers. Every step equals the reference and
    the one-shot op bit for bit."""
    n_head, n_kv, hd, kv_max, n_q_max = 6, 2, 64, 80, 2
    align = max(16, device.info.min_storage_buffer_offset_alignment)
    step_dtype = np.dtype({"names": ["kv_len", "n_q", "q_pos"],
                           "formats": ["<i4", "<i4", ("<i4", (n_q_max,))],
                           "offsets": [0, 4, align], "itemsize": align + 16})
    g = RecordedGraph(device, step_dtype)
    kc0 = as_cache(np.zeros((kv_max, n_kv, hd), np.float32), kv_type)[0]
    mem = device.memory
    bk, bv = mem.alloc(kc0.nbytes), mem.alloc(kc0.nbytes)
    bk.write(kc0)
    bv.write(kc0)
    bq = mem.alloc(n_q_max * n_head * hd * 4)
    bkn, bvn = mem.alloc(n_q_max * n_kv * hd * 4), mem.alloc(n_q_max * n_kv * hd * 4)
    bout = mem.alloc(n_q_max * n_head * hd * 4)
    kw = {"CHUNK": 32, "NCHUNK": 2}  # chunks of 32 up to position 63, then of 64
    kp, kr = fa.pipelines(device, hd, kv_type, split=True, group=n_head // n_kv,
                          rows=n_q_max * n_head // n_kv, **kw)
    po, pm = (mem.alloc(n) for n in fa.partial_nbytes(kp, n_q_max, n_head, kv_max))
    kps = ks.KERNEL.pipeline(device, kv_type)
    lens, qpos = g.step.range(0, 8), g.step.range(align, 4 * n_q_max)
    with g.record() as rec:
        ks.dispatch(rec, kps, bkn, bvn, qpos, lens, bk, bv, n_max=n_q_max, n_head_kv=n_kv,
                    head_dim=hd, kv_len_max=kv_max)
        fa.dispatch(rec, kp, kr, bq, bk, bv, qpos, lens, bout, po, pm, n_q_max=n_q_max,
                    n_head=n_head, n_head_kv=n_kv, kv_len_max=kv_max)
    k_all = rng.standard_normal((kv_max, n_kv, hd)).astype(np.float32)
    v_all = rng.standard_normal((kv_max, n_kv, hd)).astype(np.float32)
    kv_len = 0
    for n_q in (2, 1, 1, 2, 1) * 4 + (1,) * 45:  # crosses several 32-position chunks
        if kv_len + n_q > kv_max:
            break
        pos = np.arange(kv_len, kv_len + n_q)
        q = rng.standard_normal((n_q, n_head, hd)).astype(np.float32)
        bq.write(q)
        bkn.write(k_all[pos])
        bvn.write(v_all[pos])
        qp = np.zeros(n_q_max, np.int32)
        qp[:n_q] = pos
        g.run(kv_len=kv_len + n_q, n_q=n_q, q_pos=qp)
        kv_len += n_q
        got = bout.read(np.float32, (n_q_max, n_head, hd))[:n_q]
        kc_ref, _ = as_cache(k_all[:kv_len], kv_type)
        vc_ref, _ = as_cache(v_all[:kv_len], kv_type)
        np.testing.assert_array_equal(bk.read(np.uint8, (kc_ref.nbytes,)),
                                      kc_ref.view(np.uint8).reshape(-1))
        _check(got, _ref(q, kc_ref, vc_ref, pos, kv_len, kv_type), vc_ref, kv_type)
        if kv_len in (3, 33, 64):  # the one-shot op gives the same bits
            one = flash_attn(q, kc_ref, vc_ref, pos, kv_len, mode="split", **kw)
            np.testing.assert_array_equal(_bits(one), _bits(got))
    assert kv_len > 64
    for b in (bk, bv, bq, bkn, bvn, bout, po, pm):
        b.free()


def test_inactive_rows_untouched(device, rng):
    # grid sized for 16 tokens, lens says 3: the other rows' output is not written
    from vkinfer.ops._base import op_session, run

    q, kc, vc = _data(rng, 16, 4, 2, 32, 50, "f16")
    pos = np.arange(34, 50)
    kp, kr = fa.pipelines(device, 32, "f16", split=True, group=2)
    with op_session(device) as (dev, t):
        bq, bk, bv = t.upload(q), t.upload(kc), t.upload(vc)
        bpos, blens = t.upload(pos.astype(np.int32)), t.upload(np.array([37, 3], np.int32))
        bout = t.upload(np.full((16, 4, 32), 7.0, np.float32))
        po, pm = (t.empty(n) for n in fa.partial_nbytes(kp, 16, 4, 50))
        run(dev, lambda rec: fa.dispatch(rec, kp, kr, bq, bk, bv, bpos, blens, bout, po, pm,
                                         n_q_max=16, n_head=4, n_head_kv=2, kv_len_max=50))
        out = bout.read(np.float32, (16, 4, 32))
    assert np.all(out[3:] == 7.0)
    _check(out[:3], _ref(q[:3], kc, vc, pos[:3], 37, "f16"), vc, "f16")


# --- contracts and variants ------------------------------------------------------------------------

def test_variants_and_contract(device):
    info = device.info
    assert set(fa.FLASH.supported_variants(info)) == {"f16", "q8_0", "f16_shmem", "q8_0_shmem"}
    no_shuffle = dataclasses.replace(info, subgroup_ops=["basic"])
    vals = {"WG": 64, "HD": 64, "BR": 8, "BC": 32, "CHUNK": 256, "DL": 4, "SPLIT": True,
            "VE": 4, "CHUNK_MAX": 512, "NCHUNK": 128}
    with pytest.raises(DeviceFeatureError):
        fa.FLASH.check_variant("f16", vals, no_shuffle)
    fa.FLASH.check_variant("f16_shmem", vals, no_shuffle)
    assert fa.variant_for(no_shuffle, "q8_0") == "q8_0_shmem"
    bad = [{"WG": 48}, {"HD": 72}, {"DL": 3}, {"DL": 64}, {"BC": 16, "DL": 2},
           {"CHUNK": 48}, {"CHUNK_MAX": 128}, {"NCHUNK": 0}, {"VE": 2}, {"VE": 8, "WG": 4},
           {"BR": 128}, {"BR": 0}, {"BR": 32, "HD": 256, "WG": 64, "BC": 64}]
    for b in bad:
        with pytest.raises(ContractError):
            fa.FLASH.check_variant("f16", {**vals, **b}, info)
    with pytest.raises(ContractError):
        fa.pipelines(device, 64, "f16", WG=0, reduce="subgroup", BR=128)
    with pytest.raises(ContractError):
        flash_attn(np.zeros((1, 3, 64), np.float32), np.zeros((4, 2, 64), np.float32),
                   np.zeros((4, 2, 64), np.float32), [0])


def test_kv_store_then_attend_matches_host_conversion(rng):
    # the cache kv_store writes is the cache the op builds on the host
    k = rng.standard_normal((20, 2, 64)).astype(np.float32)
    v = rng.standard_normal((20, 2, 64)).astype(np.float32)
    for kv_type in fa.KV_TYPES:
        empty = as_cache(np.zeros((24, 2, 64), np.float32), kv_type)[0]
        kc, vc = kv_store(empty, empty, k, v, np.arange(20), kv_type=kv_type)
        np.testing.assert_array_equal(kc[:20], as_cache(k, kv_type)[0])
        np.testing.assert_array_equal(vc[:20], as_cache(v, kv_type)[0])
