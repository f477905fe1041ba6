// erff as the reference computes it: a port of the Rust `libm` crate's erff and expf
// (libm 0.2.16, src/math/erff.rs, expf.rs and generic/scalbn.rs; MIT), themselves from
// musl and FreeBSD msun (s_erff.c, e_expf.c: Copyright (C) 1993 by Sun Microsystems,
// Inc., "Permission to use, copy, modify, and distribute this software is freely
// granted, provided that this notice is preserved"; float conversion by Ian Lance
// Taylor, Cygnus Support).
//
// Why a port: the exact GELU's bits come from this erff and fp32 attention's weights
// from this expf (the reference's libm::expf); CUDA's own erff and expf are other
// approximations that differ in the last bits, so a GPU using them would not give the
// CPU's bits. Everything below is the Rust code operation for operation: the same
// branches, constants (the Rust source's literals; the bits in the comments), and
// evaluation order, each product and sum rounded on its own (--fmad=false). The reference
// calls no fmaf here, so none is written. backends/cuda/tests/host_math.rs compiles this
// file on the host and compares it with libm::erff and libm::expf bit for bit.

// scalbnf (libm's generic scalbn for f32): x·2^n, prescaled by 2^127 or 2^-102 when 2^n
// itself is not a float, so an underflowing result is rounded once.
__device__ __forceinline__ float vlm_scalbnf(float x, int n) {
    if (n > 127) {
        x *= __uint_as_float(0x7f000000u); // 2^127
        n -= 127;
        if (n > 127) {
            x *= __uint_as_float(0x7f000000u);
            n -= 127;
            if (n > 127) n = 127;
        }
    } else if (n < -126) {
        // 2^-126 · 2^24: keeps any x normal, so the last multiply is the only rounding.
        x *= __uint_as_float(0x0c800000u); // 2^-102
        n += 102;
        if (n < -126) {
            x *= __uint_as_float(0x0c800000u);
            n += 102;
            if (n < -126) n = -126;
        }
    }
    return x * __uint_as_float((u32)(127 + n) << 23);
}

__device__ __forceinline__ float vlm_fabsf(float x) {
    return __uint_as_float(__float_as_uint(x) & 0x7fffffffu);
}

// expf (libm's, from FreeBSD e_expf.c): k = round(x/ln 2), x - k·ln 2 in two parts, a
// rational approximation on the reduced range, then ·2^k.
__device__ float vlm_expf(float x) {
    const float LN2_HI = 6.9314575195e-01f;  /* 0x3f317200 */
    const float LN2_LO = 1.4286067653e-06f;  /* 0x35bfbe8e */
    const float INV_LN2 = 1.4426950216e+00f; /* 0x3fb8aa3b */
    const float P1 = 1.6666625440e-1f;       /*  0xaaaa8f.0p-26 */
    const float P2 = -2.7667332906e-3f;      /* -0xb55215.0p-32 */
    const float x1p127 = __uint_as_float(0x7f000000u);

    u32 hx = __float_as_uint(x);
    int sign = (int)(hx >> 31);
    hx &= 0x7fffffffu;

    if (hx >= 0x42aeac50u) {                    // |x| >= 87.33655 or NaN
        if (hx > 0x7f800000u) return x;         // NaN
        if (hx >= 0x42b17218u && sign == 0) {   // x >= 88.722839: overflow
            x *= x1p127;
            return x;
        }
        if (sign != 0 && hx >= 0x42cff1b5u) {   // x <= -103.972084: underflow
            return 0.0f;
        }
    }

    int k;
    float hi, lo;
    if (hx > 0x3eb17218u) {                     // |x| > 0.5 ln 2
        if (hx > 0x3f851592u) {                 // |x| > 1.5 ln 2
            // Truncation toward zero, as Rust's `as i32`; |x| < 104 here, in range.
            k = (int)(INV_LN2 * x + (sign != 0 ? -0.5f : 0.5f));
        } else {
            k = 1 - sign - sign;
        }
        float kf = (float)k;
        hi = x - kf * LN2_HI;                   // exact: |k| < 2^8, LN2_HI's low 9 bits are 0
        lo = kf * LN2_LO;
        x = hi - lo;
    } else if (hx > 0x39000000u) {              // |x| > 2^-14
        k = 0;
        hi = x;
        lo = 0.0f;
    } else {
        return 1.0f + x;
    }

    float xx = x * x;
    float c = x - xx * (P1 + xx * P2);
    float y = 1.0f + (x * c / (2.0f - c) - lo + hi);
    return k == 0 ? y : vlm_scalbnf(y, k);
}

// erfc on [0.84375, 1.25): 1 - erx - P(s)/Q(s), s = |x| - 1.
__device__ __forceinline__ float vlm_erfc1(float x) {
    const float ERX = 8.4506291151e-01f;  /* 0x3f58560b */
    const float PA0 = -2.3621185683e-03f; /* 0xbb1acdc6 */
    const float PA1 = 4.1485610604e-01f;  /* 0x3ed46805 */
    const float PA2 = -3.7220788002e-01f; /* 0xbebe9208 */
    const float PA3 = 3.1834661961e-01f;  /* 0x3ea2fe54 */
    const float PA4 = -1.1089469492e-01f; /* 0xbde31cc2 */
    const float PA5 = 3.5478305072e-02f;  /* 0x3d1151b3 */
    const float PA6 = -2.1663755178e-03f; /* 0xbb0df9c0 */
    const float QA1 = 1.0642088205e-01f;  /* 0x3dd9f331 */
    const float QA2 = 5.4039794207e-01f;  /* 0x3f0a5785 */
    const float QA3 = 7.1828655899e-02f;  /* 0x3d931ae7 */
    const float QA4 = 1.2617121637e-01f;  /* 0x3e013307 */
    const float QA5 = 1.3637083583e-02f;  /* 0x3c5f6e13 */
    const float QA6 = 1.1984500103e-02f;  /* 0x3c445aa3 */

    float s = vlm_fabsf(x) - 1.0f;
    float p = PA0 + s * (PA1 + s * (PA2 + s * (PA3 + s * (PA4 + s * (PA5 + s * PA6)))));
    float q = 1.0f + s * (QA1 + s * (QA2 + s * (QA3 + s * (QA4 + s * (QA5 + s * QA6)))));
    return 1.0f - ERX - p / q;
}

// erfc on [0.84375, 6): exp(-z² - 0.5625)·exp((z - x)(z + x) + R/S)/x, with z = x cut to
// its high 11 significand bits so z² is exact.
__device__ float vlm_erfc2(u32 ix, float x) {
    const float RA0 = -9.8649440333e-03f; /* 0xbc21a093 */
    const float RA1 = -6.9385856390e-01f; /* 0xbf31a0b7 */
    const float RA2 = -1.0558626175e+01f; /* 0xc128f022 */
    const float RA3 = -6.2375331879e+01f; /* 0xc2798057 */
    const float RA4 = -1.6239666748e+02f; /* 0xc322658c */
    const float RA5 = -1.8460508728e+02f; /* 0xc3389ae7 */
    const float RA6 = -8.1287437439e+01f; /* 0xc2a2932b */
    const float RA7 = -9.8143291473e+00f; /* 0xc11d077e */
    const float SA1 = 1.9651271820e+01f;  /* 0x419d35ce */
    const float SA2 = 1.3765776062e+02f;  /* 0x4309a863 */
    const float SA3 = 4.3456588745e+02f;  /* 0x43d9486f */
    const float SA4 = 6.4538726807e+02f;  /* 0x442158c9 */
    const float SA5 = 4.2900814819e+02f;  /* 0x43d6810b */
    const float SA6 = 1.0863500214e+02f;  /* 0x42d9451f */
    const float SA7 = 6.5702495575e+00f;  /* 0x40d23f7c */
    const float SA8 = -6.0424413532e-02f; /* 0xbd777f97 */
    const float RB0 = -9.8649431020e-03f; /* 0xbc21a092 */
    const float RB1 = -7.9928326607e-01f; /* 0xbf4c9dd4 */
    const float RB2 = -1.7757955551e+01f; /* 0xc18e104b */
    const float RB3 = -1.6063638306e+02f; /* 0xc320a2ea */
    const float RB4 = -6.3756646729e+02f; /* 0xc41f6441 */
    const float RB5 = -1.0250950928e+03f; /* 0xc480230b */
    const float RB6 = -4.8351919556e+02f; /* 0xc3f1c275 */
    const float SB1 = 3.0338060379e+01f;  /* 0x41f2b459 */
    const float SB2 = 3.2579251099e+02f;  /* 0x43a2e571 */
    const float SB3 = 1.5367296143e+03f;  /* 0x44c01759 */
    const float SB4 = 3.1998581543e+03f;  /* 0x4547fdbb */
    const float SB5 = 2.5530502930e+03f;  /* 0x451f90ce */
    const float SB6 = 4.7452853394e+02f;  /* 0x43ed43a7 */
    const float SB7 = -2.2440952301e+01f; /* 0xc1b38712 */

    if (ix < 0x3fa00000u) return vlm_erfc1(x); // |x| < 1.25

    x = vlm_fabsf(x);
    float s = 1.0f / (x * x);
    float r, big_s;
    if (ix < 0x4036db6du) { // |x| < 1/0.35
        r = RA0 + s * (RA1 + s * (RA2 + s * (RA3 + s * (RA4 + s * (RA5 + s * (RA6 + s * RA7))))));
        big_s = 1.0f
            + s * (SA1
                + s * (SA2 + s * (SA3 + s * (SA4 + s * (SA5 + s * (SA6 + s * (SA7 + s * SA8)))))));
    } else { // |x| >= 1/0.35
        r = RB0 + s * (RB1 + s * (RB2 + s * (RB3 + s * (RB4 + s * (RB5 + s * RB6)))));
        big_s =
            1.0f + s * (SB1 + s * (SB2 + s * (SB3 + s * (SB4 + s * (SB5 + s * (SB6 + s * SB7))))));
    }
    float z = __uint_as_float(__float_as_uint(x) & 0xffffe000u);

    return vlm_expf(-z * z - 0.5625f) * vlm_expf((z - x) * (z + x) + r / big_s) / x;
}

__device__ __noinline__ float vlm_erff(float x) {
    const float EFX8 = 1.0270333290e+00f; /* 0x3f8375d4 */
    const float PP0 = 1.2837916613e-01f;  /* 0x3e0375d4 */
    const float PP1 = -3.2504209876e-01f; /* 0xbea66beb */
    const float PP2 = -2.8481749818e-02f; /* 0xbce9528f */
    const float PP3 = -5.7702702470e-03f; /* 0xbbbd1489 */
    const float PP4 = -2.3763017452e-05f; /* 0xb7c756b1 */
    const float QQ1 = 3.9791721106e-01f;  /* 0x3ecbbbce */
    const float QQ2 = 6.5022252500e-02f;  /* 0x3d852a63 */
    const float QQ3 = 5.0813062117e-03f;  /* 0x3ba68116 */
    const float QQ4 = 1.3249473704e-04f;  /* 0x390aee49 */
    const float QQ5 = -3.9602282413e-06f; /* 0xb684e21a */

    u32 ix = __float_as_uint(x);
    int sign = (int)(ix >> 31);
    ix &= 0x7fffffffu;
    if (ix >= 0x7f800000u) {
        // erf(NaN) = NaN, erf(±inf) = ±1.
        return 1.0f - 2.0f * (float)sign + 1.0f / x;
    }
    if (ix < 0x3f580000u) { // |x| < 0.84375
        if (ix < 0x31800000u) { // |x| < 2^-28: scaled by 8 so EFX8·x cannot underflow
            return 0.125f * (8.0f * x + EFX8 * x);
        }
        float z = x * x;
        float r = PP0 + z * (PP1 + z * (PP2 + z * (PP3 + z * PP4)));
        float s = 1.0f + z * (QQ1 + z * (QQ2 + z * (QQ3 + z * (QQ4 + z * QQ5))));
        float y = r / s;
        return x + x * y;
    }
    float y;
    if (ix < 0x40c00000u) { // |x| < 6
        y = 1.0f - vlm_erfc2(ix, x);
    } else {
        y = 1.0f - __uint_as_float(0x03800000u); // 1 - 2^-120: rounds to 1
    }
    return sign != 0 ? -y : y;
}
