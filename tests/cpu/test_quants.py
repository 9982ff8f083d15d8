"""vkinfer.gguf.quants against the gguf package (the oracle for block sizes and dequantization)."""

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf import quants as gq
from hypothesis import given, settings
from hypothesis import strategies as st

from vkinfer.errors import UnsupportedError
from vkinfer.gguf import quants as q

EXPECTED_SUPPORTED = {
    T.F32, T.F16, T.BF16, T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0,
    T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K, T.IQ4_NL, T.IQ4_XS,
}  # fmt: skip
SUPPORTED = sorted(q.SUPPORTED_TYPES)


def _bits(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


def _oracle(raw: np.ndarray, t) -> np.ndarray:
    return np.asarray(gq.dequantize(raw, t), dtype=np.float32)


def _row_len(t, blocks: int) -> int:
    bs = q.type_info(t).block_size
    return blocks * bs if bs > 1 else blocks * 5 + 2  # plain types: odd lengths too


def test_supported_set():
    assert q.SUPPORTED_TYPES == EXPECTED_SUPPORTED


def test_table_matches_gguf_package():
    assert set(GGML_QUANT_SIZES) <= set(q.QUANT_TYPES)
    for t, (bs, ts) in GGML_QUANT_SIZES.items():
        info = q.type_info(t)
        assert (info.block_size, info.type_size) == (bs, ts), t.name
        assert info.name == t.name and info.type is t


def test_block_structs_add_up():
    for info in q.QUANT_TYPES.values():
        if info.fields is not None:
            assert info.block_dtype().itemsize == info.type_size, info.name
    assert q.type_info("q6_k").field_offset("d") == 208
    assert q.type_info("q4_k").field_offset("qs") == 16
    assert q.type_info("iq4_xs").field_offset("scales_l") == 4
    with pytest.raises(KeyError):
        q.type_info("q8_0").field_offset("m")
    assert q.type_info("q4_k").bits_per_weight == 4.5


@pytest.mark.parametrize("t", SUPPORTED, ids=lambda t: t.name)
@pytest.mark.parametrize("rows", [1, 3, 7])
def test_dequantize_bit_exact(t, rows):
    rng = np.random.default_rng(1000 * int(t) + rows)
    n = _row_len(t, 3)
    raw = q.random_blocks(t, rows, n, rng)
    assert raw.shape == (rows, q.row_bytes(t, n)) and raw.dtype == np.uint8
    ours = q.dequantize(raw, t)
    assert ours.shape == (rows, n) and ours.dtype == np.float32
    assert np.array_equal(_bits(ours), _bits(_oracle(raw, t)))
    assert np.isfinite(ours).all()
    assert 0 < np.abs(ours).max() < 4  # O(1) values, as promised by random_blocks


@pytest.mark.parametrize("t", SUPPORTED, ids=lambda t: t.name)
def test_dequantize_arbitrary_bytes(t):
    # Raw random bytes reach infinities, NaNs and subnormals in the scales: still identical.
    rng = np.random.default_rng(int(t))
    n = _row_len(t, 2)
    raw = rng.integers(0, 256, (5, q.row_bytes(t, n)), dtype=np.uint8)
    with np.errstate(all="ignore"):
        ours, ref = q.dequantize(raw, t), _oracle(raw, t)
    nan = np.isnan(ours)
    assert np.array_equal(nan, np.isnan(ref))
    assert np.array_equal(_bits(ours)[~nan], _bits(ref)[~nan])


@settings(max_examples=40, deadline=None)
@given(
    t=st.sampled_from(SUPPORTED),
    rows=st.integers(1, 9),
    blocks=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([0.01, 1.0, 30.0]),
)
def test_dequantize_fuzz(t, rows, blocks, seed, scale):
    n = _row_len(t, blocks)
    raw = q.random_blocks(t, rows, n, np.random.default_rng(seed), scale=scale)
    assert np.array_equal(_bits(q.dequantize(raw, t)), _bits(_oracle(raw, t)))


def test_dequantize_shapes_and_errors():
    rng = np.random.default_rng(0)
    raw = q.random_blocks("q4_0", 6, 64, rng)
    assert q.dequantize(raw.reshape(2, 3, -1), "q4_0").shape == (2, 3, 64)
    assert q.dequantize(raw[0], "q4_0").shape == (64,)
    out = q.dequantize(raw, T.Q4_0)
    assert out.flags.writeable and not np.shares_memory(out, raw)
    with pytest.raises(ValueError, match="18-byte blocks"):
        q.dequantize(raw[:, :-1], "q4_0")
    with pytest.raises(TypeError):
        q.dequantize(raw.astype(np.int16), "q4_0")
    with pytest.raises(UnsupportedError, match="IQ2_XXS"):
        q.dequantize(np.zeros((1, 66), np.uint8), T.IQ2_XXS)
    ints = np.arange(-3, 3, dtype=np.int32)
    assert q.dequantize(ints.view(np.uint8), "i32").tolist() == ints.tolist()


def test_parse_type():
    assert q.parse_type(T.Q4_K) is T.Q4_K
    assert q.parse_type(12) is T.Q4_K
    assert q.parse_type(np.uint32(12)) is T.Q4_K
    assert q.parse_type("q4_k") is T.Q4_K
    assert q.parse_type(" IQ4_xs ") is T.IQ4_XS
    assert q.parse_type("iq2_xxs") is T.IQ2_XXS  # known, just not kernel-supported
    assert q.type_info(q.type_info("f16")).type is T.F16
    for bad in ("q4_9", 4, 999, True, 1.5, None):
        with pytest.raises(UnsupportedError, match="q4_k"):
            q.parse_type(bad)
    with pytest.raises(UnsupportedError) as e:
        q.parse_type("iq2_xxs", supported_only=True)
    assert "supported types" in str(e.value) and "iq2_xxs" not in str(e.value).split(";")[1]


def test_row_bytes_and_tensor_nbytes():
    assert q.row_bytes("q4_0", 64) == 36
    assert q.row_bytes("q6_k", 512) == 420
    assert q.row_bytes("f32", 7) == 28
    assert q.tensor_nbytes("q8_0", (3, 5, 64)) == 15 * 68
    assert q.tensor_nbytes("bf16", (3,)) == 6
    assert q.tensor_nbytes("f32", ()) == 4
    with pytest.raises(ValueError, match="256-element blocks"):
        q.row_bytes("q4_k", 100)


@pytest.mark.parametrize("t", ["f32", "f16", "bf16", "q8_0", "q4_0", "q5_1"])
def test_quantize_round_trip(t):
    x = np.random.default_rng(3).standard_normal((3, 64)).astype(np.float32)
    raw = q.quantize(x, t)
    assert raw.dtype == np.uint8 and raw.shape == (3, q.row_bytes(t, 64))
    assert np.array_equal(raw, np.ascontiguousarray(gq.quantize(x, q.parse_type(t))).view(np.uint8))
    tol = {"f32": 0, "f16": 1e-3, "bf16": 1e-2, "q8_0": 0.02}.get(t, 0.4)
    assert np.abs(q.dequantize(raw, t) - x).max() <= tol


def test_quantize_unsupported():
    with pytest.raises(UnsupportedError, match="Q4_K"):
        q.quantize(np.zeros((1, 256), np.float32), "q4_k")
    with pytest.raises(ValueError):
        q.quantize(np.zeros((1, 33), np.float32), "q8_0")


def test_random_blocks_plain_and_errors():
    rng = np.random.default_rng(0)
    raw = q.random_blocks("bf16", 2, 5, rng, scale=2.0)
    assert raw.shape == (2, 10)
    assert np.isfinite(q.dequantize(raw, "bf16")).all()
    with pytest.raises(UnsupportedError):
        q.random_blocks("iq2_xxs", 1, 256, rng)
