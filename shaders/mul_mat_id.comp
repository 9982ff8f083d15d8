#version 450
// mul_mat_id: MoE expert matvec. For token t and slot j < n_slots, e = ids[t, j] (read on the
// GPU from the router's output) and
//     y[t, j, r] = sum_k W_e[r, k] * x[t, j, k]          (default; GROUPED)
//     y[t, r]    = (y[t, r] +) sum_j weights[t, j] * (sum_k W_e[r, k] * x[t, j, k])   (WEIGHTED)
// where x[t, j] is one input row per slot (the down projection) or, with x_sstride = 0, the same
// row for every slot (gate / up). Only the selected experts' rows are read.
// W is a 3-D GGUF tensor [n_expert, rows, row_bytes] in one binding (QTYPE_<NAME> define, see
// common/quants.glsl); activations and accumulation are float32.
// Modes:
//   default   grid (row blocks, n_slots, T): a workgroup computes rows of one (t, j). Decode and
//             MTP verify: each (t, j) reads its expert's rows.
//   WEIGHTED  grid (row blocks, 1, T): a workgroup runs every slot of token t and keeps the
//             routing-weighted sum (the down projection's "weighted sum of experts").
//   GROUPED   grid (row blocks, max_items, 1): prefill. Binding 2 holds the work list written by
//             moe_route.comp's GROUP variant (pairs sorted by expert, items of up to NUM_COLS
//             pairs of one expert, layout there); a workgroup reads its expert's rows once for
//             the item's NUM_COLS columns (as mul_mat_vec does for its columns). Per-slot output.
//   COMBINE   (variant; no weights read) grid (ceil(rows / WG), 1, T): y[t, r] (+)= sum_j
//             weights[t, j] * x[t, j, r], the WEIGHTED epilogue applied to GROUPED's per-slot
//             output (x = that output, with its strides).
// Bindings: 0 w       uint8[n_expert, rows, row_bytes] raw GGUF blocks, expert e at e*expert_stride
//                     bytes, row r at + r*row_bytes (read; COMBINE: unused, bind anything)
//           1 x       float: x[t, j, :] at t*x_tstride + j*x_sstride (read)
//           2 ids     int32[T, ids_stride]: ids[t, j] at t*ids_stride + j (read); GROUPED: the
//                     uint32 work list instead
//           3 weights float[T, ids_stride]: routing weights, same layout (read; WEIGHTED and
//                     COMBINE, bind ids otherwise)
//           4 y       float: y[t, j, r] at t*y_tstride + j*y_sstride + r; WEIGHTED and COMBINE:
//                     y[t, r] at t*y_tstride + r (read when ACCUMULATE, write)
// Push: rows, K, row_bytes, expert_stride (bytes), n_expert, n_slots, ids_stride, x_tstride,
//       x_sstride, y_tstride, y_sstride (floats or ints).
// Spec: 0 WG (invocations), 1 NR (rows per 8-lane group), 2 UNROLL (units per lane per loop
//       step, loaded together), 3 WEIGHTED (bool), 4 ACCUMULATE (bool, WEIGHTED / COMBINE: add
//       into y), 5 GROUPED (bool), 6 NUM_COLS (GROUPED: pairs per item, = the work list's
//       GROUP_COLS; else 1), 7 PREFETCH (load the next step's units before multiplying the
//       current ones, as mul_mat_vec.comp), 8 CHUNK (units per lane per chunk of activations
//       staged in shared memory, a multiple of UNROLL; see common/matvec.glsl), 9 XPREFETCH
//       (the next chunk's activation loads ahead, as mul_mat_vec.comp).
// Variants: SUBGROUP_REDUCE combines the lanes with subgroupShuffleXor, otherwise shared memory.
// Numerics (R5): each (t, j) is the canonical reduction of common/quants.glsl, computed by the
//       same code as mul_mat_vec.comp (common/matvec.glsl: LANES = 8 lanes per row, lane l sums
//       units l, l+8, ... in the factored per-run form, then the butterfly s[l] + s[l^m]):
//       y[t, j] is bit-identical to mul_mat_vec of W_e with x[t, j], whatever the mode, T,
//       NUM_COLS, WG, NR, UNROLL, PREFETCH or the variant.
//       WEIGHTED and COMBINE both sum weights[t, j] * y[t, j] in increasing j with separate (uncontracted)
//       multiply and add from +0, then add that to the old y when ACCUMULATE: a token's result is
//       the same bits through the decode path and the prefill path.
// Contract: K a whole number of blocks and of UNIT_ELEMS; x strides % 4 == 0; WG % 8 == 0 (and a
//       multiple of the subgroup size, subgroups >= 8, with SUBGROUP_REDUCE); grid dimensions <=
//       maxComputeWorkGroupCount; n_expert * expert_stride < 2^32; not WEIGHTED and GROUPED
//       together; NUM_COLS = 1 unless GROUPED. An id outside [0, n_expert) is clamped into it.
#include "base.glsl"
#extension GL_KHR_shader_subgroup_basic : enable
#ifdef SUBGROUP_REDUCE
#extension GL_KHR_shader_subgroup_shuffle : enable
#endif

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint NR = 2;
layout(constant_id = 2) const uint UNROLL = 2;
layout(constant_id = 3) const bool WEIGHTED = false;
layout(constant_id = 4) const bool ACCUMULATE = false;
layout(constant_id = 5) const bool GROUPED = false;
layout(constant_id = 6) const uint NUM_COLS = 1;
layout(constant_id = 7) const bool PREFETCH = true;
layout(constant_id = 8) const uint CHUNK = 2;  // units per lane per staged activation chunk
layout(constant_id = 9) const bool XPREFETCH = false;  // stage the next chunk ahead

layout(std430, binding = 0) readonly restrict buffer WA { uint w32[]; };
layout(std430, binding = 0) readonly restrict buffer WB { uvec4 w128[]; };
layout(std430, binding = 1) readonly restrict buffer X { vec4 x4[]; };
layout(std430, binding = 1) readonly restrict buffer XS { float x1[]; };
layout(std430, binding = 2) readonly buffer I { int ids[]; };
layout(std430, binding = 3) readonly buffer RW { float rweights[]; };
layout(std430, binding = 4) buffer Y { float y[]; };
layout(push_constant) uniform Push {
    uint rows;
    uint K;
    uint row_bytes;
    uint expert_stride;
    uint n_expert;
    uint n_slots;
    uint ids_stride;
    uint x_tstride;
    uint x_sstride;
    uint y_tstride;
    uint y_sstride;
} p;

#include "quants.glsl"

#ifdef COMBINE
void main() {
    const uint r = gl_GlobalInvocationID.x;
    const uint t = gl_WorkGroupID.z;
    if (r >= p.rows) return;
    precise float s = 0.0;
    for (uint j = 0u; j < p.n_slots; j++) {
        precise float prod = rweights[t * p.ids_stride + j] * x1[t * p.x_tstride + j * p.x_sstride + r];
        s = s + prod;
    }
    precise float v = s;
    if (ACCUMULATE) v = y[t * p.y_tstride + r] + v;
    y[t * p.y_tstride + r] = v;
}
#else

#include "matvec.glsl"

// res[i][c] = the canonical dot product of row row0 + i of the expert at byte ebase with the
// column at vec4 index xb4[c], for c < ncols (uniform; later columns are left 0, not computed:
// a partial work item costs only its columns' arithmetic). Rows past the end repeat the last
// row (not stored). Every invocation of the workgroup must call it (barriers).
void dot_rows(uint ebase, uint row0, uint lane, uint xb4[NUM_COLS], uint ncols,
              out float res[NR][NUM_COLS]) {
    uint row_off[NR];
    [[unroll]] for (uint i = 0; i < NR; i++)
        row_off[i] = ebase + min(row0 + i, p.rows - 1u) * p.row_bytes;
    mv_dot(row_off, xb4, ncols, p.K / UNIT_ELEMS, lane, res);
}

void main() {
    quants_init();
    const uint GROUPS = WG / LANES;
    const uint wg = gl_WorkGroupID.x;
    if (wg * GROUPS * NR >= p.rows) return;  // whole workgroup: no barrier is skipped unevenly

#ifdef SUBGROUP_REDUCE
    // Lanes of one row are 8 neighbours of one subgroup, whatever the subgroup size (>= 8).
    const uint lane = gl_SubgroupInvocationID & (LANES - 1u);
    const uint group = gl_SubgroupID * (gl_SubgroupSize / LANES) + gl_SubgroupInvocationID / LANES;
#else
    const uint lane = gl_LocalInvocationID.x & (LANES - 1u);
    const uint group = gl_LocalInvocationID.x / LANES;
#endif
    const uint row0 = (wg * GROUPS + group) * NR;

    if (GROUPED) {
        // Work item gl_WorkGroupID.y of the list (moe_route.comp GROUP): up to NUM_COLS pairs
        // (t, j) of one expert.
        const uint item = gl_WorkGroupID.y;
        if (item >= uint(ids[0])) return;  // uniform over the workgroup
        const uint P = uint(ids[1]);
        const uint pairs_off = 4u + 2u * ((P + NUM_COLS - 1u) / NUM_COLS + min(p.n_expert, P));
        const uint a = uint(ids[4u + 2u * item]);
        const uint start = uint(ids[5u + 2u * item]);
        const uint e = min(a & 0xFFFFu, p.n_expert - 1u), cnt = a >> 16;
        uint xb4[NUM_COLS];
        uint yo[NUM_COLS];
        [[unroll]] for (uint c = 0; c < NUM_COLS; c++) {
            const uint pr = uint(ids[pairs_off + start + min(c, cnt - 1u)]);
            const uint t = pr / p.n_slots, j = pr % p.n_slots;
            xb4[c] = (t * p.x_tstride + j * p.x_sstride) >> 2;
            yo[c] = t * p.y_tstride + j * p.y_sstride;
        }
        float acc[NR][NUM_COLS];
        dot_rows(e * p.expert_stride, row0, lane, xb4, cnt, acc);
        // Spread the NR * NUM_COLS stores over the 8 lanes (as mul_mat_vec.comp).
        [[unroll]] for (uint i = 0; i < NR; i++) {
            const uint row = row0 + i;
            [[unroll]] for (uint c = 0; c < NUM_COLS; c++) {
                if (((i * NUM_COLS + c) & (LANES - 1u)) == lane && row < p.rows && c < cnt)
                    y[yo[c] + row] = acc[i][c];
            }
        }
        return;
    }

    const uint t = gl_WorkGroupID.z;
    precise float wsum[NR];
    [[unroll]] for (uint i = 0; i < NR; i++) wsum[i] = 0.0;

    // WEIGHTED: this workgroup runs every slot of token t; otherwise the grid's y is the slot.
    const uint j_begin = WEIGHTED ? 0u : gl_WorkGroupID.y;
    const uint j_end = WEIGHTED ? p.n_slots : gl_WorkGroupID.y + 1u;
    for (uint j = j_begin; j < j_end; j++) {
        const uint e = min(uint(ids[t * p.ids_stride + j]), p.n_expert - 1u);
        uint xb4[NUM_COLS];
        [[unroll]] for (uint c = 0; c < NUM_COLS; c++)
            xb4[c] = (t * p.x_tstride + j * p.x_sstride) >> 2;
        float acc[NR][NUM_COLS];
        dot_rows(e * p.expert_stride, row0, lane, xb4, 1u, acc);

        if (WEIGHTED) {
            const float wj = rweights[t * p.ids_stride + j];
            [[unroll]] for (uint i = 0; i < NR; i++) {
                precise float prod = wj * acc[i][0];
                wsum[i] = wsum[i] + prod;
            }
        } else {
            // Spread the NR stores over the 8 lanes.
            [[unroll]] for (uint i = 0; i < NR; i++) {
                const uint row = row0 + i;
                if ((i & (LANES - 1u)) == lane && row < p.rows)
                    y[t * p.y_tstride + j * p.y_sstride + row] = acc[i][0];
            }
        }
    }

    if (WEIGHTED) {
        [[unroll]] for (uint i = 0; i < NR; i++) {
            const uint row = row0 + i;
            if ((i & (LANES - 1u)) == lane && row < p.rows) {
                precise float v = wsum[i];
                if (ACCUMULATE) v = y[t * p.y_tstride + row] + v;
                y[t * p.y_tstride + row] = v;
            }
        }
    }
}
#endif
