"""vkinfer.gguf.reader: round trips through gguf.GGUFWriter, then corrupted files.

Every corruption must raise GGUFError (UnsupportedError for unknown types or big-endian files)
whose message names the file and the fact that is wrong; nothing else may escape.
"""

import mmap
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vkinfer.errors import GGUFError, UnsupportedError
from vkinfer.gguf import GGUFFile, GGUFSplit, open_gguf, quants

# (name, type, numpy shape); several types, odd row counts, up to 4 dimensions.
TENSORS = [
    ("tok_embd.weight", T.Q4_K, (3, 256)),
    ("blk.0.attn_q.weight", T.Q8_0, (5, 64)),
    ("blk.0.norm", T.F32, (2, 3, 4)),
    ("blk.0.ffn.weight", T.Q6_K, (2, 1, 1, 512)),
    ("blk.0.half", T.F16, (7,)),
    ("blk.0.bf", T.BF16, (3, 3)),
    ("blk.0.iq", T.IQ4_NL, (1, 32)),
]

SCALARS = [
    ("t.u8", V.UINT8, 200),
    ("t.i8", V.INT8, -100),
    ("t.u16", V.UINT16, 65000),
    ("t.i16", V.INT16, -32000),
    ("t.u32", V.UINT32, 4_000_000_000),
    ("t.i32", V.INT32, -2_000_000_000),
    ("t.f32", V.FLOAT32, 0.5),
    ("t.u64", V.UINT64, 2**63 + 5),
    ("t.i64", V.INT64, -(2**62)),
    ("t.f64", V.FLOAT64, 1e-300),
    ("t.bool", V.BOOL, True),
    ("t.str", V.STRING, "héllo ✓ wörld"),
]
ARRAYS = [
    ("a.u8", V.UINT8, [0, 1, 255]),
    ("a.i16", V.INT16, [-5, 7]),
    ("a.u32", V.UINT32, [1, 2, 3]),
    ("a.i32", V.INT32, [-1, 0, 1]),
    ("a.f32", V.FLOAT32, [0.25, -1.5]),
    ("a.u64", V.UINT64, [2**64 - 1]),
    ("a.i64", V.INT64, [-(2**63)]),
    ("a.f64", V.FLOAT64, [3.5, -0.125]),
    ("a.bool", V.BOOL, [True, False, True]),
    ("a.str", V.STRING, ["a", "", "ĉ ü", "<0x0A>"]),
    ("a.nested", V.ARRAY, [[1, 2], [3]]),
]


def tensor_bytes(name, t, shape):
    rng = np.random.default_rng(sum(map(ord, name)))
    rows = int(np.prod(shape[:-1]))
    return quants.random_blocks(t, rows, shape[-1], rng)


def write_gguf(path, tensors=TENSORS, extra=(), alignment=None, **writer_kw):
    w = gguf.GGUFWriter(str(path), arch="test", **writer_kw)
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for key, vt, val in SCALARS:
        w.add_key_value(key, val, vt)
    for key, et, val in ARRAYS:
        w.add_key_value(key, val, V.ARRAY, sub_type=et)
    for key, vt, val in extra:
        w.add_key_value(key, val, vt)
    for name, t, shape in tensors:
        raw = tensor_bytes(name, t, shape).reshape(*shape[:-1], -1)
        w.add_tensor(name, raw, raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> tuple[Path, bytes]:
    path = write_gguf(tmp_path_factory.mktemp("base") / "m.gguf")
    return path, path.read_bytes()


def patched(tmp_path, data: bytes, at: int, new: bytes, name="bad.gguf") -> Path:
    b = bytearray(data)
    b[at : at + len(new)] = new
    p = tmp_path / name
    p.write_bytes(bytes(b))
    return p


def string_pos(data: bytes, s: str) -> int:
    """Byte offset of the GGUF string (u64 length + bytes) holding s; must be unique."""
    enc = s.encode()
    needle = struct.pack("<Q", len(enc)) + enc
    at = data.find(needle)
    assert at >= 0 and data.find(needle, at + 1) < 0, s
    return at


def tensor_info_pos(data: bytes, name: str) -> dict:
    """Byte offsets of the fields of a tensor's info record."""
    at = string_pos(data, name) + 8 + len(name.encode())
    (n_dims,) = struct.unpack_from("<I", data, at)
    return {"n_dims": at, "ne": at + 4, "type": at + 4 + 8 * n_dims, "offset": at + 8 + 8 * n_dims}


def expect(exc, path, *facts, open_fn=GGUFFile):
    with pytest.raises(exc) as e:
        open_fn(path)
    msg = str(e.value)
    assert str(path) in msg, msg
    for f in facts:
        assert str(f) in msg, f"{f!r} not in: {msg}"
    return msg


# ---------------------------------------------------------------------------------------------
# Round trip


def test_round_trip(base):
    path, data = base
    with GGUFFile(path) as f:
        assert f.version == 3 and f.alignment == 32 and f.path == path
        assert f.data_offset % 32 == 0 and f.data_offset < len(data)
        md = f.metadata
        assert md["general.architecture"] == "test"
        for key, vt, val in SCALARS:
            if vt == V.FLOAT32:
                assert md[key] == np.float32(val)
            else:
                assert md[key] == val and type(md[key]) is type(val), key
            assert f.metadata_types[key] == (vt, None)
        for key, et, val in ARRAYS:
            assert md[key] == val, key
            assert f.metadata_types[key] == (V.ARRAY, et)
        assert list(f.tensors) == [n for n, _, _ in TENSORS]
        prev_end = 0
        for name, t, shape in TENSORS:
            ti = f.tensors[name]
            assert ti.type is t and ti.shape == shape and ti.ne == tuple(reversed(shape))
            assert ti.file is f and ti.offset % 32 == 0 and ti.offset >= f.data_offset
            assert ti.offset == f.data_offset + ti.rel_offset and ti.offset >= prev_end
            prev_end = ti.offset + ti.nbytes
            expected = tensor_bytes(name, t, shape)
            assert ti.nbytes == quants.tensor_nbytes(t, shape) == expected.size
            raw = ti.raw()
            assert raw.shape == expected.shape and np.array_equal(raw, expected)
            assert not raw.flags.writeable and not raw.flags.owndata  # a view of the mmap
            assert bytes(f.mmap[ti.offset : ti.offset + ti.nbytes]) == expected.tobytes()
            x = ti.dequantize()
            assert x.shape == shape and x.dtype == np.float32
            ref = np.asarray(gguf.quants.dequantize(expected, t), np.float32).reshape(shape)
            assert np.array_equal(x.view(np.uint32), ref.view(np.uint32)), name


def test_matches_gguf_package_reader(base):
    path, _ = base
    ref = gguf.GGUFReader(path)
    with GGUFFile(path) as f:
        assert [t.name for t in ref.tensors] == list(f.tensors)
        for rt in ref.tensors:
            ti = f.tensors[rt.name]
            assert ti.offset == rt.data_offset and ti.nbytes == rt.n_bytes
            assert ti.ne == tuple(int(x) for x in rt.shape)


def test_page_range(base):
    path, _ = base
    with GGUFFile(path) as f:
        for ti in f.tensors.values():
            off, size, delta = f.page_range(ti)
            assert off % mmap.PAGESIZE == 0 and size % mmap.PAGESIZE == 0
            assert off + delta == ti.offset and delta + ti.nbytes <= size
            assert f.page_range(ti, page_size=65536)[0] % 65536 == 0
        with GGUFFile(path) as g, pytest.raises(ValueError):
            g.page_range(ti)


def test_close(base):
    path, _ = base
    f = GGUFFile(path)
    ti = f.tensors["blk.0.norm"]
    view = ti.raw()
    f.close()  # a live view must not make close() fail
    assert view.sum() == view.sum() and f.mmap is None
    with pytest.raises(GGUFError, match="closed"):
        ti.raw()


def test_custom_alignment_and_no_tensors(tmp_path):
    with GGUFFile(write_gguf(tmp_path / "a.gguf", alignment=64)) as f:
        assert f.alignment == 64 and f.data_offset % 64 == 0
        assert all(t.offset % 64 == 0 for t in f.tensors.values())
    with GGUFFile(write_gguf(tmp_path / "b.gguf", tensors=[])) as f:
        assert f.tensors == {} and f.metadata["t.bool"] is True


def test_open_gguf_plain_file(base):
    path, _ = base
    with open_gguf(path) as f:
        assert isinstance(f, GGUFFile) and len(f.tensors) == len(TENSORS)


def test_version_2(tmp_path, base):
    _, data = base
    with GGUFFile(patched(tmp_path, data, 4, struct.pack("<I", 2))) as f:
        assert f.version == 2


# ---------------------------------------------------------------------------------------------
# Corruption


def test_missing_file_and_directory(tmp_path):
    expect(GGUFError, tmp_path / "nope.gguf", "no such file")
    expect(GGUFError, tmp_path, "directory")


def test_bad_magic(tmp_path, base):
    _, data = base
    expect(GGUFError, patched(tmp_path, data, 0, b"GGML"), "bad magic", "b'GGML'", "47 47 4d 4c")
    p = tmp_path / "short.gguf"
    p.write_bytes(b"PK\x03\x04" + b"\0" * 6)
    expect(GGUFError, p, "bad magic", "b'PK\\x03\\x04'")


@pytest.mark.parametrize("version", [0, 1, 4, 0x1234])
def test_unsupported_version(tmp_path, base, version):
    _, data = base
    expect(GGUFError, patched(tmp_path, data, 4, struct.pack("<I", version)), f"version {version}")


def test_big_endian(tmp_path):
    p = write_gguf(tmp_path / "be.gguf", tensors=[], endianess=gguf.GGUFEndian.BIG)
    expect(UnsupportedError, p, "big-endian")


def test_every_truncation_raises(tmp_path, base):
    _, data = base
    with GGUFFile(base[0]) as f:
        data_offset = f.data_offset
        first = min(t.offset for t in f.tensors.values())
        end = max(t.offset + t.nbytes for t in f.tensors.values())  # the writer pads after it
    cuts = list(range(0, data_offset + 1)) + list(range(first + 1, end, 97)) + [end - 1]
    p = tmp_path / "cut.gguf"
    for cut in cuts:
        p.write_bytes(data[:cut])
        with pytest.raises(GGUFError) as e:
            GGUFFile(p)
        msg = str(e.value)
        assert str(p) in msg, (cut, msg)
        # Inside the header the message says where parsing stopped; past it, which tensor.
        assert "byte" in msg, (cut, msg)
        assert any(w in msg for w in ("truncated", "remain", "beyond the end")), (cut, msg)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.gguf"
    p.write_bytes(b"")
    expect(GGUFError, p, "truncated header", "reading magic at byte 0", "ends at byte 0")
    p.write_bytes(b"GGUF\3\0\0\0\0\0")
    expect(GGUFError, p, "truncated header", "reading tensor count at byte 8", "ends at byte 10")


def test_tensor_past_eof(tmp_path, base):
    _, data = base
    pos = tensor_info_pos(data, "blk.0.half")["offset"]
    p = patched(tmp_path, data, pos, struct.pack("<Q", 1 << 20))
    expect(GGUFError, p, "'blk.0.half'", "beyond the end", f"{len(data)}-byte file", "14 bytes")


def test_tensor_size_past_eof(tmp_path, base):
    _, data = base
    pos = tensor_info_pos(data, "blk.0.ffn.weight")["ne"] + 8 * 3  # outermost dim 2 -> 2**40
    expect(GGUFError, patched(tmp_path, data, pos, struct.pack("<Q", 2**40)), "beyond the end")


def test_misaligned_offset(tmp_path, base):
    _, data = base
    pos = tensor_info_pos(data, "blk.0.norm")["offset"]
    (off,) = struct.unpack_from("<Q", data, pos)
    p = patched(tmp_path, data, pos, struct.pack("<Q", off + 4))
    expect(GGUFError, p, "'blk.0.norm'", f"offset {off + 4}", "general.alignment 32")


def test_overlapping_tensors(tmp_path, base):
    _, data = base
    pos = tensor_info_pos(data, "blk.0.attn_q.weight")["offset"]
    expect(GGUFError, patched(tmp_path, data, pos, struct.pack("<Q", 0)), "overlaps")


def test_duplicate_tensor_name(tmp_path, base):
    _, data = base
    at = string_pos(data, "blk.0.half") + 8
    expect(
        GGUFError,
        patched(tmp_path, data, at, b"blk.0.norm"),
        "duplicate tensor name",
        "'blk.0.norm'",
    )


def test_duplicate_metadata_key(tmp_path, base):
    _, data = base
    at = string_pos(data, "t.i16") + 8
    expect(GGUFError, patched(tmp_path, data, at, b"t.u16"), "duplicate metadata key", "'t.u16'")


def test_unknown_tensor_type(tmp_path, base):
    _, data = base
    pos = tensor_info_pos(data, "blk.0.bf")["type"]
    p = patched(tmp_path, data, pos, struct.pack("<I", 99))
    expect(UnsupportedError, p, "'blk.0.bf'", "type id 99")
    p = patched(tmp_path, data, pos, struct.pack("<I", 4))  # Q4_2: removed from ggml long ago
    expect(UnsupportedError, p, "type id 4")


@pytest.mark.parametrize("n_dims", [0, 5, 2**31])
def test_bad_n_dims(tmp_path, base, n_dims):
    _, data = base
    pos = tensor_info_pos(data, "blk.0.half")["n_dims"]
    p = patched(tmp_path, data, pos, struct.pack("<I", n_dims))
    expect(GGUFError, p, "'blk.0.half'", f"{n_dims} dimensions")


def test_row_not_multiple_of_block(tmp_path, base):
    _, data = base
    pos = tensor_info_pos(data, "blk.0.attn_q.weight")["ne"]
    p = patched(tmp_path, data, pos, struct.pack("<Q", 48))
    expect(GGUFError, p, "'blk.0.attn_q.weight'", "row length 48", "Q8_0 block size 32")


def test_unknown_value_type(tmp_path, base):
    _, data = base
    at = string_pos(data, "t.f64") + 8 + 5
    expect(
        GGUFError, patched(tmp_path, data, at, struct.pack("<I", 77)), "value type 77", "'t.f64'"
    )
    at = string_pos(data, "a.i16") + 8 + 5 + 4  # the array's element type
    expect(GGUFError, patched(tmp_path, data, at, struct.pack("<I", 13)), "value type 13")


def test_absurd_string_length(tmp_path, base):
    _, data = base
    at = string_pos(data, "héllo ✓ wörld")
    msg = expect(GGUFError, patched(tmp_path, data, at, struct.pack("<Q", 2**40)), str(2**40))
    assert "'t.str'" in msg and f"byte {at}" in msg
    at = string_pos(data, "ĉ ü")
    expect(GGUFError, patched(tmp_path, data, at, struct.pack("<Q", 2**62)), "item 2 of 'a.str'")
    at = string_pos(data, "t.u8")
    expect(GGUFError, patched(tmp_path, data, at, struct.pack("<Q", 2**63)), "key of metadata")


def test_absurd_array_length(tmp_path, base):
    _, data = base
    at = string_pos(data, "a.u64") + 8 + 5 + 4 + 4
    p = patched(tmp_path, data, at, struct.pack("<Q", 2**50))
    expect(GGUFError, p, "'a.u64'", f"{2**50} uint64 elements")


@pytest.mark.parametrize("field, what", [(8, "tensors"), (16, "metadata entries")])
def test_absurd_counts(tmp_path, base, field, what):
    _, data = base
    p = patched(tmp_path, data, field, struct.pack("<Q", 2**60))
    expect(GGUFError, p, f"claims {2**60} {what}")


def test_deeply_nested_arrays(tmp_path):
    # Hand-written: one key whose value is 50 arrays deep; must stop without recursion errors.
    body = struct.pack("<Q", 1) + b"k" + struct.pack("<I", 9)
    body += (struct.pack("<I", 9) + struct.pack("<Q", 1)) * 50 + struct.pack("<IQ", 0, 0)
    p = tmp_path / "nest.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + body)
    expect(GGUFError, p, "nests arrays deeper")


def test_empty_array_and_zero_size_tensor(tmp_path):
    kv = struct.pack("<Q", 1) + b"e" + struct.pack("<IIQ", 9, 4, 0)
    ti = struct.pack("<Q", 1) + b"z" + struct.pack("<IQQIQ", 2, 0, 3, 0, 0)
    p = tmp_path / "z.gguf"
    p.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 1, 1) + kv + ti)
    with GGUFFile(p) as f:
        assert f.metadata == {"e": []}
        z = f.tensors["z"]
        assert z.shape == (3, 0) and z.nbytes == 0 and z.raw().shape == (3, 0)
        assert z.dequantize().shape == (3, 0)


@pytest.mark.parametrize("align", [0, 3, 48])
def test_bad_alignment(tmp_path, align):
    p = write_gguf(tmp_path / "al.gguf", tensors=[])
    data = p.read_bytes()
    p2 = write_gguf(tmp_path / "al2.gguf", tensors=[], extra=[("general.alignment", V.UINT32, 32)])
    at = string_pos(p2.read_bytes(), "general.alignment") + 8 + 17 + 4
    p3 = patched(tmp_path, p2.read_bytes(), at, struct.pack("<I", align))
    expect(GGUFError, p3, "general.alignment", f"got {align}")
    assert GGUFFile(p).alignment == 32 and len(data) > 0


# ---------------------------------------------------------------------------------------------
# Split files


@pytest.fixture
def split(tmp_path):
    write_gguf(tmp_path / "model.gguf", split_max_tensors=4)
    parts = sorted(tmp_path.glob("model-*.gguf"))
    assert [p.name for p in parts] == ["model-00001-of-00002.gguf", "model-00002-of-00002.gguf"]
    return parts


def test_split_open_any_part(split):
    for which in split:
        with open_gguf(which) as g:
            assert isinstance(g, GGUFSplit) and g.paths == split and g.path == split[0]
            assert list(g.tensors) == [n for n, _, _ in TENSORS]
            assert g.metadata["t.str"] == "héllo ✓ wörld" and g.metadata["split.count"] == 2
            files = {t.file.path for t in g.tensors.values()}
            assert files == set(split) and len(g.files) == 2
            for name, t, shape in TENSORS:
                ti = g.tensors[name]
                assert np.array_equal(ti.raw(), tensor_bytes(name, t, shape))
                assert g.page_range(ti)[0] + g.page_range(ti)[2] == ti.offset


def test_split_missing_part(split):
    split[1].unlink()
    expect(GGUFError, split[0], "missing", str(split[1]), open_fn=open_gguf)


def test_split_number_mismatch(tmp_path, split):
    wrong = tmp_path / "other-00002-of-00002.gguf"
    wrong.write_bytes(split[0].read_bytes())  # says split.no 0 but is named part 2
    (tmp_path / "other-00001-of-00002.gguf").write_bytes(split[0].read_bytes())
    expect(GGUFError, wrong, "split.no is 0", "part 2", open_fn=open_gguf)
    three = tmp_path / "x-00001-of-00003.gguf"
    three.write_bytes(split[0].read_bytes())
    for i in (2, 3):
        (tmp_path / f"x-0000{i}-of-00003.gguf").write_bytes(split[1].read_bytes())
    expect(GGUFError, three, "split.count is 2", "says 3", open_fn=open_gguf)


def test_split_part_with_plain_name(tmp_path, split):
    plain = tmp_path / "renamed.gguf"
    plain.write_bytes(split[0].read_bytes())
    expect(GGUFError, plain, "2-part split", open_fn=open_gguf)
    assert len(GGUFFile(plain).tensors) == 4  # GGUFFile alone reads the one part


def test_split_tensor_count_mismatch(tmp_path, split):
    data = split[0].read_bytes()
    at = string_pos(data, "split.tensors.count") + 8 + len("split.tensors.count") + 4
    split[0].write_bytes(data[:at] + struct.pack("<i", 9) + data[at + 4 :])
    expect(GGUFError, split[0], "split.tensors.count is 9", "hold 7", open_fn=open_gguf)


# ---------------------------------------------------------------------------------------------
# Fuzz


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), min_size=1, max_size=6
    ),
)
def test_fuzz_header_bytes(tmp_path, base, flips):
    path, data = base
    with GGUFFile(path) as f:
        header_end = f.data_offset
    b = bytearray(data)
    for where, value in flips:
        b[int(where * header_end)] = value
    p = tmp_path / "fuzz.gguf"
    p.write_bytes(bytes(b))
    try:
        f = GGUFFile(p)
    except (GGUFError, UnsupportedError) as e:
        assert str(p) in str(e)
        return
    with f:  # parsed fine: every tensor must be readable within the file
        for ti in f.tensors.values():
            assert ti.offset + ti.nbytes <= len(data)
            assert ti.raw().nbytes == ti.nbytes
