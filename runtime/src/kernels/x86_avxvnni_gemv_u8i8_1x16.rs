//! int8 matrix–vector product for AVX-VNNI (a decoder step's one row): one weight panel
//! (16 outputs) at a time, read front to back as one stream.
//!
//! The AVX-512 VNNI matrix–vector kernel's scheme in 256-bit registers: the 4×16 GEMM
//! run on one row keeps one accumulator per 8 outputs, so each `vpdpbusd` waits on the
//! one before it; here even and odd groups of 4 inputs go to separate accumulators
//! (summed at the end: i32, exact), four chains in flight, and a prefetch 2 KiB ahead
//! keeps cache lines in flight (a stream of 256-bit loads alone reached 11 GB/s on an
//! Intel Xeon, 14 with it: `vlm bench --gemv`). The epilogue is the GEMM's: the same
//! bits.

use core::arch::x86_64::*;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx2_gemm_u8i8_4x16::store_row;
use crate::format::{PANEL_K, PANEL_N};

const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;
/// Bytes ahead of the loads that the prefetches ask for.
const PF: usize = 2048;

pub fn gemv(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (_, k4) = check_gemm_bounds(q, k, w, ep, &out);
    assert_eq!(out.rows, 1, "a matrix-vector product has one row");
    // SAFETY: AVX-VNNI support was checked by the dispatcher; bounds asserted above.
    unsafe { gemv_impl(q, k4, w, ep, out) }
}

#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn gemv_impl(q: &[u8], k4: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let panel_bytes = k4 * PANEL_GROUP_BYTES;
    let qp = q.as_ptr();
    let row = out.data.as_mut_ptr();
    for p in 0..out.cols.div_ceil(PANEL_N) {
        let wp = w.as_ptr().add(p * panel_bytes);
        // Outputs 0..8 and 8..16 of the panel, from even and odd groups.
        let (mut lo_even, mut hi_even) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let (mut lo_odd, mut hi_odd) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let mut g = 0;
        while g + 2 <= k4 {
            let x0 = _mm256_set1_epi32((qp.add(g * PANEL_K) as *const i32).read_unaligned());
            let x1 = _mm256_set1_epi32((qp.add((g + 1) * PANEL_K) as *const i32).read_unaligned());
            let at = wp.add(g * PANEL_GROUP_BYTES);
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PF));
            _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(PF + 64));
            lo_even = _mm256_dpbusd_avx_epi32(lo_even, x0, load(at));
            hi_even = _mm256_dpbusd_avx_epi32(hi_even, x0, load(at.add(32)));
            lo_odd = _mm256_dpbusd_avx_epi32(lo_odd, x1, load(at.add(64)));
            hi_odd = _mm256_dpbusd_avx_epi32(hi_odd, x1, load(at.add(96)));
            g += 2;
        }
        if g < k4 {
            let x0 = _mm256_set1_epi32((qp.add(g * PANEL_K) as *const i32).read_unaligned());
            let at = wp.add(g * PANEL_GROUP_BYTES);
            lo_even = _mm256_dpbusd_avx_epi32(lo_even, x0, load(at));
            hi_even = _mm256_dpbusd_avx_epi32(hi_even, x0, load(at.add(32)));
        }
        let sums = [
            _mm256_add_epi32(lo_even, lo_odd),
            _mm256_add_epi32(hi_even, hi_odd),
        ];
        let o0 = p * PANEL_N;
        store_row(&sums, ep, o0, (out.cols - o0).min(PANEL_N), row.add(o0));
    }
}

#[inline(always)]
unsafe fn load(at: *const i8) -> __m256i {
    _mm256_loadu_si256(at as *const __m256i)
}
