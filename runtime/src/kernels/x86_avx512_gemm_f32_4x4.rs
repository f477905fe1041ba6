//! fp32 GEMM for AVX-512: `x · Wᵀ` with `W` row-major `[out, in]` (the layout fp32
//! weights keep in the artifact), tiles of 4 rows × 4 outputs, each a 16-lane FMA dot
//! product reduced at the end. Serves the fp32 reference path (calibration) and layers
//! kept in fp32; within a float tolerance of the scalar reference, not bit-exact.

use core::arch::x86_64::*;

use super::scalar::{activate, MatMut, MatRef};
use super::x86_avx512_math::{gelu_tanh, lanes};
use crate::ops::Activation;

pub fn gemm(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, out: MatMut) {
    let k = x.cols;
    assert!(w.len() >= out.cols * k && bias.is_none_or(|b| b.len() >= out.cols));
    assert!(x.rows == out.rows);
    assert!(x.rows == 0 || x.data.len() >= (x.rows - 1) * x.stride + k);
    assert!(out.rows == 0 || out.data.len() >= (out.rows - 1) * out.stride + out.cols);
    // SAFETY: AVX-512 support was checked by the dispatcher; bounds asserted above.
    unsafe { gemm_impl(x, w, bias, act, out) }
}

#[target_feature(enable = "avx512f,fma")]
unsafe fn gemm_impl(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, out: MatMut) {
    let k = x.cols;
    let mut r = 0;
    while r < x.rows {
        let mr = (x.rows - r).min(4);
        let mut o = 0;
        while o < out.cols {
            let nr = (out.cols - o).min(4);
            let mut acc = [[_mm512_setzero_ps(); 4]; 4];
            let mut c = 0;
            while c < k {
                let n = (k - c).min(16);
                let mask = lanes(n);
                let mut wv = [_mm512_setzero_ps(); 4];
                for (j, v) in wv.iter_mut().enumerate().take(nr) {
                    *v = _mm512_maskz_loadu_ps(mask, w.as_ptr().add((o + j) * k + c));
                }
                for (i, acc_i) in acc.iter_mut().enumerate().take(mr) {
                    let xv =
                        _mm512_maskz_loadu_ps(mask, x.data.as_ptr().add((r + i) * x.stride + c));
                    for (a, w) in acc_i.iter_mut().zip(&wv).take(nr) {
                        *a = _mm512_fmadd_ps(xv, *w, *a);
                    }
                }
                c += n;
            }
            for (i, acc_i) in acc.iter().enumerate().take(mr) {
                let row = out.data.as_mut_ptr().add((r + i) * out.stride);
                for (j, a) in acc_i.iter().enumerate().take(nr) {
                    let b = bias.map_or(0.0, |b| b[o + j]);
                    let v = _mm512_reduce_add_ps(*a) + b;
                    *row.add(o + j) = match act {
                        Activation::GeluTanh => {
                            let y = gelu_tanh(_mm512_set1_ps(v));
                            _mm_cvtss_f32(_mm512_castps512_ps128(y))
                        }
                        a => activate(v, a),
                    };
                }
            }
            o += nr;
        }
        r += mr;
    }
}
