"""ops.moe: MoE routing and expert matmuls on the GPU, numpy in and out (llamacpp-facts §2.6).

`moe_route` turns router logits into (ids, weights); `shared_expert_gate` is Qwen's sigmoid gate
of the shared expert. Models do not use these entry points (they record the pipelines' dispatch
functions into a graph, where the ids never leave the GPU); tests, tools and users do.
"""

from __future__ import annotations

import numpy as np

from ..pipelines import moe_route as route_k
from ._base import op_session, run

__all__ = ["moe_route", "shared_expert_gate"]


def moe_route(
    logits,
    k: int,
    mode: str = "qwen",
    bias=None,
    norm: bool = True,
    scale: float = 0.0,
    device=None,
    subgroup: bool | None = None,
    **spec,
):
    """Route tokens from router logits [T, n_expert] (or [n_expert]).

    mode "qwen": softmax gating (`bias` optional, selection only); "glm": sigmoid gating with the
    `bias` (exp_probs_b) added for selection only. `norm` divides by max(Σw, 6.1035e-5); a `scale`
    other than 0 or 1 multiplies the weights (GLM routed_scaling_factor).
    Returns (ids int32 [T, k], weights float32 [T, k])."""
    gating = {"qwen": "softmax", "glm": "sigmoid", "softmax": "softmax", "sigmoid": "sigmoid"}.get(
        mode
    )
    if gating is None:
        raise ValueError(f"moe_route: mode must be 'qwen' or 'glm', got {mode!r}")
    lg = np.ascontiguousarray(np.atleast_2d(np.asarray(logits, np.float32)))
    T, n_expert = lg.shape
    with op_session(device) as (dev, t):
        bl = t.upload(lg)
        bb = None if bias is None else t.upload(np.asarray(bias, np.float32).reshape(n_expert))
        bi, bw = t.empty(T * k * 4), t.empty(T * k * 4)
        kp = route_k.pipeline(dev, route_k.variant_for(dev.info, gating, subgroup), **spec)
        run(
            dev,
            lambda rec: route_k.dispatch(
                rec, kp, bl, bi, bw, n_expert, k, T, bias=bb, norm=norm, scale=scale
            ),
        )
        return bi.read(np.int32, (T, k)), bw.read(np.float32, (T, k))


def shared_expert_gate(logit, device=None, **spec) -> np.ndarray:
    """sigmoid(logit) per token: the Qwen shared-expert gate from its one-row router output."""
    x = np.ascontiguousarray(np.asarray(logit, np.float32).reshape(-1))
    with op_session(device) as (dev, t):
        bx, bg = t.upload(x), t.empty(x.size * 4)
        kp = route_k.GATE_KERNEL.pipeline(dev, **spec)
        run(dev, lambda rec: route_k.dispatch_shared_gate(rec, kp, bx, bg, x.size))
        return bg.read(np.float32, np.shape(logit))
