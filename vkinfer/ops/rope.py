"""ops.rope: rotary position embedding on the GPU, numpy in and out (shaders/rope.comp)."""

from __future__ import annotations

import numpy as np

from ..pipelines import rope as k
from ._base import op_session, run

__all__ = ["rope"]


def rope(x, positions, n_rot: int, base: float = 10000.0, scale: float = 1.0, neox: bool = True,
         device=None, **spec) -> np.ndarray:
    """RoPE over x [tokens, heads, head_dim] with int positions [tokens]; channels >= n_rot pass
    through. neox=True pairs i with i + n_rot/2, False pairs 2i with 2i+1. scale is the linear
    position scaling factor (θ divided by it)."""
    x = np.ascontiguousarray(x, np.float32)
    if x.ndim != 3:
        raise ValueError(f"rope wants x of shape [tokens, heads, head_dim], got {x.shape}")
    T, H, D = x.shape
    pos = np.ascontiguousarray(positions, np.int32).reshape(-1)
    if pos.size != T:
        raise ValueError(f"rope: {pos.size} positions for {T} tokens")
    with op_session(device) as (dev, t):
        bx, bp = t.upload(x), t.upload(pos)
        bf = t.upload(k.freq_table(n_rot, base, scale))
        by = t.empty(x.nbytes)
        kp = k.KERNEL.pipeline(dev, "neox" if neox else "normal",
                               shape_class=k.shape_class(D, H), **spec)
        run(dev, lambda rec: k.dispatch(rec, kp, bx, bp, bf, by, T, H, D, n_rot))
        return by.read(np.float32, x.shape)
