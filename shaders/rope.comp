#version 450
// rope: rotary position embedding over a [tokens, heads, head_dim] view, in place or not.
//   default (NeoX)   channel i pairs with i + n_rot/2, for i < n_rot/2
//   ROPE_NORMAL      channel 2i pairs with 2i + 1, for i < n_rot/2 (GPT-J order)
// Channels >= n_rot pass through (partial rotary); they are copied only when copy_pass != 0.
// Pair i turns by θ = f32(pos[t]) · freq[i], rounded to f32 once, as llama.cpp and HF compute it;
// freq[i] = base^(-2i/n_rot) / linear_scale comes from the host (pipelines/rope.py freq_table), so
// every device uses the same f32 frequencies. cos θ and sin θ come from an exact fixed-point
// reduction of θ modulo 2π and short polynomials, not from the builtins, whose error the Vulkan
// spec bounds only on [-π, π] (GPUs reducing with one f32 multiply lose ~3e-3 rad at θ = 1e5).
// Bindings: 0 x    float[]  (read)  element (t,h,c) at x_off + t·x_ts + h·x_hs + c
//           1 pos  int[]    (read)  position of token t at pos[pos_off + t]; written per step (R3)
//           2 freq float[n_rot/2] (read)
//           3 y    float[]  (write) element (t,h,c) at y_off + t·y_ts + h·y_hs + c; may be x itself
//                                   with the same addressing (in place)
// Push: head_dim, n_rot, n_heads, pos_off, x_off, x_ts, x_hs, y_off, y_ts, y_hs, copy_pass.
// Spec: 0 WG (workgroup size).
// Grid: (ceil(n_heads·head_dim/2 / WG), tokens): one invocation per channel pair.
// Contract: n_rot and head_dim even, n_rot <= head_dim, |θ| < 2^32 (no position overflow).
#include "base.glsl"
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer P { int pos[]; };
layout(std430, binding = 2) readonly buffer F { float freq[]; };
layout(std430, binding = 3) buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint head_dim; uint n_rot; uint n_heads; uint pos_off;
    uint x_off; uint x_ts; uint x_hs;
    uint y_off; uint y_ts; uint y_hs;
    uint copy_pass;
} p;

// cos and sin of the f32 angle th. |th| = N + f with N = floor(|th|) (exact for |th| < 2^32) and
// f in [0, 1). N/(2π) mod 1 is taken in 0.32 fixed point from 1/(2π) in 0.64 fixed point (error
// < 2^-31 turns), f/(2π) is added, and the sum is split into a quadrant and a remainder of at
// most π/4, where the series below are accurate to ~2e-9. Angle error overall ~1e-7 rad.
void sincos_reduced(float th, out float c, out float s) {
    const uint INV2PI_HI = 0x28BE60DBu, INV2PI_LO = 0x9391054Au;  // floor(2^64 / 2π)
    const float TURNS_PER_RAD_Q32 = 683565275.5764316;              // 2^32 / 2π
    const float RAD_PER_Q32 = 1.4629180792671596e-09;               // 2π / 2^32
    const float a = abs(th);
    const float nf = floor(a);
    const float f = a - nf;  // exact
    const uint n = uint(nf);
    uint h1, l1, h2, l2;
    umulExtended(n, INV2PI_LO, h1, l1);
    umulExtended(n, INV2PI_HI, h2, l2);
    const uint turns = (l2 + h1) + uint(f * TURNS_PER_RAD_Q32);  // wraps mod 1 turn by design
    const uint q = (turns + 0x20000000u) >> 30;                  // nearest quarter turn
    const float r = float(int(turns - (q << 30))) * RAD_PER_Q32;  // in [-π/4, π/4]
    const float r2 = r * r;
    const float sr = r * (1.0 + r2 * (-1.0 / 6.0 + r2 * (1.0 / 120.0 + r2 * (-1.0 / 5040.0
                         + r2 * (1.0 / 362880.0)))));
    const float cr = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24.0 + r2 * (-1.0 / 720.0
                         + r2 * (1.0 / 40320.0 + r2 * (-1.0 / 3628800.0)))));
    const uint qq = q & 3u;
    c = qq == 0u ? cr : qq == 1u ? -sr : qq == 2u ? -cr : sr;
    s = qq == 0u ? sr : qq == 1u ? cr : qq == 2u ? -sr : -cr;
    if (th < 0.0) s = -s;
}

void main() {
    const uint half_hd = p.head_dim / 2u, half_rot = p.n_rot / 2u;
    const uint j = gl_GlobalInvocationID.x, t = gl_WorkGroupID.y;
    if (j >= p.n_heads * half_hd) return;
    const uint h = j / half_hd, k = j - h * half_hd;
    const uint xb = p.x_off + t * p.x_ts + h * p.x_hs;
    const uint yb = p.y_off + t * p.y_ts + h * p.y_hs;
    if (k >= half_rot) {  // pass-through channels n_rot + 2(k - n_rot/2), +1
        if (p.copy_pass != 0u) {
            const uint c = p.n_rot + 2u * (k - half_rot);
            y[yb + c] = x[xb + c];
            y[yb + c + 1u] = x[xb + c + 1u];
        }
        return;
    }
#ifdef ROPE_NORMAL
    const uint c0 = 2u * k, c1 = 2u * k + 1u;
#else
    const uint c0 = k, c1 = k + half_rot;
#endif
    precise const float theta = float(pos[p.pos_off + t]) * freq[k];  // one f32 rounding
    float cs, sn;
    sincos_reduced(theta, cs, sn);
    const float x0 = x[xb + c0], x1 = x[xb + c1];
    y[yb + c0] = x0 * cs - x1 * sn;
    y[yb + c1] = x0 * sn + x1 * cs;
}
