//! int8 GEMM for AVX2 over 7-bit weights: tiles of 4 activation rows × 16 outputs.
//!
//! A layer the quantizer gave 7-bit weights (every |w| ≤ 63: `Panels::narrow`, checked at
//! load) lets `vpmaddubsw` take the u8 activations as they are: a pair of products is at
//! most 2·255·63 < 2¹⁵, so nothing saturates and the sums are the exact ones every other
//! kernel computes. That drops the 8-bit kernel's flip and sign trick
//! (`x86_avx2_gemm_u8i8_4x16`): 3 instructions per 32 products instead of 4 plus the
//! flip's, and no weight-sum pass per panel. llvm-mca's Zen 3 model puts one 4×16 group at
//! 8.1 cycles against 12.4 (Skylake: 8.1 against 14.1); the two multiplier pipes bound it
//! (`vpmaddubsw`, `vpmaddwd`), so taller tiles gain nothing. onnxruntime's `reduce_range`
//! runs the same product on every layer; here the quantizer picks the layers whose
//! accuracy does not suffer (BENCHMARKS.md, "7-bit weights where they cost nothing").

use core::arch::x86_64::*;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx2_gemm_u8i8_4x16::store_row;
use crate::format::{PANEL_K, PANEL_N};

/// 8 accumulators, 2 weight registers, the broadcast activations, ones and a product:
/// 13 of the 16 ymm registers.
const MR: usize = 4;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

/// `w` must hold 7-bit weights (|w| ≤ 63): on wider ones the pair sums saturate and the
/// result is wrong (not unsafe). The dispatcher only passes weights the model checked.
pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: AVX2 support was checked by the dispatcher; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, mut out: MatMut) {
    // Panel outer: a panel's k4·64 bytes stay in cache while every row passes over them.
    for p in 0..out.cols.div_ceil(PANEL_N) {
        let mut m = 0;
        while m < out.rows {
            let mr = (out.rows - m).min(MR);
            match mr {
                4 => tile::<4>(q, qs, k4, w, m, p, ep, &mut out),
                3 => tile::<3>(q, qs, k4, w, m, p, ep, &mut out),
                2 => tile::<2>(q, qs, k4, w, m, p, ep, &mut out),
                _ => tile::<1>(q, qs, k4, w, m, p, ep, &mut out),
            }
            m += mr;
        }
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
    // acc[r][h]: outputs 8h..8h+8 of the panel, one per lane.
    let mut acc = [[_mm256_setzero_si256(); 2]; R];
    let ones = _mm256_set1_epi16(1);
    let qp = q.as_ptr().add(m * qs);
    let wp = w.as_ptr().add(p * k4 * PANEL_GROUP_BYTES);
    for g in 0..k4 {
        let gp = wp.add(g * PANEL_GROUP_BYTES);
        let w0 = _mm256_loadu_si256(gp as *const __m256i);
        let w1 = _mm256_loadu_si256(gp.add(32) as *const __m256i);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x4 = (qp.add(r * qs + g * PANEL_K) as *const u32).read_unaligned();
            let x = _mm256_set1_epi32(x4 as i32);
            for (a, wv) in acc_r.iter_mut().zip([w0, w1]) {
                let pairs = _mm256_maddubs_epi16(x, wv);
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(pairs, ones));
            }
        }
    }
    let o0 = p * PANEL_N;
    let valid = (out.cols - o0).min(PANEL_N);
    for (r, acc_r) in acc.iter().enumerate() {
        store_row(
            acc_r,
            ep,
            o0,
            valid,
            out.data.as_mut_ptr().add((m + r) * out.stride + o0),
        );
    }
}
