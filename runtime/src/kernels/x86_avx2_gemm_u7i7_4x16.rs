//! int8 GEMM for AVX2 over 7-bit weights and 7-bit activations: tiles of 4 activation
//! rows × 16 outputs.
//!
//! A layer the quantizer gave 7-bit weights and activations (|w| ≤ 63, 0 ≤ q ≤ 127:
//! `Panels::narrow_x`, checked at load) makes a `vpmaddubsw` pair sum at most
//! 2·127·63 = 16,002, so two groups' pair sums add in 16 bits (32,004 < 2¹⁵) before one
//! `vpmaddwd` widens them: 3 multiplier µops per 64 products where the 7-bit-weight
//! kernel (`x86_avx2_gemm_u8i7_4x16`) takes 4. Those two multiplier pipes bound both
//! kernels, so this is the one way past onnxruntime's `reduce_range` on CPUs without
//! VNNI. The sums are the exact ones every other kernel computes.

use core::arch::x86_64::*;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx2_gemm_u8i8_4x16::store_row;
use crate::format::{PANEL_K, PANEL_N};

/// 8 accumulators, 4 weight registers and ones: 13 of the 16 ymm registers, the two
/// broadcasts and a product in the rest.
const MR: usize = 4;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

/// `w` must hold 7-bit weights (|w| ≤ 63) and `q` 7-bit activations (≤ 127): on wider
/// ones the 16-bit sums saturate and the result is wrong (not unsafe). The dispatcher
/// only passes layers the model checked and quantized so.
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
    let broadcast = |r: usize, g: usize| {
        let x4 = (qp.add(r * qs + g * PANEL_K) as *const u32).read_unaligned();
        _mm256_set1_epi32(x4 as i32)
    };
    // Two groups of 4 inputs at a time: their pair sums share one widening.
    let mut g = 0;
    while g + 2 <= k4 {
        let gp = wp.add(g * PANEL_GROUP_BYTES);
        let wa = [
            _mm256_loadu_si256(gp as *const __m256i),
            _mm256_loadu_si256(gp.add(32) as *const __m256i),
        ];
        let gp = gp.add(PANEL_GROUP_BYTES);
        let wb = [
            _mm256_loadu_si256(gp as *const __m256i),
            _mm256_loadu_si256(gp.add(32) as *const __m256i),
        ];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let (xa, xb) = (broadcast(r, g), broadcast(r, g + 1));
            for h in 0..2 {
                let pairs = _mm256_add_epi16(
                    _mm256_maddubs_epi16(xa, wa[h]),
                    _mm256_maddubs_epi16(xb, wb[h]),
                );
                acc_r[h] = _mm256_add_epi32(acc_r[h], _mm256_madd_epi16(pairs, ones));
            }
        }
        g += 2;
    }
    if g < k4 {
        let gp = wp.add(g * PANEL_GROUP_BYTES);
        let wa = [
            _mm256_loadu_si256(gp as *const __m256i),
            _mm256_loadu_si256(gp.add(32) as *const __m256i),
        ];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xa = broadcast(r, g);
            for h in 0..2 {
                let pairs = _mm256_maddubs_epi16(xa, wa[h]);
                acc_r[h] = _mm256_add_epi32(acc_r[h], _mm256_madd_epi16(pairs, ones));
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
