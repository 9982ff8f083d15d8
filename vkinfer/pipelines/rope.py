"""rope: rotary position embedding (RoFormer, arXiv:2104.09864) with NeoX or normal (GPT-J)
pairing and partial rotary, over [tokens, heads, head_dim] views (reference/llamacpp-facts.md
§2.5 and pitfall 7): θ_i = pos · base^(-2i/n_rot) / linear_scale, denominator n_rot.

Numerics: like llama.cpp and HF, the angle is f32(pos) · f32(freq) rounded once to f32. The
frequencies are rounded to f32 from float64 on the host (`freq_table`), where llama.cpp's shader
computes pow(theta_scale, i) on the device (a few ulp apart). cos/sin of that f32 angle are then
evaluated accurately (exact range reduction in the shader; float64 in `reference`), where
llama.cpp's GPU path calls the builtins. Their error is only bounded on [-π, π]; GPUs that reduce
the argument with one f32 multiply (AMD's v_sin_f32 takes revolutions) are off by about
ulp(θ/2π) turns, ~3e-3 rad at θ = 1e5 (an estimate; lavapipe's builtins happen to be accurate,
so our lavapipe tests cannot show the difference, only that the reduction is right).
"""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require


def _contract(spec, info):
    wg = spec["WG"]
    require(0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"rope: WG={wg} exceeds the device's workgroup limits")


KERNEL = Kernel(
    stem="rope",
    bindings=(Binding("x", "r", "float[tokens, heads, head_dim] view"),
              Binding("pos", "r", "int32[tokens] (per step)"),
              Binding("freq", "r", "float[n_rot/2]"),
              Binding("y", "w", "float[tokens, heads, head_dim] view (may be x: in place)")),
    push=np.dtype([(f, "<u4") for f in (
        "head_dim", "n_rot", "n_heads", "pos_off", "x_off", "x_ts", "x_hs", "y_off", "y_ts",
        "y_hs", "copy_pass")]),
    spec=(SpecConst("WG", 0, 64, choices=(32, 64, 128, 256)),),
    variants={"default": Variant(), "neox": Variant(), "normal": Variant({"ROPE_NORMAL": ""})},
    contract=_contract,
    doc="rotary position embedding, NeoX or normal pairing, partial rotary",
)


def freq_table(n_rot: int, base: float = 10000.0, scale: float = 1.0) -> np.ndarray:
    """float32[n_rot/2]: base^(-2i/n_rot) / scale, computed in float64 and rounded once."""
    i = np.arange(n_rot // 2, dtype=np.float64)
    return (np.power(float(base), -2.0 * i / n_rot) / float(scale)).astype(np.float32)


def shape_class(head_dim: int, n_heads: int) -> str:
    return f"hd{head_dim}-h{n_heads}"


def dispatch(rec, kp, x, pos, freq, y, tokens: int, n_heads: int, head_dim: int, n_rot: int, *,
             x_view=None, y_view=None, pos_off: int = 0, copy_pass: bool | None = None):
    """Record RoPE on `tokens × n_heads` heads. Views are (offset, token stride, head stride) in
    elements, None meaning contiguous [tokens, n_heads, head_dim]. Pass y = x with the same view
    for in place; pass-through channels are copied unless in place (copy_pass overrides)."""
    require(n_rot % 2 == 0 and head_dim % 2 == 0 and 0 < n_rot <= head_dim,
            f"rope: n_rot={n_rot}, head_dim={head_dim}: both even, n_rot <= head_dim")
    dv = (0, n_heads * head_dim, head_dim)
    xv, yv = x_view or dv, y_view or dv
    if copy_pass is None:
        copy_pass = not (y is x and tuple(xv) == tuple(yv))
    items = n_heads * head_dim // 2
    kp.record(rec, [x, pos, freq, y], (ceil_div(items, kp.spec["WG"]), tokens),
              head_dim=head_dim, n_rot=n_rot, n_heads=n_heads, pos_off=pos_off,
              x_off=xv[0], x_ts=xv[1], x_hs=xv[2], y_off=yv[0], y_ts=yv[1], y_hs=yv[2],
              copy_pass=int(bool(copy_pass)))


def angles(positions, n_rot: int, base: float = 10000.0, scale: float = 1.0) -> np.ndarray:
    """float32[tokens, n_rot/2]: f32(pos)·f32(freq), one f32 rounding, as the shader does."""
    pos = np.asarray(positions, np.int32).astype(np.float32)
    return pos[:, None] * freq_table(n_rot, base, scale)[None, :]


def reference(x, positions, n_rot: int, base: float = 10000.0, scale: float = 1.0,
              neox: bool = True) -> np.ndarray:
    """Numpy oracle for x [tokens, heads, head_dim]: exact cos/sin (float64) of the f32 angles."""
    x = np.asarray(x, np.float32)
    th = angles(positions, n_rot, base, scale).astype(np.float64)[:, None, :]  # [T, 1, n_rot/2]
    c, s = np.cos(th), np.sin(th)
    out = x.astype(np.float64).copy()
    half = n_rot // 2
    if neox:
        i0, i1 = np.arange(half), np.arange(half) + half
    else:
        i0, i1 = 2 * np.arange(half), 2 * np.arange(half) + 1
    x0, x1 = out[..., i0].copy(), out[..., i1].copy()
    out[..., i0] = x0 * c - x1 * s
    out[..., i1] = x0 * s + x1 * c
    return out.astype(np.float32)
