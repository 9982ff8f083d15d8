"""moe_route: the MoE router epilogue (softmax or sigmoid gating, biased top-k, renormalisation,
routed scaling) and the Qwen shared-expert sigmoid gate. Formulas: reference/llamacpp-facts.md
§2.6 (llama.cpp `build_moe_ffn`, src/llama-graph.cpp) and pitfall 8.

The router matvec itself (ℓ = ffn_gate_inp · u) is an ordinary mul_mat_vec run by the caller;
this kernel turns ℓ [T, n_expert] into expert ids int32 [T, k] and weights f32 [T, k] on the GPU,
where mul_mat_id reads them without a host round trip (R3). Ties in the top-k go to the lowest
expert index, as a stable argsort of −score would give.
"""

from __future__ import annotations

import numpy as np

from .kernel import Binding, Kernel, SpecConst, Variant, ceil_div, require

MAX_EXPERTS = 512
MAX_K = 16
NORM_EPS = 6.1035e-5  # llama.cpp clamps Σw from below by this before dividing
NO_GATE = 0xFFFFFFFF
GATINGS = ("softmax", "sigmoid")


def _contract(spec, info):
    wg = spec["WG"]
    require(wg >= 8 and wg & (wg - 1) == 0, f"moe_route: WG={wg} must be a power of two >= 8")
    require(
        wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
        f"moe_route: WG={wg} exceeds the device's workgroup limits",
    )
    # s_p, s_s (float), s_taken (bool as 4 bytes) over MAX_EXPERTS; three WG-sized arrays.
    require(
        MAX_EXPERTS * 12 + wg * 12 + 2 * MAX_K * 4 <= info.max_compute_shared_memory,
        "moe_route: shared memory",
    )


PUSH = np.dtype(
    [
        ("n_expert", "<u4"),
        ("k", "<u4"),
        ("logit_off", "<u4"),
        ("logit_stride", "<u4"),
        ("has_bias", "<u4"),
        ("norm", "<u4"),
        ("gate_col", "<u4"),
        ("n_tokens", "<u4"),
        ("scale", "<f4"),
    ]
)

BINDINGS = (
    Binding("logits", "r", "float[T, logit_stride] (l[t, e] at logit_off + t*logit_stride + e)"),
    Binding("bias", "r", "float[n_expert] selection bias (bind logits when none)"),
    Binding("ids", "w", "int32[T, k]"),
    Binding("weights", "w", "float[T, k]"),
    Binding("gate", "w", "float[T] shared-expert gate (bind weights when unused)"),
)

# "softmax"/"sigmoid" reduce the argmax steps with subgroup arithmetic, the "_shmem" forms with a
# shared-memory tree only (devices without subgroup arithmetic). All four select identically.
ROUTE_KERNEL = Kernel(
    stem="moe_route",
    bindings=BINDINGS,
    push=PUSH,
    spec=(SpecConst("WG", 0, 64, choices=(8, 16, 32, 64, 128, 256), doc="invocations per token"),),
    variants={
        "softmax": Variant({"SOFTMAX": "", "SUBGROUP": ""}),
        "sigmoid": Variant({"SIGMOID": "", "SUBGROUP": ""}),
        "softmax_shmem": Variant({"SOFTMAX": ""}),
        "sigmoid_shmem": Variant({"SIGMOID": ""}),
    },
    op_requires={"softmax": ("basic", "arithmetic"), "sigmoid": ("basic", "arithmetic")},
    contract=_contract,
    doc="MoE router: gating, biased top-k, renormalise, scale; optional shared-expert gate",
)

# The standalone shared-expert gate: gate[t] = sigmoid(l[t, gate_col]), one invocation per token.
GATE_KERNEL = Kernel(
    stem="moe_route",
    bindings=BINDINGS,
    push=PUSH,
    spec=(SpecConst("WG", 0, 64, choices=(64, 256)),),
    variants={"default": Variant({"SHARED_GATE_ONLY": ""})},
    contract=_contract,
    doc="shared-expert gate sigmoid(logit) per token",
)


def _group_contract(spec, info):
    wg, cols = spec["WG"], spec["GROUP_COLS"]
    require(
        0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
        f"moe_route/group: WG={wg} exceeds the device's workgroup limits",
    )
    require(1 <= cols <= 8, f"moe_route/group: GROUP_COLS={cols} must be 1..8")


# The expert work list for mul_mat_id's GROUPED (prefill) mode: pairs (t, j) sorted by expert,
# cut into items of up to GROUP_COLS pairs of one expert. One workgroup.
GROUP_KERNEL = Kernel(
    stem="moe_route",
    bindings=(
        Binding("ids", "r", "int32[T, ids_stride]"),
        Binding("groups", "w", "uint32[group_words(T, k, n_expert, cols)]"),
    ),
    push=PUSH,
    spec=(
        SpecConst("WG", 0, 256, choices=(64, 256, 512), doc="invocations (one workgroup)"),
        SpecConst("GROUP_COLS", 1, 8, doc="pairs per item = mul_mat_id NUM_COLS (caller)"),
    ),
    variants={"default": Variant({"GROUP": ""})},
    contract=_group_contract,
    doc="per-expert work list of (token, slot) pairs for grouped expert matmuls",
)

KERNELS = {"route": ROUTE_KERNEL, "shared_gate": GATE_KERNEL, "group": GROUP_KERNEL}


def has_subgroup_arithmetic(info) -> bool:
    return "arithmetic" in getattr(info, "subgroup_ops", ()) and "basic" in info.subgroup_ops


def variant_for(info, gating: str, subgroup: bool | None = None,
                shape_class: str | None = None) -> str:
    """The route variant for `gating` ('softmax' | 'sigmoid'): forced by `subgroup`; else the
    faster of the two in the tuning database for `shape_class` (they pick identically); else the
    subgroup form when the device has subgroup arithmetic, the shared-memory form otherwise."""
    require(gating in GATINGS, f"moe_route: gating must be one of {GATINGS}, got {gating!r}")
    if subgroup is not None:
        return gating if subgroup else f"{gating}_shmem"
    default = gating if has_subgroup_arithmetic(info) else f"{gating}_shmem"
    if shape_class is None:
        return default
    from .. import tuning

    return tuning.best_variant(info, ROUTE_KERNEL, shape_class, (gating, f"{gating}_shmem"),
                               default=default)


def pipeline(device, variant: str, shape_class: str | None = None, **overrides):
    """A route pipeline; raises DeviceFeatureError for a subgroup variant on a device without
    subgroup arithmetic (Kernel.op_requires)."""
    return ROUTE_KERNEL.pipeline(device, variant, shape_class=shape_class, **overrides)


def shape_class(n_expert: int, k: int) -> str:
    return f"e{n_expert}-k{k}"


def check_sizes(n_expert: int, k: int, tokens: int, logit_stride: int, gate_col: int | None):
    require(1 <= k <= MAX_K, f"moe_route: k={k} must be 1..{MAX_K}")
    require(
        k <= n_expert <= MAX_EXPERTS,
        f"moe_route: need k <= n_expert <= {MAX_EXPERTS}, got k={k}, n_expert={n_expert}",
    )
    require(logit_stride >= n_expert, "moe_route: logit_stride < n_expert")
    require(
        gate_col is None or gate_col < logit_stride,
        "moe_route: gate_col must lie inside a logits row",
    )
    require(tokens >= 0, "moe_route: negative token count")


def dispatch(
    rec,
    kp,
    logits,
    ids,
    weights,
    n_expert: int,
    k: int,
    tokens: int,
    *,
    bias=None,
    norm: bool = True,
    scale: float = 0.0,
    gate=None,
    gate_col: int | None = None,
    logit_off: int = 0,
    logit_stride: int | None = None,
):
    """Record routing of `tokens` rows of router logits with pipeline `kp` (a ROUTE_KERNEL variant).

    logits: l[t, e] at element logit_off + t*logit_stride + e (stride defaults to n_expert).
    bias: float[n_expert] added to the selection score only (GLM exp_probs_b), or None.
    gate/gate_col: also write gate[t] = sigmoid(l[t, gate_col]) (shared-expert gate fused into the
    router's matvec as an extra output row)."""
    stride = n_expert if logit_stride is None else logit_stride
    check_sizes(n_expert, k, tokens, stride, gate_col)
    require((gate is None) == (gate_col is None), "moe_route: give both gate and gate_col")
    require(kp.kernel is ROUTE_KERNEL, "moe_route.dispatch needs a route pipeline")
    kp.record(
        rec,
        [logits, logits if bias is None else bias, ids, weights, weights if gate is None else gate],
        (tokens,),
        n_expert=n_expert,
        k=k,
        logit_off=logit_off,
        logit_stride=stride,
        has_bias=int(bias is not None),
        norm=int(bool(norm)),
        gate_col=NO_GATE if gate_col is None else gate_col,
        n_tokens=tokens,
        scale=float(scale),
    )


def dispatch_shared_gate(
    rec,
    kp,
    logits,
    gate,
    tokens: int,
    *,
    gate_col: int = 0,
    logit_off: int = 0,
    logit_stride: int = 1,
):
    """Record gate[t] = sigmoid(l[t, gate_col]) for t < tokens (pipeline from GATE_KERNEL)."""
    require(kp.kernel is GATE_KERNEL, "dispatch_shared_gate needs a GATE_KERNEL pipeline")
    kp.record(
        rec,
        [logits, logits, gate, gate, gate],
        (ceil_div(max(tokens, 1), kp.spec["WG"]),),
        n_expert=0,
        k=0,
        logit_off=logit_off,
        logit_stride=logit_stride,
        has_bias=0,
        norm=0,
        gate_col=gate_col,
        n_tokens=tokens,
        scale=0.0,
    )


def reference(
    logits, k: int, gating: str = "softmax", bias=None, norm: bool = True, scale: float = 0.0
):
    """numpy oracle straight from llamacpp-facts §2.6, float64 throughout.

    Returns (ids int32 [T, k], weights float32 [T, k]). Selection is a stable argsort of −score,
    so equal scores go to the lower expert index."""
    lg = np.atleast_2d(np.asarray(logits, np.float64))
    if gating == "softmax":
        z = np.exp(lg - lg.max(axis=1, keepdims=True))
        p = z / z.sum(axis=1, keepdims=True)
    elif gating == "sigmoid":
        p = 1.0 / (1.0 + np.exp(-lg))
    else:
        raise ValueError(f"gating must be one of {GATINGS}")
    score = p if bias is None else p + np.asarray(bias, np.float64)[None, :]
    ids = np.argsort(-score, axis=1, kind="stable")[:, :k]
    w = np.take_along_axis(p, ids, axis=1)
    if norm:
        w = w / np.maximum(w.sum(axis=1, keepdims=True), NORM_EPS)
    if scale != 0.0 and scale != 1.0:
        w = w * scale
    return ids.astype(np.int32), w.astype(np.float32)


def reference_shared_gate(logit):
    """sigmoid(logit), the Qwen shared-expert gate (one scalar per token)."""
    x = np.asarray(logit, np.float64)
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def group_layout(tokens: int, k: int, n_expert: int, cols: int) -> tuple[int, int, int]:
    """(max_items, pairs_off, words) of the groups buffer for `tokens` × `k` pairs, items of
    up to `cols` pairs (the shader's formula; see moe_route.comp GROUP)."""
    P = tokens * k
    max_items = -(-P // cols) + min(n_expert, P)
    pairs_off = 4 + 2 * max_items
    return max_items, pairs_off, pairs_off + P


def group_pipeline(device, cols: int, **overrides):
    return GROUP_KERNEL.pipeline(device, GROUP_COLS=cols, **overrides)


def dispatch_group(
    rec,
    kp,
    ids,
    groups,
    n_expert: int,
    k: int,
    tokens: int,
    *,
    ids_stride: int | None = None,
    ids_off: int = 0,
):
    """Record the work list of `tokens` × `k` routed pairs into `groups` (>= group_layout(...)
    [2] uint32 words) with a GROUP_KERNEL pipeline."""
    require(kp.kernel is GROUP_KERNEL, "dispatch_group needs a GROUP_KERNEL pipeline")
    require(
        1 <= k <= MAX_K and 1 <= n_expert <= MAX_EXPERTS,
        f"moe_route/group: need 1 <= k <= {MAX_K}, 1 <= n_expert <= {MAX_EXPERTS}",
    )
    stride = k if ids_stride is None else ids_stride
    kp.record(
        rec,
        [ids, groups],
        (1,),
        n_expert=n_expert,
        k=k,
        logit_off=ids_off,
        logit_stride=stride,
        has_bias=0,
        norm=0,
        gate_col=NO_GATE,
        n_tokens=tokens,
        scale=0.0,
    )


def reference_group(ids, n_expert: int, cols: int) -> np.ndarray:
    """The groups buffer's words (uint32) the GROUP kernel writes for ids [T, k]."""
    ids = np.minimum(np.asarray(ids, np.int64).astype(np.uint32), n_expert - 1)
    T, k = ids.shape
    _, pairs_off, words = group_layout(T, k, n_expert, cols)
    out = np.zeros(words, np.uint32)
    flat = ids.reshape(-1)
    order = np.argsort(flat, kind="stable")  # by expert, then pair index
    out[pairs_off:] = order
    items, start = [], 0
    for e in range(n_expert):
        c = int(np.count_nonzero(flat == e))
        for s0 in range(0, c, cols):
            items.append((e | (min(cols, c - s0) << 16), start + s0))
        start += c
    out[0], out[1] = len(items), T * k
    for i, (a, b) in enumerate(items):
        out[4 + 2 * i], out[5 + 2 * i] = a, b
    return out
