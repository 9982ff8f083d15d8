"""kv_store.comp against pipelines/kv_store.reference on lavapipe: F16 and Q8_0 caches, bit for
bit (tolerance 0: the shader rounds f32 -> f16 to nearest even in integer arithmetic and
computes the Q8_0 scale and its inverse by exact long division, so it reproduces numpy's
astype(float16) and ggml's quantize_row_q8_0_ref exactly), including f16 subnormals and
overflow, Q8_0 ties (roundf rounds half away from zero), scales over a huge range, a token
count below the grid's, and positions outside the cache (skipped)."""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer.ops.attention import as_cache, kv_store
from vkinfer.pipelines import kv_store as ks


def _assert_same(got, want):
    np.testing.assert_array_equal(np.ascontiguousarray(got).view(np.uint8),
                                  np.ascontiguousarray(want).view(np.uint8))


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
@pytest.mark.parametrize("shape", [(1, 1, 32), (5, 2, 64), (3, 4, 256), (16, 2, 128)],
                         ids=lambda s: f"n{s[0]}-kv{s[1]}-hd{s[2]}")
def test_store_matches_reference(rng, kv_type, shape):
    n, n_kv, hd = shape
    kv_max = 40
    kc = as_cache(rng.standard_normal((kv_max, n_kv, hd)), kv_type)[0]
    vc = as_cache(rng.standard_normal((kv_max, n_kv, hd)), kv_type)[0]
    k = (rng.standard_normal((n, n_kv, hd)) * 3).astype(np.float32)
    v = rng.standard_normal((n, n_kv, hd)).astype(np.float32)
    pos = rng.permutation(kv_max)[:n].astype(np.int32)
    k2, v2 = kv_store(kc, vc, k, v, pos)
    _assert_same(k2, ks.reference(kc, k, pos, kv_type=kv_type))
    _assert_same(v2, ks.reference(vc, v, pos, kv_type=kv_type))


@pytest.mark.parametrize("kv_type", ["f16", "q8_0"])
def test_partial_count_and_out_of_range_positions(rng, kv_type):
    kc = as_cache(rng.standard_normal((16, 2, 32)), kv_type)[0]
    k = rng.standard_normal((4, 2, 32)).astype(np.float32)
    pos = np.array([2, 16, -1, 5], np.int32)  # 16 and -1 are outside; token 3 is beyond n = 3
    k2, v2 = kv_store(kc, kc, k, k, pos, n=3)
    want = ks.reference(kc, k, pos, n=3, kv_type=kv_type)
    _assert_same(k2, want)
    _assert_same(v2, want)
    unchanged = [i for i in range(16) if i != 2]
    _assert_same(k2[unchanged], kc[unchanged])


def test_f16_rounding_every_range(rng):
    # random bit patterns (all exponents, NaNs replaced) and values around the f16 subnormal,
    # normal and overflow boundaries
    x = rng.integers(0, 2**32, size=(1024, 1, 256), dtype=np.uint64).astype(np.uint32)
    x = x.view(np.float32)
    x = np.where(np.isnan(x), np.float32(1.5), x)
    y = (rng.uniform(-1, 1, x.shape) * np.exp2(rng.uniform(-27, 17, x.shape))).astype(np.float32)
    edges = np.array([65504, 65519.996, 65520, 2**-14, 2**-24, 2**-25, 2**-25 * 1.0000001,
                      3 * 2**-26, 6.1e-5, 1 + 2**-11, 1 + 3 * 2**-11, np.inf], np.float32)
    y.reshape(-1)[: 2 * edges.size] = np.concatenate([edges, -edges])
    cache = np.zeros((1024, 1, 256), np.float16)
    with np.errstate(over="ignore"):
        k2, v2 = kv_store(cache, cache, x, y, np.arange(1024))
        _assert_same(k2, x.astype(np.float16))
        _assert_same(v2, y.astype(np.float16))


def test_q8_0_ties_and_scales(rng):
    n = 512
    x = rng.standard_normal((n, 1, 64)) * np.exp2(rng.uniform(-40, 14, (n, 1, 1)))
    x = x.astype(np.float32)
    # ties: amax 127 gives d = 1, id = 1, so k + 0.5 sits exactly halfway
    x[0, 0, :32] = np.concatenate([[127.0, -127.0], np.arange(-14.5, 15.5, 1.0)])
    x[1, 0, :32] = 0.0  # an all-zero block: d = 0
    x[2, 0, :32] = np.float32(1e-3) * np.arange(32)
    cache = as_cache(np.zeros((n, 1, 64), np.float32), "q8_0")[0]
    k2, _ = kv_store(cache, cache, x, x, np.arange(n))
    _assert_same(k2, as_cache(x, "q8_0")[0])
    q = k2[0, 0, 2:34].view(np.int8)
    assert q[2] == -15 and q[3] == -14 and q[-1] == 15  # -14.5 -> -15, -13.5 -> -14, 14.5 -> 15
