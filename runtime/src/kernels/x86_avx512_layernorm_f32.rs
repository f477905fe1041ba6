//! Layer norm for AVX-512 (fp32): the reference's two passes (mean, then the biased
//! variance of the deviations), 16 lanes at a time, in the reference's order (lane
//! c mod 16, then `scalar::sum16`) and with its separate multiplies and adds: the same
//! bits as `scalar::layer_norm`.

use core::arch::x86_64::*;

use super::scalar::{check_layer_norm_bounds, MatMut, MatRef};
use super::x86_avx512_math::{lanes as mask, sum16};

pub fn layer_norm(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, out: MatMut) {
    check_layer_norm_bounds(&x, gamma, beta, &out);
    // SAFETY: AVX-512 support was checked by the dispatcher; bounds checked above.
    unsafe { impl_(x, gamma, beta, eps, out) }
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn impl_(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, out: MatMut) {
    let n = x.cols;
    for r in 0..x.rows {
        let xr = x.data.as_ptr().add(r * x.stride);
        let mut s = _mm512_setzero_ps();
        let mut c = 0;
        while c < n {
            s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(mask(n - c), xr.add(c)));
            c += 16;
        }
        let mean = sum16(s) / n as f32;
        let vm = _mm512_set1_ps(mean);
        let mut v = _mm512_setzero_ps();
        let mut c = 0;
        while c < n {
            let m = mask(n - c);
            let d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xr.add(c)), vm);
            v = _mm512_add_ps(v, _mm512_mul_ps(d, d));
            c += 16;
        }
        let inv = _mm512_set1_ps(1.0 / libm::sqrtf(sum16(v) / n as f32 + eps));
        let yr = out.data.as_ptr().add(r * out.stride) as *mut f32;
        let mut c = 0;
        while c < n {
            let m = mask(n - c);
            let d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr.add(c)), vm);
            let y = _mm512_add_ps(
                _mm512_mul_ps(
                    _mm512_mul_ps(d, inv),
                    _mm512_maskz_loadu_ps(m, gamma.as_ptr().add(c)),
                ),
                _mm512_maskz_loadu_ps(m, beta.as_ptr().add(c)),
            );
            _mm512_mask_storeu_ps(yr.add(c), m, y);
            c += 16;
        }
    }
}
