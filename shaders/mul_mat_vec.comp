#version 450
// mul_mat_vec: y[c, r] = sum_k W[r, k] * x[c, k] (+ residual[c, r]) for NUM_COLS columns c,
// each weight read once for all columns (decode: 1 column; MTP verify: up to 8).
// W is GGUF-quantized (one QTYPE_<NAME> define, see common/quants.glsl), activations and
// accumulation are float32.
// Bindings: 0 w        uint8[rows, row_bytes]  raw GGUF blocks, row-major (read)
//           1 x        float[NUM_COLS, x_stride]  column c at c * x_stride (read)
//           2 y        float[NUM_COLS, y_stride]  (write)
//           3 residual float[NUM_COLS, r_stride]  added when ADD_RESIDUAL (read; may be y itself,
//                      for y += W x; r_stride 0 makes it a per-row bias)
// Push: rows, K, row_bytes (bytes per weight row), x_stride, y_stride, r_stride (in floats).
// Spec: 0 WG (invocations), 1 NR (rows per invocation), 2 NUM_COLS (1..8), 3 UNROLL (units per
//       lane per loop step, loaded together), 4 ADD_RESIDUAL, 5 PREFETCH (load the next step's
//       units before multiplying the current ones: software pipelining), 6 CHUNK (units per lane
//       per chunk of activations staged in shared memory; a multiple of UNROLL), 7 XPREFETCH
//       (issue the next chunk's activation loads before the current chunk's arithmetic).
// Variants: SUBGROUP_REDUCE combines the lanes with subgroupShuffleXor; without it, through shared
//       memory. Both compute the same canonical butterfly, so the bits are the same.
// Shared memory: one chunk of activations (common/matvec.glsl), NUM_COLS·CHUNK·8·UNIT_ELEMS
//       floats (+ the run sums of the types with a block minimum, + the reduction without
//       SUBGROUP_REDUCE).
// Numerics (R5): LANES (=8) lanes per row follow the canonical order of common/quants.glsl (the
//       factored per-run form for quantized types); WG, NR, UNROLL, PREFETCH, NUM_COLS and the
//       variant change the speed, never the bits. mul_mat.comp and mul_mat_id.comp compute the
//       same bits for the same column.
// Contract: K % UNIT_ELEMS == 0 (and a whole number of blocks); x_stride % 4 == 0; WG % 8 == 0;
//       CHUNK % UNROLL == 0;
//       with SUBGROUP_REDUCE, WG a multiple of the subgroup size and subgroups of at least 8;
//       grid: ceil(rows / (NR * WG / 8)) workgroups, laid out as gx * gy with gx <= 65535
//       (workgroup id = y * gx + x; ids past the end exit).
#include "base.glsl"
#extension GL_KHR_shader_subgroup_basic : enable
#ifdef SUBGROUP_REDUCE
#extension GL_KHR_shader_subgroup_shuffle : enable
#endif

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint NR = 2;
layout(constant_id = 2) const uint NUM_COLS = 1;
layout(constant_id = 3) const uint UNROLL = 2;
layout(constant_id = 4) const bool ADD_RESIDUAL = false;
layout(constant_id = 5) const bool PREFETCH = true;
layout(constant_id = 6) const uint CHUNK = 2;  // units per lane per staged activation chunk
layout(constant_id = 7) const bool XPREFETCH = false;  // stage the next chunk ahead

layout(std430, binding = 0) readonly restrict buffer WA { uint w32[]; };
layout(std430, binding = 0) readonly restrict buffer WB { uvec4 w128[]; };
layout(std430, binding = 1) readonly restrict buffer X { vec4 x4[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer R { float res[]; };
layout(push_constant) uniform Push {
    uint rows;
    uint K;
    uint row_bytes;
    uint x_stride;
    uint y_stride;
    uint r_stride;
} p;

#include "quants.glsl"
#include "matvec.glsl"

void main() {
    quants_init();
    const uint GROUPS = WG / LANES;
    const uint wg = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
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
    uint row_off[NR];
    [[unroll]] for (uint i = 0; i < NR; i++) row_off[i] = min(row0 + i, p.rows - 1u) * p.row_bytes;
    uint xb4[NUM_COLS];
    [[unroll]] for (uint c = 0; c < NUM_COLS; c++) xb4[c] = c * (p.x_stride >> 2);

    float acc[NR][NUM_COLS];
    mv_dot(row_off, xb4, NUM_COLS, p.K / UNIT_ELEMS, lane, acc);

    // Spread the NR * NUM_COLS stores over the 8 lanes.
    [[unroll]] for (uint i = 0; i < NR; i++) {
        const uint row = row0 + i;
        [[unroll]] for (uint c = 0; c < NUM_COLS; c++) {
            if (((i * NUM_COLS + c) & (LANES - 1u)) == lane && row < p.rows) {
                precise float v = acc[i][c];
                if (ADD_RESIDUAL) v = v + res[c * p.r_stride + row];
                y[c * p.y_stride + row] = v;
            }
        }
    }
}
