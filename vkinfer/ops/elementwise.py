"""ops.elementwise: elementwise ops, gated units, softmax and f16 conversion on the GPU, numpy in
and out (shaders/elementwise.comp, shaders/softmax.comp). Arrays are treated as [rows, n] over
their last axis."""

from __future__ import annotations

import numpy as np

from ..pipelines import elementwise as k
from ..pipelines import softmax as ks
from ._base import op_session, run

__all__ = [
    "add",
    "geglu",
    "gelu",
    "mul",
    "scale",
    "sigmoid_mul",
    "silu",
    "softcap",
    "softmax",
    "swiglu",
    "to_f16",
    "to_f32",
]


def _rows_n(shape) -> tuple[int, int]:
    n = shape[-1] if len(shape) else 1
    return (int(np.prod(shape)) // n if n else 0), n


def _run(op, a, b=None, b_view=None, out_shape=None, a_view=None, p0=0.0, device=None, **spec):
    a = np.ascontiguousarray(a, np.float16 if op == "to_f32" else np.float32)
    out_shape = a.shape if out_shape is None else out_shape
    rows, n = _rows_n(out_shape)
    out_dtype = np.float16 if op == "to_f16" else np.float32
    with op_session(device) as (dev, t):
        ba = t.upload(a)
        bb = t.upload(np.ascontiguousarray(b, np.float32)) if b is not None else None
        by = t.empty(rows * n * np.dtype(out_dtype).itemsize)
        kp = k.KERNEL.pipeline(dev, op, shape_class=k.shape_class(n, rows), **spec)
        if rows * n:
            run(dev, lambda rec: k.dispatch(rec, kp, ba, by, n, rows, b=bb, a_view=a_view,
                                            b_view=b_view, p0=p0))
        return by.read(out_dtype, out_shape)


def _binary(op, a, b, device, spec):
    """b has a's shape, or is a row vector [n] (broadcast over rows), or a scalar."""
    a = np.asarray(a, np.float32)
    b = np.asarray(b, np.float32)
    _rows, n = _rows_n(a.shape)
    if b.shape == a.shape:
        bv = (0, n, 1)
    elif b.size == 1:
        bv = (0, 0, 0)
    elif b.ndim == 1 and b.shape[0] == n:
        bv = (0, 0, 1)
    elif b.shape == a.shape[:-1] + (1,):
        bv = (0, 1, 0)  # one value per row
    else:
        raise ValueError(f"{op}: cannot broadcast {b.shape} to {a.shape}")
    return _run(op, a, b.reshape(-1), bv, device=device, **spec)


def add(a, b, device=None, **spec):
    """a + b; b of a's shape, a row vector [n] (bias), [..., 1] (per row) or a scalar."""
    return _binary("add", a, b, device, spec)


def mul(a, b, device=None, **spec):
    """a · b; b of a's shape, a row vector [n], [..., 1] (per row) or a scalar."""
    return _binary("mul", a, b, device, spec)


def scale(x, s, device=None, **spec):
    """x · s. A Python number goes in as a push constant; an array of one element is read from
    a device buffer (how a scale computed on the GPU is applied)."""
    if isinstance(s, (int, float, np.floating)) and not isinstance(s, np.ndarray):
        return _run("scale", x, p0=float(s), device=device, **spec)
    return _binary("mul", x, np.asarray(s, np.float32).reshape(1), device, spec)


def silu(x, device=None, **spec):
    """x · sigmoid(x)."""
    return _run("silu", x, device=device, **spec)


def gelu(x, device=None, **spec):
    """GELU, tanh approximation (as ggml_gelu)."""
    return _run("gelu", x, device=device, **spec)


def _glu(op, a, b, device, spec):
    a = np.ascontiguousarray(a, np.float32)
    if b is None:  # a is [..., 2n]: gate = first half, up = second half, read in place
        if a.shape[-1] % 2:
            raise ValueError(f"{op}: the last axis of a fused [.., 2n] input must be even")
        n2 = a.shape[-1]
        out_shape = a.shape[:-1] + (n2 // 2,)
        return _run(op, a, a, (n2 // 2, n2, 1), out_shape, a_view=(0, n2), device=device,
                    **spec)
    b = np.asarray(b, np.float32)
    if b.shape != a.shape:
        raise ValueError(f"{op}: a {a.shape} and b {b.shape} differ")
    return _run(op, a, b, device=device, **spec)


def swiglu(a, b=None, device=None, **spec):
    """silu(a) · b. With b None, a is [..., 2n] holding [gate | up] and the result is [..., n]."""
    return _glu("swiglu", a, b, device, spec)


def geglu(a, b=None, device=None, **spec):
    """gelu(a) · b. With b None, a is [..., 2n] holding [gate | up] and the result is [..., n]."""
    return _glu("geglu", a, b, device, spec)


def sigmoid_mul(o, g, device=None, **spec):
    """o · sigmoid(g), elementwise (the gated-attention output gate); g has o's shape."""
    return _binary("sigmoid_mul", o, g, device, spec)


def softcap(x, cap: float, device=None, **spec):
    """cap · tanh(x / cap) (logit soft-capping)."""
    return _run("softcap", x, p0=float(cap), device=device, **spec)


def to_f16(x, device=None, **spec):
    """float32 → float16 (round to nearest even on the devices we test)."""
    return _run("to_f16", x, device=device, **spec)


def to_f32(x, device=None, **spec):
    """float16 → float32 (exact)."""
    return _run("to_f32", x, device=device, **spec)


def softmax(x, scale: float = 1.0, device=None, **spec):
    """softmax(scale · x) over the last axis, numerically stable; all -inf rows give zeros."""
    x = np.ascontiguousarray(x, np.float32)
    rows, n = _rows_n(x.shape)
    with op_session(device) as (dev, t):
        bx, by = t.upload(x), t.empty(x.nbytes)
        kp = ks.KERNEL.pipeline(dev, shape_class=ks.shape_class(n, rows), **spec)
        if rows * n:
            run(dev, lambda rec: ks.dispatch(rec, kp, bx, by, n, rows, scale))
        return by.read(np.float32, x.shape)
