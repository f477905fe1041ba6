// Shared by every kernel: the runtime's scalar definitions (runtime/src/kernels/scalar.rs)
// in CUDA C, operation for operation. The program is compiled with --fmad=false, so a
// product and a sum stay two roundings as in the reference, and every fused
// multiply-add below is one the reference itself fuses (fmaf). Division and sqrtf are
// IEEE (NVRTC's defaults: --prec-div=true, --prec-sqrt=true, no flush to zero).

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned int u32;

// Activation codes, as the format numbers them (runtime/src/names.rs).
#define VLM_ACT_NONE 0
#define VLM_ACT_GELU_TANH 1
#define VLM_ACT_GELU_ERF 2
#define VLM_ACT_SILU 3

// The reference's constants by their bits (a test reads them back against the
// runtime's), so no compiler's constant folding can move them.
#define VLM_SILU_EXP2 __int_as_float(0xbfb8aa3b)
#define VLM_GELU_TANH_EXP2 __int_as_float(0xc0135761)
#define VLM_GELU_TANH_EXP2_CUBE __int_as_float(0xbdd2d3e7)
#define VLM_SOFTMAX_FLOOR (-64.0f)

// 2^t with t clamped to [-126, 126]: round to nearest even, a fused degree-4 polynomial
// in the fraction, the integer into the exponent (scalar::exp2_clamped).
__device__ __forceinline__ float vlm_exp2_clamped(float t) {
    // fmaxf/fminf return the number when one operand is NaN: NaN becomes -126 as the
    // reference's max/min make it.
    t = fminf(fmaxf(t, -126.0f), 126.0f);
    float n = rintf(t);
    float f = t - n;
    float p = 0.009582836f;
    p = fmaf(p, f, 0.055906415f);
    p = fmaf(p, f, 0.24024099f);
    p = fmaf(p, f, 0.6931242f);
    p = fmaf(p, f, 1.0f);
    return p * __int_as_float(((int)n + 127) << 23);
}

__device__ __forceinline__ float vlm_softmax_weight(float t) {
    return t >= VLM_SOFTMAX_FLOOR ? vlm_exp2_clamped(t) : 0.0f;
}

__device__ __noinline__ float vlm_erff(float x);

__device__ __forceinline__ float vlm_activate(float x, int act) {
    switch (act) {
    case VLM_ACT_GELU_TANH: {
        float t = x * fmaf(x * x, VLM_GELU_TANH_EXP2_CUBE, VLM_GELU_TANH_EXP2);
        return x / (1.0f + vlm_exp2_clamped(t));
    }
    case VLM_ACT_GELU_ERF:
        return 0.5f * x * (1.0f + vlm_erff(x * 0.70710678118654752440f));
    case VLM_ACT_SILU:
        return x / (1.0f + vlm_exp2_clamped(x * VLM_SILU_EXP2));
    default:
        return x;
    }
}

// The reference's bf16 rounding (scalar::bf16_round): ties to even, denormals to a zero
// of the same sign, NaN kept a NaN.
__device__ __forceinline__ float vlm_bf16_round(float x) {
    u32 b = __float_as_uint(x);
    if (x != x) return __uint_as_float(b | 0x00400000u);
    if ((b & 0x7F800000u) == 0) return __uint_as_float(b & 0x80000000u);
    u32 r = b + 0x7FFFu + ((b >> 16) & 1u);
    return __uint_as_float(r & 0xFFFF0000u);
}

// Sixteen lane sums reduced by the reference's fixed tree (scalar::sum16): lane i takes
// lane i + 8, then + 4, + 2, + 1. `l` is one row's 16 partial sums in shared memory.
__device__ __forceinline__ float vlm_sum16(volatile float* l) {
    float a[16];
    for (int i = 0; i < 16; i++) a[i] = l[i];
    for (int h = 8; h >= 1; h >>= 1)
        for (int i = 0; i < h; i++) a[i] = a[i] + a[i + h];
    return a[0];
}
