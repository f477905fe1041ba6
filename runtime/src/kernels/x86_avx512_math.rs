//! AVX-512 element-wise kernels: activation quantization, the shared exponential, GELU-tanh
//! and bf16 rounding, each bit-exact with the scalar reference.

use core::arch::x86_64::*;

use super::scalar::{q_stride, MatRef};
use super::simd::F32Simd;

/// The first `n` of 16 lanes (all for n ≥ 16, none for 0): the mask of a row's last,
/// partial register.
#[inline]
pub fn lanes(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        ((1u32 << n) - 1) as __mmask16
    }
}

/// [`super::scalar::sum16`] of a register, by the same tree in shuffles: the upper eight
/// lanes onto the lower, then four, two, one.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn sum16(v: __m512) -> f32 {
    let a = _mm256_add_ps(
        _mm512_castps512_ps256(v),
        _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))),
    );
    let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)))
}

/// [`super::scalar::quantize_u8`], 16 lanes at a time: the same multiply, round-half-even,
/// add and clamp, so the bytes are identical.
pub fn quantize_u8(x: MatRef, scale: f32, zero: i32, top: u8, q: &mut [u8]) {
    let stride = q_stride(x.cols);
    assert!(q.len() >= x.rows.saturating_sub(1) * stride + x.cols);
    // SAFETY: the caller selected this kernel only where AVX-512 is supported; every
    // access below stays within `x.row(r)` and the row of `q` asserted above.
    unsafe { quantize_impl(x, 1.0 / scale, zero, top, q, stride) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn quantize_impl(x: MatRef, inv: f32, zero: i32, top: u8, q: &mut [u8], stride: usize) {
    let vinv = _mm512_set1_ps(inv);
    let vzero = _mm512_set1_ps(zero as f32);
    let lo = _mm512_setzero_ps();
    let hi = _mm512_set1_ps(f32::from(top));
    for r in 0..x.rows {
        let row = x.row(r);
        let dst = &mut q[r * stride..r * stride + x.cols];
        let mut c = 0;
        while c < row.len() {
            let n = (row.len() - c).min(16);
            let mask = lanes(n);
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

/// 2^t, with t clamped to [−126, 126] (softmax needs t ≤ 0, GELU both signs): split
/// into an integer and a fraction in [−0.5, 0.5], the shared polynomial for the fraction,
/// scaled by 2^integer (`vscalefps`: the one correctly rounded product the scalar code
/// makes by building 2^n's bits). Nothing above 2^126 comes out, so nothing overflows.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp2_clamped(t: __m512) -> __m512 {
    // max first: it turns NaN into −126 (its second operand), as the scalar code does.
    let t = _mm512_max_ps(t, _mm512_set1_ps(-126.0));
    exp2_in_range(_mm512_min_ps(t, _mm512_set1_ps(126.0)))
}

/// [`exp2_clamped`] of arguments that are at most 126 already (a softmax's t ≤ 0; NaN
/// still becomes −126): one operation shorter, the same bits.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn exp2_clamped_below(t: __m512) -> __m512 {
    exp2_in_range(_mm512_max_ps(t, _mm512_set1_ps(-126.0)))
}

/// [`super::scalar::softmax_weight`] of 16 lanes at most 126 (or quiet NaN): 2^t, and 0
/// below the floor (an ordered compare: NaN too).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn softmax_weight(t: __m512) -> __m512 {
    let floor = _mm512_set1_ps(super::scalar::SOFTMAX_FLOOR);
    _mm512_maskz_mov_ps(
        _mm512_cmp_ps_mask::<_CMP_GE_OQ>(t, floor),
        exp2_clamped_below(t),
    )
}

#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn exp2_in_range(t: __m512) -> __m512 {
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm512_sub_ps(t, n);
    let [rest @ .., last] = super::scalar::EXP2_POLY;
    let mut p = _mm512_set1_ps(last);
    for &c in rest.iter().rev() {
        p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(c));
    }
    _mm512_scalef_ps(p, n)
}

/// [`super::scalar::bf16_round`] of 16 lanes, bit for bit: nearest bf16, ties to even,
/// denormals to signed zero, NaN kept (quietened).
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn bf16_round(x: __m512) -> __m512 {
    let b = _mm512_castps_si512(x);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    let rounded = _mm512_and_si512(
        _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7FFF)), lsb),
        _mm512_set1_epi32(0xFFFF_0000u32 as i32),
    );
    let tiny = _mm512_testn_epi32_mask(b, _mm512_set1_epi32(0x7F80_0000));
    let rounded = _mm512_mask_and_epi32(rounded, tiny, b, _mm512_set1_epi32(i32::MIN));
    let nan = _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
    let rounded = _mm512_mask_or_epi32(rounded, nan, b, _mm512_set1_epi32(0x0040_0000));
    _mm512_castsi512_ps(rounded)
}

/// `f` on 16 lanes, for the test battery (AVX-512F and FMA checked).
#[cfg(feature = "std")]
pub fn element_wise(f: super::ElementWise, x: [f32; 16]) -> [f32; 16] {
    use super::ElementWise::*;
    assert!(std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma"));
    let mut out = [0.0f32; 16];
    // SAFETY: AVX-512F and FMA were just checked; both arrays hold 16 floats.
    unsafe {
        let v = _mm512_loadu_ps(x.as_ptr());
        let y = match f {
            Exp2 => exp2_clamped(v),
            SoftmaxWeight => softmax_weight(v),
            GeluTanh => gelu_tanh(v),
            Bf16Round => bf16_round(v),
        };
        _mm512_storeu_ps(out.as_mut_ptr(), y);
    }
    out
}

/// GELU-tanh of 16 lanes: `scalar::activate`'s formula, x / (1 + 2^t) with
/// t = x·(a + b·x²), operation for operation (the same fused multiply-add, the shared
/// exponential, a true divide), so the same bits.
///
/// # Safety
/// The CPU must support AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
pub unsafe fn gelu_tanh(x: __m512) -> __m512 {
    use super::scalar::{GELU_TANH_EXP2, GELU_TANH_EXP2_CUBE};
    let t = _mm512_mul_ps(
        x,
        _mm512_fmadd_ps(
            _mm512_mul_ps(x, x),
            _mm512_set1_ps(GELU_TANH_EXP2_CUBE),
            _mm512_set1_ps(GELU_TANH_EXP2),
        ),
    );
    _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0), exp2_clamped(t)))
}

/// An AVX-512 register for the ISA-generic kernels.
#[derive(Clone, Copy)]
pub struct F32x16(__m512);

// `inline(always)` without `target_feature` (Rust refuses both together): these are
// compiled inside their callers, which enable AVX-512F and FMA.
impl F32Simd for F32x16 {
    const LANES: usize = 16;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        F32x16(_mm512_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F32x16(_mm512_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm512_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        F32x16(_mm512_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        F32x16(_mm512_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        F32x16(_mm512_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        F32x16(_mm512_fmadd_ps(a.0, b.0, self.0))
    }
    #[inline(always)]
    unsafe fn max_skip_nan(self, x: Self) -> Self {
        // `vmaxps` returns its second operand where either is NaN.
        F32x16(_mm512_max_ps(x.0, self.0))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        _mm512_reduce_max_ps(self.0)
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        sum16(self.0)
    }
    #[inline(always)]
    unsafe fn softmax_weight(self) -> Self {
        F32x16(softmax_weight(self.0))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        F32x16(_mm512_div_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn exp2_clamped(self) -> Self {
        F32x16(exp2_clamped(self.0))
    }
    #[inline(always)]
    unsafe fn gelu_tanh(self) -> Self {
        F32x16(gelu_tanh(self.0))
    }
    #[inline(always)]
    unsafe fn bf16_round(self) -> Self {
        F32x16(bf16_round(self.0))
    }
    #[inline(always)]
    unsafe fn load_odd_even(p: *const f32) -> (Self, Self) {
        let (a, b) = (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)));
        // Indices 0–15 pick from `a`, 16–31 from `b`.
        let odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        (
            F32x16(_mm512_permutex2var_ps(a, odd, b)),
            F32x16(_mm512_permutex2var_ps(a, even, b)),
        )
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        F32x16(_mm512_maskz_loadu_ps(lanes(n), p))
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        _mm512_mask_storeu_ps(p, lanes(n), self.0)
    }
}
