"""Memory-mapped GGUF v2/v3 reader with precise errors.

Follows the GGUF specification (ggml's docs/gguf.md): a little-endian header

    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x (string key, u32 value type, value)
    n_tensors x (string name, u32 n_dims, u64 ne[n_dims], u32 ggml type, u64 offset)
    padding to general.alignment, then the tensor data

where a string is (u64 length, utf-8 bytes) and an array value is (u32 element type, u64 count,
elements). Tensor offsets are relative to the data section. Split models follow llama.cpp's
gguf-split convention: `<prefix>-00001-of-0000N.gguf` with `split.no` (0-based),
`split.count` and `split.tensors.count` metadata.

The header is parsed straight from the mmap with struct; tensor data is never read here, so opening
a 30 GB file costs only the header. Block sizes come from `quants` (DESIGN R1).
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from itertools import pairwise
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFValueType

from vkinfer.errors import GGUFError, UnsupportedError
from vkinfer.gguf import quants

__all__ = ["GGUFFile", "GGUFSplit", "TensorInfo", "open_gguf", "MAGIC", "VERSIONS"]

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # v1 used 32-bit counts and is long gone
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 8  # arrays of arrays are legal; a fuzzed file must not recurse without end
HEADER_SIZE = 24

# value type -> (struct format, size); STRING and ARRAY are variable-sized.
_SCALARS = {
    GGUFValueType.UINT8: ("<B", 1),
    GGUFValueType.INT8: ("<b", 1),
    GGUFValueType.UINT16: ("<H", 2),
    GGUFValueType.INT16: ("<h", 2),
    GGUFValueType.UINT32: ("<I", 4),
    GGUFValueType.INT32: ("<i", 4),
    GGUFValueType.FLOAT32: ("<f", 4),
    GGUFValueType.BOOL: ("<B", 1),
    GGUFValueType.UINT64: ("<Q", 8),
    GGUFValueType.INT64: ("<q", 8),
    GGUFValueType.FLOAT64: ("<d", 8),
}
_NP_SCALARS = {
    GGUFValueType.UINT8: "<u1",
    GGUFValueType.INT8: "<i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "<u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}
# Smallest encoding of a value of each type, used to reject absurd counts before looping.
_MIN_SIZE = {**{t: s for t, (_, s) in _SCALARS.items()}, GGUFValueType.STRING: 8}
_MIN_SIZE[GGUFValueType.ARRAY] = 12
_MIN_KV_SIZE = 8 + 4 + 1  # empty key, type, one-byte value
_MIN_TENSOR_INFO_SIZE = 8 + 4 + 8 + 4 + 8  # empty name, n_dims, one dim, type, offset

_VALUE_TYPES = {int(t): t for t in GGUFValueType}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_SPLIT_RE = re.compile(r"^(?P<prefix>.*)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


@dataclass(frozen=True, eq=False)
class TensorInfo:
    """One tensor of a GGUF file. `offset` is absolute in `file`, so it indexes `file.mmap`."""

    name: str
    shape: tuple[int, ...]  # numpy order, outermost first (reversed ne)
    ne: tuple[int, ...]  # ggml order, innermost first
    type: GGMLQuantizationType
    offset: int  # absolute byte offset of the data in `file`
    nbytes: int
    file: GGUFFile = field(repr=False)
    rel_offset: int = 0  # offset as stored: relative to file.data_offset

    @property
    def n_elements(self) -> int:
        n = 1
        for d in self.ne:
            n *= d
        return n

    @property
    def rows(self) -> int:
        """Rows of the 2-D (rows, innermost) view: product of every dimension but the innermost."""
        n = 1
        for d in self.ne[1:]:
            n *= d
        return n

    @property
    def row_bytes(self) -> int:
        return quants.row_bytes(self.type, self.ne[0])

    def raw(self) -> np.ndarray:
        """Zero-copy, read-only uint8 view of the data: (rows, bytes per row)."""
        if self.nbytes == 0:
            return np.zeros((self.rows, self.row_bytes), dtype=np.uint8)
        if self.file.mmap is None:
            raise GGUFError(f"{self.file.path}: file is closed; cannot read tensor {self.name!r}")
        a = np.frombuffer(self.file.mmap, dtype=np.uint8, count=self.nbytes, offset=self.offset)
        return a.reshape(self.rows, self.row_bytes)

    def dequantize(self) -> np.ndarray:
        """float32 array of `shape` (a copy; see quants.dequantize)."""
        return quants.dequantize(self.raw(), self.type).reshape(self.shape)


def _page_range(t: TensorInfo, page_size: int) -> tuple[int, int, int]:
    start = t.offset - t.offset % page_size
    end = -(-(t.offset + t.nbytes) // page_size) * page_size
    return start, end - start, t.offset - start


class _Parser:
    """Bounds-checked cursor over the mmap. Every read names what it reads, for the error."""

    def __init__(self, buf, path: Path, size: int):
        self.buf, self.path, self.size = buf, path, size
        self.pos = 0
        self.section = "header"

    def fail(self, msg: str) -> GGUFError:
        return GGUFError(f"{self.path}: {msg}")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(
                f"truncated {self.section}: reading {what} at byte {self.pos} needs {n} bytes, "
                f"but the file ends at byte {self.size}"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        (v,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        (v,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return v

    def raw_string(self, what: str) -> bytes:
        start = self.pos
        n = self.u64(f"length of {what}")
        if n > self.size - self.pos:
            raise self.fail(
                f"{self.section}: {what} at byte {start} claims a length of {n} bytes, but only "
                f"{self.size - self.pos} bytes remain in the {self.size}-byte file "
                "(corrupt or truncated)"
            )
        s = self.buf[self.pos : self.pos + n]
        self.pos += n
        return s

    def string(self, what: str) -> str:
        # surrogateescape keeps the odd non-utf-8 token lossless instead of refusing the model.
        return self.raw_string(what).decode("utf-8", errors="surrogateescape")

    def value_type(self, what: str) -> GGUFValueType:
        at = self.pos
        t = self.u32(f"value type of {what}")
        try:
            return GGUFValueType(t)
        except ValueError:
            raise self.fail(
                f"{self.section}: unknown metadata value type {t} for {what} at byte {at} "
                f"(known: 0-{max(GGUFValueType)})"
            ) from None

    def value(self, vt: GGUFValueType, what: str, depth: int = 0):
        if vt == GGUFValueType.STRING:
            return self.string(what)
        if vt == GGUFValueType.ARRAY:
            return self.array(what, depth + 1)
        fmt, size = _SCALARS[vt]
        self.need(size, f"{what} ({vt.name.lower()})")
        (v,) = struct.unpack_from(fmt, self.buf, self.pos)
        self.pos += size
        return bool(v) if vt == GGUFValueType.BOOL else v

    def array(self, what: str, depth: int):
        if depth > MAX_ARRAY_NESTING:
            raise self.fail(
                f"{self.section}: {what} at byte {self.pos} nests arrays deeper than "
                f"{MAX_ARRAY_NESTING} levels"
            )
        et = self.value_type(f"elements of {what}")
        start = self.pos
        n = self.u64(f"element count of {what}")
        least = n * _MIN_SIZE[et]
        if least > self.size - self.pos:
            raise self.fail(
                f"{self.section}: {what} at byte {start} claims {n} {et.name.lower()} elements "
                f"(at least {least} bytes), but only {self.size - self.pos} bytes remain in the "
                f"{self.size}-byte file (corrupt or truncated)"
            )
        if et in _NP_SCALARS:
            a = np.frombuffer(self.buf, dtype=_NP_SCALARS[et], count=n, offset=self.pos)
            self.pos += least
            out = a.tolist()
            del a  # drop the buffer export at once so the mmap can be closed
            return [bool(v) for v in out] if et == GGUFValueType.BOOL else out
        if et == GGUFValueType.STRING:
            buf, size, unpack, pos = self.buf, self.size, _U64.unpack_from, self.pos
            out = []
            # Hot loop for vocabularies of ~150k tokens: no per-item method calls.
            for i in range(n):
                if size - pos < 8:
                    self.pos = pos
                    self.need(8, f"length of item {i} of {what}")
                (ln,) = unpack(buf, pos)
                pos += 8
                if ln > size - pos:
                    raise self.fail(
                        f"{self.section}: item {i} of {what} at byte {pos - 8} claims a length "
                        f"of {ln} bytes, but only {size - pos} bytes remain in the {size}-byte "
                        "file (corrupt or truncated)"
                    )
                out.append(buf[pos : pos + ln].decode("utf-8", errors="surrogateescape"))
                pos += ln
            self.pos = pos
            return out
        return [self.value(et, f"item {i} of {what}", depth) for i in range(n)]


class GGUFFile:
    """One GGUF file, mmapped read-only once.

    Attributes: path, version, metadata (key -> python value), metadata_types (key ->
    (GGUFValueType, element type for arrays or None)), tensors (name -> TensorInfo, file order),
    alignment, data_offset, size, mmap.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.mmap: mmap.mmap | None = None
        self.version, self.tensors = 0, {}
        try:
            with open(self.path, "rb") as f:
                self.size = os.fstat(f.fileno()).st_size
                if self.size < HEADER_SIZE:
                    # mmap refuses empty files; parsing the bytes gives the precise error.
                    self._parse(f.read())
                self.mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except FileNotFoundError:
            raise GGUFError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise GGUFError(f"{self.path}: is a directory, not a GGUF file") from None
        try:
            self._parse(self.mmap)
        except BaseException:
            self.close()
            raise

    def _bad_magic(self, got: bytes) -> str:
        return (
            f"{self.path}: not a GGUF file: bad magic {got!r} (hex {got.hex(' ')}), "
            f"expected {MAGIC!r}"
        )

    # -- parsing -----------------------------------------------------------------------------

    def _parse(self, buf) -> None:
        p = _Parser(buf, self.path, self.size)
        p.need(4, "magic")
        got = bytes(buf[0:4])
        if got != MAGIC:
            if got[::-1] == MAGIC:
                raise UnsupportedError(f"{self.path}: big-endian GGUF files are not supported")
            raise GGUFError(self._bad_magic(got))
        p.pos = 4
        version = p.u32("version")
        if version not in VERSIONS:
            swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
            if swapped in VERSIONS:
                raise UnsupportedError(
                    f"{self.path}: big-endian GGUF v{swapped} files are not supported"
                )
            raise GGUFError(
                f"{self.path}: unsupported GGUF version {version} "
                f"(supported: {', '.join(map(str, VERSIONS))})"
            )
        self.version = version
        n_tensors = p.u64("tensor count")
        n_kv = p.u64("metadata count")
        room = self.size - p.pos
        if n_kv * _MIN_KV_SIZE > room:
            raise p.fail(
                f"header claims {n_kv} metadata entries, but the {self.size}-byte file has room "
                f"for at most {room // _MIN_KV_SIZE} (corrupt or truncated)"
            )
        if n_tensors * _MIN_TENSOR_INFO_SIZE > room:
            raise p.fail(
                f"header claims {n_tensors} tensors, but the {self.size}-byte file has room for "
                f"at most {room // _MIN_TENSOR_INFO_SIZE} (corrupt or truncated)"
            )

        p.section = "metadata"
        self.metadata: dict = {}
        self.metadata_types: dict = {}
        for i in range(n_kv):
            at = p.pos
            key = p.string(f"key of metadata entry #{i}")
            if key in self.metadata:
                raise p.fail(f"duplicate metadata key {key!r} (entry #{i} at byte {at})")
            vt = p.value_type(f"{key!r}")
            sub = None
            if vt == GGUFValueType.ARRAY and self.size - p.pos >= 4:
                # Peek the element type for metadata_types; array() re-reads and checks it.
                sub = _VALUE_TYPES.get(_U32.unpack_from(buf, p.pos)[0])
            self.metadata[key] = p.value(vt, f"{key!r}")
            self.metadata_types[key] = (vt, sub)

        self.alignment = self._alignment(p)

        p.section = "tensor info"
        infos = []
        names: set[str] = set()
        for i in range(n_tensors):
            at = p.pos
            name = p.string(f"name of tensor #{i}")
            if name in names:
                raise p.fail(f"duplicate tensor name {name!r} (tensor #{i} at byte {at})")
            names.add(name)
            n_dims = p.u32(f"n_dims of tensor {name!r}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise p.fail(
                    f"tensor {name!r} has {n_dims} dimensions; GGUF allows 1 to {MAX_DIMS}"
                )
            ne = tuple(p.u64(f"dimension {j} of tensor {name!r}") for j in range(n_dims))
            if any(d >= 1 << 63 for d in ne):
                raise p.fail(f"tensor {name!r} has an absurd dimension in ne={list(ne)}")
            tid = p.u32(f"type of tensor {name!r}")
            try:
                ttype = GGMLQuantizationType(tid)
                info = quants.QUANT_TYPES[ttype]
            except (ValueError, KeyError):
                raise UnsupportedError(
                    f"{self.path}: tensor {name!r} has unknown ggml type id {tid}; known types: "
                    + ", ".join(f"{t.name}={int(t)}" for t in quants.QUANT_TYPES)
                ) from None
            rel = p.u64(f"offset of tensor {name!r}")
            infos.append((name, ne, ttype, info, rel))

        self.data_offset = -(-p.pos // self.alignment) * self.alignment
        self.tensors: dict[str, TensorInfo] = {}
        for name, ne, ttype, info, rel in infos:
            self.tensors[name] = self._check_tensor(name, ne, ttype, info, rel)
        self._check_overlaps()

    def _alignment(self, p: _Parser) -> int:
        a = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if isinstance(a, bool) or not isinstance(a, int) or a <= 0 or a & (a - 1):
            raise p.fail(f"general.alignment must be a positive power of two, got {a!r}")
        return a

    def _check_tensor(self, name, ne, ttype, info, rel) -> TensorInfo:
        where = f"{self.path}: tensor {name!r} ({ttype.name}, ne={list(ne)})"
        if ne[0] % info.block_size:
            n = 1
            for d in ne:
                n *= d
            raise GGUFError(
                f"{where}: row length {ne[0]} (of {n} elements) is not a multiple of the "
                f"{ttype.name} block size {info.block_size}"
            )
        if rel % self.alignment:
            raise GGUFError(
                f"{where}: data offset {rel} is not a multiple of general.alignment "
                f"{self.alignment}"
            )
        rows = 1
        for d in ne[1:]:
            rows *= d
        nbytes = rows * (ne[0] // info.block_size) * info.type_size
        offset = self.data_offset + rel
        if nbytes and offset + nbytes > self.size:  # an empty tensor reads nothing
            raise GGUFError(
                f"{where}: data at byte {offset} (data section {self.data_offset} + {rel}) of "
                f"{nbytes} bytes ends at byte {offset + nbytes}, beyond the end of the "
                f"{self.size}-byte file"
            )
        return TensorInfo(name, tuple(reversed(ne)), ne, ttype, offset, nbytes, self, rel)

    def _check_overlaps(self) -> None:
        spans = sorted((t.offset, t.nbytes, t.name) for t in self.tensors.values() if t.nbytes)
        for (o1, n1, a), (o2, _, b) in pairwise(spans):
            if o1 + n1 > o2:
                raise GGUFError(
                    f"{self.path}: tensor {a!r} (bytes {o1}..{o1 + n1}) overlaps tensor {b!r} "
                    f"(starting at byte {o2})"
                )

    # -- access ------------------------------------------------------------------------------

    @property
    def files(self) -> list[GGUFFile]:
        return [self]

    def page_range(self, tensor: TensorInfo, page_size: int = mmap.PAGESIZE):
        """(aligned_offset, aligned_size, delta): the whole pages of the file that hold `tensor`;
        its data starts `delta` bytes into the range. For zero-copy host-memory import."""
        if tensor.file is not self:
            raise ValueError(
                f"tensor {tensor.name!r} belongs to {tensor.file.path}, not {self.path}"
            )
        return _page_range(tensor, page_size)

    def close(self) -> None:
        """Unmap the file. If raw() views are still alive the map lives on until they die."""
        if self.mmap is not None:
            try:
                self.mmap.close()
            except BufferError:
                pass  # raw() views still point into it; it is unmapped when the last one dies
            self.mmap = None

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, v{self.version}, {len(self.tensors)} tensors)"


class GGUFSplit:
    """A model split over several GGUF files; looks like one GGUFFile for reading.

    `metadata` is the first part's (gguf-split writes all model keys there); `tensors` merges
    every part, each TensorInfo pointing at the part (`.file`) that holds its data.
    """

    def __init__(self, parts: list[GGUFFile]):
        self.parts = parts
        first = parts[0]
        self.path, self.version, self.alignment = first.path, first.version, first.alignment
        self.metadata, self.metadata_types = first.metadata, first.metadata_types
        self.tensors: dict[str, TensorInfo] = {}
        for part in parts:
            for name, t in part.tensors.items():
                if name in self.tensors:
                    raise GGUFError(
                        f"{part.path}: duplicate tensor name {name!r}, also in "
                        f"{self.tensors[name].file.path}"
                    )
                self.tensors[name] = t

    @property
    def files(self) -> list[GGUFFile]:
        return list(self.parts)

    @property
    def paths(self) -> list[Path]:
        return [p.path for p in self.parts]

    def page_range(self, tensor: TensorInfo, page_size: int = mmap.PAGESIZE):
        return tensor.file.page_range(tensor, page_size)

    def close(self) -> None:
        for p in self.parts:
            p.close()

    def __enter__(self) -> GGUFSplit:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"GGUFSplit({str(self.path)!r}, {len(self.parts)} parts, {len(self.tensors)} tensors)"
        )


def _check_split_keys(f: GGUFFile, no: int, count: int) -> None:
    got_no, got_count = f.metadata.get("split.no"), f.metadata.get("split.count")
    if got_count is not None and got_count != count:
        raise GGUFError(f"{f.path}: split.count is {got_count}, but the file name says {count}")
    if got_no is not None and got_no != no:
        raise GGUFError(
            f"{f.path}: split.no is {got_no}, but the file name says part {no + 1} (split.no {no})"
        )


def open_gguf(path: str | os.PathLike) -> GGUFFile | GGUFSplit:
    """Open a GGUF model: a GGUFFile, or a GGUFSplit when `path` names any part of a split
    model (`<prefix>-0000k-of-0000N.gguf`)."""
    path = Path(path)
    m = _SPLIT_RE.match(path.name)
    if m is None:
        f = GGUFFile(path)
        count = f.metadata.get("split.count")
        if isinstance(count, int) and count > 1:
            f.close()
            raise GGUFError(
                f"{path}: the file is part of a {count}-part split model (split.count={count}), "
                "but its name does not follow <prefix>-00001-of-0000N.gguf, so the other parts "
                "cannot be found"
            )
        return f
    count, no = int(m["count"]), int(m["no"])
    if not 1 <= no <= count:
        raise GGUFError(f"{path}: split part number {no} is outside 1..{count}")
    names = [
        path.with_name(f"{m['prefix']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)
    ]
    missing = [str(p) for p in names if not p.is_file()]
    if missing:
        raise GGUFError(
            f"{path}: split model has {count} parts, but {len(missing)} are missing: "
            + ", ".join(missing)
        )
    parts: list[GGUFFile] = []
    try:
        for i, p in enumerate(names):
            parts.append(GGUFFile(p))
            _check_split_keys(parts[-1], i, count)
        if count == 1:
            return parts[0]
        split = GGUFSplit(parts)
        total = parts[0].metadata.get("split.tensors.count")
        if total is not None and total != len(split.tensors):
            raise GGUFError(
                f"{names[0]}: split.tensors.count is {total}, but the {count} parts hold "
                f"{len(split.tensors)} tensors"
            )
        return split
    except BaseException:
        for f in parts:
            f.close()
        raise
