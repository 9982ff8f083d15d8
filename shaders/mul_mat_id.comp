#version 450
// mul_mat_id: MoE expert matvec. For token t and slot j < n_slots, e = ids[t, j] (read on the
// GPU from the router's output) and
//     y[t, j, r] = sum_k W_e[r, k] * x[t, j, k]          (default)
//     y[t, r]    = (y[t, r] +) sum_j weights[t, j] * (sum_k W_e[r, k] * x[t, j, k])   (WEIGHTED)
// where x[t, j] is one input row per slot (the down projection) or, with x_sstride = 0, the same
// row for every slot (gate / up). Only the selected experts' rows are read.
// W is a 3-D GGUF tensor [n_expert, rows, row_bytes] in one binding (QTYPE_<NAME> define, see
// common/quants.glsl); activations and accumulation are float32.
// Bindings: 0 w       uint8[n_expert, rows, row_bytes] raw GGUF blocks, expert e at e*expert_stride
//                     bytes, row r at + r*row_bytes (read)
//           1 x       float: x[t, j, :] at t*x_tstride + j*x_sstride (read)
//           2 ids     int32[T, ids_stride]: ids[t, j] at t*ids_stride + j (read)
//           3 weights float[T, ids_stride]: routing weights, same layout (read; WEIGHTED only,
//                     bind ids otherwise)
//           4 y       float: y[t, j, r] at t*y_tstride + j*y_sstride + r; WEIGHTED: y[t, r] at
//                     t*y_tstride + r (read when ACCUMULATE, write)
// Push: rows, K, row_bytes, expert_stride (bytes), n_expert, n_slots, ids_stride, x_tstride,
//       x_sstride, y_tstride, y_sstride (floats or ints).
// Spec: 0 WG (invocations), 1 NR (rows per 8-lane group), 2 UNROLL (units loaded ahead per lane),
//       3 WEIGHTED (bool), 4 ACCUMULATE (bool, WEIGHTED only: add into y).
// Variants: SUBGROUP_REDUCE combines the lanes with subgroupShuffleXor, otherwise shared memory.
// Grid: (ceil(rows / (NR*WG/8)), n_slots, T); WEIGHTED: (ceil(rows / (NR*WG/8)), 1, T).
// Numerics (R5): each (t, j) is the canonical reduction of common/quants.glsl, exactly the loop of
//       mul_mat_vec.comp (LANES = 8 lanes per row, lane l sums units l, l+8, ... with fma in piece
//       order, then the butterfly s[l] + s[l^m]): y[t, j] is bit-identical to mul_mat_vec of W_e
//       with x[t, j], whatever T, WG, NR, UNROLL or the variant. WEIGHTED then sums
//       weights[t, j] * y[t, j] in increasing j with separate (uncontracted) multiply and add, and
//       adds that to the old y last when ACCUMULATE.
// Contract: K a whole number of blocks and of UNIT_ELEMS; x strides % 4 == 0; WG % 8 == 0 (and a
//       multiple of the subgroup size, subgroups >= 8, with SUBGROUP_REDUCE); row blocks, n_slots
//       and T <= maxComputeWorkGroupCount; n_expert * expert_stride < 2^32. An id outside
//       [0, n_expert) is clamped into it (never read out of bounds).
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

layout(std430, binding = 0) readonly restrict buffer WA { uint w32[]; };
layout(std430, binding = 0) readonly restrict buffer WB { uvec4 w128[]; };
layout(std430, binding = 1) readonly restrict buffer X { vec4 x4[]; };
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

#ifndef SUBGROUP_REDUCE
shared float red[WG * NR];
#endif

void main() {
    quants_init();
    const uint GROUPS = WG / LANES;
    const uint wg = gl_WorkGroupID.x;
    if (wg * GROUPS * NR >= p.rows) return;  // whole workgroup: no barrier is skipped unevenly
    const uint t = gl_WorkGroupID.z;

#ifdef SUBGROUP_REDUCE
    // Lanes of one row are 8 neighbours of one subgroup, whatever the subgroup size (>= 8).
    const uint lane = gl_SubgroupInvocationID & (LANES - 1u);
    const uint group = gl_SubgroupID * (gl_SubgroupSize / LANES) + gl_SubgroupInvocationID / LANES;
#else
    const uint lane = gl_LocalInvocationID.x & (LANES - 1u);
    const uint group = gl_LocalInvocationID.x / LANES;
    const uint tid = gl_LocalInvocationID.x;
#endif
    const uint row0 = (wg * GROUPS + group) * NR;
    const uint nunits = p.K / UNIT_ELEMS;

    precise float wsum[NR];
    [[unroll]] for (uint i = 0; i < NR; i++) wsum[i] = 0.0;

    // WEIGHTED: this workgroup runs every slot of token t; otherwise the grid's y is the slot.
    const uint j_begin = WEIGHTED ? 0u : gl_WorkGroupID.y;
    const uint j_end = WEIGHTED ? p.n_slots : gl_WorkGroupID.y + 1u;
    for (uint j = j_begin; j < j_end; j++) {
        const uint e = min(uint(ids[t * p.ids_stride + j]), p.n_expert - 1u);
        const uint ebase = e * p.expert_stride;
        uint row_off[NR];
        [[unroll]] for (uint i = 0; i < NR; i++)
            row_off[i] = ebase + min(row0 + i, p.rows - 1u) * p.row_bytes;
        const uint xb4 = (t * p.x_tstride + j * p.x_sstride) >> 2;

        precise float acc[NR];
        [[unroll]] for (uint i = 0; i < NR; i++) acc[i] = 0.0;

        for (uint u0 = lane; u0 < nunits; u0 += LANES * UNROLL) {
            // Issue the loads of UNROLL units (of NR rows) before using any of them.
            Raw raw[UNROLL][NR];
            [[unroll]] for (uint jj = 0; jj < UNROLL; jj++) {
                const uint u = min(u0 + jj * LANES, nunits - 1u);
                [[unroll]] for (uint i = 0; i < NR; i++) raw[jj][i] = load_raw(row_off[i], u);
            }
            [[unroll]] for (uint jj = 0; jj < UNROLL; jj++) {
                const uint u = u0 + jj * LANES;
                if (u >= nunits) break;
                [[unroll]] for (uint pc = 0; pc < UNIT_PIECES; pc++) {
                    const vec4 xv = x4[xb4 + (piece_k(u, pc) >> 2)];
                    [[unroll]] for (uint i = 0; i < NR; i++) {
                        const vec4 wv = dq_piece(raw[jj][i], u, pc);
                        acc[i] = fma(wv.x, xv.x, acc[i]);
                        acc[i] = fma(wv.y, xv.y, acc[i]);
                        acc[i] = fma(wv.z, xv.z, acc[i]);
                        acc[i] = fma(wv.w, xv.w, acc[i]);
                    }
                }
            }
        }

        // Canonical butterfly (as mul_mat_vec.comp): after m = 1 all 8 lanes hold the row's sum.
#ifdef SUBGROUP_REDUCE
        [[unroll]] for (uint m = LANES / 2u; m > 0u; m >>= 1)
            [[unroll]] for (uint i = 0; i < NR; i++)
                acc[i] = acc[i] + subgroupShuffleXor(acc[i], m);
#else
        [[unroll]] for (uint m = LANES / 2u; m > 0u; m >>= 1) {
            [[unroll]] for (uint i = 0; i < NR; i++) red[tid * NR + i] = acc[i];
            barrier();
            [[unroll]] for (uint i = 0; i < NR; i++) acc[i] = acc[i] + red[(tid ^ m) * NR + i];
            barrier();
        }
#endif

        if (WEIGHTED) {
            const float wj = rweights[t * p.ids_stride + j];
            [[unroll]] for (uint i = 0; i < NR; i++) {
                precise float prod = wj * acc[i];
                wsum[i] = wsum[i] + prod;
            }
        } else {
            // Spread the NR stores over the 8 lanes.
            [[unroll]] for (uint i = 0; i < NR; i++) {
                const uint row = row0 + i;
                if ((i & (LANES - 1u)) == lane && row < p.rows)
                    y[t * p.y_tstride + j * p.y_sstride + row] = acc[i];
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
