#version 450
// get_rows: out[i, :] = dequantize(W[ids[i], :]) — embedding lookup from a GGUF-typed table.
// Values are bit-identical to vkinfer/gguf/quants.dequantize (common/quants.glsl follows its
// float operations).
// Bindings: 0 w   uint8[rows, row_bytes]  raw GGUF blocks (read)
//           1 ids int32[n_ids]            row ids, written per step (read)
//           2 out float[n_ids, out_stride] (write); an id outside [0, rows) gives a zero row
// Push: rows, K, row_bytes, n_ids, out_stride (floats; multiple of 4).
// Spec: 0 WG (invocations; each decodes one unit of UNIT_ELEMS elements).
// Contract: K % UNIT_ELEMS == 0; grid (ceil(K / UNIT_ELEMS / WG), min(n_ids, 65535),
//           ceil(n_ids / 65535)) — id index = z * 65535 + y.
#include "base.glsl"

layout(constant_id = 0) const uint WG = 64;
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly restrict buffer WA { uint w32[]; };
layout(std430, binding = 0) readonly restrict buffer WB { uvec4 w128[]; };
layout(std430, binding = 1) readonly restrict buffer I { int ids[]; };
layout(std430, binding = 2) writeonly restrict buffer O { vec4 out4[]; };
layout(push_constant) uniform Push {
    uint rows;
    uint K;
    uint row_bytes;
    uint n_ids;
    uint out_stride;
} p;

#include "quants.glsl"

void main() {
    quants_init();
    const uint i = gl_WorkGroupID.z * 65535u + gl_WorkGroupID.y;
    const uint u = gl_GlobalInvocationID.x;
    if (i >= p.n_ids || u >= p.K / UNIT_ELEMS) return;
    const int id = ids[i];
    const uint ob = (i * p.out_stride) >> 2;
    if (id < 0 || uint(id) >= p.rows) {
        [[unroll]] for (uint pc = 0; pc < UNIT_PIECES; pc++) out4[ob + (piece_k(u, pc) >> 2)] = vec4(0.0);
        return;
    }
    const Raw r = load_raw(uint(id) * p.row_bytes, u);
    [[unroll]] for (uint pc = 0; pc < UNIT_PIECES; pc++)
        out4[ob + (piece_k(u, pc) >> 2)] = dq_piece(r, u, pc);
}
