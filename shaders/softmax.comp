#version 450
// softmax: per row of n floats, y = exp(s·x - m) / Σ exp(s·x - m) with m = max(s·x) (stable).
// A row whose entries are all -inf gives zeros (not NaN); a NaN or +inf entry gives NaN.
// Bindings: 0 x float[] (read)  row r at x_off + r·x_rs, n entries
//           1 y float[] (write) row r at y_off + r·y_rs; may alias x with the same addressing
// Push: n, rows, x_off, x_rs, y_off, y_rs, scale (s).
// Spec: 0 WG (workgroup size, a power of two).
// Grid: one workgroup per row, as (min(rows, 65535), ceil(rows / 65535)).
// Contract: WG a power of two within the device limits.
// Batch invariance (R5): per-invocation max/sum in index order, then a fixed tree
// (row_reduce.glsl); the exponentials are recomputed, bit-identical, in the last pass.
#include "base.glsl"
layout(local_size_x_id = 0) in;
#include "row_reduce.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n; uint rows;
    uint x_off; uint x_rs;
    uint y_off; uint y_rs;
    float scale;
} p;

void main() {
    const uint row = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    if (row >= p.rows) return;  // uniform across the workgroup
    const uint tid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
    const uint xb = p.x_off + row * p.x_rs, yb = p.y_off + row * p.y_rs;

    float m = -1.0 / 0.0;
    for (uint i = tid; i < p.n; i += WG) m = max(m, p.scale * x[xb + i]);
    m = wg_max(m);
    const float shift = m == -1.0 / 0.0 ? 0.0 : m;  // all -inf: exp(-inf) = 0, not NaN

    float acc = 0.0;
    for (uint i = tid; i < p.n; i += WG) acc += exp(p.scale * x[xb + i] - shift);
    const float total = wg_sum(acc);
    const float inv = total > 0.0 ? 1.0 / total : 0.0;

    for (uint i = tid; i < p.n; i += WG) y[yb + i] = exp(p.scale * x[xb + i] - shift) * inv;
}
