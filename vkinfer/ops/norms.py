"""ops.norms: RMSNorm (with weight, residual add, silu gate), per-head RMSNorm and L2 norm on the
GPU, numpy in and out (shaders/rms_norm.comp)."""

from __future__ import annotations

import numpy as np

from ..pipelines import rms_norm as k
from ._base import op_session, run

# The gated form (norm·w·silu(z)) is exported as ops.gdn.gated_rms_norm (argument order o, z, w);
# norms.rms_norm_gated is the same kernel variant with (x, w, z).
__all__ = ["head_rms_norm", "l2_norm", "rms_norm"]


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


def _norm(variant, x, eps, w=None, r=None, device=None, heads=1, **spec):
    x = _f32(x)
    n = x.shape[-1]
    rows = x.size // n // heads
    with op_session(device) as (dev, t):
        bx = t.upload(x)
        by = t.empty(x.nbytes)
        bw = t.upload(_f32(w).reshape(-1)) if w is not None else None
        br = t.upload(_f32(r).reshape(x.shape)) if r is not None else None
        bs = t.empty(x.nbytes) if variant in k.USES_S else None
        kp = k.KERNEL.pipeline(dev, variant, shape_class=k.shape_class(n), **spec)
        run(dev, lambda rec: k.dispatch(rec, kp, bx, by, n, eps, rows, heads, w=bw, r=br, s=bs))
        y = by.read(np.float32, x.shape)
        return (y, bs.read(np.float32, x.shape)) if bs is not None else y


def rms_norm(x, w, eps: float, residual=None, device=None, **spec):
    """RMSNorm over the last axis: x·rsqrt(mean(x²) + eps)·w (w may be None). With `residual`,
    normalises h = x + residual and returns (y, h), as one dispatch."""
    if residual is None:
        return _norm("default" if w is not None else "noweight", x, eps, w, None, device, **spec)
    return _norm("residual" if w is not None else "residual_noweight", x, eps, w, residual,
                 device, **spec)


def head_rms_norm(x, w, eps: float, device=None, **spec):
    """Per-head RMSNorm (q/k norm): x is [tokens, heads, head_dim], w is [head_dim] shared by
    all heads."""
    x = _f32(x)
    if x.ndim != 3:
        raise ValueError(f"head_rms_norm wants [tokens, heads, head_dim], got shape {x.shape}")
    return _norm("default", x, eps, w, None, device, heads=x.shape[1], **spec)


def l2_norm(x, eps: float, device=None, **spec):
    """x / sqrt(Σx² + eps) over the last axis (per head when x is [tokens, heads, d])."""
    return _norm("l2", x, eps, None, None, device, **spec)


def rms_norm_gated(x, w, z, eps: float, device=None, **spec):
    """RMSNorm(x)·w·silu(z) over the last axis (the gated DeltaNet output norm)."""
    return _norm("gated", x, eps, w, z, device, **spec)
