//! int8 matrix–vector product for AVX2 (a decoder step's one row): one weight panel (16
//! outputs) at a time, read front to back as one stream, in a single pass.
//!
//! The products are the 4×16 GEMM's (`x86_avx2_gemm_u8i8_4x16`: activations flipped to
//! `q − 128`, ggml's sign trick, exact pairs), but that GEMM first sums each panel's
//! weights for the flip's `128·Σw` and then reads the panel again for the products. On
//! one row that second pass over every weight byte is a quarter of the work, and the
//! tile has one accumulator per 8 outputs. Here both sums come from the same load: the
//! weight sums collect in i16 (a pair of weights is at most 254 in magnitude, so 128
//! groups fit in 2¹⁵) and widen to i32 once per 128 groups. Every sum is an exact
//! integer, so the output bits are the GEMM's. A prefetch 2 KiB ahead keeps enough
//! cache lines in flight: the GEMM's weight-sum pass, a few instructions per line, had
//! served as its prefetch, and a single pass without one measured slower than the GEMM
//! (Intel Xeon, `vlm bench --gemv`: 9.1 → 10.9 GB/s with it, BENCHMARKS.md).

use core::arch::x86_64::*;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx2_gemm_u8i8_4x16::store_row;
use crate::format::{PANEL_K, PANEL_N};

const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;
/// Groups whose weight pair sums (|·| ≤ 2·127) add up in an i16 lane without overflow.
const WSUM_GROUPS: usize = 128;
/// Bytes ahead of the loads that the prefetches ask for.
const PF: usize = 2048;

pub fn gemv(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (_, k4) = check_gemm_bounds(q, k, w, ep, &out);
    assert_eq!(out.rows, 1, "a matrix-vector product has one row");
    // SAFETY: AVX2 support was checked by the dispatcher; bounds asserted above.
    unsafe { gemv_impl(q, k4, w, ep, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemv_impl(q: &[u8], k4: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
    let panel_bytes = k4 * PANEL_GROUP_BYTES;
    let qp = q.as_ptr();
    let row = out.data.as_mut_ptr();
    for p in 0..out.cols.div_ceil(PANEL_N) {
        let wp = w.as_ptr().add(p * panel_bytes);
        // acc[h], fix[h]: outputs 8h..8h+8 of the panel, one per lane.
        let mut acc = [_mm256_setzero_si256(); 2];
        let mut fix = [_mm256_setzero_si256(); 2];
        let mut g0 = 0;
        while g0 < k4 {
            let end = (g0 + WSUM_GROUPS).min(k4);
            let mut wsum = [_mm256_setzero_si256(); 2];
            for g in g0..end {
                let x4 = (qp.add(g * PANEL_K) as *const u32).read_unaligned();
                let s = _mm256_set1_epi32((x4 ^ 0x8080_8080) as i32);
                let mag = _mm256_abs_epi8(s);
                let gp = wp.add(g * PANEL_GROUP_BYTES);
                _mm_prefetch::<_MM_HINT_T0>(gp.wrapping_add(PF));
                for h in 0..2 {
                    let wv = _mm256_loadu_si256(gp.add(32 * h) as *const __m256i);
                    let pairs = _mm256_maddubs_epi16(mag, _mm256_sign_epi8(wv, s));
                    acc[h] = _mm256_add_epi32(acc[h], _mm256_madd_epi16(pairs, ones16));
                    wsum[h] = _mm256_add_epi16(wsum[h], _mm256_maddubs_epi16(ones8, wv));
                }
            }
            for h in 0..2 {
                fix[h] = _mm256_add_epi32(fix[h], _mm256_madd_epi16(wsum[h], ones16));
            }
            g0 = end;
        }
        let sums = [
            _mm256_add_epi32(acc[0], _mm256_slli_epi32::<7>(fix[0])),
            _mm256_add_epi32(acc[1], _mm256_slli_epi32::<7>(fix[1])),
        ];
        let o0 = p * PANEL_N;
        store_row(&sums, ep, o0, (out.cols - o0).min(PANEL_N), row.add(o0));
    }
}
