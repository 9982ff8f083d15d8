#version 450
// Gated delta net (Gated DeltaNet recurrence), T tokens per dispatch, one sequence per z.
// For each sequence, value head h (key head kh = h % H_k, or h / (H/H_k) when head_map == 1),
// token t, with kn = k/sqrt(sum k^2 + eps), qn = q/sqrt(sum q^2 + eps) * scale:
//   S <- exp(g_t) S;   kv_j = sum_i S[j][i] kn_i;   d_j = beta_t (v_j - kv_j);
//   S[j][i] += kn_i d_j;   o_j = sum_i S[j][i] qn_i          (output from the updated state)
// S is stored as ggml does: [n_seq][H][S_V (j, value)][S_V (i, key)], i contiguous, f32.
//
// Bindings (float32 unless noted; "row" = seq * seq_rows + t):
//   0 q     float[]  read   q[q_off + row*qk_stride + kh*S_V + i]   (may alias the conv output)
//   1 k     float[]  read   k[k_off + row*qk_stride + kh*S_V + i]
//   2 v     float[]  read   v[v_off + row*v_stride  + h*S_V + j]
//   3 g     float[]  read   g[row*H + h]      (log decay, <= 0, computed by the caller)
//   4 beta  float[]  read   beta[row*H + h]
//   5 state float[]  rw     [1 + n_snap planes][n_seq][H][S_V][S_V] (planes: see gdn.glsl)
//   6 out   float[]  write  out[(row*H + h)*S_V + j]
//   7 ctl   uint[]   read   control block at ctl_off: n_tokens, src_plane[n_seq] (gdn.glsl)
// Push: H, H_k, head_map (0 qwen35 tiled h % H_k, 1 qwen3next grouped h / (H/H_k)), seq_rows,
//   q_off, k_off, qk_stride, v_off, v_stride (elements), n_snap (snapshot planes written),
//   plane (elements per plane = n_seq*H*S_V*S_V), ctl_off (word index), eps, scale (1/sqrt(S_k)).
// Spec: 0 WG (local size), 1 S_V (head size, key = value), 2 LANES (lanes per state column).
// Variants (#define): REDUCE_CLUSTERED (subgroupClusteredAdd, LANES <= subgroup size),
//   REDUCE_SUBGROUP (subgroupAdd, LANES == subgroup size), REDUCE_SHUFFLE (subgroupShuffleXor
//   butterfly, LANES <= subgroup size), REDUCE_SHMEM (shared memory; any LANES).
// Lane mapping: invocation tid works on column j = group.x*COLS + tid/LANES and holds rows
//   i = tid%LANES + LANES*r, r < S_V/LANES, in registers (adjacent lanes read adjacent words).
// Grid: (S_V/COLS, H, n_seq) with COLS = WG/LANES.
// Contract (asserted by the host): S_V % LANES == 0, WG % LANES == 0, S_V % COLS == 0,
//   subgroups made of consecutive invocations (full subgroups), n_tokens <= seq_rows.
#if defined(REDUCE_CLUSTERED)
#extension GL_KHR_shader_subgroup_clustered : require
#extension GL_KHR_shader_subgroup_arithmetic : require
#elif defined(REDUCE_SUBGROUP)
#extension GL_KHR_shader_subgroup_arithmetic : require
#elif defined(REDUCE_SHUFFLE)
#extension GL_KHR_shader_subgroup_shuffle : require
#elif !defined(REDUCE_SHMEM)
#error "define one of REDUCE_CLUSTERED, REDUCE_SUBGROUP, REDUCE_SHUFFLE, REDUCE_SHMEM"
#endif
#include "base.glsl"
#include "gdn.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint S_V = 128;
layout(constant_id = 2) const uint LANES = 4;
const uint WG = gl_WorkGroupSize.x;
const uint COLS = WG / LANES;
const uint RPL = S_V / LANES;  // state rows per lane
const uint EPT = (S_V + WG - 1) / WG;  // q/k elements each invocation copies to shared memory

layout(std430, binding = 0) readonly buffer Q { float q[]; };
layout(std430, binding = 1) readonly buffer K { float k[]; };
layout(std430, binding = 2) readonly buffer V { float v[]; };
layout(std430, binding = 3) readonly buffer G { float g[]; };
layout(std430, binding = 4) readonly buffer B { float beta[]; };
layout(std430, binding = 5) buffer St { float state[]; };
layout(std430, binding = 6) writeonly buffer O { float o[]; };
layout(std430, binding = 7) readonly buffer Ctl { uint ctl[]; };

layout(push_constant) uniform Push {
    uint H;
    uint H_k;
    uint head_map;
    uint seq_rows;
    uint q_off;
    uint k_off;
    uint qk_stride;
    uint v_off;
    uint v_stride;
    uint n_snap;
    uint plane;
    uint ctl_off;
    float eps;
    float scale;
} p;

// q and k of the current token, double-buffered by token parity: one barrier per token.
shared float sh_q[2 * S_V];
shared float sh_k[2 * S_V];

#if defined(REDUCE_SHMEM)
shared vec3 sh_red3[WG];
shared float sh_red1[WG];
#endif

// Sum over the LANES lanes of this column; every lane gets the same value (fixed order).
vec3 col_sum3(vec3 x, uint tid) {
    if (LANES == 1) return x;
#if defined(REDUCE_CLUSTERED)
    switch (LANES) {  // the cluster size must be a literal
        case 2: return subgroupClusteredAdd(x, 2);
        case 4: return subgroupClusteredAdd(x, 4);
        case 8: return subgroupClusteredAdd(x, 8);
        case 16: return subgroupClusteredAdd(x, 16);
        case 32: return subgroupClusteredAdd(x, 32);
        case 64: return subgroupClusteredAdd(x, 64);
        default: return subgroupClusteredAdd(x, 128);
    }
#elif defined(REDUCE_SUBGROUP)
    return subgroupAdd(x);
#elif defined(REDUCE_SHUFFLE)
    [[unroll]] for (uint m = LANES / 2; m > 0; m >>= 1) x += subgroupShuffleXor(x, m);
    return x;
#else
    sh_red3[tid] = x;
    barrier();
    const uint base = tid - tid % LANES;
    vec3 s = sh_red3[base];
    for (uint l = 1; l < LANES; ++l) s += sh_red3[base + l];
    return s;
#endif
}

float col_sum1(float x, uint tid) {
    if (LANES == 1) return x;
#if defined(REDUCE_CLUSTERED)
    switch (LANES) {
        case 2: return subgroupClusteredAdd(x, 2);
        case 4: return subgroupClusteredAdd(x, 4);
        case 8: return subgroupClusteredAdd(x, 8);
        case 16: return subgroupClusteredAdd(x, 16);
        case 32: return subgroupClusteredAdd(x, 32);
        case 64: return subgroupClusteredAdd(x, 64);
        default: return subgroupClusteredAdd(x, 128);
    }
#elif defined(REDUCE_SUBGROUP)
    return subgroupAdd(x);
#elif defined(REDUCE_SHUFFLE)
    [[unroll]] for (uint m = LANES / 2; m > 0; m >>= 1) x += subgroupShuffleXor(x, m);
    return x;
#else
    // sh_red1 of the previous token was read before this token's first barrier: no race.
    sh_red1[tid] = x;
    barrier();
    const uint base = tid - tid % LANES;
    float s = sh_red1[base];
    for (uint l = 1; l < LANES; ++l) s += sh_red1[base + l];
    return s;
#endif
}

// Load one token's q and k slices (for the shared-memory copy), v_j, g and beta into registers.
void fetch(uint row, uint kh, uint h, uint j, uint tid, out float fq[EPT], out float fk[EPT],
           out float fv, out float fg, out float fb) {
    const uint qrow = row * p.qk_stride + kh * S_V;
    [[unroll]] for (uint e = 0; e < EPT; ++e) {
        const uint i = min(tid + e * WG, S_V - 1);  // clamp: stays in bounds, value unused
        fq[e] = q[p.q_off + qrow + i];
        fk[e] = k[p.k_off + qrow + i];
    }
    fv = v[p.v_off + row * p.v_stride + h * S_V + j];
    fg = g[row * p.H + h];
    fb = beta[row * p.H + h];
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint lane = tid % LANES;
    const uint j = gl_WorkGroupID.x * COLS + tid / LANES;
    const uint h = gl_WorkGroupID.y;
    const uint seq = gl_WorkGroupID.z;

    const uint n_tokens = ctl[p.ctl_off + CTL_N_TOKENS];
    const uint src = ctl[p.ctl_off + CTL_SRC_PLANE + seq];
    if (n_tokens == 0) return;  // uniform over the workgroup

    const uint kh = p.head_map == 0 ? h % p.H_k : h / (p.H / p.H_k);
    const uint sbase = ((seq * p.H + h) * S_V + j) * S_V + lane;

    // Token t+1's inputs are loaded into registers while token t computes (latency hiding).
    float nq[EPT], nk[EPT];
    float nv, ng, nb;
    fetch(seq * p.seq_rows, kh, h, j, tid, nq, nk, nv, ng, nb);

    float s[RPL];
    [[unroll]] for (uint r = 0; r < RPL; ++r) s[r] = state[src * p.plane + sbase + r * LANES];

    for (uint t = 0; t < n_tokens; ++t) {
        const uint row = seq * p.seq_rows + t;
        const uint buf = (t & 1) * S_V;
        [[unroll]] for (uint e = 0; e < EPT; ++e) {
            if (EPT * WG == S_V || tid + e * WG < S_V) {
                sh_q[buf + tid + e * WG] = nq[e];
                sh_k[buf + tid + e * WG] = nk[e];
            }
        }
        const float vj = nv, decay = exp(ng), bt = nb;
        if (t + 1 < n_tokens) fetch(row + 1, kh, h, j, tid, nq, nk, nv, ng, nb);
        barrier();

        // One reduction gives k.S_j (unnormalised), |k|^2 and |q|^2.
        vec3 part = vec3(0.0);
        [[unroll]] for (uint r = 0; r < RPL; ++r) {
            const float kk = sh_k[buf + lane + r * LANES];
            const float qq = sh_q[buf + lane + r * LANES];
            part += vec3(s[r] * kk, kk * kk, qq * qq);
        }
        const vec3 red = col_sum3(part, tid);
        const float rk = inversesqrt(red.y + p.eps);
        const float rq = inversesqrt(red.z + p.eps);

        // kv of the decayed state with the normalised key; dk = delta_j / |k|.
        const float dk = bt * (vj - decay * red.x * rk) * rk;

        float po = 0.0;
        [[unroll]] for (uint r = 0; r < RPL; ++r) {
            s[r] = decay * s[r] + sh_k[buf + lane + r * LANES] * dk;
            po += s[r] * sh_q[buf + lane + r * LANES];
        }
        const float oj = col_sum1(po, tid);
        if (lane == 0) o[(row * p.H + h) * S_V + j] = oj * rq * p.scale;

        if (t < p.n_snap) {
            const uint dst = (1 + t) * p.plane + sbase;
            [[unroll]] for (uint r = 0; r < RPL; ++r) state[dst + r * LANES] = s[r];
        }
    }
    if (n_tokens > p.n_snap) {
        [[unroll]] for (uint r = 0; r < RPL; ++r) state[sbase + r * LANES] = s[r];
    }
}
