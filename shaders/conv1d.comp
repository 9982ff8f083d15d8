#version 450
// conv1d: causal depthwise convolution over C channels with kernel D_CONV and fused SiLU, T
// tokens per dispatch, with the rolling state of the D_CONV-1 previous raw inputs per channel:
//   y[t][c] = silu( sum_{m<D_CONV} w[c][m] * in[t - (D_CONV-1) + m][c] )
// where in[<0] comes from the state (oldest first) — weight index 0 multiplies the oldest sample
// (llama.cpp ggml_ssm_conv). No bias. The new state is the last D_CONV-1 inputs.
// Bindings (float32; "row" = seq * seq_rows + t):
//   0 x     float[]  read   x[x_off + row*x_stride + c]       (the in_proj "mixed" output)
//   1 w     float[]  read   w[c*D_CONV + m]                    (GGUF ssm_conv1d {d_conv, C})
//   2 state float[]  rw     [1 + n_snap planes][n_seq][D_CONV-1 (time, oldest first)][C]
//                           channel-contiguous so neighbouring invocations touch neighbouring
//                           words; planes and snapshots as in common/gdn.glsl
//   3 y     float[]  write  y[row*C + c]
//   4 ctl   uint[]   read   control block at ctl_off: n_tokens, src_plane[n_seq] (gdn.glsl)
// Push: C, seq_rows, x_off, x_stride (elements), n_snap, plane (= n_seq*(D_CONV-1)*C), ctl_off.
// Spec: 0 WG (local size), 1 D_CONV (kernel width >= 2), 2 TB (tokens per invocation).
// Grid: (ceil(C/WG), ceil(rows/TB), n_seq); rows >= n_tokens, blocks past n_tokens exit.
// Contract: TB >= D_CONV-1, so only token block 0 reads the old state; block 0 also writes every
//   state plane (from x and the old state), so no other invocation reads a plane being written.
#include "base.glsl"
#include "gdn.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint D_CONV = 4;
layout(constant_id = 2) const uint TB = 8;
const uint DM1 = D_CONV - 1;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };
layout(std430, binding = 2) buffer St { float state[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, binding = 4) readonly buffer Ctl { uint ctl[]; };

layout(push_constant) uniform Push {
    uint C;
    uint seq_rows;
    uint x_off;
    uint x_stride;
    uint n_snap;
    uint plane;
    uint ctl_off;
} p;

void main() {
    const uint c = gl_GlobalInvocationID.x;
    const uint blk = gl_WorkGroupID.y;
    const uint seq = gl_WorkGroupID.z;
    const uint n = ctl[p.ctl_off + CTL_N_TOKENS];
    const uint t0 = blk * TB;
    if (c >= p.C || t0 >= n) return;
    const uint src = ctl[p.ctl_off + CTL_SRC_PLANE + seq];
    const uint xrow = p.x_off + seq * p.seq_rows * p.x_stride + c;  // + t*x_stride
    const uint sbase = seq * DM1 * p.C + c;                          // + m*C + plane*p.plane

    float wc[D_CONV];
    [[unroll]] for (uint m = 0; m < D_CONV; ++m) wc[m] = w[c * D_CONV + m];

    // win[m] = input at token t0 - DM1 + m (oldest first); old[] keeps block 0's initial state.
    float win[DM1];
    float old[DM1];
    [[unroll]] for (uint m = 0; m < DM1; ++m) {
        if (blk == 0) {
            old[m] = state[src * p.plane + sbase + m * p.C];
            win[m] = old[m];
        } else {
            win[m] = x[xrow + (t0 - DM1 + m) * p.x_stride];
        }
    }

    const uint t1 = min(t0 + TB, n);
    for (uint t = t0; t < t1; ++t) {
        const float xt = x[xrow + t * p.x_stride];
        float acc = 0.0;
        [[unroll]] for (uint m = 0; m < DM1; ++m) acc += wc[m] * win[m];
        acc += wc[DM1] * xt;
        y[(seq * p.seq_rows + t) * p.C + c] = silu(acc);
        [[unroll]] for (uint m = 0; m + 1 < DM1; ++m) win[m] = win[m + 1];
        win[DM1 - 1] = xt;
    }

    if (blk != 0) return;
    // State planes: the D_CONV-1 inputs ending at token e are in[e - DM1 + 1 + m], m < DM1.
    const uint ns = min(n, p.n_snap);
    for (uint e = 0; e < ns; ++e) {
        [[unroll]] for (uint m = 0; m < DM1; ++m) {
            const int tt = int(e + 1 + m) - int(DM1);
            const float val = tt >= 0 ? x[xrow + uint(tt) * p.x_stride] : old[uint(tt + int(DM1))];
            state[(1 + e) * p.plane + sbase + m * p.C] = val;
        }
    }
    if (n > p.n_snap) {
        [[unroll]] for (uint m = 0; m < DM1; ++m) {
            const int tt = int(n + m) - int(DM1);
            const float val = tt >= 0 ? x[xrow + uint(tt) * p.x_stride] : old[uint(tt + int(DM1))];
            state[sbase + m * p.C] = val;
        }
    }
}
