//! AVX-512 element-wise kernels: activation quantization (bit-exact with the scalar
//! reference) and a vectorised GELU-tanh (within 2e-6 of it; libm's `tanhf` per element
//! would cost more than the GEMM it follows).

use core::arch::x86_64::*;

use super::scalar::{q_stride, MatRef};

/// [`super::scalar::quantize_u8`], 16 lanes at a time: the same multiply, round-half-even,
/// add and clamp, so the bytes are identical.
pub fn quantize_u8(x: MatRef, scale: f32, zero: i32, q: &mut [u8]) {
    let stride = q_stride(x.cols);
    assert!(q.len() >= x.rows.saturating_sub(1) * stride + x.cols);
    // SAFETY: the caller selected this kernel only where AVX-512 is supported; every
    // access below stays within `x.row(r)` and the row of `q` asserted above.
    unsafe { quantize_impl(x, 1.0 / scale, zero, q, stride) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize_impl(x: MatRef, inv: f32, zero: i32, q: &mut [u8], stride: usize) {
    let vinv = _mm512_set1_ps(inv);
    let vzero = _mm512_set1_ps(zero as f32);
    let lo = _mm512_setzero_ps();
    let hi = _mm512_set1_ps(255.0);
    for r in 0..x.rows {
        let row = x.row(r);
        let dst = &mut q[r * stride..r * stride + x.cols];
        let mut c = 0;
        while c < row.len() {
            let n = (row.len() - c).min(16);
            let mask: __mmask16 = if n == 16 { 0xFFFF } else { (1u16 << n) - 1 };
            let v = _mm512_maskz_loadu_ps(mask, row.as_ptr().add(c));
            let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm512_mul_ps(v, vinv),
            );
            // max(t, 0) returns 0 for NaN (the second operand), as the scalar code does.
            let t = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(t, vzero), lo), hi);
            let b = _mm512_cvtusepi32_epi8(_mm512_cvttps_epi32(t));
            _mm_mask_storeu_epi8(dst.as_mut_ptr().add(c) as *mut i8, mask, b);
            c += n;
        }
    }
}

/// 2^t for t ≤ 0 (the only range GELU and softmax need): split into an integer and a fraction in
/// [−0.5, 0.5], a degree-7 polynomial for the fraction (relative error < 1e-8), the
/// integer added to the exponent. Flushes to 0 below 2^−126.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp2_nonpositive(t: __m512) -> __m512 {
    let t = _mm512_max_ps(t, _mm512_set1_ps(-126.0));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_sub_ps(t, n);
    // ln2^k / k!
    const C: [f32; 8] = [
        1.0,
        core::f32::consts::LN_2,
        0.240_226_5,
        0.055_504_11,
        0.009_618_129,
        0.001_333_355_8,
        0.000_154_035_3,
        0.000_015_252_73,
    ];
    let mut p = _mm512_set1_ps(C[7]);
    for &c in C[..7].iter().rev() {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(p, _mm512_castsi512_ps(e))
}

/// GELU-tanh of 16 lanes: 0.5·x·(1 + tanh(u)), tanh(u) = sign(u)·(1 − e)/(1 + e) with
/// e = exp(−2|u|) ∈ (0, 1], so nothing overflows for any input.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn gelu_tanh(x: __m512) -> __m512 {
    const C: f32 = 0.797_884_6; // √(2/π)
    let x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    let u = _mm512_mul_ps(
        _mm512_set1_ps(C),
        _mm512_fmadd_ps(_mm512_set1_ps(0.044715), x3, x),
    );
    let au = _mm512_abs_ps(u);
    // exp(−2|u|) = 2^(−2·log2(e)·|u|)
    let e = exp2_nonpositive(_mm512_mul_ps(
        au,
        _mm512_set1_ps(-2.0 * core::f32::consts::LOG2_E),
    ));
    let one = _mm512_set1_ps(1.0);
    let th = _mm512_div_ps(_mm512_sub_ps(one, e), _mm512_add_ps(one, e));
    // Give tanh the sign of u.
    let sign = _mm512_and_si512(_mm512_castps_si512(u), _mm512_set1_epi32(i32::MIN));
    let th = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(th), sign));
    _mm512_mul_ps(
        _mm512_mul_ps(_mm512_set1_ps(0.5), x),
        _mm512_add_ps(one, th),
    )
}
