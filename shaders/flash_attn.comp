#version 450
// flash_attn: softmax(scale * Q K^T + mask) V over a KV cache, online softmax (FlashAttention-2,
// Dao 2023), split over the KV length in chunks of absolute positions.
//
// Rows. For one KV head, the query heads that share it (GQA group of G = n_head / n_head_kv) and
// the query tokens form "rows" rho = t * G + g (token t, query head h = kvh * G + g), so K and V
// are read once per KV head for all of them. A workgroup takes BR consecutive rows of one KV head.
// Query row t sits at absolute position q_pos[t] and attends KV positions j with
//   j <= q_pos[t], j < kv_len, and (window > 0) j > q_pos[t] - window.
// Scores: s = (scale * q) . k, then s = softcap * tanh(s / softcap) when softcap > 0, then mask.
//
// Blocks. KV positions are taken in blocks of BC (aligned to BC), staged in one shared buffer:
// K rows (loaded during the previous block's P V), then V rows (loaded during the scores). Per
// block: scores (DL lanes per dot product, each lane a fixed slice of the head dim, lanes combined
// by a fixed butterfly), an online-softmax step per row (block max, exp, block sum by a fixed
// tree), then O = O * alpha + P V (each output element a sequential sum over the block's columns;
// masked columns have p = 0, so they add 0 exactly: only the sign of a zero may differ, and
// fa_finish writes every zero as +0).
//
// Chunks. A row of valid length n (= its last valid position + 1) cuts the KV positions into
// chunks [k C, (k + 1) C) with C = fa_chunk(n) (common/flash_attn.glsl: the smallest power-of-two
// multiple of CHUNK with at most NCHUNK chunks, at most CHUNK_MAX), a function of the row's own
// position only. Each chunk's (m_k, l_k, O_k) (max score, sum of exp, unnormalised output) is
// then folded in increasing k (fa_fold): in this shader when SPLIT is false (one pass, prefill),
// or by flash_attn_reduce.comp when SPLIT is true (decode/verify). Both run the same arithmetic.
// Split mode: workgroup x takes the span [x S, (x + 1) S) with S = fa_chunk(kv_len) >= every
// row's C, so each row ends (flushes) its chunks at its own boundaries inside the span.
//
// Batch invariance (R5). A row's bits depend only on its own q, its own valid range and the
// cache: every masked score contributes an exact no-op (p = 0 adds 0, a block or chunk with
// nothing valid leaves the state untouched), the dot products and sums run in a fixed order per
// row, and the chunk size depends on the row's own position. So the result does not depend on
// the other rows in the dispatch, on BR, WG, VE, SPLIT or the reduction variant, nor on kv_len
// beyond the row's own position (decode at kv_len = p + 1 equals verify at kv_len = p + K + 1
// and prefill). The numerics-defining constants are HD, BC, CHUNK, CHUNK_MAX, NCHUNK and DL:
// pipelines that must agree bit for bit must share them.
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
// Push: n_q_max, n_head, n_head_kv, kv_len_max, n_chunks_max (the most chunks a row of a
//       kv_len_max cache has, pipelines/flash_attn.n_chunks), window (0: none),
//       scale (usually 1/sqrt(HD)), softcap (0: none).
// Spec: 0 WG workgroup size, 1 HD head dim, 2 BR rows per workgroup, 3 BC columns per block,
//       4 CHUNK smallest chunk, 5 DL lanes per score dot product, 6 SPLIT write chunk partials
//       (true) or fold in-shader and write out (false), 7 VE output elements per thread in P V,
//       8 CHUNK_MAX largest chunk, 9 NCHUNK chunks a row aims at, 10 PREFETCH request the next
//       block's K rows before this block's P V (else right before they are stored).
// Defines: KV_Q8_0 (Q8_0 cache; default F16), SHMEM_REDUCE (lane exchanges through shared memory
//          instead of subgroup shuffles; same arithmetic, same bits).
// Dispatch: (SPLIT ? n_chunks_max : 1, ceil(n_q_max * G / BR), n_head_kv) workgroups. Rows with
//          t >= n_q and spans past kv_len exit early, so one recording serves every step.
// Contract (checked on the host): WG, BC, DL, CHUNK, CHUNK_MAX powers of two; 1 <= BR <= WG;
//          HD % (8 DL) == 0, DL <= min subgroup size, DL divides WG, BC % (WG / DL) == 0,
//          BC % DL == 0, CHUNK % BC == 0, CHUNK <= CHUNK_MAX, VE in {4, 8}, WG % (HD / VE) == 0,
//          shared memory fits; Q8_0: HD % 32 == 0. Caller: n_head % n_head_kv == 0,
//          kv_len >= 1 and q_pos[t] < kv_len for every active token (a row with no valid
//          position gets 0); cache bindings 16-byte aligned.
#include "base.glsl"
#extension GL_KHR_shader_subgroup_basic : enable
#extension GL_KHR_shader_subgroup_shuffle : enable
#include "flash_attn.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 128;
layout(constant_id = 2) const uint BR = 8;
layout(constant_id = 3) const uint BC = 32;
layout(constant_id = 4) const uint CHUNK = 32;
layout(constant_id = 5) const uint DL = 8;
layout(constant_id = 6) const bool SPLIT = true;
layout(constant_id = 7) const uint VE = 8;
layout(constant_id = 8) const uint CHUNK_MAX = 512;
layout(constant_id = 9) const uint NCHUNK = 64;
layout(constant_id = 10) const bool PREFETCH = true;

const uint WG = gl_WorkGroupSize.x;
const uint HD4 = HD / 4;
const uint HD8 = HD / 8;            // 8-element groups of a head row
const uint G8 = HD8 / DL;           // groups per lane in a score dot product
const uint NCG = WG / DL;           // column groups (DL lanes each) in the score phase
const uint CPG = BC / NCG;          // columns per group per block
const uint NV = BR * CPG;           // partial dot products per lane
const uint LDL = (DL > 1u ? 1u : 0u) + (DL > 2u ? 1u : 0u) + (DL > 4u ? 1u : 0u)
               + (DL > 8u ? 1u : 0u) + (DL > 16u ? 1u : 0u);   // log2(DL)
// Halving steps of the transposed butterfly: while the values a lane holds are even in number
// (at most log2 DL); the remaining steps combine all of them (plain butterfly).
const uint HV0 = (NV % 2u == 0u ? 1u : 0u) + (NV % 4u == 0u ? 1u : 0u)
               + (NV % 8u == 0u ? 1u : 0u) + (NV % 16u == 0u ? 1u : 0u)
               + (NV % 32u == 0u ? 1u : 0u);
const uint HV = HV0 < LDL ? HV0 : LDL;
const uint NO = NV >> HV;           // reduced scores a lane ends with
const uint SPL = BC / DL;           // columns per lane in the softmax step
const uint RPS = (BR + NCG - 1u) / NCG;    // rows per column group in the softmax step
const uint TV = HD / VE;            // threads per output row in the P V phase
const uint RG = WG / TV;            // row groups in the P V phase
const uint RPT = (BR + RG - 1u) / RG;      // rows per thread in the P V phase

layout(std430, binding = 0) readonly buffer Qb { vec4 q4[]; };
#ifdef KV_Q8_0
const uint ROWB = HD / 32u * 34u;   // bytes of one (position, head) row
const uint ROWW = (ROWB + 3u) / 4u; // 32-bit words of a staged row
// Widest load the row alignment allows: rows are ROWB = 17 HD / 16 bytes apart.
const uint LW = (HD % 256u == 0u) ? 4u : ((HD % 128u == 0u) ? 2u : 1u);   // words per load
const bool LOAD_U16 = HD % 64u != 0u;                                      // HD = 32: 2-byte
const uint UPR = LOAD_U16 ? ROWW : ROWB / (4u * LW);                     // loads per row
layout(std430, binding = 1) readonly buffer Kb4 { uvec4 k_u4[]; };
layout(std430, binding = 1) readonly buffer Kb2 { uvec2 k_u2[]; };
layout(std430, binding = 1) readonly buffer Kb1 { uint k_u1[]; };
layout(std430, binding = 1) readonly buffer Kbh { uint16_t k_h[]; };
layout(std430, binding = 2) readonly buffer Vb4 { uvec4 v_u4[]; };
layout(std430, binding = 2) readonly buffer Vb2 { uvec2 v_u2[]; };
layout(std430, binding = 2) readonly buffer Vb1 { uint v_u1[]; };
layout(std430, binding = 2) readonly buffer Vbh { uint16_t v_h[]; };
const uint SUNITS = BC * UPR;       // loads per block of K or of V
shared uint KVs[BC * ROWW];        // the block's K rows, then its V rows
#else
layout(std430, binding = 1) readonly buffer Kb { uvec4 k_u4[]; };
layout(std430, binding = 2) readonly buffer Vb { uvec4 v_u4[]; };
const uint SUNITS = BC * HD8;       // 16-byte loads per block of K or of V
shared uvec4 KVs[BC * HD8];        // the block's K rows, then its V rows
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

const uint SPT = (SUNITS + WG - 1u) / WG;  // staging loads per thread

shared vec4 Qs[BR * HD4];          // query rows * scale; row r: [half h][group] (conflict-free)
shared vec4 Ss4[BR * BC / 4];      // scores of the block, then probabilities, [row][column]
shared int row_first[BR];
shared int row_last[BR];
shared uint row_csh[BR];           // log2 of the row's chunk size (a power of two)
shared uint row_qrow[BR];          // the row's index t * n_head + h in q / out / partials
shared float row_alpha[BR];        // block rescale of O
shared float row_fa[BR];           // chunk fold scales (direct mode), then final L
shared float row_fb[BR];
#ifdef SHMEM_REDUCE
shared float Xch[2u * WG];
uint xch_n = 0u;
#endif

uint g_lin;                        // lane numbering of the score and softmax phases

// Value of lane (lane ^ m) of the same DL-lane group.
float xch(float v, uint m) {
#ifdef SHMEM_REDUCE
    // Double-buffered: a write of call k + 2 follows every read of call k (barrier of k + 1).
    uint b = (xch_n & 1u) * WG;
    xch_n++;
    Xch[b + g_lin] = v;
    barrier();
    return Xch[b + (g_lin ^ m)];
#else
    return subgroupShuffleXor(v, m);
#endif
}

// ---- staging: a block's K rows, then its V rows, global -> registers -> shared ----
#ifdef KV_Q8_0
uint st[SPT * LW];

// K (isv false) or V rows of positions j0 .. j0 + BC - 1 into registers (0 past kv_len).
void stage_load(bool isv, uint j0, int kv_len, uint kvh) {
    [[unroll]] for (uint i = 0; i < SPT; ++i) {
        uint u = gl_LocalInvocationIndex + i * WG;
        uint c = u / UPR, w = u % UPR;
        int j = int(j0 + c);
        bool ok = u < SUNITS && j < kv_len;
        uint row = uint(j) * p.n_head_kv + kvh;   // (position, head) row index
        [[unroll]] for (uint x = 0; x < LW; ++x) {
            st[i * LW + x] = 0u;
        }
        if (ok) {
            if (LOAD_U16) {
                // 2-byte aligned rows: word w = u16 pair (2w, 2w + 1); the pad half stays 0
                uint h0 = row * (ROWB / 2u) + 2u * w;
                bool two = 2u * w + 1u < ROWB / 2u;
                uint lo16 = isv ? uint(v_h[h0]) : uint(k_h[h0]);
                uint hi16 = two ? (isv ? uint(v_h[h0 + 1u]) : uint(k_h[h0 + 1u])) : 0u;
                st[i] = lo16 | (hi16 << 16u);
            } else if (LW == 4u) {
                uvec4 a = isv ? v_u4[row * UPR + w] : k_u4[row * UPR + w];
                st[i * 4u] = a.x; st[i * 4u + 1u] = a.y;
                st[i * 4u + 2u] = a.z; st[i * 4u + 3u] = a.w;
            } else if (LW == 2u) {
                uvec2 a = isv ? v_u2[row * UPR + w] : k_u2[row * UPR + w];
                st[i * 2u] = a.x; st[i * 2u + 1u] = a.y;
            } else {
                st[i] = isv ? v_u1[row * UPR + w] : k_u1[row * UPR + w];
            }
        }
    }
}

void stage_store() {
    [[unroll]] for (uint i = 0; i < SPT; ++i) {
        uint u = gl_LocalInvocationIndex + i * WG;
        if (u < SUNITS) {
            uint c = u / UPR, w = u % UPR;
            uint wl = LOAD_U16 ? 1u : LW;
            for (uint x = 0; x < wl; ++x) {
                KVs[c * ROWW + w * wl + x] = st[i * LW + x];
            }
        }
    }
}

// 8 bytes of a staged row from byte offset o (even), and 4 bytes: 2-byte aligned reads as two or
// three word reads and funnel shifts (selects, no divergent branch).
uvec2 kv8(uint base, uint o) {
    uint w = base + (o >> 2u);
    uint a = KVs[w], b = KVs[w + 1u], c = KVs[w + 2u];
    bool odd = (o & 2u) != 0u;
    return uvec2(odd ? (a >> 16u) | (b << 16u) : a, odd ? (b >> 16u) | (c << 16u) : b);
}
uint kv4(uint base, uint o) {
    uint w = base + (o >> 2u);
    uint a = KVs[w], b = KVs[w + 1u];
    return (o & 2u) != 0u ? (a >> 16u) | (b << 16u) : a;
}
float kv_d(uint base, uint b) {
    uint o = 34u * b;
    uint w = KVs[base + (o >> 2u)];
    return unpackHalf2x16((o & 2u) != 0u ? w >> 16u : w).x;
}

// Byte k of a word whose bytes were biased (xor 0x80: q + 128) as the exact float q:
// (2^23 + q + 128) - (2^23 + 128), no int -> float conversion.
float q8f(uint wb, uint k) {
    return uintBitsToFloat(((wb >> (8u * k)) & 0xFFu) | 0x4B000000u) - 8388736.0;
}

// Elements e .. e + 7 (e % 8 == 0) of staged K column c as the integers q (exact floats), and
// the block scale d: the score phase multiplies d in once per 8 products.
void k_load8(uint c, uint e, out float f[8], out float d) {
    uint base = c * ROWW, b = e / 32u;
    uvec2 w = kv8(base, 34u * b + 2u + e % 32u) ^ uvec2(0x80808080u);
    d = kv_d(base, b);
    [[unroll]] for (uint k = 0; k < 4u; ++k) {
        f[k] = q8f(w.x, k);
        f[4u + k] = q8f(w.y, k);
    }
}
// Elements e .. e + VE - 1 of staged V column c as integers q, and the block scale d: the
// P V phase multiplies p by d once per column (p * d, then fma with q).
void v_load(uint c, uint e, out float f[VE], out float d) {
    uint base = c * ROWW, b = e / 32u;
    d = kv_d(base, b);
    uint o = 34u * b + 2u + e % 32u;
    if (VE == 8u) {
        uvec2 w = kv8(base, o) ^ uvec2(0x80808080u);
        [[unroll]] for (uint k = 0; k < 4u; ++k) {
            f[k] = q8f(w.x, k);
            f[(4u + k) % VE] = q8f(w.y, k);
        }
    } else {
        uint w = kv4(base, o) ^ 0x80808080u;
        [[unroll]] for (uint k = 0; k < 4u; ++k) {
            f[k % VE] = q8f(w, k);
        }
    }
}
#else
uvec4 st[SPT];

// K (isv false) or V rows of positions j0 .. j0 + BC - 1 into registers (0 past kv_len).
void stage_load(bool isv, uint j0, int kv_len, uint kvh) {
    [[unroll]] for (uint i = 0; i < SPT; ++i) {
        uint u = gl_LocalInvocationIndex + i * WG;
        uint c = u / HD8, g = u % HD8;
        int j = int(j0 + c);
        bool ok = u < SUNITS && j < kv_len;
        uint ix = (uint(j) * p.n_head_kv + kvh) * HD8 + g;
        st[i] = uvec4(0u);
        if (ok) {
            st[i] = isv ? v_u4[ix] : k_u4[ix];
        }
    }
}

void stage_store() {
    [[unroll]] for (uint i = 0; i < SPT; ++i) {
        uint u = gl_LocalInvocationIndex + i * WG;
        if (u < SUNITS) {
            KVs[u] = st[i];
        }
    }
}

void k_load8(uint c, uint e, out float f[8], out float d) {
    d = 1.0;
    uvec4 w = KVs[c * HD8 + e / 8u];
    vec2 a = unpackHalf2x16(w.x), b = unpackHalf2x16(w.y);
    vec2 cc = unpackHalf2x16(w.z), dd = unpackHalf2x16(w.w);
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
    f[4] = cc.x; f[5] = cc.y; f[6] = dd.x; f[7] = dd.y;
}
void v_load(uint c, uint e, out float f[VE], out float d) {
    d = 1.0;
    uvec4 w = KVs[c * HD8 + e / 8u];
    bool hi = VE == 4u && (e % 8u) != 0u;
    vec2 a = unpackHalf2x16(hi ? w.z : w.x), b = unpackHalf2x16(hi ? w.w : w.y);
    f[0] = a.x; f[1] = a.y; f[2] = b.x; f[3] = b.y;
    if (VE == 8u) {
        vec2 cc = unpackHalf2x16(w.z), dd = unpackHalf2x16(w.w);
        f[4u % VE] = cc.x; f[5u % VE] = cc.y; f[6u % VE] = dd.x; f[7u % VE] = dd.y;
    }
}
#endif

void main() {
    const uint tid = gl_LocalInvocationIndex;
#ifdef SHMEM_REDUCE
    g_lin = tid;
#else
    // Lanes of one DL group must share a subgroup: number threads subgroup-major.
    g_lin = gl_SubgroupID * gl_SubgroupSize + gl_SubgroupInvocationID;
#endif
    const uint lane = g_lin % DL;
    const uint cg = g_lin / DL;
    const uint tv = tid % TV;        // P V phase: elements tv * VE .. + VE
    const uint rgi = tid / TV;       //            of rows rgi + RG * i

    const uint kvh = gl_WorkGroupID.z;
    const uint G = p.n_head / p.n_head_kv;
    const int kv_len = min(lens[0], int(p.kv_len_max));
    const uint n_q = min(uint(max(lens[1], 0)), p.n_q_max);
    const uint n_rows = n_q * G;
    const uint row0 = gl_WorkGroupID.y * BR;
    if (row0 >= n_rows) {
        return;
    }

    // Split mode: the span's first block is requested at once (it needs kv_len only); if the
    // rows' ranges start later (a window), the right block is requested below.
    int span = int(fa_chunk(kv_len, CHUNK, CHUNK_MAX, NCHUNK));
    int s0 = int(gl_WorkGroupID.x) * span;
    if (SPLIT && s0 < kv_len) {
        stage_load(false, uint(s0), kv_len, kvh);
    }

    if (tid < BR) {
        uint rho = row0 + tid;
        // loaded without waiting for lens (in bounds for any grid row)
        const int qp = q_pos[min(rho, p.n_q_max * G - 1u) / G];
        ivec2 rg = ivec2(0, -1);
        if (rho < n_rows) {
            rg = fa_row_range(qp, kv_len, p.window);
        }
        row_first[tid] = rg.x;
        row_last[tid] = rg.y;
        row_csh[tid] = uint(findMSB(fa_chunk(rg.y + 1, CHUNK, CHUNK_MAX, NCHUNK)));
        row_qrow[tid] = (rho / G) * p.n_head + kvh * G + rho % G;
    }
    for (uint i = tid; i < BR * HD4; i += WG) {
        uint r = i / HD4, e4 = i % HD4;
        uint rho = min(row0 + r, p.n_q_max * G - 1u);   // in bounds; rows past n_rows give 0
        vec4 v = q4[((rho / G) * p.n_head + kvh * G + rho % G) * HD4 + e4] * p.scale;
        Qs[r * HD4 + (e4 % 2u) * HD8 + e4 / 2u] = row0 + r < n_rows ? v : vec4(0.0);
    }
    barrier();

    // Union of the tile's valid ranges: blocks and spans outside it are skipped (exact no-ops).
    int lo = 0x7fffffff;
    int hi = -1;
    for (uint r = 0; r < BR; ++r) {
        if (row_last[r] >= row_first[r]) {
            lo = min(lo, row_first[r]);
            hi = max(hi, row_last[r]);
        }
    }
    if (hi < lo) {
        if (SPLIT) {
            return;
        }
        lo = 0;
        hi = -1;
    }
    int jb = (lo / int(BC)) * int(BC);   // first block
    int jl = hi;                          // last position processed
    if (SPLIT) {
        if (s0 > hi || s0 + span <= lo) {
            return;
        }
        jb = max(jb, s0);
        jl = min(jl, s0 + span - 1);
        if (jb != s0) {
            stage_load(false, uint(jb), kv_len, kvh);
        }
    } else if (jb <= jl) {
        stage_load(false, uint(jb), kv_len, kvh);
    }

    // Softmax state of rows cg + NCG * rr (identical in the DL lanes of the group).
    float m_run[RPS], l_run[RPS], M_acc[RPS], L_acc[RPS];
    [[unroll]] for (uint rr = 0; rr < RPS; ++rr) {
        m_run[rr] = FA_NEG;
        l_run[rr] = 0.0;
        M_acc[rr] = FA_NEG;
        L_acc[rr] = 0.0;
    }
    precise float O[RPT * VE];
    precise float Oacc[RPT * VE];
    for (uint i = 0; i < RPT * VE; ++i) {
        O[i] = 0.0;
        Oacc[i] = 0.0;
    }

    // Per block: K rows staged, scores; V rows staged (their loads overlapped the scores),
    // softmax; P V (the next block's K loads in flight). Four barriers per BC columns.
    for (int j0 = jb; j0 <= jl; j0 += int(BC)) {
        const bool last_block = j0 + int(BC) > jl;
        if (!PREFETCH && j0 != jb) {
            stage_load(false, uint(j0), kv_len, kvh);
        }
        barrier();                     // the previous block's P V is done with KVs and Ss
        stage_store();                 // K
        barrier();
        stage_load(true, uint(j0), kv_len, kvh);       // V, in flight during the scores

        // ---- scores: group cg takes columns cg + s * NCG; lane covers 8-element groups
        // lane + DL * i of the head dim, summed in order; the DL lanes are then combined by a
        // butterfly over lane bits DL/2, DL/4, .., 1 (transposed: each exchange halves the
        // values a lane keeps until it holds NO of them).
        float acc[NV];
        [[unroll]] for (uint o = 0; o < NV; ++o) {
            acc[o] = 0.0;
        }
        [[unroll]] for (uint i = 0; i < G8; ++i) {
            const uint grp = lane + DL * i;
            float kf[CPG * 8];
            float kd[CPG];
            [[unroll]] for (uint s = 0; s < CPG; ++s) {
                float t8[8];
                k_load8(cg + s * NCG, 8u * grp, t8, kd[s]);
                [[unroll]] for (uint x = 0; x < 8u; ++x) {
                    kf[s * 8u + x] = t8[x];
                }
            }
            [[unroll]] for (uint r = 0; r < BR; ++r) {
                vec4 qa = Qs[r * HD4 + grp];
                vec4 qb = Qs[r * HD4 + HD8 + grp];
                [[unroll]] for (uint s = 0; s < CPG; ++s) {
#ifdef KV_Q8_0
                    // 8 products with the integers q, then one multiply-add by the block scale
                    float a = qa.x * kf[s * 8u + 0u];
#else
                    float a = fma(qa.x, kf[s * 8u + 0u], acc[r * CPG + s]);
#endif
                    a = fma(qa.y, kf[s * 8u + 1u], a);
                    a = fma(qa.z, kf[s * 8u + 2u], a);
                    a = fma(qa.w, kf[s * 8u + 3u], a);
                    a = fma(qb.x, kf[s * 8u + 4u], a);
                    a = fma(qb.y, kf[s * 8u + 5u], a);
                    a = fma(qb.z, kf[s * 8u + 6u], a);
                    a = fma(qb.w, kf[s * 8u + 7u], a);
#ifdef KV_Q8_0
                    a = fma(kd[s], a, acc[r * CPG + s]);
#endif
                    acc[r * CPG + s] = a;
                }
            }
        }
        uint base = 0u;
        [[unroll]] for (uint st = 0; st < LDL; ++st) {
            const uint m = (DL >> 1u) >> st;       // lane bit combined at this step
            if (st < HV) {
                const uint h = NV >> (st + 1u);    // a lane keeps h of its 2h values
                const bool up = (lane & m) != 0u;
                [[unroll]] for (uint k = 0; k < h; ++k) {
                    float send = up ? acc[k] : acc[k + h];
                    float keep = up ? acc[k + h] : acc[k];
                    precise float sum = keep + xch(send, m);
                    acc[k] = sum;
                }
                base += up ? h : 0u;
            } else {
                [[unroll]] for (uint k = 0; k < NO; ++k) {
                    precise float sum = acc[k] + xch(acc[k], m);
                    acc[k] = sum;
                }
            }
        }
        // after plain steps the lanes differing in those bits hold the same values
        const bool owner = (lane & ((DL >> HV) - 1u)) == 0u;
        if (owner) {
            [[unroll]] for (uint k = 0; k < NO; ++k) {
                const uint o = base + k;
                const uint r = o / CPG, c = cg + (o % CPG) * NCG;
                const int j = j0 + int(c);
                bool ok = j < kv_len && j >= row_first[r] && j <= row_last[r];
                const uint ix = r * BC + c;
                Ss4[ix / 4u][ix % 4u] = ok ? fa_softcap(acc[k], p.softcap) : FA_NEG;
            }
        }
        barrier();

        stage_store();                 // V (the scores are done with K)

        // ---- online softmax, rows cg + NCG * rr; lane takes columns lane * SPL .. + SPL.
        // Block sum: in order within the lane, then a butterfly over lane bits 1, 2, .., DL/2.
        [[unroll]] for (uint rr = 0; rr < RPS; ++rr) {
            const uint r = cg + rr * NCG;
            const bool live = r < BR;
            const uint rs = live ? r : 0u;
            float sv[SPL];
            float mx = FA_NEG;
            [[unroll]] for (uint x = 0; x < SPL; ++x) {
                const uint ix = rs * BC + lane * SPL + x;
                sv[x] = live ? Ss4[ix / 4u][ix % 4u] : FA_NEG;
                mx = max(mx, sv[x]);
            }
            [[unroll]] for (uint st = 0; st < LDL; ++st) {
                mx = max(mx, xch(mx, 1u << st));
            }
            const float mo = m_run[rr];
            const float mn = max(mo, mx);
            const float al = (mn == mo) ? 1.0 : ((mo == FA_NEG) ? 0.0 : exp(mo - mn));
            precise float bs = 0.0;
            [[unroll]] for (uint x = 0; x < SPL; ++x) {
                float pr = (sv[x] == FA_NEG) ? 0.0 : exp(sv[x] - mn);
                if (live) {
                    const uint ix = rs * BC + lane * SPL + x;
                    Ss4[ix / 4u][ix % 4u] = pr;
                }
                bs = bs + pr;
            }
            [[unroll]] for (uint st = 0; st < LDL; ++st) {
                precise float t = bs + xch(bs, 1u << st);
                bs = t;
            }
            precise float lt = l_run[rr] * al;
            precise float ln = lt + bs;
            l_run[rr] = ln;
            m_run[rr] = mn;
            if (live && lane == 0u) {
                row_alpha[r] = al;
            }
            // End of the row's chunk: hand (m, l) on and start the next chunk.
            const uint csh = row_csh[rs];
            const uint C = 1u << csh;
            if (live && (last_block || ((uint(j0) + BC) & (C - 1u)) == 0u)) {
                if (SPLIT) {
                    const int k0 = int((uint(j0) >> csh) << csh);
                    if (lane == 0u && row_last[r] >= row_first[r] && row_last[r] >= k0
                            && row_first[r] < k0 + int(C)) {
                        const uint slot = row_qrow[r] * p.n_chunks_max + (uint(j0) >> csh);
                        part_ml[slot * 2u] = m_run[rr];
                        part_ml[slot * 2u + 1u] = l_run[rr];
                    }
                } else {
                    float a, b;
                    fa_fold(M_acc[rr], L_acc[rr], m_run[rr], l_run[rr], a, b);
                    if (lane == 0u) {
                        row_fa[r] = a;
                        row_fb[r] = b;
                    }
                }
                m_run[rr] = FA_NEG;
                l_run[rr] = 0.0;
            }
        }
        barrier();

        if (PREFETCH && !last_block) {
            stage_load(false, uint(j0) + BC, kv_len, kvh);   // next K, in flight during P V
        }

        // ---- O = O * alpha + P V: thread owns elements tv * VE .. + VE of rows rgi + RG * i;
        // each element sums the block's columns in order (p = 0 skipped: an exact no-op).
        [[unroll]] for (uint i = 0; i < RPT; ++i) {
            const uint r = rgi + RG * i;
            if (r < BR) {
                const float al = row_alpha[r];
                if (al != 1.0) {
                    [[unroll]] for (uint e = 0; e < VE; ++e) {
                        O[i * VE + e] = O[i * VE + e] * al;
                    }
                }
            }
        }
        // No test of p == 0: fma(0, v, O) == O up to the sign of a zero O (v is finite: cache
        // data, or 0 past kv_len), and fa_finish writes every zero as +0.
        for (uint c4 = 0; c4 < BC; c4 += 4u) {
            vec4 pv[RPT];
            [[unroll]] for (uint i = 0; i < RPT; ++i) {
                const uint r = rgi + RG * i;
                pv[i] = r < BR ? Ss4[(r * BC + c4) / 4u] : vec4(0.0);
            }
            [[unroll]] for (uint cc = 0; cc < 4u; ++cc) {
                float v[VE];
                float vd;
                v_load(c4 + cc, tv * VE, v, vd);
                [[unroll]] for (uint i = 0; i < RPT; ++i) {
#ifdef KV_Q8_0
                    precise float pr = pv[i][cc] * vd;   // p * d, then fma with the integers q
#else
                    const float pr = pv[i][cc];
#endif
                    [[unroll]] for (uint e = 0; e < VE; ++e) {
                        O[i * VE + e] = fma(pr, v[e], O[i * VE + e]);
                    }
                }
            }
        }
        [[unroll]] for (uint i = 0; i < RPT; ++i) {
            const uint r = rgi + RG * i;
            if (r >= BR) {
                continue;
            }
            const uint csh = row_csh[r];
            const uint C = 1u << csh;
            if (!(last_block || ((uint(j0) + BC) & (C - 1u)) == 0u)) {
                continue;
            }
            if (SPLIT) {
                const int k0 = int((uint(j0) >> csh) << csh);
                if (row_last[r] >= row_first[r] && row_last[r] >= k0
                        && row_first[r] < k0 + int(C)) {
                    const uint slot = row_qrow[r] * p.n_chunks_max + (uint(j0) >> csh);
                    [[unroll]] for (uint e = 0; e < VE; ++e) {
                        part_o[slot * HD + tv * VE + e] = O[i * VE + e];
                    }
                }
            } else {
                const float a = row_fa[r], b = row_fb[r];
                if (b != 0.0) {
                    [[unroll]] for (uint e = 0; e < VE; ++e) {
                        Oacc[i * VE + e] = fa_fold_o(Oacc[i * VE + e], O[i * VE + e], a, b);
                    }
                }
            }
            [[unroll]] for (uint e = 0; e < VE; ++e) {
                O[i * VE + e] = 0.0;
            }
        }
    }

    if (!SPLIT) {
        barrier();                     // row_fa is reused for L
        [[unroll]] for (uint rr = 0; rr < RPS; ++rr) {
            const uint r = cg + rr * NCG;
            if (r < BR && lane == 0u) {
                row_fa[r] = L_acc[rr];
            }
        }
        barrier();
        [[unroll]] for (uint i = 0; i < RPT; ++i) {
            const uint r = rgi + RG * i;
            const uint rho = row0 + r;
            if (r >= BR || rho >= n_rows) {
                continue;
            }
            const uint qrow = row_qrow[r];
            const float L = row_fa[r];
            [[unroll]] for (uint e = 0; e < VE; ++e) {
                out_o[qrow * HD + tv * VE + e] = fa_finish(Oacc[i * VE + e], L);
            }
        }
    }
}
