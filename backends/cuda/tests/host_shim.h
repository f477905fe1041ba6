// Lets the kernels' scalar CUDA C (kernels/common.cuh, kernels/erf.cu) compile as plain
// C++ on the host, so tests/host_math.rs can compare it with the Rust reference without
// a GPU. Compile with -ffp-contract=off: like NVRTC's --fmad=false, every product and
// sum must stay its own rounding, and the only fused multiply-adds are the fmaf calls.
#pragma once

#include <math.h>
#include <string.h>

#define __device__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))

// The CUDA bit casts; memcpy because a pointer or union pun is not defined C++.
static inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, sizeof f);
    return f;
}
static inline float __uint_as_float(unsigned int u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline int __float_as_int(float f) {
    int i;
    memcpy(&i, &f, sizeof i);
    return i;
}
static inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    memcpy(&u, &f, sizeof u);
    return u;
}

// CUDA's fminf/fmaxf are PTX's min/max.f32: a NaN operand, signalling or quiet, gives the
// other operand (as the reference's max/min and x86's vmaxps treat it). C's, as glibc
// implements them (IEEE 754-2008 minNum/maxNum), return a NaN for a signalling NaN.
static inline float vlm_host_fminf(float a, float b) {
    return a != a ? b : b != b ? a : fminf(a, b);
}
static inline float vlm_host_fmaxf(float a, float b) {
    return a != a ? b : b != b ? a : fmaxf(a, b);
}
#define fminf vlm_host_fminf
#define fmaxf vlm_host_fmaxf
