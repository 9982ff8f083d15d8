"""ops.moe: MoE routing and expert matmuls on the GPU, numpy in and out (llamacpp-facts §2.6).

`moe_route` turns router logits into (ids, weights); `shared_expert_gate` is Qwen's sigmoid gate
of the shared expert; `mul_mat_id` runs the selected experts' matvecs (y [T, k, rows]) and
`mul_mat_id_weighted` their routing-weighted sum (y [T, rows]). Models do not use these entry points (they record the pipelines' dispatch
functions into a graph, where the ids never leave the GPU); tests, tools and users do.
"""

from __future__ import annotations

import numpy as np

from ..gguf import quants
from ..pipelines import moe_route as route_k
from ..pipelines import mul_mat_id as mmid_k
from ._base import op_session, run

__all__ = ["moe_route", "mul_mat_id", "mul_mat_id_weighted", "shared_expert_gate"]


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
        sc = route_k.shape_class(n_expert, k)
        kp = route_k.pipeline(dev, route_k.variant_for(dev.info, gating, subgroup, sc),
                              shape_class=sc, **spec)
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


def _experts(w_raw3d, w_type):
    t = quants.parse_type(w_type, supported_only=True)
    info = quants.type_info(t)
    w = np.asarray(w_raw3d)
    if w.dtype != np.uint8 or w.ndim != 3:
        raise ValueError(
            f"mul_mat_id: w_raw3d must be uint8 [n_expert, rows, bytes_per_row]; "
            f"got {w.dtype} {w.shape}"
        )
    if w.shape[2] % info.type_size:
        raise ValueError(
            f"mul_mat_id: rows of {w.shape[2]} bytes are not whole {info.name} "
            f"blocks of {info.type_size} bytes"
        )
    K = w.shape[2] // info.type_size * info.block_size
    return t, np.ascontiguousarray(w), K


def _upload_padded(tmp, a):
    """The shaders read whole 32-bit words (2-aligned block types read up to 2 bytes past a
    block), so the bound range is rounded up to 16 bytes."""
    flat = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    pad = -flat.size % 16
    return tmp.upload(np.concatenate([flat, np.zeros(pad, np.uint8)]) if pad else flat)


def _ids_inputs(ids, x, K, n_expert):
    ids = np.ascontiguousarray(np.atleast_2d(np.asarray(ids)), dtype=np.int32)
    T, k = ids.shape
    if ids.size and (ids.min() < 0 or ids.max() >= n_expert):
        raise ValueError(f"mul_mat_id: expert ids must be in [0, {n_expert})")
    x = np.ascontiguousarray(np.asarray(x, np.float32))
    if x.ndim == 1:
        x = x[None, :]
    if x.shape not in ((T, K), (T, k, K)):
        raise ValueError(
            f"mul_mat_id: x must be [T, K] (shared) or [T, k, K] (per slot) with "
            f"T={T}, k={k}, K={K}; got {x.shape}"
        )
    return ids, x, x.ndim == 3


def _record_grouped(
    rec, dev, t, bw, bx, bi, bys, rows, K, n_expert, T, k, per_slot, cols, tmp, reduce, spec
):
    """Work list from the ids, then the grouped expert matmul into bys [T, k, rows]."""
    words = route_k.group_layout(T, k, n_expert, cols)[2]
    bg = tmp.empty(4 * words)
    kg = route_k.group_pipeline(dev, cols)
    kp = mmid_k.pipeline(
        dev, t, grouped=True, cols=cols, rows=rows, K=K, n_slots=k, reduce=reduce, **spec
    )
    route_k.dispatch_group(rec, kg, bi, bg, n_expert, k, T)
    mmid_k.dispatch_grouped(
        rec,
        kp,
        bw,
        bx,
        bg,
        bys,
        w_type=t,
        rows=rows,
        K=K,
        n_expert=n_expert,
        n_slots=k,
        tokens=T,
        per_slot_input=per_slot,
    )


def mul_mat_id(
    w_raw3d,
    w_type,
    x,
    ids,
    device=None,
    reduce: str | None = None,
    grouped: bool = False,
    cols: int = 8,
    **spec,
) -> np.ndarray:
    """y[t, j] = W[ids[t, j]] · x[t] (x [T, K], shared by the slots) or · x[t, j] (x [T, k, K]).

    w_raw3d: uint8 [n_expert, rows, bytes_per_row] (a GGUF 3-D expert tensor); w_type: a GGUF
    type, id or name. Returns float32 [T, k, rows]. Runs shaders/mul_mat_id.comp; `grouped`
    uses the prefill form (moe_route's work list, then each expert's rows read once per `cols`
    pairs) — the same bits."""
    t, w, K = _experts(w_raw3d, w_type)
    n_expert, rows = w.shape[0], w.shape[1]
    ids, x, per_slot = _ids_inputs(ids, x, K, n_expert)
    T, k = ids.shape
    mmid_k.check_k(t, K, "mul_mat_id")
    with op_session(device) as (dev, tmp):
        bw, bx, bi = _upload_padded(tmp, w), tmp.upload(x), tmp.upload(ids)
        by = tmp.empty(T * k * rows * 4)
        if grouped:
            run(
                dev,
                lambda rec: _record_grouped(
                    rec,
                    dev,
                    t,
                    bw,
                    bx,
                    bi,
                    by,
                    rows,
                    K,
                    n_expert,
                    T,
                    k,
                    per_slot,
                    cols,
                    tmp,
                    reduce,
                    spec,
                ),
            )
        else:
            kp = mmid_k.pipeline(dev, t, rows=rows, K=K, n_slots=k, reduce=reduce, **spec)
            run(
                dev,
                lambda rec: mmid_k.dispatch(
                    rec,
                    kp,
                    bw,
                    bx,
                    bi,
                    by,
                    w_type=t,
                    rows=rows,
                    K=K,
                    n_expert=n_expert,
                    n_slots=k,
                    tokens=T,
                    per_slot_input=per_slot,
                ),
            )
        return by.read(np.float32, (T, k, rows))


def mul_mat_id_weighted(
    w_raw3d,
    w_type,
    x,
    ids,
    weights,
    y=None,
    device=None,
    reduce: str | None = None,
    grouped: bool = False,
    cols: int = 8,
    **spec,
) -> np.ndarray:
    """y[t] (+)= Σ_j weights[t, j] · W[ids[t, j]] · x[t(, j)]: the routed experts' weighted sum
    (the down projection's input is per slot, x [T, k, K]). With `y` [T, rows] given, the sum is
    added to it. Returns float32 [T, rows]. `grouped`: the prefill form (grouped matmul into
    per-slot results, then the combine pass) — the same bits as the fused WEIGHTED kernel."""
    t, w, K = _experts(w_raw3d, w_type)
    n_expert, rows = w.shape[0], w.shape[1]
    ids, x, per_slot = _ids_inputs(ids, x, K, n_expert)
    T, k = ids.shape
    wts = np.ascontiguousarray(np.asarray(weights, np.float32).reshape(T, k))
    with op_session(device) as (dev, tmp):
        bw, bx, bi = _upload_padded(tmp, w), tmp.upload(x), tmp.upload(ids)
        bwt = tmp.upload(wts)
        if y is None:
            by = tmp.empty(T * rows * 4)
        else:
            by = tmp.upload(
                np.ascontiguousarray(np.broadcast_to(np.asarray(y, np.float32), (T, rows)))
            )
        if grouped:
            bys = tmp.empty(T * k * rows * 4)
            kc = mmid_k.combine_pipeline(dev, accumulate=y is not None)

            def record(rec):
                _record_grouped(
                    rec,
                    dev,
                    t,
                    bw,
                    bx,
                    bi,
                    bys,
                    rows,
                    K,
                    n_expert,
                    T,
                    k,
                    per_slot,
                    cols,
                    tmp,
                    reduce,
                    spec,
                )
                mmid_k.dispatch_combine(rec, kc, bys, bwt, by, rows=rows, n_slots=k, tokens=T)

            run(dev, record)
        else:
            kp = mmid_k.pipeline(
                dev,
                t,
                weighted=True,
                accumulate=y is not None,
                rows=rows,
                K=K,
                n_slots=k,
                reduce=reduce,
                **spec,
            )
            run(
                dev,
                lambda rec: mmid_k.dispatch(
                    rec,
                    kp,
                    bw,
                    bx,
                    bi,
                    by,
                    w_type=t,
                    rows=rows,
                    K=K,
                    n_expert=n_expert,
                    n_slots=k,
                    tokens=T,
                    weights=bwt,
                    per_slot_input=per_slot,
                ),
            )
        return by.read(np.float32, (T, rows))
