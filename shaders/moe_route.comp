#version 450
// moe_route: MoE router epilogue, from router logits to the selected experts and their weights
// (reference/llamacpp-facts.md §2.6; llama.cpp build_moe_ffn). One workgroup per token t:
//   SOFTMAX (Qwen)   p = softmax(l) over all n_expert logits
//   SIGMOID (GLM)    p = sigmoid(l)
//   selection score s = p, or p + bias when has_bias (GLM's exp_probs_b; either gating)
//   top-k of s, ties to the lowest expert index (= a stable argsort of -s); w_j = p[id_j]
//   (the unbiased p); if norm: w ← w / max(Σ_j w_j, 6.1035e-5); if scale ∉ {0, 1}: w ← w·scale.
//   If gate_col != 0xFFFFFFFF: gate[t] = sigmoid(l[t, gate_col]) (Qwen's shared-expert gate when
//   its one-row router is concatenated to ffn_gate_inp, so one matvec yields both).
// Variant SHARED_GATE_ONLY: only gate[t] = sigmoid(l[t, gate_col]), one invocation per token
// (dispatch ceil(T / WG) workgroups); ids, weights and bias are not touched.
// Variant GROUP: from ids, the per-expert work list of mul_mat_id's GROUPED (prefill) mode; its
// own bindings: 0 ids int[T, ids_stride] at logit_off + t·logit_stride + j (read), 1 groups uint[]
// (write, layout below); push n_expert, k (slots), logit_off, logit_stride, n_tokens; spec 1
// GROUP_COLS (pairs per item = mul_mat_id's NUM_COLS); grid (1).
// Bindings: 0 logits  float[]            (read)  l[t, e] at logit_off + t·logit_stride + e
//           1 bias    float[n_expert]    (read)  selection bias (bind logits when has_bias = 0)
//           2 ids     int[T, k]          (write) selected experts, best first
//           3 weights float[T, k]        (write) routing weights, same order as ids
//           4 gate    float[T]           (write) shared-expert gate (bind weights when unused)
// Push: n_expert, k, logit_off, logit_stride (elements), has_bias, norm (0/1), gate_col, n_tokens,
//       scale (float; 0 or 1 = no scaling).
// Spec: 0 WG (workgroup size, power of two, >= 8).
// Grid: (T) workgroups, T <= maxComputeWorkGroupCount[0]; SHARED_GATE_ONLY: ceil(T / WG).
// Contract: 1 <= k <= 16, k <= n_expert <= 512.
// Determinism (R5): the max and sum of the softmax use a fixed per-invocation order then a fixed
// shared-memory tree, so a token's result does not depend on T; the argmax steps compare
// (score, index) pairs exactly, so the SUBGROUP and shared-memory variants select identically
// and give bit-identical weights.
// Selection is on p as computed in float32 (as llama.cpp's argsort of the probabilities): two
// experts whose probabilities round to the same float tie and the lower index wins.
#include "base.glsl"
#ifdef SUBGROUP
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_arithmetic : enable
#endif
layout(local_size_x_id = 0) in;

#ifdef GROUP
layout(constant_id = 1) const uint GROUP_COLS = 8;
layout(std430, binding = 0) readonly buffer GI { int ids_in[]; };
layout(std430, binding = 1) writeonly buffer GO { uint groups[]; };
#else
layout(std430, binding = 0) readonly buffer L { float logits[]; };
layout(std430, binding = 1) readonly buffer B { float bias[]; };
layout(std430, binding = 2) writeonly buffer I { int ids[]; };
layout(std430, binding = 3) writeonly buffer W { float weights[]; };
layout(std430, binding = 4) writeonly buffer G { float gate[]; };
#endif

layout(push_constant) uniform Push {
    uint n_expert; uint k; uint logit_off; uint logit_stride;
    uint has_bias; uint norm; uint gate_col; uint n_tokens;
    float scale;
} p;

const uint MAX_EXPERTS = 512u;
const uint MAX_K = 16u;
const uint NO_GATE = 0xFFFFFFFFu;
const uint NONE = 0xFFFFFFFFu;

float sigmoid_f(float x) { return 1.0 / (1.0 + exp(-x)); }

#if defined(GROUP)
// Expert work list for mul_mat_id's GROUPED mode. One workgroup. With P = T·k pairs
// p = t·k + j and M = ceil(P / GROUP_COLS) + min(n_expert, P) (the most items there can be):
//   groups[0] = n_items, groups[1] = P, groups[2..3] = 0
//   groups[4 + 2i], groups[5 + 2i] = (e | cnt << 16, start), i < n_items: up to GROUP_COLS pairs
//       of expert e, pairs[start .. start + cnt)
//   groups[4 + 2M + q] = pairs sorted by expert (q < P); in increasing p within an expert.
// Experts in increasing order, each cut into chunks of GROUP_COLS pairs.
shared uint g_cnt[MAX_EXPERTS];
shared uint g_off[MAX_EXPERTS];
shared uint g_item[MAX_EXPERTS];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint WG = gl_WorkGroupSize.x;
    const uint E = p.n_expert, K = p.k;
    const uint P = p.n_tokens * K;
    const uint M = (P + GROUP_COLS - 1u) / GROUP_COLS + min(E, P);
    const uint pairs_off = 4u + 2u * M;
    for (uint e = tid; e < E; e += WG) g_cnt[e] = 0u;
    barrier();
    for (uint q = tid; q < P; q += WG) {
        const uint e = min(uint(ids_in[p.logit_off + (q / K) * p.logit_stride + q % K]), E - 1u);
        atomicAdd(g_cnt[e], 1u);
    }
    barrier();
    if (tid == 0u) {  // exclusive prefix sums of pairs and of items, in expert order
        uint po = 0u, io = 0u;
        for (uint e = 0u; e < E; ++e) {
            g_off[e] = po;
            g_item[e] = io;
            po += g_cnt[e];
            io += (g_cnt[e] + GROUP_COLS - 1u) / GROUP_COLS;
        }
        groups[0] = io;
        groups[1] = P;
        groups[2] = 0u;
        groups[3] = 0u;
    }
    barrier();
    // Place the pairs: invocation e scans all pairs in order, so each expert's list is in
    // increasing p (deterministic; O(P·E / WG) reads, small next to the matmuls it feeds).
    for (uint e = tid; e < E; e += WG) {
        const uint c = g_cnt[e];
        if (c == 0u) continue;
        uint w = pairs_off + g_off[e];
        for (uint q = 0u; q < P; ++q) {
            const uint eq = min(uint(ids_in[p.logit_off + (q / K) * p.logit_stride + q % K]),
                                E - 1u);
            if (eq == e) groups[w++] = q;
        }
        for (uint s = 0u; s < c; s += GROUP_COLS) {
            const uint it = g_item[e] + s / GROUP_COLS;
            groups[4u + 2u * it] = e | (min(GROUP_COLS, c - s) << 16);
            groups[5u + 2u * it] = g_off[e] + s;
        }
    }
}
#elif defined(SHARED_GATE_ONLY)
void main() {
    const uint t = gl_GlobalInvocationID.x;
    if (t >= p.n_tokens) return;
    gate[t] = sigmoid_f(logits[p.logit_off + t * p.logit_stride + p.gate_col]);
}
#else

shared float s_p[MAX_EXPERTS];      // unbiased probability
shared float s_s[MAX_EXPERTS];      // selection score
shared bool s_taken[MAX_EXPERTS];
shared float s_red[gl_WorkGroupSize.x];
shared uint s_key[gl_WorkGroupSize.x];
shared uint s_idx[gl_WorkGroupSize.x];
shared uint s_sel[MAX_K];
shared float s_selp[MAX_K];

// Fixed-order tree reductions (power-of-two WG).
float tree_max(float v) {
    const uint tid = gl_LocalInvocationID.x;
    s_red[tid] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
        if (tid < s) s_red[tid] = max(s_red[tid], s_red[tid + s]);
        barrier();
    }
    const float r = s_red[0];
    barrier();
    return r;
}

float tree_sum(float v) {
    const uint tid = gl_LocalInvocationID.x;
    s_red[tid] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
        if (tid < s) s_red[tid] += s_red[tid + s];
        barrier();
    }
    const float r = s_red[0];
    barrier();
    return r;
}

// Order-preserving map of a float to a uint (larger float -> larger uint). 0 is reserved for
// "no candidate"; only a negative NaN with every mantissa bit set maps there.
uint order_key(float f) {
    const uint u = floatBitsToUint(f);
    return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}

// (key, idx) pairs: higher key wins, then the lower index. (0, NONE) loses to everything.
bool better(uint ka, uint ia, uint kb, uint ib) {
    return ka > kb || (ka == kb && ia < ib);
}

// The best (key, idx) over the workgroup; every invocation gets it.
void wg_argmax(inout uint key, inout uint idx) {
    const uint tid = gl_LocalInvocationID.x;
#ifdef SUBGROUP
    const uint m = subgroupMax(key);
    const uint mi = subgroupMin(key == m ? idx : NONE);
    if (subgroupElect()) {
        s_key[gl_SubgroupID] = m;
        s_idx[gl_SubgroupID] = mi;
    }
    barrier();
    if (tid == 0u) {
        uint bk = s_key[0], bi = s_idx[0];
        for (uint s = 1u; s < gl_NumSubgroups; ++s) {
            if (better(s_key[s], s_idx[s], bk, bi)) { bk = s_key[s]; bi = s_idx[s]; }
        }
        s_key[0] = bk;
        s_idx[0] = bi;
    }
    barrier();
#else
    s_key[tid] = key;
    s_idx[tid] = idx;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
        if (tid < s && better(s_key[tid + s], s_idx[tid + s], s_key[tid], s_idx[tid])) {
            s_key[tid] = s_key[tid + s];
            s_idx[tid] = s_idx[tid + s];
        }
        barrier();
    }
#endif
    key = s_key[0];
    idx = s_idx[0];
    barrier();  // s_key/s_idx are reused by the next call
}

void main() {
    const uint t = gl_WorkGroupID.x;
    const uint tid = gl_LocalInvocationID.x;
    const uint WG = gl_WorkGroupSize.x;
    const uint n = p.n_expert;
    const uint base = p.logit_off + t * p.logit_stride;

#ifdef SOFTMAX
    float m = uintBitsToFloat(0xFF800000u);  // -inf
    for (uint e = tid; e < n; e += WG) m = max(m, logits[base + e]);
    m = tree_max(m);
    float sum = 0.0;
    for (uint e = tid; e < n; e += WG) {
        const float v = exp(logits[base + e] - m);
        s_p[e] = v;
        sum += v;
    }
    sum = tree_sum(sum);
    for (uint e = tid; e < n; e += WG) {
        const float pe = s_p[e] / sum;
        s_p[e] = pe;
        s_s[e] = p.has_bias != 0u ? pe + bias[e] : pe;
        s_taken[e] = false;
    }
#else  // SIGMOID
    for (uint e = tid; e < n; e += WG) {
        const float pe = sigmoid_f(logits[base + e]);
        s_p[e] = pe;
        s_s[e] = p.has_bias != 0u ? pe + bias[e] : pe;
        s_taken[e] = false;
    }
#endif
    barrier();

    for (uint j = 0u; j < p.k; ++j) {
        uint key = 0u, idx = NONE;
        // Same trip count in every invocation: the subgroup is converged at wg_argmax's
        // subgroup operations without relying on reconvergence after divergent loop exits.
        for (uint e0 = 0u; e0 < n; e0 += WG) {
            const uint e = e0 + tid;
            if (e < n) {
                const uint ke = order_key(s_s[e]);
                if (!s_taken[e] && better(ke, e, key, idx)) { key = ke; idx = e; }
            }
        }
        wg_argmax(key, idx);
        if (tid == 0u) {
            s_sel[j] = idx;
            s_selp[j] = s_p[idx];
            s_taken[idx] = true;
        }
        barrier();
    }

    if (tid == 0u) {
        float wsum = 0.0;
        for (uint j = 0u; j < p.k; ++j) wsum += s_selp[j];
        const float denom = max(wsum, 6.1035e-5);
        const bool do_scale = p.scale != 0.0 && p.scale != 1.0;
        for (uint j = 0u; j < p.k; ++j) {
            float w = s_selp[j];
            if (p.norm != 0u) w = w / denom;
            if (do_scale) w = w * p.scale;
            ids[t * p.k + j] = int(s_sel[j]);
            weights[t * p.k + j] = w;
        }
        if (p.gate_col != NO_GATE) gate[t] = sigmoid_f(logits[base + p.gate_col]);
    }
}
#endif
