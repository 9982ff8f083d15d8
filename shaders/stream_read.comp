#version 450
// stream_read: XOR-fold a large buffer of uvec4 into one uvec4 per workgroup. It exists to
// measure the device's streaming read bandwidth (the roofline denominator) with the simplest
// possible access pattern: 16-byte coalesced loads, grid-strided.
// Bindings: 0 src uvec4[n]                 (read)
//           1 dst uvec4[n_workgroups]      (write; the XOR of the elements each group read)
// Push: n (uvec4 elements).
// Spec: 0 WG (workgroup size), 1 UNROLL (loads in flight per thread per iteration).
// Contract: WG is a power of two <= maxComputeWorkGroupInvocations; any n; any grid size.
#include "base.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint UNROLL = 4;
layout(std430, binding = 0) readonly buffer Src { uvec4 src[]; };
layout(std430, binding = 1) writeonly buffer Dst { uvec4 dst[]; };
layout(push_constant) uniform Push { uint n; } p;
shared uvec4 part[gl_WorkGroupSize.x];
void main() {
    const uint lid = gl_LocalInvocationID.x;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uvec4 acc = uvec4(0);
    uint i = gl_WorkGroupID.x * gl_WorkGroupSize.x + lid;
    // UNROLL independent loads per iteration keep enough bytes in flight.
    for (; i + (UNROLL - 1) * stride < p.n; i += UNROLL * stride) {
        [[unroll]] for (uint u = 0; u < UNROLL; ++u) acc ^= src[i + u * stride];
    }
    for (; i < p.n; i += stride) acc ^= src[i];
    part[lid] = acc;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2; s > 0; s >>= 1) {
        if (lid < s) part[lid] ^= part[lid + s];
        barrier();
    }
    if (lid == 0) dst[gl_WorkGroupID.x] = part[0];
}
