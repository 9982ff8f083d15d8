"""Gated RMSNorm of the Gated DeltaNet output (shaders/gated_rms_norm.comp):
y = rms_norm(o over S_v per head)·w ⊙ silu(z), llama.cpp `build_norm_gated`
(shared/reference/llamacpp-facts.md §2.2 item 9; w is `ssm_norm`, shared by all heads)."""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, require


def _contract(spec, info):
    wg = spec["WG"]
    require(0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"gated_rms_norm: WG={wg} exceeds the device's workgroup limits")
    require(wg & (wg - 1) == 0, f"gated_rms_norm: WG={wg} must be a power of two")
    require(spec["S_V"] > 0, "gated_rms_norm: S_V must be positive")


KERNEL = Kernel(
    stem="gated_rms_norm",
    bindings=(
        Binding("o", "r", "float[rows, H, S_V]"),
        Binding("z", "r", "float[rows, z_stride] ([H, S_V] at z_off)"),
        Binding("w", "r", "float[S_V]"),
        Binding("y", "w", "float[rows, H, S_V]"),
    ),
    push=np.dtype([("H", "<u4"), ("z_off", "<u4"), ("z_stride", "<u4"), ("eps", "<f4")]),
    spec=(SpecConst("WG", 0, 64, choices=(32, 64, 128, 256)),
          SpecConst("S_V", 1, 128, choices=(16, 32, 64, 128, 256))),
    contract=_contract,
)


def dispatch(rec, kp, o, z, w, y, *, rows: int, H: int, eps: float, z_off: int = 0,
             z_stride: int | None = None):
    kp.record(rec, [o, z, w, y], (H, rows), H=H, z_off=z_off,
              z_stride=H * kp.spec["S_V"] if z_stride is None else z_stride, eps=eps)


def reference(o, z, w, eps: float):
    o, z, w = (np.asarray(a, np.float64) for a in (o, z, w))
    r = 1.0 / np.sqrt(np.mean(o * o, axis=-1, keepdims=True) + eps)
    return o * r * w * (z / (1.0 + np.exp(-z)))
