"""elementwise: one shader, one `#define OP` per variant, over [rows, n] views with per-tensor
offsets and row strides (and a column stride for b, for broadcasting). Formulas as ggml:
silu x·σ(x); gelu the tanh approximation; swiglu silu(a)·b and geglu gelu(a)·b (ggml_swiglu /
ggml_geglu, gate first); sigmoid_mul o·σ(g) (Qwen3.5 attention output gate,
reference/llamacpp-facts.md §2.3); softcap cap·tanh(x/cap); to_f16 / to_f32 conversions.
"""

from __future__ import annotations

import math

import numpy as np

from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require

MAX_GROUPS_X = 65535

UNARY = ("scale", "silu", "gelu", "softcap", "copy", "to_f16", "to_f32")
BINARY = ("add", "mul", "swiglu", "geglu", "sigmoid_mul")
_OPS = {"add": "OP_ADD", "mul": "OP_MUL", "scale": "OP_SCALE", "silu": "OP_SILU",
        "gelu": "OP_GELU", "swiglu": "OP_SWIGLU", "geglu": "OP_GEGLU",
        "sigmoid_mul": "OP_SIGMOID_MUL", "softcap": "OP_SOFTCAP", "copy": "OP_COPY"}


def _variants() -> dict:
    v = {name: Variant({"OP": op}) for name, op in _OPS.items()}
    v["default"] = v["copy"]
    v["to_f16"] = Variant({"OP": "OP_COPY", "Y_F16": ""}, requires=("storage16",))
    v["to_f32"] = Variant({"OP": "OP_COPY", "A_F16": ""}, requires=("storage16",))
    return v


def _contract(spec, info):
    wg, ept = spec["WG"], spec["EPT"]
    require(0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"elementwise: WG={wg} exceeds the device's workgroup limits")
    require(1 <= ept <= 16, f"elementwise: EPT={ept} must be in 1..16")


KERNEL = Kernel(
    stem="elementwise",
    bindings=(Binding("a", "r", "float[rows, n] view (float16 for to_f32)"),
              Binding("b", "r", "float view, broadcastable (bind a for unary ops)"),
              Binding("y", "w", "float[rows, n] view (float16 for to_f16)")),
    push=np.dtype([(f, "<u4") for f in (
        "n", "rows", "a_off", "a_rs", "b_off", "b_rs", "b_cs", "y_off", "y_rs")]
        + [("p0", "<f4"), ("p1", "<f4")]),
    spec=(SpecConst("WG", 0, 256, choices=(64, 128, 256, 512)),
          SpecConst("EPT", 1, 4, choices=(1, 2, 4, 8))),
    variants=_variants(),
    contract=_contract,
    doc="add, mul, scale, silu, gelu, swiglu, geglu, sigmoid_mul, softcap, copy, f16<->f32",
)


def shape_class(n: int, rows: int) -> str:
    return f"e{1 << max(0, math.ceil(math.log2(max(1, n * rows))))}"


def grid(total: int, per_group: int) -> tuple[int, int]:
    """Workgroups for `total` elements, folded into 2-D to stay under 65535 per dimension."""
    g = ceil_div(total, per_group)
    gx = min(g, MAX_GROUPS_X)
    return (gx, ceil_div(g, gx) if g else 0)


def dispatch(rec, kp, a, y, n: int, rows: int = 1, *, b=None, a_view=None, b_view=None,
             y_view=None, p0: float = 0.0, p1: float = 0.0):
    """Record y = op(a[, b]) over [rows, n]. a_view / y_view are (offset, row stride) and b_view
    (offset, row stride, column stride), in elements; None means contiguous [rows, n].
    scale takes the factor in p0; softcap takes the cap in p0 (1/cap is filled in)."""
    var = kp.variant
    binary = var in BINARY
    require((b is not None) == binary, f"elementwise/{var}: b given={b is not None}")
    require(rows * n < 2**32, "elementwise: rows·n must be < 2^32")
    av, yv = a_view or (0, n), y_view or (0, n)
    bv = b_view or (0, n, 1)
    if var == "softcap":
        require(p0 != 0.0, "elementwise/softcap: cap must be non-zero")
        p1 = 1.0 / p0
    groups = grid(rows * n, kp.spec["WG"] * kp.spec["EPT"])
    kp.record(rec, [a, b if b is not None else a, y], groups, n=n, rows=rows, a_off=av[0], a_rs=av[1], b_off=bv[0], b_rs=bv[1], b_cs=bv[2],
              y_off=yv[0], y_rs=yv[1], p0=p0, p1=p1)


def _silu(x):
    return x * 0.5 * (1.0 + np.tanh(0.5 * x))  # x·σ(x) without exp overflow


def _gelu(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * x * (1.0 + 0.044715 * x * x)))


def reference(op: str, a, b=None, p0: float = 0.0) -> np.ndarray:
    """Numpy oracle (float64 inside, float32 or float16 out); b broadcasts like numpy."""
    if op == "to_f16":
        return np.asarray(a, np.float32).astype(np.float16)
    if op == "to_f32":
        return np.asarray(a, np.float16).astype(np.float32)
    x = np.asarray(a, np.float32).astype(np.float64)
    bb = None if b is None else np.asarray(b, np.float32).astype(np.float64)
    f = {
        "add": lambda: x + bb, "mul": lambda: x * bb, "scale": lambda: x * np.float32(p0),
        "silu": lambda: _silu(x), "gelu": lambda: _gelu(x), "swiglu": lambda: _silu(x) * bb,
        "geglu": lambda: _gelu(x) * bb, "sigmoid_mul": lambda: x * 0.5 * (1 + np.tanh(0.5 * bb)),
        "softcap": lambda: p0 * np.tanh(x / p0), "copy": lambda: x,
    }[op]
    return f().astype(np.float32)
