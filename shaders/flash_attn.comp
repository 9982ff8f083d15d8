#version 450
// flash_attn: softmax(scale * Q K^T + mask) V over a KV cache, online softmax (FlashAttention-2,
// Dao 2023), split over the KV length in fixed chunks of CHUNK absolute positions.
//
// Rows. For one KV head, the query heads that share it (GQA group of G = n_head / n_head_kv) and
// the query tokens form "rows" rho = t * G + g (token t, query head h = kvh * G + g), so K and V
// are read once per KV head for all of them. A workgroup takes BR consecutive rows of one KV head.
// Query row t sits at absolute position q_pos[t] and attends KV positions j with
//   j <= q_pos[t], j < kv_len, and (window > 0) j > q_pos[t] - window.
// Scores: s = (scale * q) . k, then s = softcap * tanh(s / softcap) when softcap > 0, then mask.
//
// Chunks. KV positions are cut into chunks [k * CHUNK, (k + 1) * CHUNK) of absolute positions,
// each processed in blocks of BC columns with an online softmax giving (m_k, l_k, O_k):
// max score, sum of exp, unnormalised output. Chunks are then folded in increasing k
// (fa_fold in common/flash_attn.glsl): in this shader when SPLIT is false (one pass, prefill), or
// by flash_attn_reduce.comp when SPLIT is true (one workgroup per chunk, decode/verify).
// Both run the same arithmetic, so both give the same bits.
//
// Batch invariance (R5). A row's bits depend only on its own q, its own valid range and the
// cache: every masked score contributes an exact no-op (p = 0 is skipped, a block or chunk with
// nothing valid leaves the state untouched), the dot products and sums run in a fixed order per
// row, and chunk boundaries are absolute positions. So the result does not depend on the other
// rows in the dispatch, on BR, WG, SPLIT, or on kv_len beyond the row's own position (decode at
// kv_len = p + 1 equals verify at kv_len = p + K + 1). The numerics-defining constants are HD,
// BC, CHUNK and DL: pipelines that must agree bit-for-bit must share them.
//
// Bindings: 0 q       float[n_q_max, n_head, HD]                          (read)
//           1 k_cache F16: float16[kv_len_max, n_head_kv, HD]; Q8_0 (KV_Q8_0): GGUF blocks,
//                     [kv_len_max, n_head_kv, HD / 32] x {fp16 d, int8 qs[32]} (34 bytes)  (read)
//           2 v_cache same layout and type as k_cache                     (read)
//           3 q_pos   int[n_q_max]: absolute position of each query token, per step   (read)
//           4 lens    int[2]: {kv_len, n_q}, per step; clamped to kv_len_max, n_q_max (read)
//           5 out     float[n_q_max, n_head, HD]       (written when SPLIT is false)
//           6 part_o  float[n_q_max, n_head, n_chunks_max, HD]  unnormalised chunk O (SPLIT)
//           7 part_ml float[n_q_max, n_head, n_chunks_max, 2]   chunk {m, l}         (SPLIT)
// Push: n_q_max, n_head, n_head_kv, kv_len_max, n_chunks_max (>= ceil(kv_len_max / CHUNK)),
//       window (0: none), scale (usually 1/sqrt(HD)), softcap (0: none).
// Spec: 0 WG workgroup size, 1 HD head dim, 2 BR rows per workgroup, 3 BC columns per block,
//       4 CHUNK KV positions per chunk, 5 DL lanes per column in the score dot product,
//       6 SPLIT write chunk partials (true) or fold in-shader and write out (false),
//       7 PREFETCH_V request a block's V rows (BC x VEC registers) before its scores, hiding one
//         memory round trip per block; costs registers (and LLVM compile time on lavapipe).
// Defines: KV_Q8_0 (Q8_0 cache; default F16), SHMEM_REDUCE (lane reduction through shared memory
//          instead of subgroup shuffles; same summation tree, same bits).
// Dispatch: (SPLIT ? n_chunks_max : 1, ceil(n_q_max * G / BR), n_head_kv) workgroups. Rows with
//          t >= n_q and chunks past kv_len exit early, so one recording serves every step.
// Contract (checked on the host): HD % WG == 0 (VEC = HD / WG outputs per thread, <= 16),
//          DL a power of two dividing WG, DL <= min subgroup size, HD % (4 DL) == 0,
//          BC % (WG / DL) == 0, CHUNK % BC == 0, BR <= WG, shared memory fits, PREFETCH_V only
//          with BC * VEC <= 128; Q8_0: HD % 32 == 0. Caller: n_head % n_head_kv == 0,
//          kv_len >= 1 and q_pos[t] < kv_len for every active token (a row with no valid
//          position gets 0).
#include "base.glsl"
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#include "flash_attn.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 128;
layout(constant_id = 2) const uint BR = 8;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint CHUNK = 256;
layout(constant_id = 5) const uint DL = 8;
layout(constant_id = 6) const bool SPLIT = true;
layout(constant_id = 7) const bool PREFETCH_V = false;

const uint WG = gl_WorkGroupSize.x;
const uint VEC = HD / WG;         // output elements per thread in the P.V phase
const uint NCG = WG / DL;         // column groups in the score phase
const uint CPG = BC / NCG;        // columns per group per block
const uint G4 = HD / (4 * DL);    // vec4s of the head dim per lane
const uint HD4 = HD / 4;

layout(std430, binding = 0) readonly buffer Qb { vec4 q4[]; };
#ifdef KV_Q8_0
layout(std430, binding = 1) readonly buffer Kb { uint16_t k_u16[]; };
layout(std430, binding = 2) readonly buffer Vb { uint16_t v_u16[]; };
#else
layout(std430, binding = 1) readonly buffer Kb { f16vec4 k_h4[]; };
layout(std430, binding = 2) readonly buffer Vb { float16_t v_h[]; };
#endif
layout(std430, binding = 3) readonly buffer QP { int q_pos[]; };
layout(std430, binding = 4) readonly buffer LN { int lens[]; };
layout(std430, binding = 5) writeonly buffer Ob { float out_o[]; };
layout(std430, binding = 6) writeonly buffer PO { float part_o[]; };
layout(std430, binding = 7) writeonly buffer PM { float part_ml[]; };

layout(push_constant) uniform Push {
    uint n_q_max;
    uint n_head;
    uint n_head_kv;
    uint kv_len_max;
    uint n_chunks_max;
    uint window;
    float scale;
    float softcap;
} p;

shared vec4 Qs[BR * HD4];          // query rows of the tile, pre-multiplied by scale
shared float Ss[BR * BC];          // scores of the block, then probabilities
shared int row_first[BR];
shared int row_last[BR];
shared float row_a[BR];            // block rescale, then fold scale a
shared float row_m[BR];            // running row max of the chunk
shared float row_b[BR];            // fold scale b, then final L
#ifdef SHMEM_REDUCE
shared float Red[BR * BC * DL];
#endif

#ifdef KV_Q8_0
// Q8_0 rows: HD / 32 blocks of 17 uint16 (d, then 16 pairs of int8).
vec4 load_k4(uint row, uint e) {
    uint base = (row * (HD / 32u) + e / 32u) * 17u;
    float d = unpackHalf2x16(uint(k_u16[base])).x;
    uint w = base + 1u + (e % 32u) / 2u;
    int lo = int(uint(k_u16[w]));
    int hi = int(uint(k_u16[w + 1u]));
    return vec4(d * float(bitfieldExtract(lo, 0, 8)), d * float(bitfieldExtract(lo, 8, 8)),
                d * float(bitfieldExtract(hi, 0, 8)), d * float(bitfieldExtract(hi, 8, 8)));
}
float load_v(uint row, uint e) {
    uint base = (row * (HD / 32u) + e / 32u) * 17u;
    float d = unpackHalf2x16(uint(v_u16[base])).x;
    uint b = 2u + e % 32u;
    int w = int(uint(v_u16[base + b / 2u]));
    return d * float(bitfieldExtract(w, int(8u * (b & 1u)), 8));
}
#else
vec4 load_k4(uint row, uint e) {
    return vec4(k_h4[(row * HD + e) / 4u]);
}
float load_v(uint row, uint e) {
    return float(v_h[row * HD + e]);
}
#endif

void main() {
    const uint tid = gl_LocalInvocationIndex;
#ifdef SHMEM_REDUCE
    const uint lin = tid;
#else
    // Lanes of one column group must share a subgroup: number threads subgroup-major.
    const uint lin = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#endif
    const uint lane = lin % DL;
    const uint cg = lin / DL;

    const uint kvh = gl_WorkGroupID.z;
    const uint G = p.n_head / p.n_head_kv;
    const int kv_len = min(lens[0], int(p.kv_len_max));
    const uint n_q = min(uint(max(lens[1], 0)), p.n_q_max);
    const uint n_rows = n_q * G;
    const uint row0 = gl_WorkGroupID.y * BR;
    if (row0 >= n_rows) {
        return;
    }

    if (tid < BR) {
        uint rho = row0 + tid;
        ivec2 rg = ivec2(0, -1);
        if (rho < n_rows) {
            rg = fa_row_range(q_pos[rho / G], kv_len, p.window);
        }
        row_first[tid] = rg.x;
        row_last[tid] = rg.y;
    }
    for (uint i = tid; i < BR * HD4; i += WG) {
        uint r = i / HD4;
        uint rho = row0 + r;
        vec4 v = vec4(0.0);
        if (rho < n_rows) {
            uint t = rho / G;
            uint h = kvh * G + rho % G;
            v = q4[(t * p.n_head + h) * HD4 + i % HD4] * p.scale;
        }
        Qs[i] = v;
    }
    barrier();

    // Union of the tile's valid ranges: blocks and chunks outside it are skipped (exact no-ops).
    int lo = 0x7fffffff;
    int hi = -1;
    for (uint r = 0; r < BR; ++r) {
        if (row_last[r] >= row_first[r]) {
            lo = min(lo, row_first[r]);
            hi = max(hi, row_last[r]);
        }
    }

    uint k_begin, k_end;
    if (SPLIT) {
        k_begin = gl_WorkGroupID.x;
        k_end = k_begin + 1u;
        if (hi < lo || int(k_begin * CHUNK) > hi || int(k_end * CHUNK) <= lo) {
            return;
        }
    } else {
        k_begin = hi < lo ? 0u : uint(lo) / CHUNK;
        k_end = hi < lo ? 0u : uint(hi) / CHUNK + 1u;
    }

    precise float O[BR * VEC];      // chunk accumulator, rows x this thread's VEC outputs
    precise float Oacc[BR * VEC];  // folded over chunks (one-pass mode only)
    float m_run = FA_NEG, l_run = 0.0;          // row tid's chunk state (tid < BR)
    float M_acc = FA_NEG, L_acc = 0.0;          // row tid's folded state
    if (!SPLIT) {
        for (uint i = 0; i < BR * VEC; ++i) {
            Oacc[i] = 0.0;
        }
    }

    for (uint kc = k_begin; kc < k_end; ++kc) {
        const int c0 = int(kc * CHUNK);
        const int c1 = min(c0 + int(CHUNK), kv_len);   // exclusive end of readable columns
        for (uint i = 0; i < BR * VEC; ++i) {
            O[i] = 0.0;
        }
        m_run = FA_NEG;
        l_run = 0.0;

        for (int j0 = c0; j0 < c1; j0 += int(BC)) {
            if (j0 > hi || j0 + int(BC) <= lo) {
                continue;   // no row of the tile sees this block
            }
            // V rows of the block are requested now, so they arrive while the scores are
            // computed (one memory round trip per block instead of two).
            float vr[BC * VEC];
            if (PREFETCH_V) {
                for (uint c = 0; c < BC; ++c) {
                    const int j = j0 + int(c);
                    for (uint i = 0; i < VEC; ++i) {
                        vr[c * VEC + i] = j < c1
                            ? load_v(uint(j) * p.n_head_kv + kvh, tid * VEC + i) : 0.0;
                    }
                }
            }
            // ---- scores: column group cg takes columns cg + s * NCG; DL lanes split the dot.
            // All of the group's K slices are loaded first (loads in flight together), then each
            // query slice is read from shared memory once for all CPG columns.
            vec4 kv[CPG * G4];
            for (uint s = 0; s < CPG; ++s) {
                const int j = j0 + int(cg + s * NCG);
                for (uint i = 0; i < G4; ++i) {
                    kv[s * G4 + i] = j < c1
                        ? load_k4(uint(j) * p.n_head_kv + kvh, 4u * (lane + DL * i)) : vec4(0.0);
                }
            }
            for (uint r = 0; r < BR; ++r) {
                precise float acc[CPG];
                for (uint s = 0; s < CPG; ++s) {
                    acc[s] = 0.0;
                }
                for (uint i = 0; i < G4; ++i) {
                    vec4 qv = Qs[r * HD4 + lane + DL * i];
                    for (uint s = 0; s < CPG; ++s) {
                        vec4 kk = kv[s * G4 + i];
                        acc[s] = fma(qv.x, kk.x, acc[s]);
                        acc[s] = fma(qv.y, kk.y, acc[s]);
                        acc[s] = fma(qv.z, kk.z, acc[s]);
                        acc[s] = fma(qv.w, kk.w, acc[s]);
                    }
                }
                for (uint s = 0; s < CPG; ++s) {
                    const uint c = cg + s * NCG;
#ifdef SHMEM_REDUCE
                    Red[(r * BC + c) * DL + lane] = acc[s];
#else
                    precise float a = acc[s];
                    for (uint sh = 1u; sh < DL; sh <<= 1u) {
                        a = a + subgroupShuffleXor(a, sh);
                    }
                    if (lane == 0u) {
                        const int j = j0 + int(c);
                        bool ok = j < c1 && j >= row_first[r] && j <= row_last[r];
                        Ss[r * BC + c] = ok ? fa_softcap(a, p.softcap) : FA_NEG;
                    }
#endif
                }
            }
#ifdef SHMEM_REDUCE
            // The same pairwise tree as the shuffle butterfly: lane i += lane i + sh.
            for (uint sh = 1u; sh < DL; sh <<= 1u) {
                barrier();
                if (lane % (2u * sh) == 0u) {
                    for (uint s = 0; s < CPG; ++s) {
                        for (uint r = 0; r < BR; ++r) {
                            uint ix = (r * BC + cg + s * NCG) * DL + lane;
                            precise float v = Red[ix] + Red[ix + sh];
                            Red[ix] = v;
                        }
                    }
                }
            }
            barrier();
            if (lane == 0u) {
                for (uint s = 0; s < CPG; ++s) {
                    const uint c = cg + s * NCG;
                    const int j = j0 + int(c);
                    for (uint r = 0; r < BR; ++r) {
                        bool ok = j < c1 && j >= row_first[r] && j <= row_last[r];
                        Ss[r * BC + c] = ok ? fa_softcap(Red[(r * BC + c) * DL], p.softcap)
                                            : FA_NEG;
                    }
                }
            }
#endif
            barrier();

            // ---- online softmax: row maxima and rescale (one thread per row), then the exps
            // by all threads; the row sum (in column order) is taken by the row's thread below,
            // while the others already run P V.
            if (tid < BR) {
                float mb = FA_NEG;
                for (uint c = 0; c < BC; ++c) {
                    mb = max(mb, Ss[tid * BC + c]);
                }
                float mn = max(m_run, mb);
                row_a[tid] = (mn == m_run) ? 1.0 : ((m_run == FA_NEG) ? 0.0 : exp(m_run - mn));
                row_m[tid] = mn;
                m_run = mn;
            }
            barrier();
            for (uint e = tid; e < BR * BC; e += WG) {
                float sc = Ss[e];
                Ss[e] = (sc == FA_NEG) ? 0.0 : exp(sc - row_m[e / BC]);
            }
            barrier();
            if (tid < BR) {
                precise float l = l_run * row_a[tid];
                for (uint c = 0; c < BC; ++c) {
                    l = l + Ss[tid * BC + c];
                }
                l_run = l;
            }

            // ---- O = O * alpha + P V; thread tid owns outputs tid * VEC .. + VEC.
            for (uint r = 0; r < BR; ++r) {
                float al = row_a[r];
                if (al != 1.0) {
                    for (uint i = 0; i < VEC; ++i) {
                        O[r * VEC + i] = O[r * VEC + i] * al;
                    }
                }
            }
            for (uint c = 0; c < BC; ++c) {
                const int j = j0 + int(c);
                if (j >= c1) {
                    break;
                }
                float v[VEC];
                for (uint i = 0; i < VEC; ++i) {
                    v[i] = PREFETCH_V ? vr[c * VEC + i]
                                      : load_v(uint(j) * p.n_head_kv + kvh, tid * VEC + i);
                }
                for (uint r = 0; r < BR; ++r) {
                    float pr = Ss[r * BC + c];
                    if (pr != 0.0) {
                        for (uint i = 0; i < VEC; ++i) {
                            O[r * VEC + i] = fma(pr, v[i], O[r * VEC + i]);
                        }
                    }
                }
            }
            barrier();
        }

        if (SPLIT) {
            // Partials of rows that see this chunk; the reduce pass reads exactly those.
            for (uint r = 0; r < BR; ++r) {
                uint rho = row0 + r;
                if (rho >= n_rows || row_last[r] < row_first[r] || row_last[r] < c0
                        || row_first[r] >= c0 + int(CHUNK)) {
                    continue;
                }
                uint qrow = (rho / G) * p.n_head + kvh * G + rho % G;
                uint slot = qrow * p.n_chunks_max + kc;
                for (uint i = 0; i < VEC; ++i) {
                    part_o[slot * HD + tid * VEC + i] = O[r * VEC + i];
                }
                if (tid == r) {
                    part_ml[slot * 2u] = m_run;
                    part_ml[slot * 2u + 1u] = l_run;
                }
            }
        } else {
            if (tid < BR) {
                float a, b;
                fa_fold(M_acc, L_acc, m_run, l_run, a, b);
                row_a[tid] = a;
                row_b[tid] = b;
            }
            barrier();
            for (uint r = 0; r < BR; ++r) {
                float a = row_a[r], b = row_b[r];
                if (b != 0.0) {
                    for (uint i = 0; i < VEC; ++i) {
                        Oacc[r * VEC + i] = fa_fold_o(Oacc[r * VEC + i], O[r * VEC + i], a, b);
                    }
                }
            }
            barrier();
        }
    }

    if (!SPLIT) {
        if (tid < BR) {
            row_b[tid] = L_acc;
        }
        barrier();
        for (uint r = 0; r < BR; ++r) {
            uint rho = row0 + r;
            if (rho >= n_rows) {
                break;
            }
            uint qrow = (rho / G) * p.n_head + kvh * G + rho % G;
            float L = row_b[r];
            for (uint i = 0; i < VEC; ++i) {
                out_o[qrow * HD + tid * VEC + i] = fa_finish(Oacc[r * VEC + i], L);
            }
        }
    }
}
