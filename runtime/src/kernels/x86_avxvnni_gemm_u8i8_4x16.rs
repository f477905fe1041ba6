//! int8 GEMM for AVX-VNNI (the VEX-encoded `vpdpbusd` on ymm registers: Intel's cores
//! since Alder Lake, the Atom-class N100 / N97 edge boxes among them, which have it
//! without AVX-512): tiles of 4 activation rows × 16 outputs (one weight panel).
//! `vpdpbusd` multiplies u8 activations by i8 weights and adds each output's 4 products
//! into its i32 lane with no 16-bit step, so no flip and no sign trick: a panel group's
//! 64 bytes are two registers of 8 outputs × 4 inputs, one instruction each per row.

use core::arch::x86_64::*;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx2_gemm_u8i8_4x16::store_row;
use crate::format::{PANEL_K, PANEL_N};

/// 8 accumulators, 2 weight registers and the broadcast activations.
const MR: usize = 4;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: AVX-VNNI (with AVX2 and FMA) was checked by the dispatcher; bounds asserted
    // above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

#[target_feature(enable = "avx2,fma,avxvnni")]
unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, mut out: MatMut) {
    // Panel outer, as the AVX2 kernel: a panel's k4·64 bytes stay in cache while every
    // row passes over them.
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
#[target_feature(enable = "avx2,fma,avxvnni")]
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
    let qp = q.as_ptr().add(m * qs);
    let wp = w.as_ptr().add(p * k4 * PANEL_GROUP_BYTES);
    for g in 0..k4 {
        let gp = wp.add(g * PANEL_GROUP_BYTES);
        let w0 = _mm256_loadu_si256(gp as *const __m256i);
        let w1 = _mm256_loadu_si256(gp.add(32) as *const __m256i);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x4 = (qp.add(r * qs + g * PANEL_K) as *const i32).read_unaligned();
            let x = _mm256_set1_epi32(x4);
            acc_r[0] = _mm256_dpbusd_avx_epi32(acc_r[0], x, w0);
            acc_r[1] = _mm256_dpbusd_avx_epi32(acc_r[1], x, w1);
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
