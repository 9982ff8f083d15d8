"""argmax over rows (greedy sampling over a vocabulary row of ~250k logits): int32 index per
row, ties to the lowest index and NaN ranked above every number, as `numpy.argmax`.

Pass 1 splits each row into CHUNKS chunks, one workgroup each, so a single row still spreads
over many compute units; the `merge` variant reduces the CHUNKS (value, index) partials. With
CHUNKS = 1 pass 1 writes the answer itself. Only 4 bytes per row come back to the host.
"""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require


def _contract(spec, info):
    wg, chunks = spec["WG"], spec["CHUNKS"]
    require(wg > 0 and wg & (wg - 1) == 0, f"argmax: WG={wg} must be a power of two")
    require(wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"argmax: WG={wg} exceeds the device's workgroup limits")
    require(8 * wg <= info.max_compute_shared_memory, "argmax: shared memory")
    require(1 <= chunks <= info.max_workgroup_count[0], f"argmax: CHUNKS={chunks} out of range")


KERNEL = Kernel(
    stem="argmax",
    bindings=(Binding("x", "r", "float[rows, n] view"),
              Binding("part", "b", "uvec2[rows, CHUNKS] (value bits, index); out if CHUNKS=1"),
              Binding("out", "w", "int32[rows]")),
    push=np.dtype([(f, "<u4") for f in ("n", "rows", "x_off", "x_rs", "chunk")]),
    spec=(SpecConst("WG", 0, 256, choices=(64, 128, 256, 512, 1024)),
          SpecConst("CHUNKS", 1, 16, choices=(1, 4, 8, 16, 32, 64))),
    variants={"default": Variant(), "merge": Variant({"MERGE": ""})},
    contract=_contract,
    doc="row argmax, lowest index on ties, NaN first",
)


def shape_class(n: int, rows: int = 1) -> str:
    return f"n{n}-r{rows}"


def pipelines(device, shape_class: str | None = None, **overrides):
    """(pass-1 pipeline, merge pipeline) sharing the same specialization values."""
    kp = KERNEL.pipeline(device, "default", shape_class=shape_class, **overrides)
    km = KERNEL.pipeline(device, "merge", **kp.spec)
    return kp, km


def part_bytes(rows: int, chunks: int) -> int:
    """Size of the partials buffer pass 1 needs (0 when CHUNKS = 1)."""
    return 0 if chunks == 1 else rows * chunks * 8


def dispatch(rec, kps, x, part, out, n: int, rows: int = 1, *, x_view=None):
    """Record out[r] = argmax(x row r) with kps = pipelines(...). `part` holds
    part_bytes(rows, CHUNKS) bytes (None when CHUNKS = 1); x_view is (offset, row stride)."""
    kp, km = kps
    chunks = kp.spec["CHUNKS"]
    require(km.spec["CHUNKS"] == chunks, "argmax: both passes need the same CHUNKS")
    require(n < 2**32 - 1, "argmax: n must be < 2^32 - 1")
    require(chunks == 1 or part is not None, "argmax: CHUNKS > 1 needs a partials buffer")
    xv = x_view or (0, n)
    chunk = max(1, ceil_div(n, chunks))
    kp.record(rec, [x, part if chunks > 1 else out, out], (chunks, rows), n=n, rows=rows,
              x_off=xv[0], x_rs=xv[1], chunk=chunk)
    if chunks > 1:
        km.record(rec, [x, part, out], (rows,), n=n, rows=rows, x_off=xv[0], x_rs=xv[1],
                  chunk=chunk)


def reference(x) -> np.ndarray:
    """int32 index per row of the last axis (numpy.argmax: lowest index on ties, first NaN);
    -1 for empty rows."""
    x = np.asarray(x, np.float32)
    if x.shape[-1] == 0:
        return np.full(x.shape[:-1], -1, np.int32)
    return np.argmax(x, axis=-1).astype(np.int32)
