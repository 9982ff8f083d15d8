"""softmax over rows, numerically stable (max subtracted), with an optional input scale:
y = softmax(scale·x). Used for MoE routing (reference/llamacpp-facts.md §2.6, pitfall 8) and
sampling. A row of all -inf gives zeros."""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, ceil_div, require

MAX_GROUPS_X = 65535


def _contract(spec, info):
    wg = spec["WG"]
    require(wg > 0 and wg & (wg - 1) == 0, f"softmax: WG={wg} must be a power of two")
    require(wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"softmax: WG={wg} exceeds the device's workgroup limits")


KERNEL = Kernel(
    stem="softmax",
    bindings=(Binding("x", "r", "float[rows, n] view"),
              Binding("y", "w", "float[rows, n] view (may be x: in place)")),
    push=np.dtype([(f, "<u4") for f in ("n", "rows", "x_off", "x_rs", "y_off", "y_rs")]
                  + [("scale", "<f4")]),
    spec=(SpecConst("WG", 0, 128, choices=(32, 64, 128, 256, 512, 1024)),),
    contract=_contract,
    doc="row softmax with input scale",
)


def shape_class(n: int, rows: int = 1) -> str:
    return f"n{n}"


def dispatch(rec, kp, x, y, n: int, rows: int, scale: float = 1.0, *, x_view=None, y_view=None):
    """Record y = softmax(scale·x) over `rows` rows of n; views are (offset, row stride)."""
    require(n > 0, "softmax: n must be positive")
    xv, yv = x_view or (0, n), y_view or (0, n)
    gx = min(rows, MAX_GROUPS_X)
    kp.record(rec, [x, y], (gx, ceil_div(rows, gx) if rows else 0), n=n, rows=rows,
              x_off=xv[0], x_rs=xv[1], y_off=yv[0], y_rs=yv[1], scale=scale)


def reference(x, scale: float = 1.0) -> np.ndarray:
    """Numpy oracle over the last axis (float64 inside); all -inf rows give zeros."""
    z = np.asarray(x, np.float32).astype(np.float64) * np.float32(scale)
    m = z.max(-1, keepdims=True)
    m = np.where(np.isneginf(m), 0.0, m)
    e = np.exp(z - m)
    s = e.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(s > 0, e / np.where(s > 0, s, 1.0), 0.0).astype(np.float32)
