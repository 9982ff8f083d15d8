// GGUF weight blocks -> float32, shared by mul_mat_vec, mul_mat and get_rows.
// Block layouts follow ggml-common.h (block_q4_0 ... block_iq4_xs); the float arithmetic of each
// dequantized value follows vkinfer/gguf/quants.py (itself ggml's dequantize_row_*), operation for
// operation (all of it `precise`), so get_rows reproduces gguf.quants.dequantize bit for bit; the
// matrix kernels differ only in the fma of DQ_EXACT below.
//
// Contract with the including shader:
//   - it declares the raw weight bytes twice on one binding, before including this file:
//         layout(std430, binding = B) readonly buffer WA { uint w32[]; };
//         layout(std430, binding = B) readonly buffer WB { uvec4 w128[]; };
//     (the binding's offset is a multiple of 16, as vkinfer's allocator guarantees);
//   - it defines exactly one QTYPE_<NAME> plus QK (elements per block) and BLOCK_BYTES (bytes per
//     block); vkinfer/pipelines passes both from vkinfer/gguf/quants.py, the owner of those facts;
//   - it calls quants_init() once at the top of main(), by every invocation (IQ4 types fill a
//     shared-memory codebook there and wait on a barrier);
//   - DQ_EXACT (get_rows) makes the types with a block minimum (Q4_1, Q5_1, Q2_K, Q4_K, Q5_K)
//     round twice, d·q then ± m, exactly as numpy/ggml do; without it (the matrix kernels) they
//     use one fma, one instruction fewer per weight and at least as accurate. Every other type
//     is numpy-exact either way. (The matrix kernels agree with each other bit for bit in both
//     cases: they share this code.)
//
// Canonical decomposition (DESIGN R5; the reduction order every matrix kernel follows):
//   A row of K weights is cut into UNITS of UNIT_ELEMS elements, numbered u = 0 .. K/UNIT_ELEMS-1.
//   A unit is what one lane reads per step: a run of contiguous bytes of the row. For F32 a unit
//   is 4 elements (16 bytes), for F16/BF16 8 elements (16 bytes), for 32-element blocks one block,
//   for 256-element K-quant super-blocks one eighth of the super-block (its elements form 2 or 4
//   runs of consecutive k, see piece_k). Lane l of LANES sums units l, l+LANES, l+2·LANES, ... in
//   increasing u; inside a unit, elements in increasing k, each as acc = fma(w, x, acc) starting
//   from +0. The LANES partials are then combined by the butterfly s[l] + s[l ^ m], m = LANES/2..1.
//   LANES is fixed here (not a specialization constant): changing it changes the numbers.
//   A unit is decoded as UNIT_ELEMS/4 pieces of 4 consecutive k (piece_k gives the first k).
//
// Per type this file provides:
//   struct Raw                 the words one unit needs (loaded with 16-byte loads when aligned)
//   Raw  load_raw(row_off, u)  row_off: byte offset of the row inside the weight binding
//   vec4 dq_piece(raw, u, p)   the 4 dequantized weights of piece p (p must be a constant after
//                              loop unrolling: it indexes the raw words)
//   uint piece_k(u, p)         k of the first element of piece p of unit u

#define LANES 8u

// ---- loads --------------------------------------------------------------------------------------
uint ldw(uint off) { return w32[off >> 2]; }  // 32 bits at a 4-aligned byte offset
uvec4 ldv(uint off) { return w128[off >> 4]; }  // 128 bits at a 16-aligned byte offset
uint ldh(uint off) { return (w32[off >> 2] >> ((off & 2u) << 3)) & 0xFFFFu; }  // 16 bits, 2-aligned

// 32 bits at a 2-aligned byte offset (blocks of 18, 22, 34, 110 and 210 bytes are only 2-aligned).
uint ldu(uint off) {
    uint i = off >> 2;
    if ((off & 2u) == 0u) return w32[i];
    return (w32[i] >> 16) | (w32[i + 1u] << 16);
}

// 128 bits at a 2-aligned byte offset, as 32-bit loads (the fifth word only when misaligned, so a
// read never passes the end of the data).
uvec4 ldu4(uint off) {
    uint i = off >> 2;
    uvec4 a = uvec4(w32[i], w32[i + 1u], w32[i + 2u], w32[i + 3u]);
    if ((off & 2u) != 0u) {
        uint e = w32[i + 4u];
        a = (a >> 16) | (uvec4(a.yzw, e) << 16);
    }
    return a;
}

uint byte_of(uint w, uint b) { return (w >> (b << 3)) & 0xFFu; }
uint byte4(uvec4 v, uint b) { return (v[b >> 2] >> ((b & 3u) << 3)) & 0xFFu; }
float h2f(uint h) { return unpackHalf2x16(h).x; }

// w = d·q + m for a vec4 of quants (m is -min for the K-quants); see DQ_EXACT above.
#ifdef DQ_EXACT
#define DQ_AFFINE(q, d, m) ((d) * (q) + (m))
#else
#define DQ_AFFINE(q, d, m) fma((q), vec4(d), vec4(m))
#endif

// Exact float of a small integer without an int->float instruction (quarter rate on several
// GPUs): 2^23 + q has q in its mantissa. u2f(q) = q; u2f_bias(q, B) = q - B (B a small integer).
float u2f(uint q) {
    precise float r = uintBitsToFloat(q | 0x4B000000u) - 8388608.0;
    return r;
}
#define U2F_BIAS(q, B) (uintBitsToFloat((q) | 0x4B000000u) - (8388608.0 + (B)))
// int8 in b (0..255): (b ^ 0x80) | 0x4B000000 = b ^ 0x4B000080 is 2^23 + 128 + int8(b).
float s8f(uint b) {
    precise float r = uintBitsToFloat(b ^ 0x4B000080u) - 8388736.0;
    return r;
}

#if defined(QTYPE_IQ4_NL) || defined(QTYPE_IQ4_XS)
shared float kvalues_iq4[16];
void quants_init() {
    const float KV[16] = float[16](-127.0, -104.0, -83.0, -65.0, -49.0, -35.0, -22.0, -10.0, 1.0,
                                   13.0, 25.0, 38.0, 53.0, 69.0, 89.0, 113.0);
    if (gl_LocalInvocationIndex < 16u) kvalues_iq4[gl_LocalInvocationIndex] = KV[gl_LocalInvocationIndex];
    barrier();
}
#else
void quants_init() {}
#endif

// ================================================================================================
#if defined(QTYPE_F32)
#define UNIT_ELEMS 4u
struct Raw { uvec4 v; };
Raw load_raw(uint row_off, uint u) { Raw r; r.v = w128[(row_off >> 4) + u]; return r; }
vec4 dq_piece(Raw r, uint u, uint p) { return uintBitsToFloat(r.v); }
uint piece_k(uint u, uint p) { return 4u * u; }

// ================================================================================================
#elif defined(QTYPE_F16)
#define UNIT_ELEMS 8u
struct Raw { uvec4 v; };
Raw load_raw(uint row_off, uint u) { Raw r; r.v = w128[(row_off >> 4) + u]; return r; }
vec4 dq_piece(Raw r, uint u, uint p) {
    return vec4(unpackHalf2x16(r.v[2u * p]), unpackHalf2x16(r.v[2u * p + 1u]));
}
uint piece_k(uint u, uint p) { return 8u * u + 4u * p; }

// ================================================================================================
#elif defined(QTYPE_BF16)
#define UNIT_ELEMS 8u
struct Raw { uvec4 v; };
Raw load_raw(uint row_off, uint u) { Raw r; r.v = w128[(row_off >> 4) + u]; return r; }
vec4 dq_piece(Raw r, uint u, uint p) {
    uint a = r.v[2u * p], b = r.v[2u * p + 1u];
    return uintBitsToFloat(uvec4(a << 16, a & 0xFFFF0000u, b << 16, b & 0xFFFF0000u));
}
uint piece_k(uint u, uint p) { return 8u * u + 4u * p; }

// ================================================================================================
// 32-element blocks. A unit is one block; qs byte j holds element j (low nibble) and j+16 (high).
#elif defined(QTYPE_Q8_0)
// d (f16) @0, qs int8[32] @2; 34 bytes
#define UNIT_ELEMS 32u
struct Raw { uint d; uvec4 q0; uvec4 q1; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + u * BLOCK_BYTES;
    Raw r; r.d = ldh(o); r.q0 = ldu4(o + 2u); r.q1 = ldu4(o + 18u);
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    float d = h2f(r.d);
    uint w = p < 4u ? r.q0[p & 3u] : r.q1[p & 3u];
    precise vec4 v = d * vec4(s8f(byte_of(w, 0u)), s8f(byte_of(w, 1u)), s8f(byte_of(w, 2u)),
                              s8f(byte_of(w, 3u)));
    return v;
}
uint piece_k(uint u, uint p) { return 32u * u + 4u * p; }

#elif defined(QTYPE_Q4_0) || defined(QTYPE_IQ4_NL)
// d (f16) @0, qs[16] @2; 18 bytes
#define UNIT_ELEMS 32u
struct Raw { uint d; uvec4 q; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + u * BLOCK_BYTES;
    Raw r; r.d = ldh(o); r.q = ldu4(o + 2u);
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    float d = h2f(r.d);
    uint w = r.q[p & 3u] >> (4u * (p >> 2));  // pieces 0-3: low nibbles, 4-7: high nibbles
#if defined(QTYPE_Q4_0)
    precise vec4 v = d * vec4(U2F_BIAS(w & 15u, 8.0), U2F_BIAS((w >> 8) & 15u, 8.0),
                              U2F_BIAS((w >> 16) & 15u, 8.0), U2F_BIAS((w >> 24) & 15u, 8.0));
#else
    precise vec4 v = d * vec4(kvalues_iq4[w & 15u], kvalues_iq4[(w >> 8) & 15u],
                              kvalues_iq4[(w >> 16) & 15u], kvalues_iq4[(w >> 24) & 15u]);
#endif
    return v;
}
uint piece_k(uint u, uint p) { return 32u * u + 4u * p; }

#elif defined(QTYPE_Q4_1)
// d (f16) @0, m (f16) @2, qs[16] @4; 20 bytes (4-aligned)
#define UNIT_ELEMS 32u
struct Raw { uint dm; uvec4 q; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + u * BLOCK_BYTES;
    Raw r; r.dm = ldw(o);
    r.q = uvec4(ldw(o + 4u), ldw(o + 8u), ldw(o + 12u), ldw(o + 16u));
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    vec2 dm = unpackHalf2x16(r.dm);
    uint w = r.q[p & 3u] >> (4u * (p >> 2));
    precise vec4 v = DQ_AFFINE(vec4(u2f(w & 15u), u2f((w >> 8) & 15u), u2f((w >> 16) & 15u),
                                    u2f((w >> 24) & 15u)), dm.x, dm.y);
    return v;
}
uint piece_k(uint u, uint p) { return 32u * u + 4u * p; }

#elif defined(QTYPE_Q5_0)
// d (f16) @0, qh u32 @2, qs[16] @6; 22 bytes. Bit j of qh is the fifth bit of element j.
#define UNIT_ELEMS 32u
struct Raw { uint d; uint qh; uvec4 q; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + u * BLOCK_BYTES;
    Raw r; r.d = ldh(o); r.qh = ldu(o + 2u); r.q = ldu4(o + 6u);
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    float d = h2f(r.d);
    uint w = (r.q[p & 3u] >> (4u * (p >> 2))) & 0x0F0F0F0Fu;
    uint h = r.qh >> (4u * p);  // elements 4p .. 4p+3
    w |= ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
    precise vec4 v = d * vec4(U2F_BIAS(w & 31u, 16.0), U2F_BIAS((w >> 8) & 31u, 16.0),
                              U2F_BIAS((w >> 16) & 31u, 16.0), U2F_BIAS(w >> 24, 16.0));
    return v;
}
uint piece_k(uint u, uint p) { return 32u * u + 4u * p; }

#elif defined(QTYPE_Q5_1)
// d (f16) @0, m (f16) @2, qh u32 @4, qs[16] @8; 24 bytes (4-aligned)
#define UNIT_ELEMS 32u
struct Raw { uint dm; uint qh; uvec4 q; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + u * BLOCK_BYTES;
    Raw r; r.dm = ldw(o); r.qh = ldw(o + 4u);
    r.q = uvec4(ldw(o + 8u), ldw(o + 12u), ldw(o + 16u), ldw(o + 20u));
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    vec2 dm = unpackHalf2x16(r.dm);
    uint w = (r.q[p & 3u] >> (4u * (p >> 2))) & 0x0F0F0F0Fu;
    uint h = r.qh >> (4u * p);
    w |= ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
    precise vec4 v = DQ_AFFINE(vec4(u2f(w & 31u), u2f((w >> 8) & 31u), u2f((w >> 16) & 31u),
                                    u2f(w >> 24)), dm.x, dm.y);
    return v;
}
uint piece_k(uint u, uint p) { return 32u * u + 4u * p; }

// ================================================================================================
// 256-element K-quant super-blocks: a unit is part t = u % 8 of super-block u / 8.
#elif defined(QTYPE_Q4_K) || defined(QTYPE_Q5_K)
// Q4_K: d @0, dmin @2, scales[12] @4, qs[128] @16; 144 bytes.
// Q5_K: d @0, dmin @2, scales[12] @4, qh[32] @16, qs[128] @48; 176 bytes.
// qs bytes 32i..32i+31 hold sub-block 2i (low nibbles) and 2i+1 (high nibbles). Part t reads
// qs[16t .. 16t+15]: elements 64i + 16(t&1) + m (run 0, sub-block 2i) and 64i + 32 + 16(t&1) + m
// (run 1, sub-block 2i+1), i = t/2, m = 0..15. Q5_K: bit j of qh[l] is the fifth bit of element
// l of sub-block j.
#define UNIT_ELEMS 32u
#if defined(QTYPE_Q4_K)
#define QS_OFF 16u
#else
#define QS_OFF 48u
#endif
struct Raw {
    uvec4 hdr;  // d|dmin<<16, scales[0..11]
    uvec4 q;
#if defined(QTYPE_Q5_K)
    uvec4 qh;
#endif
};
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + (u >> 3) * BLOCK_BYTES, t = u & 7u;
    Raw r; r.hdr = ldv(o); r.q = ldv(o + QS_OFF + 16u * t);
#if defined(QTYPE_Q5_K)
    r.qh = ldv(o + 16u + 16u * (t & 1u));
#endif
    return r;
}
// get_scale_min_k4 of ggml: 6-bit scale (x) and min (y) of sub-block j.
uvec2 scale_min_k4(uvec4 hdr, uint j) {
    uvec3 s = hdr.yzw;
    uint a = byte4(uvec4(s, 0u), j & 3u), b = byte4(uvec4(s, 0u), (j & 3u) + 4u),
         c = byte4(uvec4(s, 0u), (j & 3u) + 8u);
    // j < 4: (a & 63, b & 63); j >= 4 (a, b, c taken at j-4): (c&15 | a>>6<<4, c>>4 | b>>6<<4)
    return j < 4u ? uvec2(a & 63u, b & 63u)
                  : uvec2((c & 15u) | ((a >> 6) << 4), (c >> 4) | ((b >> 6) << 4));
}
vec4 dq_piece(Raw r, uint u, uint p) {
    uint t = u & 7u, run = p >> 2;
    uvec2 sm = scale_min_k4(r.hdr, 2u * (t >> 1) + run);
    vec2 dd = unpackHalf2x16(r.hdr.x);
    precise float dl = dd.x * u2f(sm.x);
    precise float ml = dd.y * u2f(sm.y);
    uint w = (r.q[p & 3u] >> (4u * run)) & 0x0F0F0F0Fu;
#if defined(QTYPE_Q5_K)
    uint h = (r.qh[p & 3u] >> (2u * (t >> 1) + run)) & 0x01010101u;
    w |= h << 4;
#endif
    precise vec4 v = DQ_AFFINE(vec4(u2f(w & 255u), u2f((w >> 8) & 255u), u2f((w >> 16) & 255u),
                                    u2f(w >> 24)), dl, -ml);
    return v;
}
uint piece_k(uint u, uint p) {
    uint t = u & 7u;
    return 256u * (u >> 3) + 64u * (t >> 1) + 32u * (p >> 2) + 16u * (t & 1u) + 4u * (p & 3u);
}

#elif defined(QTYPE_Q6_K)
// ql[128] @0, qh[64] @128, scales int8[16] @192, d @208; 210 bytes (2-aligned).
// Element 128h + 32k + l (h half, k 0..3, l 0..31): low 4 bits from ql[64h + l + 32(k&1)]
// (low nibble for k < 2), high 2 bits from qh[32h + l] at bit 2k, scale scales[8h + 2k + l/16].
// Part t = 4h + j reads ql[64h + 16j ..+16]: k0 = j/2 (run 0) and k0 + 2 (run 1),
// l = 16(j&1) + m; their scales are bytes j and j+4 of the half's 8 scale bytes.
#define UNIT_ELEMS 32u
struct Raw { uvec4 ql; uvec4 qh; uint sc0; uint sc1; uint d; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + (u >> 3) * BLOCK_BYTES, t = u & 7u, h = t >> 2, j = t & 3u;
    Raw r;
    r.ql = ldu4(o + 64u * h + 16u * j);
    r.qh = ldu4(o + 128u + 32u * h + 16u * (j & 1u));
    r.sc0 = ldu(o + 192u + 8u * h);
    r.sc1 = ldu(o + 196u + 8u * h);
    r.d = ldh(o + 208u);
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    uint j = u & 3u, run = p >> 2, k = (j >> 1) + 2u * run;
    float d = h2f(r.d);
    precise float dl = d * s8f(byte_of(run == 0u ? r.sc0 : r.sc1, j));
    uint w = ((r.ql[p & 3u] >> (4u * run)) & 0x0F0F0F0Fu)
           | (((r.qh[p & 3u] >> (2u * k)) & 0x03030303u) << 4);
    precise vec4 v = dl * vec4(U2F_BIAS(w & 255u, 32.0), U2F_BIAS((w >> 8) & 255u, 32.0),
                               U2F_BIAS((w >> 16) & 255u, 32.0), U2F_BIAS(w >> 24, 32.0));
    return v;
}
uint piece_k(uint u, uint p) {
    uint t = u & 7u, j = t & 3u, k = (j >> 1) + 2u * (p >> 2);
    return 256u * (u >> 3) + 128u * (t >> 2) + 32u * k + 16u * (j & 1u) + 4u * (p & 3u);
}

#elif defined(QTYPE_Q2_K) || defined(QTYPE_Q3_K)
// Q2_K: scales[16] @0 (low nibble scale, high nibble min), qs[64] @16, d @80, dmin @82; 84 bytes.
// Q3_K: hmask[32] @0, qs[64] @32, scales[12] @96 (16 packed 6-bit scales), d @108; 110 bytes.
// Element 128h + 32s + l (h half, s 0..3, l 0..31): 2 bits at bit 2s of qs[32h + l]; sub-block
// 8h + 2s + l/16. Q3_K: bit 4h + s of hmask[l] set means no -4 offset.
// Part t = 4h + g reads qs[32h + 8g ..+8]: l = 8g + m, four runs s = 0..3 of 8 elements.
#define UNIT_ELEMS 32u
#if defined(QTYPE_Q2_K)
struct Raw { uvec2 q; uvec2 sc; uint dd; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + (u >> 3) * BLOCK_BYTES, t = u & 7u, h = t >> 2, g = t & 3u;
    Raw r;
    r.q = uvec2(ldw(o + 16u + 32u * h + 8u * g), ldw(o + 20u + 32u * h + 8u * g));
    r.sc = uvec2(ldw(o + 8u * h), ldw(o + 4u + 8u * h));
    r.dd = ldw(o + 80u);
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    uint g = u & 3u, s = p >> 1;
    uint sb = 2u * s + (g >> 1);  // sub-block index within the half
    uint sc = byte_of(sb < 4u ? r.sc.x : r.sc.y, sb & 3u);
    vec2 dd = unpackHalf2x16(r.dd);
    precise float dl = dd.x * u2f(sc & 15u);
    precise float ml = dd.y * u2f(sc >> 4);
    uint w = (r.q[p & 1u] >> (2u * s)) & 0x03030303u;
    precise vec4 v = DQ_AFFINE(vec4(u2f(w & 255u), u2f((w >> 8) & 255u), u2f((w >> 16) & 255u),
                                    u2f(w >> 24)), dl, -ml);
    return v;
}
#else
struct Raw { uvec2 q; uvec2 hm; uvec3 sc; uint d; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + (u >> 3) * BLOCK_BYTES, t = u & 7u, h = t >> 2, g = t & 3u;
    Raw r;
    r.q = uvec2(ldu(o + 32u + 32u * h + 8u * g), ldu(o + 36u + 32u * h + 8u * g));
    r.hm = uvec2(ldu(o + 8u * g), ldu(o + 4u + 8u * g));
    r.sc = uvec3(ldu(o + 96u), ldu(o + 100u), ldu(o + 104u));
    r.d = ldh(o + 108u);
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    uint t = u & 7u, h = t >> 2, g = t & 3u, s = p >> 1;
    uint i = 8u * h + 2u * s + (g >> 1);  // sub-block 0..15
    uvec4 sc4 = uvec4(r.sc, 0u);
    uint lo = (byte4(sc4, i & 7u) >> (4u * (i >> 3))) & 15u;
    uint hi = (byte4(sc4, 8u + (i & 3u)) >> (2u * (i >> 2))) & 3u;
    precise float dl = h2f(r.d) * U2F_BIAS(lo | (hi << 4), 32.0);
    uint w = (r.q[p & 1u] >> (2u * s)) & 0x03030303u;
    uint hb = (r.hm[p & 1u] >> (4u * h + s)) & 0x01010101u;
    w |= hb << 2;  // low2 + 4*hbit; the value is that minus 4
    precise vec4 v = dl * vec4(U2F_BIAS(w & 255u, 4.0), U2F_BIAS((w >> 8) & 255u, 4.0),
                               U2F_BIAS((w >> 16) & 255u, 4.0), U2F_BIAS(w >> 24, 4.0));
    return v;
}
#endif
uint piece_k(uint u, uint p) {
    uint t = u & 7u;
    return 256u * (u >> 3) + 128u * (t >> 2) + 32u * (p >> 1) + 8u * (t & 3u) + 4u * (p & 1u);
}

#elif defined(QTYPE_IQ4_XS)
// d @0, scales_h u16 @2, scales_l[4] @4, qs[128] @8; 136 bytes (8-aligned). Sub-block s of 32:
// 6-bit scale = nibble s&1 of scales_l[s/2] | bits 2s..2s+1 of scales_h << 4, minus 32; qs[16s ..
// 16s+15]: low nibbles are elements 32s + m, high nibbles 32s + 16 + m. Part t = sub-block t.
#define UNIT_ELEMS 32u
struct Raw { uint dh; uint sl; uvec4 q; };
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + (u >> 3) * BLOCK_BYTES, t = u & 7u;
    Raw r; r.dh = ldw(o); r.sl = ldw(o + 4u);
    uint qo = o + 8u + 16u * t;
    r.q = uvec4(ldw(qo), ldw(qo + 4u), ldw(qo + 8u), ldw(qo + 12u));
    return r;
}
vec4 dq_piece(Raw r, uint u, uint p) {
    uint t = u & 7u;
    uint ls = ((byte_of(r.sl, t >> 1) >> (4u * (t & 1u))) & 15u) | (((r.dh >> (16u + 2u * t)) & 3u) << 4);
    precise float dl = h2f(r.dh) * U2F_BIAS(ls, 32.0);
    uint w = r.q[p & 3u] >> (4u * (p >> 2));
    precise vec4 v = dl * vec4(kvalues_iq4[w & 15u], kvalues_iq4[(w >> 8) & 15u],
                               kvalues_iq4[(w >> 16) & 15u], kvalues_iq4[(w >> 24) & 15u]);
    return v;
}
uint piece_k(uint u, uint p) { return 256u * (u >> 3) + 32u * (u & 7u) + 4u * p; }

#else
#error "quants.glsl: define one QTYPE_<NAME>"
#endif

#define UNIT_PIECES (UNIT_ELEMS / 4u)
