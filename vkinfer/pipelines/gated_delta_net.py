"""Gated DeltaNet recurrence (shaders/gated_delta_net.comp), T tokens per dispatch with R4
snapshot planes.

Follows the recurrence of Yang et al., "Gated Delta Networks" (2024) as computed by llama.cpp's
`build_delta_net_autoregressive` (shared/reference/llamacpp-facts.md §2.2 item 8): per value head
h and token t, S ← exp(g)·S; kv = Sᵀk; δ = β(v − kv); S += k δᵀ; o = Sᵀq, with q and k
L2-normalised (x/sqrt(Σx²+eps)) and q scaled by 1/√S_k; the output comes from the updated state.

State and snapshot layout (owner of the convention; shaders/common/gdn.glsl mirrors it):
  * state buffer = (1 + n_snap) planes, each [n_seq, H_v, S_v (j, value), S_v (i, key)] f32 with
    the key index contiguous (ggml's layout). Plane 0 is the live state; plane 1+i holds the state
    after token i of the step (written for i < n_snap).
  * control block (uint32 words in a per-step device buffer, at word `ctl_off`):
    [n_tokens, src_plane[0], ..., src_plane[n_seq-1]] — `ctl_words()` builds it.
  * After a step the final state is in plane `final_plane(n_tokens, n_snap)`:
    n_tokens if 1 <= n_tokens <= n_snap (plane 0 is not rewritten), else 0.
    commit(n_accepted) = set src_plane = n_accepted for the next step (no copy); a step after a
    non-snapshot step uses src_plane = 0. conv1d.comp uses the same control block and planes.

Variants (R2, #define): "clustered" (subgroupClusteredAdd), "subgroup" (subgroupAdd; one column
per subgroup), "shuffle" (subgroupShuffleXor butterfly), "shmem" (shared memory; always
available). `choose()` picks the best one the device supports and its lanes_per_column.
"""

from __future__ import annotations


import numpy as np

from ..errors import ContractError, DeviceFeatureError
from .kernel import Binding, Kernel, SpecConst, SubgroupKernel, Variant, require  # noqa: F401

HEAD_MAPS = {"qwen35": 0, "qwen35moe": 0, "tiled": 0, "qwen3next": 1, "grouped": 1}
SIZES = (16, 32, 64, 128)
LANE_CHOICES = (1, 2, 4, 8, 16, 32, 64)


def _contract(spec, info):
    wg, sv, lanes = spec["WG"], spec["S_V"], spec["LANES"]
    require(sv in SIZES, f"gated_delta_net: S_V={sv} not in {SIZES}")
    require(lanes in LANE_CHOICES and sv % lanes == 0,
            f"gated_delta_net: LANES={lanes} must be a power of two <= 64 dividing S_V={sv}")
    require(0 < wg <= info.max_workgroup_invocations and wg <= info.max_workgroup_size[0],
            f"gated_delta_net: WG={wg} exceeds the device's workgroup limits")
    require(wg % lanes == 0, f"gated_delta_net: WG={wg} is not a multiple of LANES={lanes}")
    cols = wg // lanes
    require(sv % cols == 0,
            f"gated_delta_net: WG/LANES={cols} columns per workgroup must divide S_V={sv}")
    if info.subgroup_size_control:  # REQUIRE_FULL_SUBGROUPS: local size % max subgroup size
        require(wg % info.max_subgroup_size == 0,
                f"gated_delta_net: WG={wg} must be a multiple of the max subgroup size "
                f"{info.max_subgroup_size} (full subgroups)")
    shared = 2 * 2 * sv * 4 + wg * 16 * 2
    require(shared <= info.max_compute_shared_memory,
            f"gated_delta_net: {shared} bytes of shared memory exceed the device's "
            f"{info.max_compute_shared_memory}")


def _variant_contract(variant, spec, info):
    lanes = spec["LANES"]
    if variant == "subgroup":
        require(info.min_subgroup_size == info.max_subgroup_size,
                f"gated_delta_net/subgroup: the subgroup size varies ({info.min_subgroup_size}.."
                f"{info.max_subgroup_size}); use clustered/shuffle/shmem")
        require(lanes == info.subgroup_size,
                f"gated_delta_net/subgroup: LANES={lanes} must equal the subgroup size "
                f"{info.subgroup_size} (one column per subgroup)")
    elif variant in ("clustered", "shuffle"):
        require(lanes <= info.min_subgroup_size and info.min_subgroup_size % lanes == 0,
                f"gated_delta_net/{variant}: LANES={lanes} must divide the subgroup size "
                f"{info.min_subgroup_size}")


KERNEL = Kernel(
    stem="gated_delta_net",
    bindings=(
        Binding("q", "r", "float[rows, qk_stride] (q at q_off, [H_k, S_v] per row)"),
        Binding("k", "r", "float[rows, qk_stride] (k at k_off, [H_k, S_v] per row)"),
        Binding("v", "r", "float[rows, v_stride] (v at v_off, [H_v, S_v] per row)"),
        Binding("g", "r", "float[rows, H_v] log decay"),
        Binding("beta", "r", "float[rows, H_v]"),
        Binding("state", "b", "float[1 + n_snap, n_seq, H_v, S_v(j), S_v(i)]"),
        Binding("out", "w", "float[rows, H_v, S_v]"),
        Binding("ctl", "r", "uint[ctl_off + 1 + n_seq]: n_tokens, src_plane[n_seq]"),
    ),
    push=np.dtype([("H", "<u4"), ("H_k", "<u4"), ("head_map", "<u4"), ("seq_rows", "<u4"),
                   ("q_off", "<u4"), ("k_off", "<u4"), ("qk_stride", "<u4"),
                   ("v_off", "<u4"), ("v_stride", "<u4"), ("n_snap", "<u4"), ("plane", "<u4"),
                   ("ctl_off", "<u4"), ("eps", "<f4"), ("scale", "<f4")]),
    spec=(SpecConst("WG", 0, 32, choices=(8, 16, 32, 64, 128, 256),
                    doc="workgroup size"),
          SpecConst("S_V", 1, 128, choices=SIZES, doc="head size (S_k == S_v)"),
          SpecConst("LANES", 2, 4, choices=LANE_CHOICES, doc="lanes per state column")),
    variants={
        "clustered": Variant({"REDUCE_CLUSTERED": 1}, requires=("clustered_subgroup",)),
        "subgroup": Variant({"REDUCE_SUBGROUP": 1}),
        "shuffle": Variant({"REDUCE_SHUFFLE": 1}),
        "shmem": Variant({"REDUCE_SHMEM": 1}),
    },
    op_requires={"subgroup": ("arithmetic",), "shuffle": ("shuffle",)},
    contract=_contract,
    variant_contract=_variant_contract,
    full_subgroups=True,
    doc=__doc__,
)

PREFERENCE = ("clustered", "shuffle", "subgroup", "shmem")


def _lanes_default(variant: str, info, s_v: int) -> int:
    sg = info.subgroup_size
    if variant == "subgroup":
        return sg
    if variant in ("clustered", "shuffle"):
        # llama.cpp uses sg/8 lanes (8 columns per subgroup) at S_V >= 128; on the H100 we
        # measured sg/2 (2 columns per subgroup) 1.3-2.2x faster for verify batches (T = 2..8)
        # and equal at T = 1 (BENCHMARKS.md, lanes_per_column sweep). The autotuner refines it.
        lanes = max(1, sg // 2) if s_v >= 128 else min(s_v, sg)
        return min(lanes, info.min_subgroup_size)
    return min(s_v, 8)


def valid_configs(info, variant: str, s_v: int, wgs=None, lanes=None) -> list[dict]:
    """Every (WG, LANES) the variant's contract accepts for head size s_v on this device."""
    out = []
    for wg in wgs or KERNEL.spec[0].choices:
        for ln in lanes or LANE_CHOICES:
            vals = {"WG": wg, "S_V": s_v, "LANES": ln}
            try:
                KERNEL.check_variant(variant, vals, info)
            except (ContractError, DeviceFeatureError):
                continue
            out.append(vals)
    return out


def choose(info, s_v: int, variant: str | None = None,
           n_heads: int | None = None) -> tuple[str, dict]:
    """(variant, spec values) for head size s_v: with n_heads, a valid tuning-database entry for
    shape_class(s_v, n_heads) wins (R7) — the fastest tuned variant, else any tuned one in
    PREFERENCE order; otherwise the first supported variant in PREFERENCE with its default
    lanes_per_column and the smallest valid workgroup of at least one subgroup."""
    if variant is not None and variant not in KERNEL.supported_variants(info):
        KERNEL.check_variant(variant, {}, info)  # raises DeviceFeatureError (or ValueError)
    names = [variant] if variant else [v for v in PREFERENCE
                                       if v in KERNEL.supported_variants(info)]
    if n_heads is not None:
        from .. import tuning

        cls = shape_class(s_v, n_heads)
        fastest = tuning.best_variant(info, KERNEL, cls, names, default=None)
        for name in ([fastest] if fastest else []) + names:
            tuned = tuning.lookup(info, KERNEL, name, cls)
            if tuned:
                vals = {"S_V": s_v, "LANES": tuned.get("LANES"), "WG": tuned.get("WG")}
                try:
                    KERNEL.check_variant(name, vals, info)
                except (ContractError, DeviceFeatureError):
                    continue
                return name, vals
    for name in names:
        lanes = _lanes_default(name, info, s_v)
        cfgs = [c for c in valid_configs(info, name, s_v, lanes=(lanes,))
                if c["WG"] >= info.subgroup_size] or valid_configs(info, name, s_v)
        # four subgroups per workgroup when valid (measured best with sg/2 lanes on the H100)
        cfgs.sort(key=lambda c: c["WG"] != 4 * info.subgroup_size)
        if cfgs:
            return name, {"S_V": s_v, "LANES": cfgs[0]["LANES"], "WG": cfgs[0]["WG"]}
    raise ContractError(f"gated_delta_net: no valid (WG, LANES) for S_V={s_v} with "
                        f"{names} on {info.name}")


def shape_class(s_v: int, n_heads: int) -> str:
    return f"sv{s_v}-h{n_heads}"


# --- R3/R4 bookkeeping ----------------------------------------------------------------------

CTL_WORDS_FIXED = 1  # n_tokens, then one src_plane per sequence


def ctl_words(n_tokens: int, src_planes) -> np.ndarray:
    """The control block [n_tokens, src_plane[0..n_seq-1]] as uint32 words."""
    return np.array([n_tokens, *np.atleast_1d(src_planes)], dtype=np.uint32)


def final_plane(n_tokens: int, n_snap: int) -> int:
    """The plane holding the state after the last token of a step."""
    return n_tokens if 1 <= n_tokens <= n_snap else 0


def plane_elems(n_seq: int, n_heads: int, s_v: int) -> int:
    return n_seq * n_heads * s_v * s_v


def dispatch(rec, kp, q, k, v, g, beta, state, out, ctl, *, n_seq: int, H: int, H_k: int,
             seq_rows: int, qk_stride: int, v_stride: int, q_off: int = 0, k_off: int = 0,
             v_off: int = 0, n_snap: int = 0, head_map: int | str = 0, eps: float = 1e-6,
             scale: float | None = None, ctl_off: int = 0):
    """Record one GDN step for n_seq sequences (token count and source planes come from ctl).
    Offsets and strides are in float elements; `state` holds 1 + n_snap planes."""
    sv, lanes, wg = kp.spec["S_V"], kp.spec["LANES"], kp.spec["WG"]
    hm = HEAD_MAPS[head_map] if isinstance(head_map, str) else int(head_map)
    require(H % H_k == 0, f"gated_delta_net: H_v={H} is not a multiple of H_k={H_k}")
    kp.record(rec, [q, k, v, g, beta, state, out, ctl], (sv // (wg // lanes), H, n_seq),
              H=H, H_k=H_k, head_map=hm, seq_rows=seq_rows, q_off=q_off, k_off=k_off,
              qk_stride=qk_stride, v_off=v_off, v_stride=v_stride, n_snap=n_snap,
              plane=plane_elems(n_seq, H, sv), ctl_off=ctl_off, eps=eps,
              scale=1.0 / np.sqrt(sv) if scale is None else scale)


def reference(q, k, v, g, beta, state, head_map: int | str = 0, eps: float = 1e-6,
              scale: float | None = None, n_snap: int = 0):
    """float64 oracle, token by token, straight from the formulas.

    q, k [n_seq, T, H_k, S]; v [n_seq, T, H_v, S]; g, beta [n_seq, T, H_v];
    state [n_seq, H_v, S(j), S(i)]. Returns (out [n_seq, T, H_v, S], final state,
    snapshots [min(T, n_snap), n_seq, H_v, S, S] = state after token i)."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    g, beta = np.asarray(g, np.float64), np.asarray(beta, np.float64)
    st = np.array(state, np.float64)
    n_seq, T, H_k, S = q.shape
    H = v.shape[2]
    hm = HEAD_MAPS[head_map] if isinstance(head_map, str) else int(head_map)
    scale = 1.0 / np.sqrt(S) if scale is None else scale
    out = np.zeros((n_seq, T, H, S))
    snaps = np.zeros((min(T, n_snap), n_seq, H, S, S))
    for s in range(n_seq):
        for h in range(H):
            kh = h % H_k if hm == 0 else h // (H // H_k)
            M = st[s, h]  # M[j, i]
            for t in range(T):
                kn = k[s, t, kh] / np.sqrt(np.sum(k[s, t, kh] ** 2) + eps)
                qn = q[s, t, kh] / np.sqrt(np.sum(q[s, t, kh] ** 2) + eps) * scale
                M *= np.exp(g[s, t, h])
                kv = M @ kn
                delta = beta[s, t, h] * (v[s, t, h] - kv)
                M += np.outer(delta, kn)
                out[s, t, h] = M @ qn
                if t < n_snap:
                    snaps[t, s, h] = M
    return out, st, snaps
