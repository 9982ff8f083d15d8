"""ops.gdn: the Gated DeltaNet layer's kernels on the GPU, numpy in and out.

gated_delta_net (shaders/gated_delta_net.comp), conv1d (shaders/conv1d.comp) and gated_rms_norm
(the "gated" variant of shaders/rms_norm.comp); formulas in shared/reference/llamacpp-facts.md §2.2. Snapshot
planes follow vkinfer/pipelines/gated_delta_net.py: snapshot i is the state after token i.
"""

from __future__ import annotations

import numpy as np

from ..pipelines import conv1d as kc
from ..pipelines import gated_delta_net as kg
from ._base import op_session, run
from .norms import rms_norm_gated

__all__ = ["conv1d", "gated_delta_net", "gated_rms_norm"]


def _f32(a) -> np.ndarray:
    return np.ascontiguousarray(a, np.float32)


def gated_delta_net(q, k, v, g, beta, state, layout: str = "qwen35", snapshots: int = 0,
                    variant: str | None = None, eps: float = 1e-6, scale: float | None = None,
                    device=None, **spec):
    """Run T tokens of the GDN recurrence on the GPU.

    q, k [T, H_k, S]; v [T, H_v, S]; g, beta [T, H_v]; state [H_v, S(j), S(i)] — or each with a
    leading n_seq axis. layout: "qwen35" (value head h uses key head h % H_k) or "qwen3next"
    (h // (H_v/H_k)). snapshots: K snapshot planes (R4). variant/spec: force a reduction variant
    and WG / LANES. Returns (out [.., T, H_v, S], new_state, snaps [min(T, K), .., H_v, S, S])
    where snaps[i] is the state after token i."""
    batched = np.ndim(q) == 4
    q, k, v, g, beta, state = (_f32(a) if batched else _f32(a)[None]
                               for a in (q, k, v, g, beta, state))
    n_seq, T, H_k, S = q.shape
    H = v.shape[2]
    assert k.shape == q.shape and v.shape == (n_seq, T, H, S), (q.shape, k.shape, v.shape)
    assert g.shape == beta.shape == (n_seq, T, H) and state.shape == (n_seq, H, S, S)
    with op_session(device) as (dev, t):
        name, defaults = kg.choose(dev.info, S, variant, n_heads=H)
        kp = kg.KERNEL.pipeline(dev, name, **{**defaults, **spec})
        plane = kg.plane_elems(n_seq, H, S)
        bst = t.empty(4 * plane * (1 + snapshots))
        bst.write(state)
        bq, bk, bv, bg, bb = (t.upload(a) for a in (q, k, v, g, beta))
        bo = t.empty(4 * n_seq * T * H * S)
        bc = t.upload(kg.ctl_words(T, np.zeros(n_seq)))
        run(dev, lambda rec: kg.dispatch(
            rec, kp, bq, bk, bv, bg, bb, bst, bo, bc, n_seq=n_seq, H=H, H_k=H_k, seq_rows=T,
            qk_stride=H_k * S, v_stride=H * S, n_snap=snapshots, head_map=layout, eps=eps,
            scale=scale))
        out = bo.read(np.float32, (n_seq, T, H, S))
        planes = bst.read(np.float32, (1 + snapshots, n_seq, H, S, S))
    new_state = planes[kg.final_plane(T, snapshots)]
    snaps = planes[1:1 + min(T, snapshots)]
    if not batched:
        out, new_state, snaps = out[0], new_state[0], snaps[:, 0]
    return out, new_state, snaps


def conv1d(x, w, state, snapshots: int = 0, device=None, **spec):
    """Causal depthwise conv with fused SiLU over T tokens, rolling state updated.

    x [T, C]; w [C, d_conv] (index 0 multiplies the oldest sample); state [d_conv-1, C] (oldest
    first) — x and state may carry a leading n_seq axis. Returns (y [.., T, C], new_state,
    snaps [min(T, K), .., d_conv-1, C]) where snaps[i] is the state after token i."""
    batched = np.ndim(x) == 3
    x, state = (_f32(a) if batched else _f32(a)[None] for a in (x, state))
    w = _f32(w)
    n_seq, T, C = x.shape
    D = w.shape[1]
    assert w.shape == (C, D) and state.shape == (n_seq, D - 1, C), (w.shape, state.shape)
    with op_session(device) as (dev, t):
        kp = kc.KERNEL.pipeline(dev, shape_class=kc.shape_class(C, T), **{"D_CONV": D, **spec})
        plane = n_seq * (D - 1) * C
        bst = t.empty(4 * plane * (1 + snapshots))
        bst.write(state)
        bx, bw = t.upload(x), t.upload(w)
        by = t.empty(4 * n_seq * T * C)
        bc = t.upload(kg.ctl_words(T, np.zeros(n_seq)))
        run(dev, lambda rec: kc.dispatch(rec, kp, bx, bw, bst, by, bc, n_seq=n_seq, C=C,
                                         seq_rows=T, x_stride=C, n_snap=snapshots))
        y = by.read(np.float32, (n_seq, T, C))
        planes = bst.read(np.float32, (1 + snapshots, n_seq, D - 1, C))
    new_state = planes[kg.final_plane(T, snapshots)]
    snaps = planes[1:1 + min(T, snapshots)]
    if not batched:
        y, new_state, snaps = y[0], new_state[0], snaps[:, 0]
    return y, new_state, snaps


def gated_rms_norm(o, z, w, eps: float = 1e-6, device=None, **spec) -> np.ndarray:
    """rms_norm(o over the last axis)·w ⊙ silu(z); o, z [..., H, S], w [S] shared by the heads."""
    o, z, w = _f32(o), _f32(z), _f32(w)
    if o.shape != z.shape or w.shape != o.shape[-1:]:
        raise ValueError(f"gated_rms_norm: o {o.shape} and z {z.shape} must match and w {w.shape}"
                         f" must be [{o.shape[-1]}]")
    return rms_norm_gated(o, w, z, eps, device=device, **spec)
