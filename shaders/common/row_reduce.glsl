// Workgroup reductions in a fixed order (DESIGN R5). Every invocation passes one value; a binary
// tree over shared memory combines them the same way in every workgroup, so a row's result never
// depends on how many rows share the dispatch. Needs a power-of-two workgroup size (the including
// kernel's contract checks it) and must be reached by every invocation (it has barriers).
shared float rr_f[gl_WorkGroupSize.x];

float wg_sum(float v) {
    const uint t = gl_LocalInvocationID.x;
    rr_f[t] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
        if (t < s) rr_f[t] += rr_f[t + s];
        barrier();
    }
    const float r = rr_f[0];
    barrier();  // the buffer may be reused right after
    return r;
}

float wg_max(float v) {
    const uint t = gl_LocalInvocationID.x;
    rr_f[t] = v;
    barrier();
    for (uint s = gl_WorkGroupSize.x / 2u; s > 0u; s >>= 1u) {
        if (t < s) rr_f[t] = max(rr_f[t], rr_f[t + s]);
        barrier();
    }
    const float r = rr_f[0];
    barrier();
    return r;
}
