#version 450
// rms_norm: normalise rows of n floats. A row is (token t, head h) of a [tokens, heads, n] view
// given by element offsets and strides, so one dispatch serves the hidden state (heads = 1), the
// per-head q/k norm (weight [n] shared by the heads) and views of fused tensors (Qfull's q part).
//   default      y = x · rsqrt(mean(x²) + eps) · w
//   NO_WEIGHT    y = x · rsqrt(mean(x²) + eps)
//   RESIDUAL     s = x + r is stored, then y = s · rsqrt(mean(s²) + eps) · w   (h = x + attn_out;
//                norm(h) in one pass). With NO_WEIGHT as well: no weight.
//   GATE_SILU    y = x · rsqrt(mean(x²) + eps) · w · silu(r)   (gated DeltaNet output norm)
//   L2           y = x · rsqrt(Σx² + eps)   (eps inside the sum, HF l2norm; no weight)
// Bindings: 0 x float[]  (read)  element (t,h,i) at x_off + t·x_ts + h·x_hs + i
//           1 r float[]  (read)  residual (RESIDUAL) or gate (GATE_SILU), addressed with r_*;
//                                bind x when the variant has none
//           2 w float[n] (read)  weight at w_off + i; bind x when unused
//           3 s float[]  (write) the sum x + r (RESIDUAL), addressed with s_*; bind y when unused
//           4 y float[]  (write) output, addressed with y_*
// Push: n, w_off, {x,r,s,y}_{off,ts,hs} (elements), eps.
// Spec: 0 WG (workgroup size, a power of two).
// Grid: (heads, tokens), one workgroup per row, both <= maxComputeWorkGroupCount.
// Contract: WG a power of two within the device limits. Each invocation handles the elements
// i ≡ tid (mod WG) in both passes and the second pass reads the sum back from s, so s may alias x
// or r, and y may alias x, r or s (in place) when they share the same addressing.
// Batch invariance (R5): per-invocation sums in index order, then a fixed tree (row_reduce.glsl).
#include "base.glsl"
#include "activations.glsl"
layout(local_size_x_id = 0) in;
#include "row_reduce.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer R { float r[]; };
layout(std430, binding = 2) readonly buffer W { float w[]; };
layout(std430, binding = 3) buffer S { float s[]; };
layout(std430, binding = 4) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n; uint w_off;
    uint x_off; uint x_ts; uint x_hs;
    uint r_off; uint r_ts; uint r_hs;
    uint s_off; uint s_ts; uint s_hs;
    uint y_off; uint y_ts; uint y_hs;
    float eps;
} p;

void main() {
    const uint h = gl_WorkGroupID.x, t = gl_WorkGroupID.y;
    const uint tid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
    const uint xb = p.x_off + t * p.x_ts + h * p.x_hs;
    const uint rb = p.r_off + t * p.r_ts + h * p.r_hs;
    const uint sb = p.s_off + t * p.s_ts + h * p.s_hs;
    const uint yb = p.y_off + t * p.y_ts + h * p.y_hs;

    float acc = 0.0;
    for (uint i = tid; i < p.n; i += WG) {
        float v = x[xb + i];
#ifdef RESIDUAL
        v += r[rb + i];
        s[sb + i] = v;
#endif
        acc += v * v;
    }
    const float total = wg_sum(acc);
#ifdef L2
    const float scale = inversesqrt(total + p.eps);
#else
    const float scale = inversesqrt(total / float(p.n) + p.eps);
#endif

    for (uint i = tid; i < p.n; i += WG) {
#ifdef RESIDUAL
        const float v = s[sb + i];  // written above by this invocation: safe when s aliases x
#else
        const float v = x[xb + i];
#endif
        float o = scale * v;
#if !defined(NO_WEIGHT) && !defined(L2)
        o *= w[p.w_off + i];
#endif
#ifdef GATE_SILU
        o *= silu(r[rb + i]);
#endif
        y[yb + i] = o;
    }
}
