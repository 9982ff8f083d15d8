#version 450
// gated_rms_norm: the Gated DeltaNet output norm (llamacpp-facts §2.2 item 9), per row and head:
//   y[e] = o[e] * inversesqrt(mean_e(o^2) + eps) * w[e] * silu(z[e]),   e < S_V
// w (ssm_norm, not +1-shifted) is shared by all heads.
// Bindings (float32):
//   0 o  float[]  read   o[(row*H + h)*S_V + e]           (gated_delta_net output)
//   1 z  float[]  read   z[z_off + row*z_stride + h*S_V + e]  (the attn_gate projection)
//   2 w  float[]  read   w[e], S_V elements
//   3 y  float[]  write  y[(row*H + h)*S_V + e]
// Push: H (heads), z_off, z_stride (elements), eps.
// Spec: 0 WG (local size, power of two), 1 S_V (head size).
// Grid: (H, rows). One workgroup per (row, head); the sum of squares is a fixed-order
// shared-memory tree, so a row's result does not depend on the number of rows (R5).
// Contract: WG a power of two <= device limits.
#include "base.glsl"
#include "gdn.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint S_V = 128;
const uint WG = gl_WorkGroupSize.x;

layout(std430, binding = 0) readonly buffer Oi { float o[]; };
layout(std430, binding = 1) readonly buffer Z { float z[]; };
layout(std430, binding = 2) readonly buffer Wt { float w[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint H;
    uint z_off;
    uint z_stride;
    float eps;
} p;

shared float sh[WG];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint h = gl_WorkGroupID.x;
    const uint row = gl_WorkGroupID.y;
    const uint base = (row * p.H + h) * S_V;

    float ss = 0.0;
    for (uint e = tid; e < S_V; e += WG) {
        const float v = o[base + e];
        ss += v * v;
    }
    sh[tid] = ss;
    barrier();
    [[unroll]] for (uint s = WG / 2; s > 0; s >>= 1) {
        if (tid < s) sh[tid] += sh[tid + s];
        barrier();
    }
    const float r = inversesqrt(sh[0] / float(S_V) + p.eps);

    const uint zb = p.z_off + row * p.z_stride + h * S_V;
    for (uint e = tid; e < S_V; e += WG) {
        y[base + e] = o[base + e] * r * w[e] * silu(z[zb + e]);
    }
}
