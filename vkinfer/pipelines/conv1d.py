"""Causal depthwise conv1d with fused SiLU and a rolling state (shaders/conv1d.comp), the short
convolution of the Gated DeltaNet layer.

Follows ggml's `ggml_ssm_conv` as used by llama.cpp's `build_conv_state`
(shared/reference/llamacpp-facts.md §2.2 item 4): out[t, c] = Σ_m w[c, m]·in[t − (d−1) + m, c],
weight index 0 multiplies the oldest sample, no bias, then SiLU; the state is the last d−1 raw
inputs. Our state layout is [d−1 (time, oldest first), C] per sequence — channel-contiguous, the
transpose of ggml's (time-contiguous) one, so neighbouring invocations read neighbouring words.
Snapshot planes and the control block are those of gated_delta_net (see that module).
"""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, ceil_div, require


def _contract(spec, info):
    wg, d, tb = spec["WG"], spec["D_CONV"], spec["TB"]
    require(0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"conv1d: WG={wg} exceeds the device's workgroup limits")
    require(2 <= d <= 8, f"conv1d: D_CONV={d} must be in 2..8")
    require(tb >= d - 1, f"conv1d: TB={tb} must be >= D_CONV-1={d - 1} (only token block 0 "
            "may read the old state)")


KERNEL = Kernel(
    stem="conv1d",
    bindings=(
        Binding("x", "r", "float[rows, x_stride] (channels at x_off)"),
        Binding("w", "r", "float[C, D_CONV]"),
        Binding("state", "b", "float[1 + n_snap, n_seq, D_CONV-1, C]"),
        Binding("y", "w", "float[rows, C]"),
        Binding("ctl", "r", "uint[ctl_off + 1 + n_seq]: n_tokens, src_plane[n_seq]"),
    ),
    push=np.dtype([("C", "<u4"), ("seq_rows", "<u4"), ("x_off", "<u4"), ("x_stride", "<u4"),
                   ("n_snap", "<u4"), ("plane", "<u4"), ("ctl_off", "<u4")]),
    spec=(SpecConst("WG", 0, 64, choices=(32, 64, 128, 256)),
          SpecConst("D_CONV", 1, 4),
          SpecConst("TB", 2, 8, choices=(4, 8, 16, 32, 64))),
    contract=_contract,
)


def plane_elems(n_seq: int, d_conv: int, C: int) -> int:
    return n_seq * (d_conv - 1) * C


def shape_class(channels: int, tokens: int) -> str:
    """Tuning class of a conv1d step: channels and the token bucket (1 decode, 8 verify,
    512 prefill)."""
    t = 1 if tokens <= 1 else 8 if tokens <= 8 else 512
    return f"c{channels}-t{t}"


def dispatch(rec, kp, x, w, state, y, ctl, *, n_seq: int, C: int, seq_rows: int, x_stride: int,
             x_off: int = 0, n_snap: int = 0, ctl_off: int = 0, rows: int | None = None):
    """Record one conv step for n_seq sequences; `rows` (default seq_rows) bounds the token
    blocks dispatched — the token count itself comes from ctl."""
    wg, d, tb = kp.spec["WG"], kp.spec["D_CONV"], kp.spec["TB"]
    require(x_stride >= C or x_stride == 0, f"conv1d: x_stride={x_stride} < C={C}")
    kp.record(rec, [x, w, state, y, ctl],
              (ceil_div(C, wg), ceil_div(rows or seq_rows, tb), n_seq),
              C=C, seq_rows=seq_rows, x_off=x_off, x_stride=x_stride, n_snap=n_snap,
              plane=plane_elems(n_seq, d, C), ctl_off=ctl_off)


def reference(x, w, state, n_snap: int = 0):
    """float64 oracle. x [n_seq, T, C]; w [C, D]; state [n_seq, D-1, C] (oldest first).
    Returns (y [n_seq, T, C], new state, snapshots [min(T, n_snap), n_seq, D-1, C])."""
    x, w, state = (np.asarray(a, np.float64) for a in (x, w, state))
    n_seq, T, C = x.shape
    D = w.shape[1]
    inp = np.concatenate([state, x], axis=1)  # [n_seq, D-1+T, C]
    y = np.zeros((n_seq, T, C))
    for t in range(T):
        acc = sum(w[:, m] * inp[:, t + m] for m in range(D))
        y[:, t] = acc / (1.0 + np.exp(-acc))
    snaps = np.stack([inp[:, t + 1:t + D] for t in range(min(T, n_snap))]) if n_snap and T \
        else np.zeros((0, n_seq, D - 1, C))
    return y, inp[:, T:T + D - 1].copy(), snaps
