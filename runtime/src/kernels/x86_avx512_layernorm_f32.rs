//! Layer norm for AVX-512 (fp32): the same two passes as the reference (mean, then the
//! biased variance of the deviations), 16 lanes at a time. Within a float tolerance.

use core::arch::x86_64::*;

use super::scalar::{MatMut, MatRef};

pub fn layer_norm(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, out: MatMut) {
    let n = x.cols;
    assert!(gamma.len() >= n && beta.len() >= n && out.cols == n && out.rows == x.rows);
    assert!(x.rows == 0 || x.data.len() >= (x.rows - 1) * x.stride + n);
    assert!(out.rows == 0 || out.data.len() >= (out.rows - 1) * out.stride + n);
    // SAFETY: AVX-512 support was checked by the dispatcher; bounds asserted above.
    unsafe { impl_(x, gamma, beta, eps, out) }
}

#[inline]
fn mask(n: usize) -> __mmask16 {
    if n >= 16 {
        0xFFFF
    } else {
        (1u16 << n) - 1
    }
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
        let mean = _mm512_reduce_add_ps(s) / n as f32;
        let vm = _mm512_set1_ps(mean);
        let mut v = _mm512_setzero_ps();
        let mut c = 0;
        while c < n {
            let m = mask(n - c);
            let d = _mm512_maskz_sub_ps(m, _mm512_maskz_loadu_ps(m, xr.add(c)), vm);
            v = _mm512_fmadd_ps(d, d, v);
            c += 16;
        }
        let inv = _mm512_set1_ps(1.0 / libm::sqrtf(_mm512_reduce_add_ps(v) / n as f32 + eps));
        let yr = out.data.as_ptr().add(r * out.stride) as *mut f32;
        let mut c = 0;
        while c < n {
            let m = mask(n - c);
            let d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, xr.add(c)), vm);
            let y = _mm512_fmadd_ps(
                _mm512_mul_ps(d, inv),
                _mm512_maskz_loadu_ps(m, gamma.as_ptr().add(c)),
                _mm512_maskz_loadu_ps(m, beta.as_ptr().add(c)),
            );
            _mm512_mask_storeu_ps(yr.add(c), m, y);
            c += 16;
        }
    }
}
