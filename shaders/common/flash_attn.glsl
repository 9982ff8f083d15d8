// Shared by flash_attn.comp and flash_attn_reduce.comp: the masked-score sentinel, the logit
// softcap, a query row's valid KV range, its chunk size, and the chunk fold. The fold is written once here so the
// one-pass (direct) path and the split-K reduce pass do bit-identical arithmetic (R5).

// Masked score. A finite sentinel (-FLT_MAX) instead of -inf: no inf - inf anywhere. Real scores
// never reach it; every place that could meet it tests for it explicitly.
const float FA_NEG = -3.402823466e38;

// tanh with no overflow and a good relative error near 0, where (1 - t) / (1 + t) cancels.
float fa_tanh(float x) {
    float ax = abs(x);
    float r;
    if (ax < 0.25) {
        float x2 = x * x;
        // Taylor to x^9; the x^11 term is below 1e-8 relative for |x| < 0.25.
        r = ax * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0
                 + x2 * (62.0 / 2835.0)))));
    } else {
        float t = exp(-2.0 * min(ax, 20.0));
        r = (1.0 - t) / (1.0 + t);
    }
    return x < 0.0 ? -r : r;
}

// cap * tanh(s / cap) when cap > 0 (Gemma-2 style logit softcap), else s.
float fa_softcap(float s, float cap) {
    return cap > 0.0 ? cap * fa_tanh(s / cap) : s;
}

// KV positions a query at absolute position qpos may attend: [first, last] (empty when
// last < first). Causal (<= qpos), clipped to the cache length, and with a sliding window
// (window > 0) only positions > qpos - window.
ivec2 fa_row_range(int qpos, int kv_len, uint window) {
    int last = min(qpos, kv_len - 1);
    int first = window > 0u ? max(0, qpos - int(window) + 1) : 0;
    return ivec2(first, last);
}

// Chunk size of a row whose valid positions end at n - 1: the smallest power-of-two multiple of
// cmin giving at most nch chunks, capped at cmax. A function of the row's own position only (not
// of kv_len), so decode, verify and prefill cut a row the same way (R5); many small chunks at
// short context (parallelism), few large ones at long context (partial-result traffic).
// Mirrored by pipelines/flash_attn.chunk_size.
uint fa_chunk(int n, uint cmin, uint cmax, uint nch) {
    uint want = (uint(max(n, 1)) + nch - 1u) / nch;
    uint c = cmin;
    while (c < want && c < cmax) {
        c <<= 1u;
    }
    return c;
}

// Scales of folding a chunk whose max score is m_k into a running max M: a for the old
// accumulator, b for the chunk. b == 0 means "no change" (an empty chunk, or one whose weight
// underflows); the running max after the fold is max(M, m_k) either way (b == 0 implies
// m_k < M), so the sequence of running maxima is a prefix max and the scales of all chunks can
// be computed in parallel (flash_attn_reduce.comp).
void fa_fold_ab(float M, float m_k, out float a, out float b) {
    a = 1.0;
    b = 0.0;
    if (m_k == FA_NEG) {
        return;
    }
    float Mn = max(M, m_k);
    a = (M == Mn) ? 1.0 : ((M == FA_NEG) ? 0.0 : exp(M - Mn));
    b = (m_k == Mn) ? 1.0 : exp(m_k - Mn);
    if (b == 0.0) {
        a = 1.0;
    }
}

// L <- L * a + l_k * b (one rounding for the product-sum; skipped when b == 0).
float fa_fold_l(float L, float l_k, float a, float b) {
    precise float Ln = b != 0.0 ? fma(l_k, b, L * a) : L;
    return Ln;
}

// Fold one chunk's partial softmax state (m_k: max score, l_k: sum of exp) into the running
// (M, L). Outputs a (scale of the old accumulator) and b (scale of the chunk's O). b == 0 means
// "no change": callers then leave O untouched, which keeps empty chunks exact no-ops. Chunks
// are folded in increasing order.
void fa_fold(inout float M, inout float L, float m_k, float l_k, out float a, out float b) {
    fa_fold_ab(M, m_k, a, b);
    L = fa_fold_l(L, l_k, a, b);
    M = max(M, m_k);
}

// O <- O * a + O_k * b, one rounding for the product-sum, no contraction freedom.
float fa_fold_o(float o, float o_k, float a, float b) {
    precise float r = fma(o_k, b, o * a);
    return r;
}

// Final normalisation; rows with no valid key (empty range) give 0. A zero result is written as
// +0 (integer ops, which no compiler folds away): masked columns add fma(0, v, O), which may flip
// the sign of a zero O, so the sign of a zero is not part of the result.
float fa_finish(float o, float L) {
    precise float r = L > 0.0 ? o / L : 0.0;
    uint u = floatBitsToUint(r);
    return uintBitsToFloat((u & 0x7fffffffu) == 0u ? 0u : u);
}
