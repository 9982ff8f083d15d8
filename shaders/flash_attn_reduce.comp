#version 450
// flash_attn_reduce: the second pass of split-K flash attention. For each query row (token t,
// head h) it folds the chunk partials written by flash_attn.comp (SPLIT = true) in increasing
// chunk order with fa_fold (common/flash_attn.glsl), the same arithmetic the one-pass path runs,
// and writes O / L. Only the chunks that intersect the row's own valid KV range are read, so the
// result does not depend on kv_len beyond the row's position nor on the other rows.
// Bindings: 0 q_pos   int[n_q_max]          absolute position of each query token (per step)
//           1 lens    int[2] {kv_len, n_q}  (per step)
//           2 part_o  float[n_q_max, n_head, n_chunks_max, HD]
//           3 part_ml float[n_q_max, n_head, n_chunks_max, 2]  {m, l}
//           4 out     float[n_q_max, n_head, HD]
// Push: n_q_max, n_head, n_chunks_max, kv_len_max, window (as given to flash_attn).
// Spec: 0 WG workgroup size, 1 HD head dim, 2 CHUNK (must equal flash_attn's CHUNK).
// Dispatch: n_q_max * n_head workgroups in x; rows with t >= n_q exit.
// Contract: HD % WG == 0.
#include "base.glsl"
#include "flash_attn.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint HD = 128;
layout(constant_id = 2) const uint CHUNK = 256;

const uint WG = gl_WorkGroupSize.x;
const uint VEC = HD / WG;

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

void main() {
    const uint tid = gl_LocalInvocationIndex;
    const uint qrow = gl_WorkGroupID.x;
    const uint t = qrow / p.n_head;
    const int kv_len = min(lens[0], int(p.kv_len_max));
    const uint n_q = min(uint(max(lens[1], 0)), p.n_q_max);
    if (t >= n_q) {
        return;
    }
    ivec2 rg = fa_row_range(q_pos[t], kv_len, p.window);
    float M = FA_NEG, L = 0.0;
    precise float o[VEC];
    for (uint i = 0; i < VEC; ++i) {
        o[i] = 0.0;
    }
    if (rg.y >= rg.x) {
        uint k1 = min(uint(rg.y) / CHUNK + 1u, p.n_chunks_max);
        for (uint k = uint(rg.x) / CHUNK; k < k1; ++k) {
            uint slot = qrow * p.n_chunks_max + k;
            float a, b;
            fa_fold(M, L, part_ml[slot * 2u], part_ml[slot * 2u + 1u], a, b);
            if (b != 0.0) {
                for (uint i = 0; i < VEC; ++i) {
                    o[i] = fa_fold_o(o[i], part_o[slot * HD + tid * VEC + i], a, b);
                }
            }
        }
    }
    for (uint i = 0; i < VEC; ++i) {
        out_o[qrow * HD + tid * VEC + i] = fa_finish(o[i], L);
    }
}
