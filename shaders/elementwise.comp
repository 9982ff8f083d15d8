#version 450
// elementwise: y = op(a[, b]) over a [rows, n] view; one #define OP per variant:
//   OP_ADD a + b          OP_MUL a·b           OP_SCALE a·p0         OP_SILU a·sigmoid(a)
//   OP_GELU gelu_tanh(a)  OP_SWIGLU silu(a)·b  OP_GEGLU gelu(a)·b    OP_SIGMOID_MUL a·sigmoid(b)
//   OP_SOFTCAP p0·tanh(a/p0) (p1 = 1/p0)       OP_COPY a (with A_F16 or Y_F16: f16 <-> f32)
// Element (r, c) of a is a[a_off + r·a_rs + c], of y is y[y_off + r·y_rs + c], of b is
// b[b_off + r·b_rs + c·b_cs]: b_rs = 0 broadcasts a row vector over rows, b_cs = 0 a per-row
// scalar, both 0 one scalar from a buffer (a scale written on the GPU). Two halves of one
// [rows, 2n] tensor are a = (0, 2n), b = (n, 2n) on the same buffer.
// Bindings: 0 a float[] (float16_t with A_F16) (read)
//           1 b float[] (read; bind a for unary ops)
//           2 y float[] (float16_t with Y_F16) (write; may alias a or b with the same addressing)
// Push: n (columns), rows, a_off, a_rs, b_off, b_rs, b_cs, y_off, y_rs, p0, p1 (op parameters).
// Spec: 0 WG (workgroup size), 1 EPT (elements per invocation).
// Grid: G = ceil(rows·n / (WG·EPT)) workgroups as (min(G, 65535), ceil(G / 65535)); workgroup
// g = y·gx + x covers elements [g·WG·EPT, (g+1)·WG·EPT) of the row-major [rows, n] index.
// Contract: rows·n < 2^32; the f16 variants need storageBuffer16BitAccess.
#include "base.glsl"
#include "activations.glsl"
#define OP_ADD 0
#define OP_MUL 1
#define OP_SCALE 2
#define OP_SILU 3
#define OP_GELU 4
#define OP_SWIGLU 5
#define OP_GEGLU 6
#define OP_SIGMOID_MUL 7
#define OP_SOFTCAP 8
#define OP_COPY 9
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint EPT = 4;

#ifdef A_F16
#define A_TYPE float16_t
#else
#define A_TYPE float
#endif
#ifdef Y_F16
#define Y_TYPE float16_t
#else
#define Y_TYPE float
#endif

layout(std430, binding = 0) readonly buffer A { A_TYPE a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Y { Y_TYPE y[]; };

layout(push_constant) uniform Push {
    uint n; uint rows;
    uint a_off; uint a_rs;
    uint b_off; uint b_rs; uint b_cs;
    uint y_off; uint y_rs;
    float p0; float p1;
} p;

float op(float va, uint bi) {
#if OP == OP_ADD
    return va + b[bi];
#elif OP == OP_MUL
    return va * b[bi];
#elif OP == OP_SCALE
    return va * p.p0;
#elif OP == OP_SILU
    return silu(va);
#elif OP == OP_GELU
    return gelu_tanh(va);
#elif OP == OP_SWIGLU
    return silu(va) * b[bi];
#elif OP == OP_GEGLU
    return gelu_tanh(va) * b[bi];
#elif OP == OP_SIGMOID_MUL
    return va * sigmoid(b[bi]);
#elif OP == OP_SOFTCAP
    return p.p0 * safe_tanh(va * p.p1);
#elif OP == OP_COPY
    return va;
#else
#error "define OP"
#endif
}

void main() {
    const uint WG = gl_WorkGroupSize.x;
    const uint g = gl_WorkGroupID.y * gl_NumWorkGroups.x + gl_WorkGroupID.x;
    const uint total = p.rows * p.n;
    const uint base = g * WG * EPT + gl_LocalInvocationID.x;
    [[unroll]] for (uint k = 0u; k < EPT; ++k) {
        const uint e = base + k * WG;
        if (e >= total) return;
        const uint r = e / p.n, c = e - r * p.n;
        const float va = float(a[p.a_off + r * p.a_rs + c]);
        const float v = op(va, p.b_off + r * p.b_rs + c * p.b_cs);
        y[p.y_off + r * p.y_rs + c] = Y_TYPE(v);
    }
}
