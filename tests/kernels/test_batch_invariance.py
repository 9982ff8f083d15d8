"""DESIGN R5 for the matrix kernels: a column's output is bit-identical however it is computed —
alone or among 3, 5 or 8 matvec columns at any position, by the tiled prefill kernel among 33
tokens, with either reduction variant, and whatever the tunable specialization constants (WG, NR,
UNROLL; BM, BN, TM, TN, SLAB). Only LANES (fixed at 8 in shaders/common/quants.glsl) defines the
numbers. Compared as uint32 bit patterns (np.array_equal), never with a tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.gguf import quants

N = 33
# GPU defaults (mul_mat_vec.default_spec; CPU devices: WG 64, NR 1, UNROLL 1, no prefetch) and
# extremes of each tunable, CHUNK (staged activations per lane) from one unit to the whole row
CONFIGS_MV = [
    {"WG": 128, "NR": 4, "UNROLL": 2, "PREFETCH": True},
    {"WG": 64, "NR": 2, "UNROLL": 1, "PREFETCH": False, "CHUNK": 1},
    {"WG": 128, "NR": 4, "UNROLL": 1, "PREFETCH": True, "CHUNK": 3, "XPREFETCH": True},
    {"WG": 32, "UNROLL": 4, "CHUNK": 8, "XPREFETCH": True},
]
CONFIGS_MM = [
    {"BM": 64, "BN": 32, "TM": 8, "TN": 8, "SLAB": 8},
    {"BM": 32, "BN": 16, "TM": 4, "TN": 4, "SLAB": 16},
]


def _bits(a):
    return np.ascontiguousarray(a, np.float32).view(np.uint32)


@pytest.mark.parametrize("t", ["q4_k", "q6_k", "q8_0", "f16"])
def test_columns_are_batch_invariant(rng, t):
    K, rows = (768, 45) if quants.type_info(t).block_size == 256 else (352, 45)
    w = quants.random_blocks(t, rows, K, rng)
    x = rng.standard_normal((N, K)).astype(np.float32)
    alone = np.concatenate([ops.mul_mat_vec(w, t, x[i : i + 1]) for i in range(N)])
    ref = _bits(alone)

    # matvec: 8 + 8 + 8 + 8 + 1 columns, and groups of 3 and 5 at shifted positions
    assert np.array_equal(_bits(ops.mul_mat_vec(w, t, x)), ref)
    for g in (3, 5):
        perm = np.roll(np.arange(N), g - 1)
        got = np.concatenate([ops.mul_mat_vec(w, t, x[perm[i : i + g]]) for i in range(0, N, g)])
        assert np.array_equal(_bits(got), ref[perm])
    # the shared-memory reduction variant
    assert np.array_equal(_bits(ops.mul_mat_vec(w, t, x[:4], reduce="shmem")), ref[:4])
    # tiled prefill kernel: all 33 tokens, and a subset at other tile positions
    assert np.array_equal(_bits(ops.mul_mat_tiled(w, t, x)), ref)
    assert np.array_equal(_bits(ops.mul_mat_tiled(w, t, x[::-1][:17])), ref[::-1][:17])


@pytest.mark.parametrize("t", ["q4_k", "q8_0"])
def test_tunables_do_not_change_bits(rng, t):
    K, rows = 1024, 37
    w = quants.random_blocks(t, rows, K, rng)
    x = rng.standard_normal((3, K)).astype(np.float32)
    ref = _bits(ops.mul_mat_vec(w, t, x))
    for cfg in CONFIGS_MV:
        assert np.array_equal(_bits(ops.mul_mat_vec(w, t, x, **cfg)), ref), cfg
    assert np.array_equal(_bits(ops.mul_mat_vec(w, t, x, reduce="shmem", **CONFIGS_MV[1])), ref)
    for cfg in CONFIGS_MM:
        assert np.array_equal(_bits(ops.mul_mat_tiled(w, t, x, **cfg)), ref), cfg


@pytest.mark.parametrize(
    "t", ["q5_k", "bf16", "f32", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "iq4_nl", "iq4_xs"]
)
def test_other_types_matvec_equals_matmul(rng, t):
    """The remaining types: 3 matvec columns vs the tiled kernel (the pipelines the per-kernel
    tests build anyway)."""
    K = 768 if quants.type_info(t).block_size == 256 else 352
    w = quants.random_blocks(t, 37, K, rng)
    x = rng.standard_normal((9, K)).astype(np.float32)
    mm = _bits(ops.mul_mat_tiled(w, t, x))
    assert np.array_equal(_bits(ops.mul_mat_vec(w, t, x[2:5])), mm[2:5])
