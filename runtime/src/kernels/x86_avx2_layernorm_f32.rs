//! Layer norm for AVX2 (fp32): the reference's two passes (mean, then the biased variance
//! of the deviations) over 16 lanes held in two registers, so element c lands in lane
//! c mod 16 as in `scalar::layer_norm`, reduced by the same tree, with its separate
//! multiplies and adds: the same bits.

use core::arch::x86_64::*;

use super::scalar::{check_layer_norm_bounds, MatMut, MatRef};
use super::x86_avx2_math::sum16;

const LANES: usize = 16;

pub fn layer_norm(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, out: MatMut) {
    check_layer_norm_bounds(&x, gamma, beta, &out);
    // SAFETY: the dispatcher selected this kernel only where AVX2 and FMA are supported;
    // bounds checked above.
    unsafe { impl_(x, gamma, beta, eps, out) }
}

/// A deviation squared (no closure: it would not inherit `impl_`'s features on every
/// toolchain this builds with).
#[inline(always)]
unsafe fn sq(d: __m256) -> __m256 {
    _mm256_mul_ps(d, d)
}

#[target_feature(enable = "avx2,fma")]
unsafe fn impl_(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, out: MatMut) {
    let n = x.cols;
    let full = n - n % LANES;
    for r in 0..x.rows {
        let xr = x.data.as_ptr().add(r * x.stride);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in (0..full).step_by(LANES) {
            lo = _mm256_add_ps(lo, _mm256_loadu_ps(xr.add(c)));
            hi = _mm256_add_ps(hi, _mm256_loadu_ps(xr.add(c + 8)));
        }
        // The tail through a zero-padded copy: zeros leave the lane sums as they are.
        let mut tail = [0.0f32; LANES];
        tail[..n - full].copy_from_slice(core::slice::from_raw_parts(xr.add(full), n - full));
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(tail.as_ptr()));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(tail.as_ptr().add(8)));
        let mean = sum16(lo, hi) / n as f32;

        let vm = _mm256_set1_ps(mean);
        let (mut lo, mut hi) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in (0..full).step_by(LANES) {
            lo = _mm256_add_ps(lo, sq(_mm256_sub_ps(_mm256_loadu_ps(xr.add(c)), vm)));
            hi = _mm256_add_ps(hi, sq(_mm256_sub_ps(_mm256_loadu_ps(xr.add(c + 8)), vm)));
        }
        let mut dev = [0.0f32; LANES];
        for (d, &x) in dev.iter_mut().zip(&tail[..n - full]) {
            *d = x - mean;
        }
        lo = _mm256_add_ps(lo, sq(_mm256_loadu_ps(dev.as_ptr())));
        hi = _mm256_add_ps(hi, sq(_mm256_loadu_ps(dev.as_ptr().add(8))));
        let inv = 1.0 / libm::sqrtf(sum16(lo, hi) / n as f32 + eps);

        let vinv = _mm256_set1_ps(inv);
        let yr = out.data.as_ptr().add(r * out.stride) as *mut f32;
        let mut c = 0;
        while c + 8 <= n {
            let d = _mm256_sub_ps(_mm256_loadu_ps(xr.add(c)), vm);
            let y = _mm256_add_ps(
                _mm256_mul_ps(
                    _mm256_mul_ps(d, vinv),
                    _mm256_loadu_ps(gamma.as_ptr().add(c)),
                ),
                _mm256_loadu_ps(beta.as_ptr().add(c)),
            );
            _mm256_storeu_ps(yr.add(c), y);
            c += 8;
        }
        for c in c..n {
            *yr.add(c) = (*xr.add(c) - mean) * inv * gamma[c] + beta[c];
        }
    }
}
