// Activation functions shared by kernels, written so that no input overflows to NaN (the
// builtin tanh may compute (e^x - e^-x)/(e^x + e^-x) and give inf/inf for |x| > ~44).

// tanh(x) for every finite x: exp of a non-positive argument only; a short series near 0, where
// (1 - t)/(1 + t) would lose relative accuracy to cancellation.
float safe_tanh(float x) {
    const float a = abs(x);
    if (a < 0.1) {
        const float x2 = x * x;  // x - x^3/3 + 2x^5/15 - 17x^7/315; next term < 3e-10 relative
        return x * (1.0 + x2 * (-1.0 / 3.0 + x2 * (2.0 / 15.0 + x2 * (-17.0 / 315.0))));
    }
    const float t = exp(-2.0 * a);
    return sign(x) * ((1.0 - t) / (1.0 + t));
}

// x·sigmoid(x); exp(-x) = inf for x < -88 gives x/inf = -0, the right limit.
float silu(float x) { return x / (1.0 + exp(-x)); }

float sigmoid(float x) { return 1.0 / (1.0 + exp(-x)); }

// GELU, tanh approximation, as ggml: 0.5·x·(1 + tanh(√(2/π)·x·(1 + 0.044715·x²))).
float gelu_tanh(float x) {
    const float SQRT_2_OVER_PI = 0.79788456080286535588;
    return 0.5 * x * (1.0 + safe_tanh(SQRT_2_OVER_PI * x * (1.0 + 0.044715 * x * x)));
}
