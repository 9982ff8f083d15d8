#version 450
// kv_store: write n new tokens' K and V rows (f32) into a layer's KV cache at absolute positions
// read from a buffer, converting to F16 or (KV_Q8_0) to GGUF Q8_0 blocks. One invocation per
// 32 values of one (token, KV head) row, for K and V both.
// Rounding is bit-identical to the numpy reference on every device: f32 -> f16 is done in integer
// arithmetic with round-to-nearest-even (as numpy's astype(float16)); Q8_0 follows ggml's
// quantize_row_q8_0_ref (d = amax / 127, id = 1 / d, q = roundf(x * id), half away from zero),
// with d and id correctly rounded by an integer long division (GLSL division need not be).
// Bindings: 0 k_new   float[n_max, n_head_kv, head_dim]       (read)
//           1 v_new   float[n_max, n_head_kv, head_dim]       (read)
//           2 pos     int[n_max]: cache position of each token, per step   (read)
//           3 lens    int[2]: {kv_len, n}; n new tokens (<= n_max), per step   (read)
//           4 k_cache F16: uint16 (f16 bits)[kv_len_max, n_head_kv, head_dim];
//                     Q8_0: [kv_len_max, n_head_kv, head_dim / 32] x {fp16 d, int8 qs[32]}  (write)
//           5 v_cache same layout as k_cache                  (write)
// Push: n_max, n_head_kv, head_dim, kv_len_max.
// Spec: 0 WG workgroup size.
// Dispatch: ceil(n_max * n_head_kv * head_dim / 32 / WG) workgroups; tokens t >= n and positions
//           outside [0, kv_len_max) are skipped.
// Contract: head_dim % 32 == 0.
#include "base.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer KN { float k_new[]; };
layout(std430, binding = 1) readonly buffer VN { float v_new[]; };
layout(std430, binding = 2) readonly buffer PS { int pos[]; };
layout(std430, binding = 3) readonly buffer LN { int lens[]; };
layout(std430, binding = 4) writeonly buffer KC { uint16_t k_cache[]; };
layout(std430, binding = 5) writeonly buffer VC { uint16_t v_cache[]; };

layout(push_constant) uniform Push {
    uint n_max;
    uint n_head_kv;
    uint head_dim;
    uint kv_len_max;
} p;

// f32 -> f16 bits, round to nearest even, overflow to inf, subnormals kept, NaN stays NaN.
uint f32_to_f16(float f) {
    uint x = floatBitsToUint(f);
    uint sgn = (x >> 16u) & 0x8000u;
    uint ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) {
        return sgn | (ax > 0x7f800000u ? 0x7e00u : 0x7c00u);
    }
    if (ax >= 0x477ff000u) {            // >= 65520 rounds to inf
        return sgn | 0x7c00u;
    }
    if (ax >= 0x38800000u) {            // normal f16: rebias exponent, round 13 bits away
        uint m = ax - 0x38000000u;
        m = m + 0xfffu + ((m >> 13u) & 1u);
        return sgn | (m >> 13u);
    }
    if (ax <= 0x33000000u) {            // <= 2^-25: rounds to zero (2^-25 is a tie to even 0)
        return sgn;
    }
    uint e = ax >> 23u;                 // 102 .. 112: f16 subnormal, units of 2^-24
    uint mant = (ax & 0x7fffffu) | 0x800000u;
    uint sh = 126u - e;
    uint q = mant >> sh;
    uint rem = mant & ((1u << sh) - 1u);
    uint half_ = 1u << (sh - 1u);
    if (rem > half_ || (rem == half_ && (q & 1u) != 0u)) {
        q += 1u;
    }
    return sgn | q;
}

// Correctly rounded a / b (round to nearest even) for positive normal a, b, by long division of
// the significands in 32-bit integers: GLSL's division need not be correctly rounded, and fma
// need not be fused (lavapipe), so neither can be trusted for this. Quotients outside the
// normal range (never met by Q8_0 scales of finite f16 range) fall back to a / b.
float div_rn(float a, float b) {
    uint ua = floatBitsToUint(a), ub = floatBitsToUint(b);
    if ((ua >> 23u) == 0u || (ub >> 23u) == 0u) {
        return a / b;                     // subnormal operand
    }
    uint ma = (ua & 0x7fffffu) | 0x800000u;
    uint mb = (ub & 0x7fffffu) | 0x800000u;
    int e = int(ua >> 23u) - int(ub >> 23u) + 127;
    if (ma < mb) {
        ma <<= 1u;
        e -= 1;
    }
    uint q = 0u;
    uint r = ma;                          // mb <= r < 2 mb < 2^25
    for (uint i = 0u; i < 24u; ++i) {     // 24 quotient bits, the leading one first
        q <<= 1u;
        if (r >= mb) {
            q |= 1u;
            r -= mb;
        }
        r <<= 1u;
    }
    bool guard_ = r >= mb;                // next bit, then sticky remainder
    if (guard_) {
        r -= mb;
    }
    if (guard_ && (r != 0u || (q & 1u) != 0u)) {
        q += 1u;
        if (q == 0x1000000u) {
            q = 0x800000u;
            e += 1;
        }
    }
    if (e < 1 || e > 254) {
        return a / b;
    }
    return uintBitsToFloat((uint(e) << 23u) | (q & 0x7fffffu));
}

#ifdef KV_Q8_0
void store_q8_0(uint blk, uint src, bool is_k) {
    float x[32];
    float amax = 0.0;
    for (uint i = 0; i < 32u; ++i) {
        x[i] = is_k ? k_new[src + i] : v_new[src + i];
        amax = max(amax, abs(x[i]));
    }
    float d = 0.0, id = 0.0;
    if (amax > 0.0) {
        d = div_rn(amax, 127.0);
        id = div_rn(1.0, d);
    }
    uint base = blk * 17u;
    uint dh = f32_to_f16(d);
    if (is_k) k_cache[base] = uint16_t(dh); else v_cache[base] = uint16_t(dh);
    for (uint i = 0; i < 32u; i += 2u) {
        uint w = 0u;
        for (uint k = 0; k < 2u; ++k) {
            precise float v = x[i + k] * id;
            float a = abs(v);
            float fl = floor(a);
            float r = fl + ((a - fl) >= 0.5 ? 1.0 : 0.0);   // roundf: half away from zero
            int q = int(v < 0.0 ? -r : r);
            w |= (uint(q) & 0xffu) << (8u * k);
        }
        if (is_k) k_cache[base + 1u + i / 2u] = uint16_t(w);
        else v_cache[base + 1u + i / 2u] = uint16_t(w);
    }
}
#endif

void main() {
    const uint gid = gl_GlobalInvocationID.x;
    const uint groups_per_row = p.head_dim / 32u;
    const uint per_tok = p.n_head_kv * groups_per_row;
    const uint t = gid / per_tok;
    const uint n = min(uint(max(lens[1], 0)), p.n_max);
    if (t >= n) {
        return;
    }
    const int ps = pos[t];
    if (ps < 0 || uint(ps) >= p.kv_len_max) {
        return;
    }
    const uint within = gid % per_tok;          // (kv head, group) inside the token
    const uint src = t * per_tok * 32u + within * 32u;
    const uint dst_group = uint(ps) * per_tok + within;
#ifdef KV_Q8_0
    store_q8_0(dst_group, src, true);
    store_q8_0(dst_group, src, false);
#else
    for (uint i = 0; i < 32u; ++i) {
        k_cache[dst_group * 32u + i] = uint16_t(f32_to_f16(k_new[src + i]));
        v_cache[dst_group * 32u + i] = uint16_t(f32_to_f16(v_new[src + i]));
    }
#endif
}
