"""ops.argmax: row argmax on the GPU (shaders/argmax.comp), numpy in and out."""

from __future__ import annotations

import numpy as np

from ..pipelines import argmax as k
from ._base import op_session, run

__all__ = ["argmax"]


def argmax(x, device=None, **spec):
    """Index of the largest entry of a 1-D x (an int), or of each row of a 2-D x (int32 array).
    Ties go to the lowest index; NaN ranks above every number (numpy.argmax's rule)."""
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"argmax wants a 1-D or 2-D array, got shape {x.shape}")
    rows, n = (1, x.shape[0]) if x.ndim == 1 else x.shape
    if n == 0:
        raise ValueError("argmax of an empty row")
    with op_session(device) as (dev, t):
        bx = t.upload(x)
        kps = k.pipelines(dev, k.shape_class(n, rows), **spec)
        nb = k.part_bytes(rows, kps[0].spec["CHUNKS"])
        part = t.empty(nb) if nb else None
        out = t.empty(4 * rows)
        run(dev, lambda rec: k.dispatch(rec, kps, bx, part, out, n, rows))
        r = out.read(np.int32, (rows,))
        return int(r[0]) if x.ndim == 1 else r
