//! int8 GEMM for AVX2: tiles of 2 activation rows × 16 outputs (one weight panel).
//! AVX2's `vpmaddubsw` saturates u8·i8 pairs at 16 bits, which would break bit-exactness,
//! so both sides are widened to i16 and multiplied with `vpmaddwd` (exact, i32 sums).

use core::arch::x86_64::*;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx2_math::gelu_tanh;
use crate::format::{PANEL_K, PANEL_N};
use crate::ops::Activation;

const MR: usize = 2;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: AVX2 support was checked by the dispatcher; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, mut out: MatMut) {
    let panels = out.cols.div_ceil(PANEL_N);
    let mut m = 0;
    while m < out.rows {
        let mr = (out.rows - m).min(MR);
        for p in 0..panels {
            if mr == 2 {
                tile::<2>(q, qs, k4, w, m, p, ep, &mut out);
            } else {
                tile::<1>(q, qs, k4, w, m, p, ep, &mut out);
            }
        }
        m += mr;
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    q: &[u8],
    qs: usize,
    k4: usize,
    w: &[i8],
    m: usize,
    p: usize,
    ep: &Epilogue,
    out: &mut MatMut,
) {
    // acc[r][j]: outputs 4j..4j+4, two partial sums each (inputs 0–1 and 2–3 of a group).
    let mut acc = [[_mm256_setzero_si256(); 4]; R];
    let qp = q.as_ptr().add(m * qs);
    let wp = w.as_ptr().add(p * k4 * PANEL_GROUP_BYTES);
    for g in 0..k4 {
        let gp = wp.add(g * PANEL_GROUP_BYTES);
        let mut wv = [_mm256_setzero_si256(); 4];
        for (j, v) in wv.iter_mut().enumerate() {
            *v = _mm256_cvtepi8_epi16(_mm_loadu_si128(gp.add(16 * j) as *const __m128i));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x4 = (qp.add(r * qs + g * PANEL_K) as *const u32).read_unaligned();
            let x = _mm256_cvtepu8_epi16(_mm_set1_epi32(x4 as i32));
            for j in 0..4 {
                acc_r[j] = _mm256_add_epi32(acc_r[j], _mm256_madd_epi16(wv[j], x));
            }
        }
    }
    let o0 = p * PANEL_N;
    let valid = (out.cols - o0).min(PANEL_N);
    for (r, acc_r) in acc.iter().enumerate() {
        // Pairwise sums put outputs in lane order (0,1,4,5 | 2,3,6,7); the 64-bit
        // permute restores 0..8.
        let lo = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(acc_r[0], acc_r[1]));
        let hi = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_hadd_epi32(acc_r[2], acc_r[3]));
        let row = out.data.as_mut_ptr().add((m + r) * out.stride + o0);
        if valid == PANEL_N && ep.act.has_simd_form() {
            // The scalar formula exactly: acc·(x_scale·w_scale) + bias, two roundings,
            // then GELU-tanh by the scalar operations.
            let xs = _mm256_set1_ps(ep.x_scale);
            for (h, acc) in [lo, hi].into_iter().enumerate() {
                let o = o0 + 8 * h;
                let scale = _mm256_mul_ps(xs, _mm256_loadu_ps(ep.w_scale.as_ptr().add(o)));
                let bias = match ep.bias {
                    Some(b) => _mm256_loadu_ps(b.as_ptr().add(o)),
                    None => _mm256_setzero_ps(),
                };
                let mut y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale), bias);
                if ep.act == Activation::GeluTanh {
                    y = gelu_tanh(y);
                }
                _mm256_storeu_ps(row.add(8 * h), y);
            }
            continue;
        }
        // A panel's padded tail, or an activation with no SIMD form: element by element.
        let mut sums = [0i32; PANEL_N];
        _mm256_storeu_si256(sums.as_mut_ptr() as *mut __m256i, lo);
        _mm256_storeu_si256(sums.as_mut_ptr().add(8) as *mut __m256i, hi);
        for (j, &s) in sums.iter().enumerate().take(valid) {
            *row.add(j) = ep.apply(s, o0 + j);
        }
    }
}
