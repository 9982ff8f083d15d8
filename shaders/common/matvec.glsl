// The canonical row · column dot products of the matrix-vector kernels (mul_mat_vec, mul_mat_id):
// NR rows per 8-lane group × up to NUM_COLS columns, in the reduction order of quants.glsl.
//
// Contract with the including shader: it includes quants.glsl first and declares the constants
// WG (invocations), NR, NUM_COLS, UNROLL (units per lane per step), CHUNK (units per lane per
// staged chunk, a multiple of UNROLL), PREFETCH and XPREFETCH (bools), the activations `x4`
// (vec4[], binding of its choice) and SUBGROUP_REDUCE or not; every invocation of the workgroup calls mv_dot
// with the same nunits and ncols (it has barriers).
//
// Activations go through shared memory, one CHUNK at a time: CHUNK units per lane (8·CHUNK
// units of the row), every column, in [column][unit of the lane][piece][lane] order (a group's 8
// lanes read 8 consecutive vec4: no bank conflicts, and one staged copy serves every row of the
// workgroup). Read straight from global memory, the 8 lanes of a group touch 4 to 8 different
// 128-byte lines per load, which an NVIDIA L1 serves one line per cycle: that, not DRAM, bounded
// several columns. Two barriers per chunk; with XPREFETCH the loads of the next chunk are issued
// before the current chunk's arithmetic (up to 8 vec4 per invocation), otherwise after it (an
// exposed L2 round trip per chunk, but no registers held: measured faster on an H100 so far).
// The staging invocations also form the column sums t of each run (HAS_MIN), once per
// workgroup instead of once per row.
// With PREFETCH the weight loads of the next step are issued before the current step's
// arithmetic: software pipelining (across chunk boundaries too).

#ifdef FLOAT_UNITS
#define MV_RUNS 1u
#define MV_RUN_PIECES UNIT_PIECES
#else
#define MV_RUNS RUNS
#define MV_RUN_PIECES RUN_PIECES
#endif
const uint MV_STEP = LANES * UNROLL;
const uint MV_ITEMS = NUM_COLS * CHUNK * MV_RUNS * LANES;  // (column, unit, run, lane)
const uint MV_IPI = (MV_ITEMS + WG - 1u) / WG;             // items per invocation
// Items per invocation whose loads are issued a chunk ahead (held in up to 8 vec4 registers);
// the rest of a chunk, if any, is staged after the barrier, its latency exposed.
const uint MV_PF8 = MV_RUN_PIECES >= 8u ? 1u : 8u / MV_RUN_PIECES;
const uint MV_PFI = XPREFETCH ? (MV_IPI < MV_PF8 ? MV_IPI : MV_PF8) : 0u;
const uint MV_PFA = MV_PFI > 0u ? MV_PFI : 1u;  // array size
const uint MV_SB = MV_IPI - MV_PFI < 4u ? (MV_IPI > MV_PFI ? MV_IPI - MV_PFI : 1u) : 4u;  // rest
const uint MV_XS = NUM_COLS * CHUNK * UNIT_PIECES * LANES;  // vec4
shared vec4 mv_xs[MV_XS];
#ifdef HAS_MIN
shared float mv_ts[NUM_COLS * CHUNK * RUNS * LANES];
#endif
#ifndef SUBGROUP_REDUCE
shared float mv_red[WG * NR * NUM_COLS];
#endif

// Item `it` of the chunk whose first unit is cb: the activations of one run of one unit of one
// column (zeros for units past nunits, columns past ncols and items past the end: not read).
void mv_xitem(uint it, uint cb, uint nunits, uint xb4[NUM_COLS], uint ncols,
              out vec4 v[MV_RUN_PIECES]) {
    const uint l = it % LANES, r = (it / LANES) % MV_RUNS;
    const uint ju = (it / (LANES * MV_RUNS)) % CHUNK, c = it / (LANES * MV_RUNS * CHUNK);
    const uint u = cb + ju * LANES + l;
    uint xb = 0u;  // xb4[c] with constant indices
    [[unroll]] for (uint cc = 0; cc < NUM_COLS; cc++)
        if (cc == c) xb = xb4[cc];
    [[unroll]] for (uint pp = 0; pp < MV_RUN_PIECES; pp++) {
        v[pp] = vec4(0.0);
        if (it < MV_ITEMS && c < ncols && u < nunits)
            v[pp] = x4[xb + (piece_k(u, r * MV_RUN_PIECES + pp) >> 2)];
    }
}

// Store item `it` (and, HAS_MIN, its run's column sum in canonical order).
void mv_xput(uint it, vec4 v[MV_RUN_PIECES]) {
    if (it >= MV_ITEMS) return;
    const uint l = it % LANES, r = (it / LANES) % MV_RUNS;
    const uint cu = it / (LANES * MV_RUNS);  // column * CHUNK + unit of the lane
    [[unroll]] for (uint pp = 0; pp < MV_RUN_PIECES; pp++)
        mv_xs[(cu * UNIT_PIECES + r * MV_RUN_PIECES + pp) * LANES + l] = v[pp];
#ifdef HAS_MIN
    precise float t = 0.0;
    [[unroll]] for (uint pp = 0; pp < MV_RUN_PIECES; pp++) {
        t = t + v[pp].x;
        t = t + v[pp].y;
        t = t + v[pp].z;
        t = t + v[pp].w;
    }
    mv_ts[(cu * RUNS + r) * LANES + l] = t;
#endif
}

// Stage the items past the prefetched ones, SB loads in flight at a time.
void mv_stage_rest(uint cb, uint nunits, uint xb4[NUM_COLS], uint ncols) {
    for (uint it0 = gl_LocalInvocationIndex + MV_PFI * WG; it0 < MV_ITEMS; it0 += MV_SB * WG) {
        vec4 v[MV_SB][MV_RUN_PIECES];
        [[unroll]] for (uint b = 0; b < MV_SB; b++) mv_xitem(it0 + b * WG, cb, nunits, xb4, ncols, v[b]);
        [[unroll]] for (uint b = 0; b < MV_SB; b++) mv_xput(it0 + b * WG, v[b]);
    }
}

// res[i][c]: row (byte offset row_off[i]) · column c (vec4 offset xb4[c]) for c < ncols (later
// columns: 0, not computed). Reads past the last unit repeat it and are not used.
void mv_dot(uint row_off[NR], uint xb4[NUM_COLS], uint ncols, uint nunits, uint lane,
            out float res[NR][NUM_COLS]) {
    precise float acc[NR][NUM_COLS];
    [[unroll]] for (uint i = 0; i < NR; i++)
        [[unroll]] for (uint c = 0; c < NUM_COLS; c++) acc[i][c] = 0.0;

    Raw raw[UNROLL][NR];
    [[unroll]] for (uint j = 0; j < UNROLL; j++) {
        const uint u = min(lane + j * LANES, nunits - 1u);
        [[unroll]] for (uint i = 0; i < NR; i++) raw[j][i] = load_raw(row_off[i], u);
    }
    // Trip counts are the same for the whole workgroup (barriers; lanes converged at the
    // shuffles); idle lanes of the last step skip the arithmetic.
    const uint tid = gl_LocalInvocationIndex;
    vec4 xpf[MV_PFA][MV_RUN_PIECES];  // the next chunk's first items (XPREFETCH)
    [[unroll]] for (uint i = 0; i < MV_PFI; i++) mv_xitem(tid + i * WG, 0u, nunits, xb4, ncols, xpf[i]);
    barrier();  // a previous call may still read the staged chunk
    [[unroll]] for (uint i = 0; i < MV_PFI; i++) mv_xput(tid + i * WG, xpf[i]);
    mv_stage_rest(0u, nunits, xb4, ncols);
    barrier();
    for (uint cb = 0; cb < nunits; cb += CHUNK * LANES) {
        const uint cn = cb + CHUNK * LANES;  // the next chunk
        if (cn < nunits)
            [[unroll]] for (uint i = 0; i < MV_PFI; i++) mv_xitem(tid + i * WG, cn, nunits, xb4, ncols, xpf[i]);
        const uint cend = min(cn, nunits);
        for (uint base = cb; base < cend; base += MV_STEP) {
            const bool more = base + MV_STEP < nunits;
            Raw nxt[UNROLL][NR];
            if (PREFETCH) {
                [[unroll]] for (uint j = 0; j < UNROLL; j++) {
                    const uint u = min(base + MV_STEP + lane + j * LANES, nunits - 1u);
                    [[unroll]] for (uint i = 0; i < NR; i++) nxt[j][i] = load_raw(row_off[i], u);
                }
            }
            [[unroll]] for (uint j = 0; j < UNROLL; j++) {
                const uint u = base + lane + j * LANES;
                if (u < nunits) {
                    // this unit's pieces in the chunk: xo + (c * CHUNK * UNIT_PIECES + pc) * LANES
                    const uint xo = ((base - cb) / LANES + j) * UNIT_PIECES * LANES + lane;
#ifdef FLOAT_UNITS
                    [[unroll]] for (uint pc = 0; pc < UNIT_PIECES; pc++) {
                        vec4 wv[NR];
                        [[unroll]] for (uint i = 0; i < NR; i++) wv[i] = dq_piece(raw[j][i], u, pc);
                        [[unroll]] for (uint c = 0; c < NUM_COLS; c++) {
                            if (c >= ncols) break;
                            const vec4 xv = mv_xs[xo + (c * CHUNK * UNIT_PIECES + pc) * LANES];
                            [[unroll]] for (uint i = 0; i < NR; i++) {
                                acc[i][c] = fma(wv[i].x, xv.x, acc[i][c]);
                                acc[i][c] = fma(wv[i].y, xv.y, acc[i][c]);
                                acc[i][c] = fma(wv[i].z, xv.z, acc[i][c]);
                                acc[i][c] = fma(wv[i].w, xv.w, acc[i][c]);
                            }
                        }
                    }
#else
                    float dl[NR][RUNS], mn[NR][RUNS];
                    [[unroll]] for (uint i = 0; i < NR; i++) run_scales(raw[j][i], u, dl[i], mn[i]);
                    [[unroll]] for (uint r = 0; r < RUNS; r++) {
                        precise float s[NR][NUM_COLS];
                        [[unroll]] for (uint i = 0; i < NR; i++)
                            [[unroll]] for (uint c = 0; c < NUM_COLS; c++) s[i][c] = 0.0;
                        [[unroll]] for (uint pp = 0; pp < RUN_PIECES; pp++) {
                            const uint pc = r * RUN_PIECES + pp;
                            vec4 q[NR];
                            [[unroll]] for (uint i = 0; i < NR; i++) q[i] = q_piece(raw[j][i], u, pc);
                            [[unroll]] for (uint c = 0; c < NUM_COLS; c++) {
                                if (c >= ncols) break;
                                const vec4 xv = mv_xs[xo + (c * CHUNK * UNIT_PIECES + pc) * LANES];
                                [[unroll]] for (uint i = 0; i < NR; i++) {
                                    s[i][c] = fma(q[i].x, xv.x, s[i][c]);
                                    s[i][c] = fma(q[i].y, xv.y, s[i][c]);
                                    s[i][c] = fma(q[i].z, xv.z, s[i][c]);
                                    s[i][c] = fma(q[i].w, xv.w, s[i][c]);
                                }
                            }
                        }
                        [[unroll]] for (uint c = 0; c < NUM_COLS; c++) {
                            if (c >= ncols) break;
#ifdef HAS_MIN
                            const uint cu = c * CHUNK + (base - cb) / LANES + j;
                            const float t = mv_ts[(cu * RUNS + r) * LANES + lane];
#endif
                            [[unroll]] for (uint i = 0; i < NR; i++) {
                                acc[i][c] = fma(s[i][c], dl[i][r], acc[i][c]);
#ifdef HAS_MIN
                                acc[i][c] = fma(t, mn[i][r], acc[i][c]);
#endif
                            }
                        }
                    }
#endif
                }
            }
            if (PREFETCH) {
                [[unroll]] for (uint j = 0; j < UNROLL; j++)
                    [[unroll]] for (uint i = 0; i < NR; i++) raw[j][i] = nxt[j][i];
            } else if (more) {
                [[unroll]] for (uint j = 0; j < UNROLL; j++) {
                    const uint u = min(base + MV_STEP + lane + j * LANES, nunits - 1u);
                    [[unroll]] for (uint i = 0; i < NR; i++) raw[j][i] = load_raw(row_off[i], u);
                }
            }
        }
        if (cn < nunits) {  // uniform
            barrier();  // the chunk is no longer read
            [[unroll]] for (uint i = 0; i < MV_PFI; i++) mv_xput(tid + i * WG, xpf[i]);
            mv_stage_rest(cn, nunits, xb4, ncols);
            barrier();
        }
    }

// Canonical butterfly: after step m every lane holds s[l] + s[l ^ m] (commutative, so both
    // lanes of a pair hold the same bits); after m = 1 all 8 lanes hold the row's sum.
#ifdef SUBGROUP_REDUCE
    [[unroll]] for (uint m = LANES / 2u; m > 0u; m >>= 1)
        [[unroll]] for (uint i = 0; i < NR; i++)
            [[unroll]] for (uint c = 0; c < NUM_COLS; c++)
                acc[i][c] = acc[i][c] + subgroupShuffleXor(acc[i][c], m);
#else
    [[unroll]] for (uint m = LANES / 2u; m > 0u; m >>= 1) {
        [[unroll]] for (uint i = 0; i < NR; i++)
            [[unroll]] for (uint c = 0; c < NUM_COLS; c++)
                mv_red[(tid * NR + i) * NUM_COLS + c] = acc[i][c];
        barrier();
        [[unroll]] for (uint i = 0; i < NR; i++)
            [[unroll]] for (uint c = 0; c < NUM_COLS; c++)
                acc[i][c] = acc[i][c] + mv_red[((tid ^ m) * NR + i) * NUM_COLS + c];
        barrier();
    }
#endif
    [[unroll]] for (uint i = 0; i < NR; i++)
        [[unroll]] for (uint c = 0; c < NUM_COLS; c++) res[i][c] = acc[i][c];
}
