#version 450
// mul_mat: y[c, r] = sum_k W[r, k] * x[c, k] (+ residual[c, r]) for any number of columns
// (prefill). W is GGUF-quantized (one QTYPE_<NAME> define, see common/quants.glsl); activations
// and accumulation are float32.
// Bindings: 0 w        uint8[rows, row_bytes]  raw GGUF blocks, row-major (read)
//           1 x        float[ncols, x_stride]  (read)
//           2 y        float[ncols, y_stride]  (write)
//           3 residual float[ncols, r_stride]  added when ADD_RESIDUAL (read; may be y itself;
//                      r_stride 0 makes it a per-row bias)
// Push: rows, K, row_bytes, ncols, x_stride, y_stride, r_stride (strides in floats).
// Spec: 0 WG (= 8 * (BM/TM) * (BN/TN)), 1 BM (rows per tile), 2 BN (columns per tile),
//       3 TM, 4 TN (register tile per invocation), 5 SLAB (elements of each unit staged per step),
//       6 ADD_RESIDUAL.
// Numerics (R5): the same canonical reduction as mul_mat_vec.comp (common/quants.glsl): the
//       invocations are split into LANES = 8 groups; group l accumulates, for its BM x BN register
//       tiles, exactly lane l's units (l, l+8, ...) in the matvec's element order, with fma from
//       +0; the 8 partials are then combined by the same butterfly (through shared memory). A
//       column's bits equal mul_mat_vec's, whatever BM, BN, TM, TN, SLAB and WG are.
// Shared memory: one float array of 8 * (min(SLAB, UNIT_ELEMS) * (BM + BN) + 8), holding the
//       dequantized weights and the activations of one slab: [lane][element][row or column],
//       each lane region padded by 4 floats.
// Contract: K % UNIT_ELEMS == 0; x_stride % 4 == 0; BM % TM == 0, BN % TN == 0;
//       BM % ((BM/TM)*(BN/TN)) == 0; grid (ceil(rows / BM), ceil(ncols / BN)).
#include "base.glsl"

layout(constant_id = 0) const uint WG = 256;
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 32;
layout(constant_id = 3) const uint TM = 8;
layout(constant_id = 4) const uint TN = 8;
layout(constant_id = 5) const uint SLAB = 8;
layout(constant_id = 6) const bool ADD_RESIDUAL = false;

layout(std430, binding = 0) readonly restrict buffer WA { uint w32[]; };
layout(std430, binding = 0) readonly restrict buffer WB { uvec4 w128[]; };
layout(std430, binding = 1) readonly restrict buffer X { vec4 x4[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };
layout(std430, binding = 3) readonly buffer R { float res[]; };
layout(push_constant) uniform Push {
    uint rows;
    uint K;
    uint row_bytes;
    uint ncols;
    uint x_stride;
    uint y_stride;
    uint r_stride;
} p;

#include "quants.glsl"

const uint SE = SLAB < UNIT_ELEMS ? SLAB : UNIT_ELEMS;  // elements of a unit per slab
const uint SP = SE / 4u;                                 // pieces of a unit per slab
const uint T = (BM / TM) * (BN / TN);                    // invocations per lane group
const uint WPT = BM * LANES / WG;                        // weight units staged per invocation
// Lane regions are padded by 4 floats so the 8 lanes of one row (stored by neighbouring
// invocations) fall in different banks; 4 keeps 16-byte alignment for vector reads.
const uint WSTRIDE = SE * BM + 4u;
const uint XSTRIDE = SE * BN + 4u;
const uint X_OFF = LANES * WSTRIDE;
#ifdef FLOAT_UNITS
shared float sm[LANES * (WSTRIDE + XSTRIDE)];
#else
// Quantized types (the factored form of quants.glsl): the slab's integers q take the weights'
// place, and each (lane, row) of the slab's runs stages its scale dl and offset mn.
const uint RE = UNIT_ELEMS / RUNS;                       // elements per run
const uint SR = SE < RE ? 1u : SE / RE;                  // runs touched by one slab
const uint SC_OFF = X_OFF + LANES * XSTRIDE;
const uint SC_STRIDE = SR * BM;                          // floats per lane, per array
shared float sm[LANES * (WSTRIDE + XSTRIDE + 2u * SC_STRIDE)];
#endif

void main() {
    quants_init();
    const uint tid = gl_LocalInvocationID.x;
    const uint lane = tid / T, q = tid % T;
    const uint ty = q / (BN / TN), tx = q % (BN / TN);
    const uint row_t = gl_WorkGroupID.x * BM, col_t = gl_WorkGroupID.y * BN;
    const uint nunits = p.K / UNIT_ELEMS;
    const uint ntiles = (nunits + LANES - 1u) / LANES;
    const uint xs4 = p.x_stride >> 2;

    precise float acc[TM][TN];
    [[unroll]] for (uint i = 0; i < TM; i++)
        [[unroll]] for (uint j = 0; j < TN; j++) acc[i][j] = 0.0;
#ifndef FLOAT_UNITS
    precise float rs[TM][TN];  // the current run's sums of q·x (they span slabs when SE < RE)
    precise float tsum[TN];    // and of x (HAS_MIN)
    [[unroll]] for (uint j = 0; j < TN; j++) {
        tsum[j] = 0.0;
        [[unroll]] for (uint i = 0; i < TM; i++) rs[i][j] = 0.0;
    }
#endif

    for (uint kt = 0; kt < ntiles; kt++) {
        // The raw words of this K-tile's weight units: unit (row r, lane ul) for
        // r * LANES + ul = tid + jj * WG; neighbouring invocations read neighbouring units.
        Raw wraw[WPT];
        uint wunit[WPT];
        [[unroll]] for (uint jj = 0; jj < WPT; jj++) {
            const uint idx = tid + jj * WG;
            const uint r = idx / LANES, ul = idx % LANES;
            wunit[jj] = min(kt * LANES + ul, nunits - 1u);
            const uint row = min(row_t + r, p.rows - 1u);
            wraw[jj] = load_raw(row * p.row_bytes, wunit[jj]);
        }
        const bool has_unit = kt * LANES + lane < nunits;  // this lane group has a unit here

        [[unroll]] for (uint s = 0; s < UNIT_ELEMS / SE; s++) {
            [[unroll]] for (uint jj = 0; jj < WPT; jj++) {
                const uint idx = tid + jj * WG;
                const uint r = idx / LANES, ul = idx % LANES;
#ifndef FLOAT_UNITS
                float dl[RUNS], mn[RUNS];
                run_scales(wraw[jj], wunit[jj], dl, mn);
                [[unroll]] for (uint rr = 0; rr < SR; rr++) {
                    const uint run = (s * SE) / RE + rr;
                    sm[SC_OFF + ul * SC_STRIDE + rr * BM + r] = dl[run];
                    sm[SC_OFF + LANES * SC_STRIDE + ul * SC_STRIDE + rr * BM + r] = mn[run];
                }
#endif
                [[unroll]] for (uint pp = 0; pp < SP; pp++) {
#ifdef FLOAT_UNITS
                    const vec4 v = dq_piece(wraw[jj], wunit[jj], s * SP + pp);
#else
                    const vec4 v = q_piece(wraw[jj], wunit[jj], s * SP + pp);
#endif
                    const uint base = ul * WSTRIDE + 4u * pp * BM + r;
                    sm[base] = v.x;
                    sm[base + BM] = v.y;
                    sm[base + 2u * BM] = v.z;
                    sm[base + 3u * BM] = v.w;
                }
            }
            // column fastest: neighbouring invocations store neighbouring floats
            for (uint idx = tid; idx < BN * LANES * SP; idx += WG) {
                const uint c = idx % BN, rem = idx / BN;
                const uint ul = rem % LANES, pp = rem / LANES;
                const uint unit = min(kt * LANES + ul, nunits - 1u);
                const uint col = col_t + c;
                const vec4 v = col < p.ncols
                    ? x4[col * xs4 + (piece_k(unit, s * SP + pp) >> 2)] : vec4(0.0);
                const uint base = X_OFF + ul * XSTRIDE + 4u * pp * BN + c;
                sm[base] = v.x;
                sm[base + BN] = v.y;
                sm[base + 2u * BN] = v.z;
                sm[base + 3u * BN] = v.w;
            }
            barrier();
            if (has_unit) {
#ifdef FLOAT_UNITS
                for (uint e = 0; e < SE; e++) {
                    float a[TM], b[TN];
                    [[unroll]] for (uint i = 0; i < TM; i++)
                        a[i] = sm[lane * WSTRIDE + e * BM + ty * TM + i];
                    [[unroll]] for (uint j = 0; j < TN; j++)
                        b[j] = sm[X_OFF + lane * XSTRIDE + e * BN + tx * TN + j];
                    [[unroll]] for (uint i = 0; i < TM; i++)
                        [[unroll]] for (uint j = 0; j < TN; j++)
                            acc[i][j] = fma(a[i], b[j], acc[i][j]);
                }
#else
                for (uint e = 0; e < SE; e++) {
                    const uint eu = s * SE + e;  // element of the unit, piece order
                    if (eu % RE == 0u) {
                        [[unroll]] for (uint j = 0; j < TN; j++) {
                            tsum[j] = 0.0;
                            [[unroll]] for (uint i = 0; i < TM; i++) rs[i][j] = 0.0;
                        }
                    }
                    float a[TM], b[TN];
                    [[unroll]] for (uint i = 0; i < TM; i++)
                        a[i] = sm[lane * WSTRIDE + e * BM + ty * TM + i];
                    [[unroll]] for (uint j = 0; j < TN; j++)
                        b[j] = sm[X_OFF + lane * XSTRIDE + e * BN + tx * TN + j];
                    [[unroll]] for (uint i = 0; i < TM; i++)
                        [[unroll]] for (uint j = 0; j < TN; j++)
                            rs[i][j] = fma(a[i], b[j], rs[i][j]);
#ifdef HAS_MIN
                    [[unroll]] for (uint j = 0; j < TN; j++) tsum[j] = tsum[j] + b[j];
#endif
                    if (eu % RE == RE - 1u) {  // the run ends: fold it into acc
                        const uint rr = e / RE;  // run within the slab (0 when SE < RE)
                        [[unroll]] for (uint i = 0; i < TM; i++) {
                            const uint row = ty * TM + i;
                            const float dl = sm[SC_OFF + lane * SC_STRIDE + rr * BM + row];
                            const float mn = sm[SC_OFF + LANES * SC_STRIDE + lane * SC_STRIDE + rr * BM + row];
                            [[unroll]] for (uint j = 0; j < TN; j++) {
                                acc[i][j] = fma(rs[i][j], dl, acc[i][j]);
#ifdef HAS_MIN
                                acc[i][j] = fma(tsum[j], mn, acc[i][j]);
#endif
                            }
                        }
                    }
                }
#endif
            }
            barrier();
        }
    }

    // Canonical butterfly over the 8 lane groups, one register-tile row at a time: group l < m
    // adds group l + m's partial (= s[l] + s[l ^ m], as in the matvec); group 0 ends with the sum.
    [[unroll]] for (uint i = 0; i < TM; i++) {
        [[unroll]] for (uint m = LANES / 2u; m > 0u; m >>= 1) {
            if (lane >= m && lane < 2u * m)
                [[unroll]] for (uint j = 0; j < TN; j++)
                    sm[((lane - m) * T + q) * TN + j] = acc[i][j];
            barrier();
            if (lane < m)
                [[unroll]] for (uint j = 0; j < TN; j++)
                    acc[i][j] = acc[i][j] + sm[(lane * T + q) * TN + j];
            barrier();
        }
    }

    if (lane == 0u) {
        [[unroll]] for (uint i = 0; i < TM; i++) {
            const uint row = row_t + ty * TM + i;
            if (row >= p.rows) continue;
            [[unroll]] for (uint j = 0; j < TN; j++) {
                const uint col = col_t + tx * TN + j;
                if (col >= p.ncols) continue;
                precise float v = acc[i][j];
                if (ADD_RESIDUAL) v = v + res[col * p.r_stride + row];
                y[col * p.y_stride + row] = v;
            }
        }
    }
}
