"""axpy: y = alpha[k]·x (+ y). The scale is read from a device buffer so recorded graphs can
change it per step (R3)."""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, ceil_div, require


def _contract(spec, info):
    wg = spec["WG"]
    require(0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"axpy: WG={wg} exceeds the device's workgroup limits")


KERNEL = Kernel(
    stem="axpy",
    bindings=(Binding("x", "r", "float[n]"), Binding("alpha", "r", "float[]"),
              Binding("y", "b", "float[n]")),
    push=np.dtype([("n", "<u4"), ("alpha_index", "<u4")]),
    spec=(SpecConst("WG", 0, 64, choices=(32, 64, 128, 256, 512)),
          SpecConst("ACCUMULATE", 1, True)),
    contract=_contract,
)


def shape_class(n: int) -> str:
    """Tuning class of an axpy over n elements: n rounded up to a power of two."""
    return f"n{1 << max(0, int(n) - 1).bit_length()}"


def dispatch(rec, kp, x, alpha, y, n: int, alpha_index: int = 0):
    """Record y (+)= alpha[alpha_index]·x over n elements with pipeline `kp`."""
    kp.record(rec, [x, alpha, y], (ceil_div(n, kp.spec["WG"]),), n=n, alpha_index=alpha_index)


def reference(x, alpha, y, alpha_index=0, accumulate=True):
    x = np.asarray(x, np.float32)
    v = np.float32(alpha[alpha_index]) * x
    return (np.asarray(y, np.float32) + v) if accumulate else v
