//! int8 matrix–vector product for AVX-512 VNNI (a decoder step's one row): one weight
//! panel (16 outputs) at a time, read front to back as one stream.
//!
//! One row is memory-bound work: every weight byte is used once. The GEMM's 8×32 tile
//! run on one row reads two panels side by side (two streams 16·k bytes apart) and works
//! out its prefetch schedule with a division per step. Here the weights are read in
//! their stored order, a single sequential stream that the hardware prefetcher follows
//! best (measured on Zen 4: 17–19 GB/s against 10–14 for two or four panels side by
//! side, and a software prefetch ahead of each load only cost), with two accumulators
//! (even and odd groups of 4 inputs, summed at the end: i32, exact) so consecutive
//! `vpdpbusd` do not wait on each other. The epilogue is the GEMM's: the same bits.

use core::arch::x86_64::*;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx512vnni_gemm_u8i8_8x32::Columns;
use crate::format::{PANEL_K, PANEL_N};

const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemv(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (_, k4) = check_gemm_bounds(q, k, w, ep, &out);
    assert_eq!(out.rows, 1, "a matrix-vector product has one row");
    // SAFETY: AVX-512 VNNI support was checked by the dispatcher; bounds asserted above.
    unsafe { gemv_impl(q, k4, w, ep, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
unsafe fn gemv_impl(q: &[u8], k4: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let panels = out.cols.div_ceil(PANEL_N);
    let panel_bytes = k4 * PANEL_GROUP_BYTES;
    let qp = q.as_ptr();
    let row = out.data.as_mut_ptr();
    for p in 0..panels {
        let wp = w.as_ptr().add(p * panel_bytes);
        let mut even = _mm512_setzero_si512();
        let mut odd = _mm512_setzero_si512();
        let mut g = 0;
        while g + 2 <= k4 {
            let x0 = _mm512_set1_epi32((qp.add(g * PANEL_K) as *const i32).read_unaligned());
            let x1 = _mm512_set1_epi32((qp.add((g + 1) * PANEL_K) as *const i32).read_unaligned());
            let at = wp.add(g * PANEL_GROUP_BYTES);
            even = _mm512_dpbusd_epi32(even, x0, _mm512_loadu_si512(at as *const _));
            odd = _mm512_dpbusd_epi32(
                odd,
                x1,
                _mm512_loadu_si512(at.add(PANEL_GROUP_BYTES) as *const _),
            );
            g += 2;
        }
        if g < k4 {
            let x0 = _mm512_set1_epi32((qp.add(g * PANEL_K) as *const i32).read_unaligned());
            let at = wp.add(g * PANEL_GROUP_BYTES);
            even = _mm512_dpbusd_epi32(even, x0, _mm512_loadu_si512(at as *const _));
        }
        let acc = _mm512_add_epi32(even, odd);
        Columns::new(ep, p * PANEL_N, out.cols).store(acc, ep, row);
    }
}
