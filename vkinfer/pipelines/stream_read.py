"""stream_read: the bandwidth probe behind every roofline figure (tools/bench_device.py)."""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, require


def _contract(spec, info):
    wg = spec["WG"]
    require(wg & (wg - 1) == 0 and 0 < wg <= info.max_workgroup_invocations,
            f"stream_read: WG={wg} must be a power of two <= {info.max_workgroup_invocations}")
    require(1 <= spec["UNROLL"] <= 16, "stream_read: UNROLL must be 1..16")


KERNEL = Kernel(
    stem="stream_read",
    bindings=(Binding("src", "r", "uvec4[n]"), Binding("dst", "w", "uvec4[groups]")),
    push=np.dtype([("n", "<u4")]),
    spec=(SpecConst("WG", 0, 256, choices=(64, 128, 256, 512, 1024)),
          SpecConst("UNROLL", 1, 4, choices=(1, 2, 4, 8))),
    contract=_contract,
)


def dispatch(rec, kp, src, dst, n_vec4: int, groups: int):
    kp.record(rec, [src, dst], (groups,), n=n_vec4)


def reference(src_u32: np.ndarray, groups: int, wg: int) -> np.ndarray:
    """XOR of the uvec4s each workgroup reads (grid-strided), as uint32 [groups, 4]."""
    v = np.asarray(src_u32, np.uint32).reshape(-1, 4)
    n = v.shape[0]
    stride = groups * wg
    out = np.zeros((groups, 4), np.uint32)
    idx = np.arange(n)
    owner = (idx % stride) // wg
    for g in range(groups):
        sel = v[owner == g]
        if sel.size:
            out[g] = np.bitwise_xor.reduce(sel, axis=0)
    return out
