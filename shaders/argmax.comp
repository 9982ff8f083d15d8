#version 450
// argmax: per row of n floats, the index of the largest entry; ties go to the lowest index and
// NaN counts as larger than every number (numpy's rule: the first NaN wins). An empty row gives -1.
// Two passes when CHUNKS > 1: the default variant scans chunk c of row r with workgroup (c, r)
// and writes its (value bits, index) to part; the MERGE variant reduces a row's CHUNKS partials.
// With CHUNKS = 1 the default variant writes out directly. The order used is total (value, then
// lowest index), so the result cannot depend on chunking, workgroup size or batch (R5).
// Bindings: 0 x    float[]      (read)  row r at x_off + r·x_rs, n entries
//           1 part uvec2[rows·CHUNKS] (read/write) (floatBitsToUint(value), index); bind out
//                                 when CHUNKS = 1
//           2 out  int[rows]    (write) the index per row
// Push: n, rows, x_off, x_rs, chunk (entries per chunk, pass 1).
// Spec: 0 WG (workgroup size, a power of two), 1 CHUNKS (workgroups per row in pass 1).
// Grid: pass 1 (CHUNKS, rows); MERGE (rows, 1). rows <= 65535.
// Contract: WG a power of two within the device limits; n < 2^32 - 1; chunk·CHUNKS >= n.
#include "base.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint CHUNKS = 16;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) buffer Part { uvec2 part[]; };
layout(std430, binding = 2) writeonly buffer Out { int outv[]; };

layout(push_constant) uniform Push {
    uint n; uint rows;
    uint x_off; uint x_rs;
    uint chunk;
} p;

const uint NONE = 0xFFFFFFFFu;  // "no entry": index above every real one, value -inf
shared float sv[gl_WorkGroupSize.x];
shared uint si[gl_WorkGroupSize.x];

// Is (va, ia) ahead of (vb, ib)? NaN first, then the larger value, then the lower index.
bool ahead(float va, uint ia, float vb, uint ib) {
    const bool na = isnan(va), nb = isnan(vb);
    if (na != nb) return na;
    if (!na && va != vb) return va > vb;
    return ia < ib;
}

void reduce_and_store(float bv, uint bi, uint row, uint slot) {
    const uint tid = gl_LocalInvocationID.x;
    sv[tid] = bv;
    si[tid] = bi;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
        if (tid < s && ahead(sv[tid + s], si[tid + s], sv[tid], si[tid])) {
            sv[tid] = sv[tid + s];
            si[tid] = si[tid + s];
        }
        barrier();
    }
    if (tid == 0u) {
#ifdef MERGE
        outv[row] = int(si[0]);  // NONE reads as -1
#else
        if (CHUNKS == 1u) outv[row] = int(si[0]);
        else part[slot] = uvec2(floatBitsToUint(sv[0]), si[0]);
#endif
    }
}

void main() {
    const uint tid = gl_LocalInvocationID.x, WG = gl_WorkGroupSize.x;
    float bv = -1.0 / 0.0;
    uint bi = NONE;
#ifdef MERGE
    const uint row = gl_WorkGroupID.x;
    for (uint c = tid; c < CHUNKS; c += WG) {
        const uvec2 e = part[row * CHUNKS + c];
        const float v = uintBitsToFloat(e.x);
        if (ahead(v, e.y, bv, bi)) { bv = v; bi = e.y; }
    }
    reduce_and_store(bv, bi, row, 0u);
#else
    const uint c = gl_WorkGroupID.x, row = gl_WorkGroupID.y;
    const uint start = c * p.chunk, end = min(p.n, start + p.chunk);
    const uint xb = p.x_off + row * p.x_rs;
    // Indices rise within an invocation, so "strictly ahead" keeps the lowest index on ties.
    for (uint i = start + tid; i < end; i += WG) {
        const float v = x[xb + i];
        if (v > bv || (isnan(v) && !isnan(bv)) || bi == NONE) { bv = v; bi = i; }
    }
    reduce_and_store(bv, bi, row, row * CHUNKS + c);
#endif
}
