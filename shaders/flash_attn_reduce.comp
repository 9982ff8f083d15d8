#version 450
// flash_attn_reduce: the second pass of split-K flash attention. For each query row (token t,
// head h) it folds the chunk partials written by flash_attn.comp (SPLIT = true) in increasing
// chunk order with the arithmetic of fa_fold (common/flash_attn.glsl), which the one-pass path
// runs too, and writes O / L. The row's chunk size is fa_chunk of its own last valid position,
// and only the chunks that intersect its valid KV range are read, so the result depends neither
// on kv_len beyond the row's position nor on the other rows.
// Latency: chunks are taken in batches of WG; a batch's {m, l} are loaded by one thread each,
// the running maxima are a prefix max (a scan in shared memory), so every chunk's fold scales
// (a, b) are computed in parallel; each thread has its element's partials of the whole batch in
// flight at once and then folds them in order (the same sequential arithmetic as fa_fold).
// Bindings: 0 q_pos   int[n_q_max]          absolute position of each query token (per step)
//           1 lens    int[2] {kv_len, n_q}  (per step)
//           2 part_o  float[n_q_max, n_head, n_chunks_max, HD]
//           3 part_ml float[n_q_max, n_head, n_chunks_max, 2]  {m, l}
//           4 out     float[n_q_max, n_head, HD]
// Push: n_q_max, n_head, n_chunks_max, kv_len_max, window (as given to flash_attn).
// Spec: 0 WG workgroup size (elements per workgroup, chunks per batch), 1 HD head dim,
//       2 CHUNK, 3 CHUNK_MAX, 4 NCHUNK (flash_attn's).
// Dispatch: (n_q_max * n_head, HD / WG) workgroups; rows with t >= n_q exit.
// Contract: HD % WG == 0, WG <= 64 (a batch's partials live in registers).
#include "base.glsl"
#include "flash_attn.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 128;
layout(constant_id = 2) const uint CHUNK = 32;
layout(constant_id = 3) const uint CHUNK_MAX = 512;
layout(constant_id = 4) const uint NCHUNK = 64;

const uint WG = gl_WorkGroupSize.x;

layout(std430, binding = 0) readonly buffer QP { int q_pos[]; };
layout(std430, binding = 1) readonly buffer LN { int lens[]; };
layout(std430, binding = 2) readonly buffer PO { float part_o[]; };
layout(std430, binding = 3) readonly buffer PM { float part_ml[]; };
layout(std430, binding = 4) writeonly buffer Ob { float out_o[]; };

layout(push_constant) uniform Push {
    uint n_q_max;
    uint n_head;
    uint n_chunks_max;
    uint kv_len_max;
    uint window;
} p;

shared float s_scan[2u * WG];      // double-buffered scan: one barrier per step
shared float s_l[WG];
shared float s_a[WG];
shared float s_b[WG];

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint qrow = gl_WorkGroupID.x;
    const uint e = gl_WorkGroupID.y * WG + tid;
    const uint t = qrow / p.n_head;
    // Without a window every row's chunks start at 0: the first batch is requested before lens
    // and q_pos are known (slots past the row's chunks are masked below, never folded).
    const uint nfirst = min(WG, p.n_chunks_max);
    float ov[WG];
    float mi = FA_NEG, li = 0.0;
    if (p.window == 0u) {
        const uint slot0 = qrow * p.n_chunks_max;
        [[unroll]] for (uint u = 0; u < WG; ++u) {
            ov[u] = u < nfirst ? part_o[(slot0 + u) * HD + e] : 0.0;
        }
        if (tid < nfirst) {
            mi = part_ml[(slot0 + tid) * 2u];
            li = part_ml[(slot0 + tid) * 2u + 1u];
        }
    }
    const int kv_len = min(lens[0], int(p.kv_len_max));
    const uint n_q = min(uint(max(lens[1], 0)), p.n_q_max);
    if (t >= n_q) {
        return;
    }
    ivec2 rg = fa_row_range(q_pos[t], kv_len, p.window);
    float M = FA_NEG, L = 0.0;
    precise float o = 0.0;
    if (rg.y >= rg.x) {
        const uint C = fa_chunk(rg.y + 1, CHUNK, CHUNK_MAX, NCHUNK);
        const uint k1 = min(uint(rg.y) / C + 1u, p.n_chunks_max);
        for (uint kb = uint(rg.x) / C; kb < k1; kb += WG) {
            const uint nb = min(WG, k1 - kb);
            const uint slot0 = qrow * p.n_chunks_max + kb;
            if (p.window != 0u || kb != 0u) {
                [[unroll]] for (uint u = 0; u < WG; ++u) {
                    ov[u] = u < nb ? part_o[(slot0 + u) * HD + e] : 0.0;
                }
                mi = tid < nb ? part_ml[(slot0 + tid) * 2u] : FA_NEG;
                li = tid < nb ? part_ml[(slot0 + tid) * 2u + 1u] : 0.0;
            }
            // chunks past the row's last: m = FA_NEG, a no-op fold (a = 1, b = 0)
            mi = tid < nb ? mi : FA_NEG;
            li = tid < nb ? li : 0.0;
            // inclusive prefix max of the batch (max is exact: any order gives the same bits)
            float run = mi;
            uint buf = 0u;
            s_scan[tid] = run;
            barrier();
            for (uint off = 1u; off < WG; off <<= 1u) {
                run = max(run, tid >= off ? s_scan[buf + tid - off] : FA_NEG);
                buf = WG - buf;
                s_scan[buf + tid] = run;
                barrier();
            }
            const float m_prev = tid == 0u ? M : max(M, s_scan[buf + tid - 1u]);
            float a, b;
            fa_fold_ab(m_prev, mi, a, b);
            s_a[tid] = a;
            s_b[tid] = b;
            s_l[tid] = li;
            const float m_next = max(M, s_scan[buf + WG - 1u]);
            barrier();
            // in order; branch-free so that every shared read can be issued early
            [[unroll]] for (uint u = 0; u < WG; ++u) {
                const float au = s_a[u], bu = s_b[u];
                L = fa_fold_l(L, s_l[u], au, bu);
                precise float on = fa_fold_o(o, ov[u], au, bu);
                o = bu != 0.0 ? on : o;
            }
            M = m_next;
            barrier();                 // the next batch reuses the shared arrays
        }
    }
    out_o[qrow * HD + e] = fa_finish(o, L);
}
