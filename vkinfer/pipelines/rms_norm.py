"""rms_norm: RMSNorm with fused weight, fused residual add and the gated (silu) form; per-head
rows for q/k norms; L2 norm. Formulas follow llama.cpp (`ggml_rms_norm` then `ggml_mul`; the
l2norm of `src/models/models.h`, x / sqrt(Σx² + eps)); see reference/llamacpp-facts.md §2.1-2.3.

A row is (token, head) of a [tokens, heads, n] view with element offsets and strides per tensor,
so a kernel can read a view of a fused tensor (e.g. the q half of Qfull, row stride 2·hd).
"""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, Variant, require


def _contract(spec, info):
    wg = spec["WG"]
    require(wg > 0 and wg & (wg - 1) == 0, f"rms_norm: WG={wg} must be a power of two")
    require(wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"rms_norm: WG={wg} exceeds the device's workgroup limits")
    require(wg * 4 <= info.max_compute_shared_memory, "rms_norm: shared memory")


PUSH = np.dtype([(f, "<u4") for f in (
    "n", "w_off", "x_off", "x_ts", "x_hs", "r_off", "r_ts", "r_hs", "s_off", "s_ts", "s_hs",
    "y_off", "y_ts", "y_hs")] + [("eps", "<f4")])

KERNEL = Kernel(
    stem="rms_norm",
    bindings=(Binding("x", "r", "float[tokens, heads, n] view"),
              Binding("r", "r", "float view: residual or gate (bind x when unused)"),
              Binding("w", "r", "float[n] (bind x when unused)"),
              Binding("s", "w", "float view: x + r (RESIDUAL; bind y when unused)"),
              Binding("y", "w", "float[tokens, heads, n] view")),
    push=PUSH,
    spec=(SpecConst("WG", 0, 128, choices=(32, 64, 128, 256, 512, 1024),
                    doc="invocations per row"),),
    variants={
        "default": Variant(),
        "noweight": Variant({"NO_WEIGHT": ""}),
        "residual": Variant({"RESIDUAL": ""}),
        "residual_noweight": Variant({"RESIDUAL": "", "NO_WEIGHT": ""}),
        "gated": Variant({"GATE_SILU": ""}),
        "l2": Variant({"L2": ""}),
    },
    contract=_contract,
    doc="RMSNorm (+weight, +residual, +silu gate) and L2 norm over rows of n",
)

USES_R = {"residual", "residual_noweight", "gated"}
USES_W = {"default", "residual", "gated"}
USES_S = {"residual", "residual_noweight"}


def shape_class(n: int, rows: int = 1) -> str:
    return f"n{n}"


def view(off: int = 0, ts: int | None = None, hs: int | None = None, *, n: int, heads: int = 1):
    """(off, token stride, head stride) of a tensor; contiguous [tokens, heads, n] by default."""
    hs = n if hs is None else hs
    ts = heads * hs if ts is None else ts
    return (off, ts, hs)


def dispatch(rec, kp, x, y, n: int, eps: float, tokens: int, heads: int = 1, *, w=None, r=None,
             s=None, x_view=None, y_view=None, r_view=None, s_view=None, w_off: int = 0):
    """Record the norm of `tokens × heads` rows of n elements with pipeline `kp` (its variant
    decides what w, r and s mean). Views are (offset, token stride, head stride) in elements;
    None means contiguous [tokens, heads, n]."""
    var = kp.variant
    require(n > 0, "rms_norm: n must be positive")
    require((w is not None) == (var in USES_W), f"rms_norm/{var}: weight given={w is not None}")
    require((r is not None) == (var in USES_R), f"rms_norm/{var}: r given={r is not None}")
    require((s is not None) == (var in USES_S), f"rms_norm/{var}: s given={s is not None}")
    dv = view(n=n, heads=heads)
    xv, yv = x_view or dv, y_view or dv
    rv, sv = r_view or dv, s_view or dv
    push = {"n": n, "w_off": w_off, "eps": eps}
    for name, v in (("x", xv), ("r", rv), ("s", sv), ("y", yv)):
        push[f"{name}_off"], push[f"{name}_ts"], push[f"{name}_hs"] = v
    kp.record(rec, [x, r if r is not None else x, w if w is not None else x,
                    s if s is not None else y, y], (heads, tokens), **push)


def reference(x, w=None, eps: float = 1e-6, r=None, mode: str = "rms", gate=None):
    """Numpy oracle over the last axis (float64 inside). mode 'rms' or 'l2'. With r: returns
    (y, x + r) where the sum is rounded to float32 first, as the kernel stores and reuses it."""
    x = np.asarray(x, np.float32)
    s = None
    if r is not None:
        s = (x + np.asarray(r, np.float32)).astype(np.float32)
        x = s
    xd = x.astype(np.float64)
    ss = (xd * xd).sum(-1, keepdims=True)
    if mode == "l2":
        y = xd / np.sqrt(ss + eps)
    else:
        y = xd / np.sqrt(ss / x.shape[-1] + eps)
        if w is not None:
            y = y * np.asarray(w, np.float64)
    if gate is not None:
        g = np.asarray(gate, np.float64)
        y = y * g * 0.5 * (1.0 + np.tanh(0.5 * g))  # g·sigmoid(g) without overflow
    y = y.astype(np.float32)
    return (y, s) if s is not None else y
