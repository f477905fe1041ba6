//! int8 GEMM for baseline NEON (every AArch64 application core): tiles of 4 activation
//! rows × 8 outputs (half a weight panel). A u8·i8 product always fits in i16
//! (|255·−128| < 2¹⁵), so both sides are widened to i16, `mul` forms exact products and
//! `sadalp` folds each pair into i32 accumulators. Two products summed in i16 could
//! overflow, which is why there is no `mla` step in between.
//!
//! Also holds the bounds checks and the NEON epilogue the dotprod and i8mm kernels share.

use core::arch::aarch64::*;

use super::aarch64_neon_math::gelu_tanh;
use super::scalar::{activate, Epilogue, MatMut};
use crate::format::{PANEL_K, PANEL_N};
use crate::ops::Activation;

const MR: usize = 4;
/// Half a panel: 16 accumulators for 4 rows fit the 32 registers with the widened weights,
/// and a half panel that is only padding is skipped.
const NR: usize = 8;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = super::scalar::check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: this module is only built with NEON enabled; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qp, wp, yp) = (q.as_ptr(), w.as_ptr(), out.data.as_mut_ptr());
    // Weight tile outer: its k4·32 bytes stay in L1 while every row passes over them.
    for o0 in (0..out.cols).step_by(NR) {
        let valid = (out.cols - o0).min(NR);
        let wt = wp.add((o0 / PANEL_N) * k4 * PANEL_GROUP_BYTES + (o0 % PANEL_N) * PANEL_K);
        let mut m = 0;
        while m < out.rows {
            let mr = (out.rows - m).min(MR);
            let (xt, yt) = (qp.add(m * qs), yp.add(m * out.stride));
            match mr {
                4 => tile::<4>(xt, qs, k4, wt, ep, o0, valid, yt, out.stride),
                3 => tile::<3>(xt, qs, k4, wt, ep, o0, valid, yt, out.stride),
                2 => tile::<2>(xt, qs, k4, wt, ep, o0, valid, yt, out.stride),
                _ => tile::<1>(xt, qs, k4, wt, ep, o0, valid, yt, out.stride),
            }
            m += mr;
        }
    }
}

/// `R` rows from `x` (stride `qs`) × the 8 outputs `o0..` whose weights start at `wt`,
/// written to `y` (stride `ys`, column 0).
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    x: *const u8,
    qs: usize,
    k4: usize,
    wt: *const i8,
    ep: &Epilogue,
    o0: usize,
    valid: usize,
    y: *mut f32,
    ys: usize,
) {
    // acc[r][j]: outputs 2j, 2j+1, each as two partial sums (inputs 0–1 and 2–3).
    let mut acc = [[vdupq_n_s32(0); 4]; R];
    for g in 0..k4 {
        mca_region!("BEGIN", "neon-gemm-u8i8-4x8", R, 32 * R);
        let gp = wt.add(g * PANEL_GROUP_BYTES);
        let (w0, w1) = (vld1q_s8(gp), vld1q_s8(gp.add(16)));
        let wv = [
            vmovl_s8(vget_low_s8(w0)),
            vmovl_high_s8(w0),
            vmovl_s8(vget_low_s8(w1)),
            vmovl_high_s8(w1),
        ];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            // The group's 4 inputs twice, matching 2 outputs × 4 inputs of a weight half.
            let x4 = (x.add(r * qs + g * PANEL_K) as *const u32).read_unaligned();
            let xv = vreinterpretq_s16_u16(vmovl_u8(vreinterpret_u8_u32(vdup_n_u32(x4))));
            for (a, &wj) in acc_r.iter_mut().zip(&wv) {
                *a = vpadalq_s16(*a, vmulq_s16(wj, xv));
            }
        }
        mca_region!("END", "neon-gemm-u8i8-4x8", R, 32 * R);
    }
    for (r, a) in acc.iter().enumerate() {
        let sums = [vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3])];
        store_row(&sums, ep, o0, valid, y.add(r * ys));
    }
}

/// Writes one row of a tile through the epilogue: `acc` holds the sums of outputs
/// `o0..o0 + 4·acc.len()`, of which the first `valid` exist; `row` is the row's column 0.
/// The scalar formula exactly (`acc as f32 · (x_scale·w_scale) + bias`, two roundings,
/// `fmul` then `fadd`, never fused), then GELU-tanh in registers (the scalar operations,
/// so the same bits) or the scalar GELU-erf.
///
/// # Safety
/// NEON; `w_scale`, `bias` and `row` hold outputs up to `o0 + valid`; `acc.len() ≤ 4`.
#[inline(always)]
pub(super) unsafe fn store_row(
    acc: &[int32x4_t],
    ep: &Epilogue,
    o0: usize,
    valid: usize,
    row: *mut f32,
) {
    if valid == 4 * acc.len() {
        let xs = vdupq_n_f32(ep.x_scale);
        for (j, &a) in acc.iter().enumerate() {
            let o = o0 + 4 * j;
            let scale = vmulq_f32(xs, vld1q_f32(ep.w_scale.as_ptr().add(o)));
            let bias = match ep.bias {
                Some(b) => vld1q_f32(b.as_ptr().add(o)),
                None => vdupq_n_f32(0.0),
            };
            let y = vaddq_f32(vmulq_f32(vcvtq_f32_s32(a), scale), bias);
            let y = if ep.act == Activation::GeluTanh {
                gelu_tanh(y)
            } else {
                y
            };
            vst1q_f32(row.add(o), y);
        }
        if !ep.act.has_simd_form() {
            for o in o0..o0 + valid {
                *row.add(o) = activate(*row.add(o), ep.act);
            }
        }
    } else {
        // A panel's padded tail: too rare to vectorise.
        let mut sums = [0i32; 16];
        for (j, &a) in acc.iter().enumerate() {
            vst1q_s32(sums.as_mut_ptr().add(4 * j), a);
        }
        for (j, &s) in sums.iter().enumerate().take(valid) {
            *row.add(o0 + j) = ep.apply(s, o0 + j);
        }
    }
}
