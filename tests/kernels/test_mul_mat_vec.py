"""mul_mat_vec.comp on lavapipe against float64 `dequantize(W) @ x.T` (gguf/quants.py, itself
checked against the gguf package), for every weight type, 1..8 columns, odd row counts, the
smallest legal K, both reduction variants, the residual/bias epilogue and grids split in y.

Tolerance: mul_mat_vec.error_bound, derived from the canonical form (quants.glsl): every product
is exact inside its fma, so the error is f32 summation, at most n·2^-24·Σ|terms| for a chain of n
roundings. Float types: K/8 fmas per lane and 3 butterfly adds, n = K/8 + 4 over Σ|w·x|.
Quantized types (factored per run of one scale): a run of RE elements is a chain of RE fmas
(Σq·x) and RE adds (Σx), each run adds 2 fmas to the lane's chain, then the butterfly; all terms
are at most |x|·(|w| + 2|mn|) (mn: the block minimum), n = RE + 2·RUNS·⌈units/8⌉ + 5.
"""

from __future__ import annotations

import numpy as np
import pytest

from vkinfer import ops
from vkinfer.errors import ContractError, UnsupportedError
from vkinfer.gguf import quants
from vkinfer.pipelines import mul_mat_vec as k
from vkinfer.vk.commands import one_shot

TYPES = [t.name.lower() for t in k.TYPES]


def _min_k(t) -> int:
    """Smallest legal K for a type: one block, or one 16-byte unit for the float types."""
    return max(quants.type_info(t).block_size, k.unit_elems(t))


def _weights(rng, t, rows, K):
    return quants.random_blocks(t, rows, K, rng)


def _check(y, w_raw, t, x, residual=None):
    w = quants.dequantize(w_raw, t).astype(np.float64)
    ref = np.atleast_2d(x).astype(np.float64) @ w.T
    if residual is not None:
        ref = ref + residual
    tol = k.error_bound(w_raw, t, x, residual)
    err = np.abs(y.astype(np.float64) - ref)
    assert y.shape == ref.shape and y.dtype == np.float32
    assert np.all(np.isfinite(y))
    assert np.all(err <= tol), f"{t}: max err/tol {np.max(err / tol):.3g}"


@pytest.mark.parametrize("t", TYPES)
def test_every_type(rng, t):
    """All types, 3 columns, 37 rows (not a multiple of the 16 rows per workgroup); K = the
    smallest legal K (some lanes idle) and K = 40 units (5 per lane)."""
    for K in (_min_k(t), 40 * k.unit_elems(t)):
        w = _weights(rng, t, 37, K)
        x = rng.standard_normal((3, K)).astype(np.float32)
        _check(ops.mul_mat_vec(w, t, x), w, t, x)


# The GPU defaults (mul_mat_vec.default_spec) of 1 column, few rows (many rows: WG 128, NR 4,
# UNROLL 1): CPU devices use WG 64, NR 1, UNROLL 1, no prefetch. CHUNK follows the row
# (default_chunk); 4 here: several chunks per row.
GPU_DEFAULTS = {"WG": 64, "NR": 2, "UNROLL": 2, "PREFETCH": True, "CHUNK": 4}


@pytest.mark.parametrize("t", ["q4_k", "q6_k", "q8_0", "f16", "q3_k", "iq4_nl"])
def test_gpu_defaults(rng, t):
    """The GPU default configuration (NR=2 row clamping, UNROLL/PREFETCH past the last unit)
    at the smallest K and at 9 units per lane plus one, against the reference and bitwise
    against the CPU defaults."""
    for K in (_min_k(t), 73 * k.unit_elems(t) if _min_k(t) < 256 else 9 * 256):
        w = _weights(rng, t, 37, K)
        x = rng.standard_normal((3, K)).astype(np.float32)
        y = ops.mul_mat_vec(w, t, x, **GPU_DEFAULTS)
        _check(y, w, t, x)
        np.testing.assert_array_equal(y.view(np.uint32), ops.mul_mat_vec(w, t, x).view(np.uint32))


def test_default_spec_fits_and_chunks():
    """default_spec gives a valid configuration on a GPU-like device for every type, column
    count and shape class (CHUNK a multiple of UNROLL, shared memory within 48 KiB)."""

    class Gpu:
        type, max_compute_shared_memory = "discrete", 48 << 10
        max_workgroup_invocations, max_workgroup_size = 1024, (1024, 1024, 64)
        min_subgroup_size = max_subgroup_size = 32

    for t in k.TYPES:
        for nc in range(1, 9):
            for rows, K in ((4096, 4096), (14336, 4096), (4096, 14336), (248320, 5120)):
                spec = {**k.KERNEL.defaults(Gpu), **k.default_spec(Gpu, t, nc, rows, K)}
                spec["NUM_COLS"] = nc
                k._contract(spec, Gpu)
                for v in (t.name.lower(), f"{t.name.lower()}_shmem"):
                    k._variant_contract(v, spec, Gpu)


def test_runs_match_the_shader():
    """runs() mirrors quants.glsl's RUNS per type (the error bound and shared memory use it)."""
    import re

    from vkinfer.paths import shader_dir

    src = (shader_dir() / "common" / "quants.glsl").read_text()
    # the type blocks: "#if defined(QTYPE_F32)" then "#elif defined(QTYPE_...)" (nested #if
    # inside a block do not start one)
    blocks = re.split(r"^#(?:elif defined\(|if defined\((?=QTYPE_F32\)$))", src, flags=re.MULTILINE)
    blocks = blocks[1:]
    for b in blocks:
        if "#define UNIT_ELEMS" not in b:  # not a type's definition block
            continue
        names = re.findall(r"QTYPE_(\w+)\)", b.split("\n")[0])
        m = re.search(r"^#define RUNS (\d)u", b, flags=re.MULTILINE)
        for n in names:
            t = quants.parse_type(n.lower())
            assert k.runs(t) == (int(m.group(1)) if m else 0), n


@pytest.mark.parametrize("ncols", range(1, 9))
def test_columns(rng, ncols):
    """Every column count on Q4_K, 67 rows, K = 3 super-blocks."""
    w = _weights(rng, "q4_k", 67, 768)
    x = rng.standard_normal((ncols, 768)).astype(np.float32)
    _check(ops.mul_mat_vec(w, "q4_k", x), w, "q4_k", x)


@pytest.mark.parametrize("t", ["q6_k", "q8_0", "f16"])
def test_more_than_eight_columns(rng, t):
    """11 columns = a dispatch of 8 and one of 3."""
    w = _weights(rng, t, 21, 512)
    x = rng.standard_normal((11, 512)).astype(np.float32)
    _check(ops.mul_mat_vec(w, t, x), w, t, x)


@pytest.mark.parametrize("t", ["q4_k", "q8_0", "q3_k"])
def test_shmem_variant(rng, t):
    """The shared-memory reduction gives the subgroup variant's bits."""
    w = _weights(rng, t, 37, 512)
    x = rng.standard_normal((2, 512)).astype(np.float32)
    a = ops.mul_mat_vec(w, t, x, reduce="shmem")
    _check(a, w, t, x)
    b = ops.mul_mat_vec(w, t, x, reduce="subgroup")
    np.testing.assert_array_equal(a.view(np.uint32), b.view(np.uint32))


@pytest.mark.parametrize("t", ["q6_k", "bf16"])
def test_residual_and_bias(rng, t):
    K, rows = 512, 37
    w = _weights(rng, t, rows, K)
    x = rng.standard_normal((3, K)).astype(np.float32)
    r = rng.standard_normal((3, rows)).astype(np.float32)
    _check(ops.mul_mat_vec(w, t, x, residual=r), w, t, x, r)
    bias = rng.standard_normal(rows).astype(np.float32)
    _check(ops.mul_mat_vec(w, t, x, residual=bias), w, t, x, np.broadcast_to(bias, (3, rows)))
    # the residual added in the epilogue is one f32 add on top of the plain result
    plain = ops.mul_mat_vec(w, t, x)
    np.testing.assert_array_equal(ops.mul_mat_vec(w, t, x, residual=r), plain + r)


def test_in_place_residual_and_bias_stride(device, rng):
    """y += W x with y bound as both residual and output; r_stride 0 broadcasts a bias."""
    t, K, rows, nc = "q8_0", 256, 37, 2
    w = _weights(rng, t, rows, K)
    x = rng.standard_normal((nc, K)).astype(np.float32)
    y0 = rng.standard_normal((nc, rows)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    bw, bx, by, bb = (device.memory.alloc(a.nbytes) for a in (w, x, y0, bias))
    try:
        for b, a in ((bw, w), (bx, x), (by, y0), (bb, bias)):
            b.write(a)
        kp = k.pipeline(device, t, nc, residual=True)
        with one_shot(device) as rec:
            k.dispatch(rec, kp, bw, bx, by, rows, K, w.shape[1], residual=by)
        plain = ops.mul_mat_vec(w, t, x)
        np.testing.assert_array_equal(by.read(np.float32, (nc, rows)), plain + y0)
        with one_shot(device) as rec:
            k.dispatch(rec, kp, bw, bx, by, rows, K, w.shape[1], residual=bb, r_stride=0)
        np.testing.assert_array_equal(by.read(np.float32, (nc, rows)), plain + bias)
    finally:
        for b in (bw, bx, by, bb):
            b.free()


def test_grid_split_in_y(rng):
    """More than 65535 workgroups: 70000 rows at one row per workgroup (WG=8, NR=1)."""
    t, K, rows = "f32", 4, 70000
    w = _weights(rng, t, rows, K)
    x = rng.standard_normal((1, K)).astype(np.float32)
    y = ops.mul_mat_vec(w, t, x, WG=8, NR=1, reduce="shmem")
    _check(y, w, t, x)
    assert k.split_groups(70000) == (35000, 2)


def test_errors(rng):
    w = _weights(rng, "q4_k", 4, 256)
    x = rng.standard_normal((1, 256)).astype(np.float32)
    with pytest.raises(ValueError, match="144"):  # K=256 is 144 bytes, not 288
        ops.mul_mat_vec(np.concatenate([w, w], axis=1), "q4_k", x)
    with pytest.raises(ValueError, match="block size"):
        ops.mul_mat_vec(w, "q4_k", rng.standard_normal((1, 200)).astype(np.float32))
    with pytest.raises(UnsupportedError, match="q4_k"):  # lists the supported types
        ops.mul_mat_vec(w, "iq2_xxs", x)
    with pytest.raises(UnsupportedError, match="multiple of 8"):
        ops.mul_mat_vec(np.zeros((2, 12), np.uint8), "f16", np.zeros((1, 6), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        ops.mul_mat_vec(w.astype(np.int16), "q4_k", x)


def test_contract(device):
    with pytest.raises(ValueError, match="1..8"):
        k.pipeline(device, "q4_k", 9)
    with pytest.raises(ContractError, match="multiple of 8"):
        k.pipeline(device, "q4_k", 1, reduce="shmem", WG=12)
    assert set(k.KERNEL.supported_variants(device.info)) >= {"q4_k", "q4_k_shmem"}
    assert k.type_name("Q4_K") == "q4_k" and k.type_name(quants.T.Q8_0) == "q8_0"
