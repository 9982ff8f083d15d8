"""ops.axpy: y (+)= alpha·x on the GPU."""

from __future__ import annotations

import numpy as np

from ..pipelines import axpy as k
from ._base import op_session, run

__all__ = ["axpy"]


def axpy(x, alpha: float, y=None, device=None, **spec) -> np.ndarray:
    """alpha·x + y (or alpha·x when y is None), computed by shaders/axpy.comp."""
    x = np.ascontiguousarray(x, np.float32).reshape(-1)
    with op_session(device) as (dev, t):
        bx, ba = t.upload(x), t.upload(np.array([alpha], np.float32))
        by = t.upload(np.zeros_like(x) if y is None else np.asarray(y, np.float32).reshape(-1))
        kp = k.KERNEL.pipeline(dev, ACCUMULATE=y is not None, **spec)
        run(dev, lambda rec: k.dispatch(rec, kp, bx, ba, by, x.size))
        return by.read(np.float32, x.shape)
