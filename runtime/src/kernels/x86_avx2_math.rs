//! AVX2 (with FMA) element-wise kernels: activation quantization, the shared exponential,
//! GELU-tanh, bf16 rounding and the fixed-tree sum, each bit-exact with the scalar
//! reference, and the [`F32Simd`] register for the ISA-generic kernels.

use core::arch::x86_64::*;

use super::scalar::{
    q_stride, quantize_one, MatRef, EXP2_POLY, GELU_TANH_EXP2, GELU_TANH_EXP2_CUBE,
};
use super::simd::F32Simd;

/// [`super::scalar::sum16`] of 16 lanes held in two registers (lanes 0–7, 8–15), by the
/// same tree: +8, +4, +2, +1.
///
/// # Safety
/// The CPU must support AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn sum16(lo: __m256, hi: __m256) -> f32 {
    let a = _mm256_add_ps(lo, hi);
    let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)))
}

/// [`super::scalar::quantize_u8`], 8 lanes at a time: the same multiply, round-half-even,
/// add and clamp (`vmaxps` returns its second operand, 0, for NaN, as the scalar
/// comparisons do), so the bytes are identical.
pub fn quantize_u8(x: MatRef, scale: f32, zero: i32, top: u8, q: &mut [u8]) {
    let stride = q_stride(x.cols);
    assert!(x.rows == 0 || q.len() >= (x.rows - 1) * stride + x.cols);
    assert!(x.rows == 0 || x.data.len() >= (x.rows - 1) * x.stride + x.cols);
    // SAFETY: the dispatcher selected this kernel only where AVX2 is supported; every
    // access stays within the rows asserted above.
    unsafe { quantize_impl(x, 1.0 / scale, zero, top, q, stride) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn quantize_impl(x: MatRef, inv: f32, zero: i32, top: u8, q: &mut [u8], stride: usize) {
    let (vinv, vzero) = (_mm256_set1_ps(inv), _mm256_set1_ps(zero as f32));
    let (lo, hi) = (_mm256_setzero_ps(), _mm256_set1_ps(f32::from(top)));
    for r in 0..x.rows {
        let src = x.data.as_ptr().add(r * x.stride);
        let dst = q.as_mut_ptr().add(r * stride);
        let mut c = 0;
        while c + 8 <= x.cols {
            let t = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
                _mm256_mul_ps(_mm256_loadu_ps(src.add(c)), vinv),
            );
            let t = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(t, vzero), lo), hi);
            let i = _mm256_cvttps_epi32(t);
            let w = _mm_packus_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256::<1>(i));
            _mm_storel_epi64(dst.add(c) as *mut __m128i, _mm_packus_epi16(w, w));
            c += 8;
        }
        for c in c..x.cols {
            *dst.add(c) = quantize_one(*src.add(c), inv, zero, top);
        }
    }
}

/// 2^t for t ≤ 126 (a softmax's t ≤ 0), clamped below at −126 (NaN becomes −126: `vmaxps`
/// returns its second operand): [`super::scalar::exp2_clamped`]'s rounding to nearest
/// even, fused polynomial and product with 2^n built in the exponent bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp2_clamped_below(t: __m256) -> __m256 {
    let t = _mm256_max_ps(t, _mm256_set1_ps(-126.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(t);
    let f = _mm256_sub_ps(t, n);
    let [rest @ .., last] = EXP2_POLY;
    let mut p = _mm256_set1_ps(last);
    for &c in rest.iter().rev() {
        p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c));
    }
    let pow = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(p, _mm256_castsi256_ps(pow))
}

/// [`super::scalar::softmax_weight`] of 8 lanes at most 126 (or quiet NaN): 2^t, and 0
/// below the floor (an ordered compare: NaN too).
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn softmax_weight(t: __m256) -> __m256 {
    let keep = _mm256_cmp_ps::<_CMP_GE_OQ>(t, _mm256_set1_ps(super::scalar::SOFTMAX_FLOOR));
    _mm256_and_ps(keep, exp2_clamped_below(t))
}

/// [`super::scalar::exp2_clamped`] of 8 lanes: t clamped to [−126, 126] first.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn exp2_clamped(t: __m256) -> __m256 {
    let t = _mm256_max_ps(t, _mm256_set1_ps(-126.0));
    exp2_clamped_below(_mm256_min_ps(t, _mm256_set1_ps(126.0)))
}

/// [`super::scalar::bf16_round`] of 8 lanes, bit for bit: nearest bf16, ties to even,
/// denormals to signed zero, NaN kept (quietened).
///
/// # Safety
/// The CPU must support AVX2.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn bf16_round(x: __m256) -> __m256 {
    let b = _mm256_castps_si256(x);
    let lsb = _mm256_and_si256(_mm256_srli_epi32::<16>(b), _mm256_set1_epi32(1));
    let rounded = _mm256_and_si256(
        _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7FFF)), lsb),
        _mm256_set1_epi32(0xFFFF_0000u32 as i32),
    );
    let exponent = _mm256_and_si256(b, _mm256_set1_epi32(0x7F80_0000));
    let tiny = _mm256_cmpeq_epi32(exponent, _mm256_setzero_si256());
    let signed_zero = _mm256_and_si256(b, _mm256_set1_epi32(i32::MIN));
    let rounded = _mm256_blendv_epi8(rounded, signed_zero, tiny);
    let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
    let quiet = _mm256_or_si256(b, _mm256_set1_epi32(0x0040_0000));
    _mm256_castsi256_ps(_mm256_blendv_epi8(rounded, quiet, nan))
}

/// GELU-tanh of 8 lanes: `scalar::activate`'s x / (1 + 2^t), t = x·fma(x², b, a), with
/// the same fused multiply-add, exponential and true divide: the same bits.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub unsafe fn gelu_tanh(x: __m256) -> __m256 {
    let t = _mm256_mul_ps(
        x,
        _mm256_fmadd_ps(
            _mm256_mul_ps(x, x),
            _mm256_set1_ps(GELU_TANH_EXP2_CUBE),
            _mm256_set1_ps(GELU_TANH_EXP2),
        ),
    );
    _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0), exp2_clamped(t)))
}

/// `f` on 8 lanes, for the test battery (AVX2 and FMA checked).
#[cfg(feature = "std")]
pub fn element_wise(f: super::ElementWise, x: [f32; 8]) -> [f32; 8] {
    use super::ElementWise::*;
    assert!(std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"));
    let mut out = [0.0f32; 8];
    // SAFETY: AVX2 and FMA were just checked; both arrays hold 8 floats.
    unsafe {
        let v = _mm256_loadu_ps(x.as_ptr());
        let y = match f {
            Exp2 => exp2_clamped(v),
            SoftmaxWeight => softmax_weight(v),
            GeluTanh => gelu_tanh(v),
            Bf16Round => bf16_round(v),
        };
        _mm256_storeu_ps(out.as_mut_ptr(), y);
    }
    out
}

/// An AVX2 register for the ISA-generic kernels.
#[derive(Clone, Copy)]
pub struct F32x8(__m256);

// `inline(always)` without `target_feature` (Rust refuses both together): these are
// compiled inside their callers, which enable AVX2 and FMA.
impl F32Simd for F32x8 {
    const LANES: usize = 8;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        F32x8(_mm256_set1_ps(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F32x8(_mm256_loadu_ps(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        _mm256_storeu_ps(p, self.0)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        F32x8(_mm256_add_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        F32x8(_mm256_sub_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        F32x8(_mm256_mul_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        F32x8(_mm256_fmadd_ps(a.0, b.0, self.0))
    }
    #[inline(always)]
    unsafe fn max_skip_nan(self, x: Self) -> Self {
        // `vmaxps` returns its second operand where either is NaN.
        F32x8(_mm256_max_ps(x.0, self.0))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        let a = _mm_max_ps(
            _mm256_castps256_ps128(self.0),
            _mm256_extractf128_ps::<1>(self.0),
        );
        let b = _mm_max_ps(a, _mm_movehl_ps(a, a));
        _mm_cvtss_f32(_mm_max_ss(b, _mm_movehdup_ps(b)))
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        sum16(self.0, _mm256_setzero_ps())
    }
    #[inline(always)]
    unsafe fn softmax_weight(self) -> Self {
        F32x8(softmax_weight(self.0))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        F32x8(_mm256_div_ps(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn exp2_clamped(self) -> Self {
        F32x8(exp2_clamped(self.0))
    }
    #[inline(always)]
    unsafe fn gelu_tanh(self) -> Self {
        F32x8(gelu_tanh(self.0))
    }
    #[inline(always)]
    unsafe fn bf16_round(self) -> Self {
        F32x8(bf16_round(self.0))
    }
    #[inline(always)]
    unsafe fn load_odd_even(p: *const f32) -> (Self, Self) {
        let (a, b) = (_mm256_loadu_ps(p), _mm256_loadu_ps(p.add(8)));
        // `shufps` picks within 128-bit halves (a's odd pair, b's odd pair per half);
        // the 64-bit permute puts the halves back in order.
        let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0b11_01_11_01>(a, b));
        let even = _mm256_castps_pd(_mm256_shuffle_ps::<0b10_00_10_00>(a, b));
        (
            F32x8(_mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                odd,
            ))),
            F32x8(_mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(
                even,
            ))),
        )
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        F32x8(_mm256_maskload_ps(p, first_lanes(n)))
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        _mm256_maskstore_ps(p, first_lanes(n), self.0)
    }
}

/// The `vmaskmovps` mask of the first `n` of 8 lanes (the sign bit set in each).
#[inline(always)]
unsafe fn first_lanes(n: usize) -> __m256i {
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(n as i32),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}
