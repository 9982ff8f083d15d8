#version 450
// axpy: y[i] = alpha[alpha_index] * x[i] (+ y[i] when ACCUMULATE), i < n.
// Used to accumulate MoE expert outputs with routing weights that live on the GPU, and as the
// foundation's smallest real kernel.
// Bindings: 0 x  float[n]        (read)
//           1 alpha float[]      (read; alpha_index selects the scale, written per step)
//           2 y  float[n]        (read/write)
// Push: n (elements), alpha_index.
// Spec: 0 WG (workgroup size), 1 ACCUMULATE (bool: add into y instead of overwriting).
// Contract: any n; dispatch ceil(n / WG) workgroups in x (<= maxComputeWorkGroupCount[0]).
#include "base.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool ACCUMULATE = true;
layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer A { float alpha[]; };
layout(std430, binding = 2) buffer Y { float y[]; };
layout(push_constant) uniform Push { uint n; uint alpha_index; } p;
void main() {
    uint i = gl_GlobalInvocationID.x;
    if (i >= p.n) return;
    float v = alpha[p.alpha_index] * x[i];
    y[i] = ACCUMULATE ? y[i] + v : v;
}
