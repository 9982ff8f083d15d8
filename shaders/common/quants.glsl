// GGUF weight blocks -> float32, shared by mul_mat_vec, mul_mat_id, mul_mat and get_rows.
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
//   - DQ_EXACT (get_rows) makes dq_piece of the types with a block minimum (Q4_1, Q5_1, Q2_K,
//     Q4_K, Q5_K) round twice, d·q then ± m, exactly as numpy/ggml do; without it they use one
//     fma. The matrix kernels use dq_piece only for the float types (exact either way).
//
// Canonical decomposition (DESIGN R5; the reduction order every matrix kernel follows):
//   A row of K weights is cut into UNITS of UNIT_ELEMS elements, numbered u = 0 .. K/UNIT_ELEMS-1.
//   A unit is what one lane reads per step: a run of contiguous bytes of the row. For F32 a unit
//   is 4 elements (16 bytes), for F16/BF16 8 elements (16 bytes), for 32-element blocks one block,
//   for 256-element K-quant super-blocks one eighth of the super-block (its elements form 2 or 4
//   runs of consecutive k, see piece_k). A unit is decoded as UNIT_PIECES = UNIT_ELEMS/4 pieces of
//   4 consecutive k (piece_k gives the first k); "piece order" is p = 0, 1, ... and, inside a
//   piece, increasing k. Lane l of LANES sums units l, l+LANES, l+2·LANES, ... in increasing u
//   into acc (from +0); the LANES partials are then combined by the butterfly s[l] + s[l ^ m],
//   m = LANES/2..1. LANES is fixed here (not a specialization constant): changing it changes the
//   numbers. Inside a unit:
//   - float types (FLOAT_UNITS): acc = fma(w, x, acc) per element in piece order;
//   - quantized types: the unit's pieces form RUNS runs of RUN_PIECES consecutive pieces, each
//     with one scale dl and, for the types with a block minimum (HAS_MIN), one offset mn: every
//     weight of run r is w = dl[r]·q + mn[r], q an exact small integer (q_piece). For r = 0 ..
//     RUNS-1 and each column:
//         s = +0;  s = fma(q, x, s)   over the run's elements in piece order
//         t = +0;  t = t + x          over the same elements, same order      (HAS_MIN)
//         acc = fma(s, dl[r], acc);  acc = fma(t, mn[r], acc)                  (second: HAS_MIN)
//     (the factored form: one fma per weight and column instead of a dequantization plus an
//     fma; t depends only on the column, so the kernels compute it once per column and share it.)
//
// Per type this file provides:
//   struct Raw                 the words one unit needs (loaded with 16-byte loads when aligned)
//   Raw  load_raw(row_off, u)  row_off: byte offset of the row inside the weight binding
//   vec4 dq_piece(raw, u, p)   the 4 dequantized weights of piece p (get_rows; float types in the
//                              matrix kernels). p must be a constant after loop unrolling.
//   uint piece_k(u, p)         k of the first element of piece p of unit u
//   quantized types also (matrix kernels):
//   vec4 q_piece(raw, u, p)    the 4 integers q of piece p, as exact floats
//   void run_scales(raw, u, out float dl[RUNS], out float mn[RUNS])   (mn: 0 unless HAS_MIN)

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

// The 4 bytes of w as exact floats, each minus B (bytes < 2^23 - B).
vec4 bytes_f(uint w, float B) {
    return vec4(U2F_BIAS(w & 255u, B), U2F_BIAS((w >> 8) & 255u, B),
                U2F_BIAS((w >> 16) & 255u, B), U2F_BIAS(w >> 24, B));
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
#if defined(QTYPE_F32) || defined(QTYPE_F16) || defined(QTYPE_BF16)
#define FLOAT_UNITS 1
#endif

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
// Nine aligned words cover the 2-aligned block; sh = 16 when it starts at a half word. Branch
// free: the lanes of a row alternate between the two alignments.
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + u * BLOCK_BYTES, b = o >> 2, sh = (o & 2u) << 3;
    uint w[9];
    [[unroll]] for (uint k = 0; k < 9u; k++) w[k] = w32[b + k];
    uint q[8];
    [[unroll]] for (uint k = 0; k < 8u; k++)
        q[k] = sh == 0u ? (w[k] >> 16) | (w[k + 1u] << 16) : w[k + 1u];
    Raw r;
    r.d = (w[0] >> sh) & 0xFFFFu;
    r.q0 = uvec4(q[0], q[1], q[2], q[3]);
    r.q1 = uvec4(q[4], q[5], q[6], q[7]);
    return r;
}
vec4 q_piece(Raw r, uint u, uint p) {  // int8: byte ^ 0x80 is q + 128
    return bytes_f((p < 4u ? r.q0[p & 3u] : r.q1[p & 3u]) ^ 0x80808080u, 128.0);
}
#define RUNS 1u
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    dl[0] = h2f(r.d);
    mn[0] = 0.0;
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
vec4 q_piece(Raw r, uint u, uint p) {
    uint w = (r.q[p & 3u] >> (4u * (p >> 2))) & 0x0F0F0F0Fu;
#if defined(QTYPE_Q4_0)
    return bytes_f(w, 8.0);
#else
    return vec4(kvalues_iq4[w & 15u], kvalues_iq4[(w >> 8) & 15u], kvalues_iq4[(w >> 16) & 15u],
                kvalues_iq4[w >> 24]);
#endif
}
#define RUNS 1u
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    dl[0] = h2f(r.d);
    mn[0] = 0.0;
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
vec4 q_piece(Raw r, uint u, uint p) {
    return bytes_f((r.q[p & 3u] >> (4u * (p >> 2))) & 0x0F0F0F0Fu, 0.0);
}
#define RUNS 1u
#define HAS_MIN 1
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    vec2 dm = unpackHalf2x16(r.dm);
    dl[0] = dm.x;
    mn[0] = dm.y;
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
uint q5_word(uint q, uint qh, uint p) {  // the 5-bit quants of piece p, one per byte
    uint w = (q >> (4u * (p >> 2))) & 0x0F0F0F0Fu;
    uint h = qh >> (4u * p);  // elements 4p .. 4p+3
    return w | ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
}
vec4 q_piece(Raw r, uint u, uint p) { return bytes_f(q5_word(r.q[p & 3u], r.qh, p), 16.0); }
#define RUNS 1u
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    dl[0] = h2f(r.d);
    mn[0] = 0.0;
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
vec4 q_piece(Raw r, uint u, uint p) {
    uint w = (r.q[p & 3u] >> (4u * (p >> 2))) & 0x0F0F0F0Fu;
    uint h = r.qh >> (4u * p);
    w |= ((h & 1u) << 4) | ((h & 2u) << 11) | ((h & 4u) << 18) | ((h & 8u) << 25);
    return bytes_f(w, 0.0);
}
#define RUNS 1u
#define HAS_MIN 1
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    vec2 dm = unpackHalf2x16(r.dm);
    dl[0] = dm.x;
    mn[0] = dm.y;
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
vec4 q_piece(Raw r, uint u, uint p) {
    uint t = u & 7u, run = p >> 2;
    uint w = (r.q[p & 3u] >> (4u * run)) & 0x0F0F0F0Fu;
#if defined(QTYPE_Q5_K)
    w |= ((r.qh[p & 3u] >> (2u * (t >> 1) + run)) & 0x01010101u) << 4;
#endif
    return bytes_f(w, 0.0);
}
#define RUNS 2u
#define HAS_MIN 1
// Run r of part t has sub-block j = 2·(t/2) + r: both runs' 6-bit scales and mins come from the
// same two bytes of each scale word (bytes 2·((t/2) & 1) and the next), handled as a pair.
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    uint t = u & 7u, sh = (t & 2u) << 3;
    uint A = (r.hdr.y >> sh) & 0xFFFFu, B = (r.hdr.z >> sh) & 0xFFFFu, C = (r.hdr.w >> sh) & 0xFFFFu;
    bool hi = t >= 4u;  // j >= 4: low 4 bits in scales[8 + j - 4], high 2 bits on top of bytes j-4
    uint sc2 = hi ? (C & 0x0F0Fu) | ((A >> 2) & 0x3030u) : A & 0x3F3Fu;
    uint m2 = hi ? ((C >> 4) & 0x0F0Fu) | ((B >> 2) & 0x3030u) : B & 0x3F3Fu;
    vec2 dd = unpackHalf2x16(r.hdr.x);
    precise float d0 = dd.x * u2f(sc2 & 255u), d1 = dd.x * u2f(sc2 >> 8);
    precise float m0 = dd.y * u2f(m2 & 255u), m1 = dd.y * u2f(m2 >> 8);
    dl[0] = d0;
    dl[1] = d1;
    mn[0] = -m0;
    mn[1] = -m1;
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
// 16 bytes at byte 4b + sh/8 (sh 0 or 16), as five aligned words and branch-free shifts.
uvec4 ld4s(uint b, uint sh) {
    uint w0 = w32[b], w1 = w32[b + 1u], w2 = w32[b + 2u], w3 = w32[b + 3u], w4 = w32[b + 4u];
    return sh == 0u ? uvec4(w0, w1, w2, w3)
                    : uvec4((w0 >> 16) | (w1 << 16), (w1 >> 16) | (w2 << 16),
                            (w2 >> 16) | (w3 << 16), (w3 >> 16) | (w4 << 16));
}
Raw load_raw(uint row_off, uint u) {
    uint o = row_off + (u >> 3) * BLOCK_BYTES, t = u & 7u, h = t >> 2, j = t & 3u;
    uint b = o >> 2, sh = (o & 2u) << 3;
    Raw r;
    r.ql = ld4s(b + 16u * h + 4u * j, sh);
    r.qh = ld4s(b + 32u + 8u * h + 4u * (j & 1u), sh);
    uint s0 = w32[b + 48u + 2u * h], s1 = w32[b + 49u + 2u * h], s2 = w32[b + 50u + 2u * h];
    r.sc0 = sh == 0u ? s0 : (s0 >> 16) | (s1 << 16);
    r.sc1 = sh == 0u ? s1 : (s1 >> 16) | (s2 << 16);
    r.d = (w32[b + 52u] >> sh) & 0xFFFFu;
    return r;
}
vec4 q_piece(Raw r, uint u, uint p) {
    uint j = u & 3u, run = p >> 2, k = (j >> 1) + 2u * run;
    uint w = ((r.ql[p & 3u] >> (4u * run)) & 0x0F0F0F0Fu)
           | (((r.qh[p & 3u] >> (2u * k)) & 0x03030303u) << 4);
    return bytes_f(w, 32.0);
}
#define RUNS 2u
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    uint j = u & 3u;
    float d = h2f(r.d);
    precise float d0 = d * s8f(byte_of(r.sc0, j)), d1 = d * s8f(byte_of(r.sc1, j));
    dl[0] = d0;
    dl[1] = d1;
    mn[0] = 0.0;
    mn[1] = 0.0;
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
vec4 q_piece(Raw r, uint u, uint p) {
    return bytes_f((r.q[p & 1u] >> (2u * (p >> 1))) & 0x03030303u, 0.0);
}
#define RUNS 4u
#define HAS_MIN 1
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    uint g = u & 3u;
    vec2 dd = unpackHalf2x16(r.dd);
    [[unroll]] for (uint s = 0; s < RUNS; s++) {
        uint sc = byte_of(s < 2u ? r.sc.x : r.sc.y, (2u * s + (g >> 1)) & 3u);
        precise float d = dd.x * u2f(sc & 15u), m = dd.y * u2f(sc >> 4);
        dl[s] = d;
        mn[s] = -m;
    }
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
vec4 q_piece(Raw r, uint u, uint p) {
    uint t = u & 7u, h = t >> 2, s = p >> 1;
    uint w = (r.q[p & 1u] >> (2u * s)) & 0x03030303u;
    w |= ((r.hm[p & 1u] >> (4u * h + s)) & 0x01010101u) << 2;  // low2 + 4*hbit, minus 4
    return bytes_f(w, 4.0);
}
#define RUNS 4u
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    uint t = u & 7u, h = t >> 2, g = t & 3u;
    uvec4 sc4 = uvec4(r.sc, 0u);
    float d = h2f(r.d);
    [[unroll]] for (uint s = 0; s < RUNS; s++) {
        uint i = 8u * h + 2u * s + (g >> 1);  // sub-block 0..15
        uint lo = (byte4(sc4, i & 7u) >> (4u * (i >> 3))) & 15u;
        uint hi = (byte4(sc4, 8u + (i & 3u)) >> (2u * (i >> 2))) & 3u;
        precise float v = d * U2F_BIAS(lo | (hi << 4), 32.0);
        dl[s] = v;
        mn[s] = 0.0;
    }
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
vec4 q_piece(Raw r, uint u, uint p) {
    uint w = (r.q[p & 3u] >> (4u * (p >> 2))) & 0x0F0F0F0Fu;
    return vec4(kvalues_iq4[w & 15u], kvalues_iq4[(w >> 8) & 15u], kvalues_iq4[(w >> 16) & 15u],
                kvalues_iq4[w >> 24]);
}
#define RUNS 1u
void run_scales(Raw r, uint u, out float dl[RUNS], out float mn[RUNS]) {
    uint t = u & 7u;
    uint ls = ((byte_of(r.sl, t >> 1) >> (4u * (t & 1u))) & 15u) | (((r.dh >> (16u + 2u * t)) & 3u) << 4);
    precise float v = h2f(r.dh) * U2F_BIAS(ls, 32.0);
    dl[0] = v;
    mn[0] = 0.0;
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
#ifndef FLOAT_UNITS
#define RUN_PIECES (UNIT_PIECES / RUNS)
#endif
