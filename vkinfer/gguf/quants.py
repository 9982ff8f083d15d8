"""Quantization types: the one owner of block facts (DESIGN R1), plus a numpy dequantizer.

Block layouts follow ggml's `ggml-common.h` (the `block_q4_0` ... `block_iq4_xs` structs) and the
dequantization arithmetic follows `dequantize_row_*` in ggml's `ggml-quants.c`, including the order
of float32 operations, so results are bit-identical to `gguf.quants.dequantize`, which the tests use
as the oracle. Everything here is little-endian, as GGUF is.

Every other module asks this one for block sizes (`type_info`, `row_bytes`, `tensor_nbytes`) and
for field offsets inside a block (`TypeInfo.fields`, `TypeInfo.field_offset`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import constants as _gguf_constants

from vkinfer.errors import UnsupportedError

__all__ = [
    "QK_K",
    "QUANT_TYPES",
    "SUPPORTED_TYPES",
    "IQ4_NL_VALUES",
    "TypeInfo",
    "type_info",
    "parse_type",
    "row_bytes",
    "tensor_nbytes",
    "dequantize",
    "quantize",
    "random_blocks",
]

QK_K = 256  # elements per K-quant super-block
_QK = 32  # elements per legacy (Q4_0 ... Q8_0, IQ4_NL) block

# Non-linear 4-bit codebook shared by IQ4_NL and IQ4_XS (kvalues_iq4nl in ggml-common.h).
IQ4_NL_VALUES = np.array(
    [-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], dtype=np.int8
)


@dataclass(frozen=True)
class TypeInfo:
    """Facts about one ggml tensor type.

    `fields` is the C struct of one block, in memory order: (name, numpy dtype string, count).
    It is None for types whose block we do not describe (not supported by our kernels).
    """

    type: T
    name: str
    block_size: int  # elements per block
    type_size: int  # bytes per block
    supported: bool  # our kernels and `dequantize` handle it
    fields: tuple[tuple[str, str, int], ...] | None = None

    @property
    def quantized(self) -> bool:
        return self.block_size > 1

    @property
    def bits_per_weight(self) -> float:
        return self.type_size * 8 / self.block_size

    def field_offset(self, field: str) -> int:
        """Byte offset of `field` inside one block (for kernels that address blocks by hand)."""
        off = 0
        for name, dt, count in self.fields or ():
            if name == field:
                return off
            off += np.dtype(dt).itemsize * count
        raise KeyError(f"{self.name} block has no field {field!r}")

    def block_dtype(self) -> np.dtype:
        """Packed numpy structured dtype of one block (itemsize == type_size)."""
        if self.fields is None:
            raise UnsupportedError(f"block layout of {self.name} is not described")
        return np.dtype([(n, dt, (c,)) if c > 1 else (n, dt) for n, dt, c in self.fields])


def _t(t, block, size, fields=None, supported=True):
    return TypeInfo(t, t.name, block, size, supported, fields)


_H = "<f2"  # ggml_half

# Sizes are written out (not copied from the gguf package) so a test can compare the two tables.
_TABLE = [
    _t(T.F32, 1, 4, (("f", "<f4", 1),)),
    _t(T.F16, 1, 2, (("f", _H, 1),)),
    _t(T.BF16, 1, 2, (("f", "<u2", 1),)),  # upper half of a float32
    _t(T.Q4_0, 32, 18, (("d", _H, 1), ("qs", "u1", 16))),
    _t(T.Q4_1, 32, 20, (("d", _H, 1), ("m", _H, 1), ("qs", "u1", 16))),
    _t(T.Q5_0, 32, 22, (("d", _H, 1), ("qh", "<u4", 1), ("qs", "u1", 16))),
    _t(T.Q5_1, 32, 24, (("d", _H, 1), ("m", _H, 1), ("qh", "<u4", 1), ("qs", "u1", 16))),
    _t(T.Q8_0, 32, 34, (("d", _H, 1), ("qs", "i1", 32))),
    _t(T.Q2_K, 256, 84, (("scales", "u1", 16), ("qs", "u1", 64), ("d", _H, 1), ("dmin", _H, 1))),
    _t(
        T.Q3_K,
        256,
        110,
        (("hmask", "u1", 32), ("qs", "u1", 64), ("scales", "u1", 12), ("d", _H, 1)),
    ),
    _t(T.Q4_K, 256, 144, (("d", _H, 1), ("dmin", _H, 1), ("scales", "u1", 12), ("qs", "u1", 128))),
    _t(
        T.Q5_K,
        256,
        176,
        (("d", _H, 1), ("dmin", _H, 1), ("scales", "u1", 12), ("qh", "u1", 32), ("qs", "u1", 128)),
    ),
    _t(T.Q6_K, 256, 210, (("ql", "u1", 128), ("qh", "u1", 64), ("scales", "i1", 16), ("d", _H, 1))),
    _t(T.IQ4_NL, 32, 18, (("d", _H, 1), ("qs", "u1", 16))),
    _t(
        T.IQ4_XS,
        256,
        136,
        (("d", _H, 1), ("scales_h", "<u2", 1), ("scales_l", "u1", 4), ("qs", "u1", 128)),
    ),
    # Known to ggml, not handled by our kernels. Q8_1 is ggml's internal activation format and
    # never appears in files; ggml now packs it in 36 bytes, the gguf package still says 40.
    _t(T.Q8_1, 32, 40, supported=False),
    _t(T.Q8_K, 256, 292, supported=False),
    _t(T.IQ2_XXS, 256, 66, supported=False),
    _t(T.IQ2_XS, 256, 74, supported=False),
    _t(T.IQ2_S, 256, 82, supported=False),
    _t(T.IQ3_XXS, 256, 98, supported=False),
    _t(T.IQ3_S, 256, 110, supported=False),
    _t(T.IQ1_S, 256, 50, supported=False),
    _t(T.IQ1_M, 256, 56, supported=False),
    _t(T.I8, 1, 1, (("f", "i1", 1),), supported=False),
    _t(T.I16, 1, 2, (("f", "<i2", 1),), supported=False),
    _t(T.I32, 1, 4, (("f", "<i4", 1),), supported=False),
    _t(T.I64, 1, 8, (("f", "<i8", 1),), supported=False),
    _t(T.F64, 1, 8, (("f", "<f8", 1),), supported=False),
]
# Only in newer gguf releases (pyproject allows gguf>=0.10).
_NEWER = (
    ("TQ1_0", 256, 54),
    ("TQ2_0", 256, 66),
    ("MXFP4", 32, 17),
    ("NVFP4", 64, 36),
    ("Q1_0", 128, 18),
)
for _name, _bs, _ts in _NEWER:
    if hasattr(T, _name):
        _TABLE.append(_t(T[_name], _bs, _ts, supported=False))

QUANT_TYPES: dict[T, TypeInfo] = {info.type: info for info in _TABLE}
# A gguf release newer than this table may know more types: size them from its table, unsupported.
for _qt, (_bs, _ts) in _gguf_constants.GGML_QUANT_SIZES.items():
    if _qt not in QUANT_TYPES:
        QUANT_TYPES[_qt] = _t(_qt, _bs, _ts, supported=False)

SUPPORTED_TYPES: frozenset[T] = frozenset(t for t, i in QUANT_TYPES.items() if i.supported)

for _info in QUANT_TYPES.values():  # the struct descriptions must add up to the block size
    if _info.fields is not None:
        assert _info.block_dtype().itemsize == _info.type_size, _info.name


def _names(types) -> str:
    return ", ".join(sorted(t.name.lower() for t in types))


def parse_type(t, *, supported_only: bool = False) -> T:
    """A GGMLQuantizationType from an enum member, an int id or a case-insensitive name."""
    pool = SUPPORTED_TYPES if supported_only else QUANT_TYPES
    result = None
    if isinstance(t, TypeInfo):
        result = t.type
    elif isinstance(t, T):
        result = t
    elif isinstance(t, (int, np.integer)) and not isinstance(t, bool):
        try:
            result = T(int(t))
        except ValueError:
            result = None
    elif isinstance(t, str):
        result = T.__members__.get(t.strip().upper())
    if result is None or result not in pool:
        what = "supported" if supported_only else "known"
        raise UnsupportedError(
            f"unknown or unsupported tensor type {t!r}; {what} types: {_names(pool)}"
        )
    return result


def type_info(t) -> TypeInfo:
    """Block facts of a type given as anything `parse_type` accepts."""
    return QUANT_TYPES[parse_type(t)]


def row_bytes(t, n: int) -> int:
    """Bytes of one row of `n` elements; `n` must be a whole number of blocks."""
    info = type_info(t)
    if n < 0 or n % info.block_size:
        raise ValueError(
            f"a {info.name} row of {n} elements is not a whole number of "
            f"{info.block_size}-element blocks"
        )
    return n // info.block_size * info.type_size


def tensor_nbytes(t, shape) -> int:
    """Bytes of a tensor of `shape` (numpy order: innermost, contiguous dimension last)."""
    shape = tuple(int(s) for s in shape)
    if not shape:
        shape = (1,)
    rows = 1
    for s in shape[:-1]:
        rows *= s
    return rows * row_bytes(t, shape[-1])


# ---------------------------------------------------------------------------------------------
# Dequantization: one function per block layout. Each takes the structured view of the blocks
# (shape (nblocks,)) and returns float32 (nblocks, block_size). Comments give the element order.


def _f32(a) -> np.ndarray:
    return np.asarray(a).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(nb, k) bytes -> (nb, 2k): low nibbles of all bytes, then high nibbles (q4_0 order)."""
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _dq_q4_0(b):
    d = _f32(b["d"])[:, None]
    return d * _f32(_nibbles(b["qs"]).astype(np.int8) - 8)


def _dq_q4_1(b):
    d, m = _f32(b["d"])[:, None], _f32(b["m"])[:, None]
    return d * _f32(_nibbles(b["qs"])) + m


def _q5_values(b) -> np.ndarray:
    # Bit j of the 32-bit qh is the fifth bit of element j.
    hi = ((b["qh"][:, None] >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)
    return _nibbles(b["qs"]) | (hi << 4)


def _dq_q5_0(b):
    return _f32(b["d"])[:, None] * _f32(_q5_values(b).astype(np.int8) - 16)


def _dq_q5_1(b):
    d, m = _f32(b["d"])[:, None], _f32(b["m"])[:, None]
    return d * _f32(_q5_values(b)) + m


def _dq_q8_0(b):
    return _f32(b["d"])[:, None] * _f32(b["qs"])


def _dq_q2_k(b):
    nb = len(b)
    # Two halves of 128; in each, byte l of the half's 32 qs bytes holds elements l, 32+l, 64+l,
    # 96+l in its 2-bit pairs; 16 sub-blocks of 16 elements each have a 4-bit scale and min.
    q = b["qs"].reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    q = _f32((q & 3).reshape(nb, 16, 16))
    sc = b["scales"]
    dl = (_f32(b["d"])[:, None] * _f32(sc & 0x0F))[:, :, None]
    ml = (_f32(b["dmin"])[:, None] * _f32(sc >> 4))[:, :, None]
    return (dl * q - ml).reshape(nb, QK_K)


def _unpack_q3_k_scales(s: np.ndarray) -> np.ndarray:
    """12 bytes -> 16 six-bit scales: low nibbles from bytes 0-7 (low then high nibble halves),
    high 2 bits of scale i from byte 8 + i%4 at bit 2*(i//4)."""
    nb = s.shape[0]
    low = np.concatenate([s[:, :8] & 0x0F, s[:, :8] >> 4], axis=1)
    high = (s[:, 8:12][:, None, :] >> np.array([0, 2, 4, 6], np.uint8)[None, :, None]) & 3
    return low | (high.reshape(nb, 16) << 4)


def _dq_q3_k(b):
    nb = len(b)
    sc = _unpack_q3_k_scales(b["scales"]).astype(np.int8) - 32
    dl = (_f32(b["d"])[:, None] * _f32(sc))[:, :, None]
    # Same 2-bit order as Q2_K; hmask bit (4*half + shift) of byte l is set when the element
    # does NOT get the -4 offset.
    low = b["qs"].reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    low = (low & 3).reshape(nb, 8, 32)
    hbit = (b["hmask"][:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    q = low.astype(np.int8) - ((hbit ^ 1) << 2).astype(np.int8)
    return (dl * _f32(q).reshape(nb, 16, 16)).reshape(nb, QK_K)


def _unpack_k4_scales(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """12 bytes -> 8 six-bit scales and 8 six-bit mins (get_scale_min_k4 in ggml-quants.c)."""
    a, b, c = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    sc = np.concatenate([a & 0x3F, (c & 0x0F) | ((a >> 6) << 4)], axis=1)
    mn = np.concatenate([b & 0x3F, (c >> 4) | ((b >> 6) << 4)], axis=1)
    return sc, mn


def _k4_scale_min(b):
    sc, mn = _unpack_k4_scales(b["scales"])
    d1 = (_f32(b["d"])[:, None] * _f32(sc))[:, :, None]
    m1 = (_f32(b["dmin"])[:, None] * _f32(mn))[:, :, None]
    return d1, m1


def _dq_q4_k(b):
    nb = len(b)
    d1, m1 = _k4_scale_min(b)
    # Four chunks of 64: byte l of chunk c gives element l (low nibble) and 32+l (high nibble).
    q = b["qs"].reshape(nb, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    q = _f32((q & 0x0F).reshape(nb, 8, 32))
    return (d1 * q - m1).reshape(nb, QK_K)


def _dq_q5_k(b):
    nb = len(b)
    d1, m1 = _k4_scale_min(b)
    ql = b["qs"].reshape(nb, 4, 1, 32) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    ql = (ql & 0x0F).reshape(nb, 8, 32)
    # Bit s of qh[l] is the fifth bit of element l of sub-block s.
    qh = (b["qh"][:, None, :] >> np.arange(8, dtype=np.uint8)[None, :, None]) & 1
    q = _f32(ql | (qh << 4))
    return (d1 * q - m1).reshape(nb, QK_K)


def _dq_q6_k(b):
    nb = len(b)
    # Two halves of 128 elements, each in four runs of 32 (k = 0..3). Element 32k+l takes its
    # low nibble from ql[l + 32*(k%2)] (low nibble for k<2, high for k>=2) and its top two bits
    # from qh[l] at bit 2k; 16 sub-blocks of 16 have int8 scales.
    ql = b["ql"].reshape(nb, 2, 1, 64) >> np.array([0, 4], np.uint8).reshape(1, 1, 2, 1)
    ql = (ql & 0x0F).reshape(nb, 2, 4, 32)
    qh = b["qh"].reshape(nb, 2, 1, 32) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 1, 4, 1)
    q = ((ql | ((qh & 3) << 4)).astype(np.int8) - 32).reshape(nb, 16, 16)
    d = (_f32(b["d"])[:, None] * _f32(b["scales"]))[:, :, None]
    return (d * _f32(q)).reshape(nb, QK_K)


def _dq_iq4_nl(b):
    return _f32(b["d"])[:, None] * _f32(IQ4_NL_VALUES[_nibbles(b["qs"])])


def _dq_iq4_xs(b):
    nb = len(b)
    # Sub-block s (8 of 32 elements): 6-bit scale = nibble s%2 of scales_l[s//2] | bits 2s..2s+1
    # of scales_h << 4; its 16 qs bytes give 16 low-nibble then 16 high-nibble elements.
    sl = b["scales_l"]
    low = np.stack([sl & 0x0F, sl >> 4], axis=2).reshape(nb, 8)
    high = (b["scales_h"][:, None] >> (2 * np.arange(8, dtype=np.uint16))) & 3
    ls = (low | (high.astype(np.uint8) << 4)).astype(np.int8) - 32
    dl = (_f32(b["d"])[:, None] * _f32(ls))[:, :, None]
    qs = b["qs"].reshape(nb * 8, 16)
    q = _f32(IQ4_NL_VALUES[_nibbles(qs)]).reshape(nb, 8, 32)
    return (dl * q).reshape(nb, QK_K)


def _dq_bf16(b):
    return (b["f"].astype(np.uint32) << 16).view(np.float32)[:, None]


def _dq_plain(b):
    return _f32(b["f"])[:, None]


_DEQUANT = {
    T.F32: _dq_plain,
    T.F16: _dq_plain,
    T.BF16: _dq_bf16,
    T.Q4_0: _dq_q4_0,
    T.Q4_1: _dq_q4_1,
    T.Q5_0: _dq_q5_0,
    T.Q5_1: _dq_q5_1,
    T.Q8_0: _dq_q8_0,
    T.Q2_K: _dq_q2_k,
    T.Q3_K: _dq_q3_k,
    T.Q4_K: _dq_q4_k,
    T.Q5_K: _dq_q5_k,
    T.Q6_K: _dq_q6_k,
    T.IQ4_NL: _dq_iq4_nl,
    T.IQ4_XS: _dq_iq4_xs,
    # Plain numeric types are not kernel types, but reading them as float32 costs nothing.
    T.I8: _dq_plain,
    T.I16: _dq_plain,
    T.I32: _dq_plain,
    T.I64: _dq_plain,
    T.F64: _dq_plain,
}
assert SUPPORTED_TYPES <= _DEQUANT.keys()


def dequantize(raw: np.ndarray, t) -> np.ndarray:
    """Quantized rows (uint8, last axis = bytes per row) -> float32 (..., elements per row).

    A 2-D (rows, row_bytes) input gives (rows, n). Always returns a new, writable array.
    """
    info = type_info(t)
    fn = _DEQUANT.get(info.type)
    if fn is None:
        raise UnsupportedError(
            f"vkinfer cannot dequantize {info.name}; supported: {_names(SUPPORTED_TYPES)}"
        )
    raw = np.asarray(raw)
    if raw.dtype != np.uint8:
        raise TypeError(f"dequantize expects uint8 bytes, got {raw.dtype}")
    if raw.ndim == 0 or raw.shape[-1] % info.type_size:
        raise ValueError(
            f"{info.name} rows must be whole {info.type_size}-byte blocks; got shape {raw.shape}"
        )
    lead = raw.shape[:-1]
    n = raw.shape[-1] // info.type_size * info.block_size
    blocks = np.ascontiguousarray(raw).reshape(-1).view(info.block_dtype())
    # Every _dq_* builds a new array, so the result never aliases the (possibly mmapped) input.
    return fn(blocks).astype(np.float32, copy=False).reshape(*lead, n)


# ---------------------------------------------------------------------------------------------
# Test data


# Largest |quant * sub-scale| a block can produce: d = target / this keeps values about O(target).
_UNIT_MAX = {
    T.Q4_0: 8,
    T.Q4_1: 15,
    T.Q5_0: 16,
    T.Q5_1: 31,
    T.Q8_0: 128,
    T.Q2_K: 15 * 3,
    T.Q3_K: 32 * 4,
    T.Q4_K: 63 * 15,
    T.Q5_K: 63 * 31,
    T.Q6_K: 128 * 32,
    T.IQ4_NL: 127,
    T.IQ4_XS: 32 * 127,
}
# Subtracted mins: (field in block, largest sub-min multiplier).
_MIN_FIELDS = {T.Q2_K: ("dmin", 15), T.Q4_K: ("dmin", 63), T.Q5_K: ("dmin", 63)}
_ADD_MIN_FIELDS = {T.Q4_1: "m", T.Q5_1: "m"}  # added block minimum


def random_blocks(t, rows: int, n: int, rng: np.random.Generator, scale: float = 1.0):
    """Valid random rows of type `t`: uint8 (rows, row_bytes(t, n)).

    Quantized types get random quant bytes with their fp16 scales set so that every value is
    finite and at most about `scale` in magnitude; F32/F16/BF16 get normal(0, scale) values.
    """
    info = type_info(t)
    if info.type not in SUPPORTED_TYPES:
        raise UnsupportedError(f"random_blocks: {info.name} is not supported")
    nbytes = row_bytes(info.type, n)
    if not info.quantized:
        x = (rng.standard_normal((rows, n)) * scale).astype(np.float32)
        if info.type == T.F16:
            x = x.astype(np.float16)
        elif info.type == T.BF16:
            x = (x.view(np.uint32) >> 16).astype(np.uint16)
        return np.ascontiguousarray(x).view(np.uint8).reshape(rows, nbytes)
    nblocks = rows * (n // info.block_size)
    raw = rng.integers(0, 256, size=(nblocks, info.type_size), dtype=np.uint8)
    b = raw.view(info.block_dtype()).reshape(nblocks)
    # Magnitudes vary over a factor 4 between blocks and signs are random, like real weights.
    d = scale * rng.uniform(0.25, 1.0, nblocks) / _UNIT_MAX[info.type]
    b["d"] = (d * rng.choice([-1.0, 1.0], nblocks)).astype(np.float16)
    if info.type in _MIN_FIELDS:
        field, mult = _MIN_FIELDS[info.type]
        b[field] = (scale * rng.uniform(0.0, 0.5, nblocks) / mult).astype(np.float16)
    if info.type in _ADD_MIN_FIELDS:
        b[_ADD_MIN_FIELDS[info.type]] = (-scale * rng.uniform(0.0, 0.5, nblocks)).astype(np.float16)
    return raw.reshape(rows, nbytes)


def quantize(x: np.ndarray, t) -> np.ndarray:
    """float rows (..., n) -> uint8 (..., row_bytes), by the gguf package's reference quantizers.

    Raises UnsupportedError for types the gguf package cannot quantize (e.g. the K-quants).
    """
    from gguf import quants as gq

    info = type_info(t)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 0:
        x = x.reshape(1)
    nb = row_bytes(info.type, x.shape[-1])
    try:
        q = gq.quantize(x, info.type)
    except NotImplementedError as e:
        raise UnsupportedError(f"the gguf package cannot quantize to {info.name}: {e}") from e
    return np.ascontiguousarray(q).view(np.uint8).reshape(*x.shape[:-1], nb)
