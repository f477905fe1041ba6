//! int8 GEMM for baseline NEON (every AArch64 application core, and the Cortex-A72 / A57
//! boards without dotprod): tiles of 3 activation rows × 8 outputs (half a weight panel).
//!
//! The activations enter as `q − 128` (a sign-bit flip; each output gets `128·Σ_k w`
//! back, computed once per weight tile and seeding the accumulators), so both sides are
//! `i8` and, weights being symmetric (|w| ≤ 127), a product is at most 128·127 in size:
//! two of them always sum within i16. So `smull` forms 8 products of one panel group,
//! `smlal` adds the next group's 8 products for the same outputs into the same i16
//! lanes, and `sadalp` folds the lanes into i32 accumulators: 3 instructions per 16
//! products (gemmlowp's and ruy's scheme for Arm without dotprod), where widening both
//! sides to i16 took 6. The i32 sums are the scalar kernel's exactly (wrapping, like
//! every i32 sum here).
//!
//! Also holds the bounds checks and the NEON epilogue the dotprod and i8mm kernels share.

use core::arch::aarch64::*;

use super::aarch64_neon_math::gelu_tanh;
use super::scalar::{activate, Epilogue, MatMut};
use crate::format::{PANEL_K, PANEL_N};
use crate::ops::Activation;

/// 12 accumulators, 4 weight registers, two activation groups and the products. Four
/// rows compile to a slower loop: llvm-mca puts it at 71 % of the A72's `smlal` peak
/// against 89 % for three (BENCHMARKS.md).
const MR: usize = 3;
/// Half a panel, so that a half panel that is only padding is skipped.
const NR: usize = 8;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = super::scalar::check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: this module is only built with NEON enabled; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qp, wp, yp) = (q.as_ptr(), w.as_ptr(), out.data.as_mut_ptr());
    // Weight tile outer: its k4·32 bytes stay in L1 while every row passes over them,
    // and its share of the sign flip is computed once.
    for o0 in (0..out.cols).step_by(NR) {
        let valid = (out.cols - o0).min(NR);
        let wt = wp.add((o0 / PANEL_N) * k4 * PANEL_GROUP_BYTES + (o0 % PANEL_N) * PANEL_K);
        let fix = flip_fix(wt, k4);
        let mut m = 0;
        while m < out.rows {
            let mr = (out.rows - m).min(MR);
            let (xt, yt) = (qp.add(m * qs), yp.add(m * out.stride));
            match mr {
                3 => tile::<3>(xt, qs, k4, wt, &fix, ep, o0, valid, yt, out.stride),
                2 => tile::<2>(xt, qs, k4, wt, &fix, ep, o0, valid, yt, out.stride),
                _ => tile::<1>(xt, qs, k4, wt, &fix, ep, o0, valid, yt, out.stride),
            }
            m += mr;
        }
    }
}

/// `128·Σ_k w[o][k]` for the 8 outputs whose weights start at `wt`, in the accumulators'
/// layout: what the activations' sign flip (`q − 128`) takes from each sum.
unsafe fn flip_fix(wt: *const i8, k4: usize) -> [int32x4_t; 4] {
    let mut fix = [vdupq_n_s32(0); 4];
    for g in 0..k4 {
        let gp = wt.add(g * PANEL_GROUP_BYTES);
        for h in 0..2 {
            // Pairs of one output's inputs: (o, 0–1), (o, 2–3), (o + 1, 0–1)…
            let pairs = vpaddlq_s8(vld1q_s8(gp.add(16 * h)));
            fix[2 * h] = vaddw_s16(fix[2 * h], vget_low_s16(pairs));
            fix[2 * h + 1] = vaddw_high_s16(fix[2 * h + 1], pairs);
        }
    }
    fix.map(|f| vshlq_n_s32::<7>(f))
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
    fix: &[int32x4_t; 4],
    ep: &Epilogue,
    o0: usize,
    valid: usize,
    y: *mut f32,
    ys: usize,
) {
    // acc[r][j]: outputs 2j, 2j+1, each as two partial sums (inputs 0–1 and 2–3 of
    // each group).
    let mut acc = [*fix; R];
    // The group's 4 inputs of row r as `q − 128` (a sign-bit flip), repeated to match 4
    // outputs × 4 inputs of weights.
    let xg = |r: usize, g: usize| {
        let x4 = (x.add(r * qs + g * PANEL_K) as *const u32).read_unaligned();
        vreinterpretq_s8_u32(vdupq_n_u32(x4 ^ 0x8080_8080))
    };
    let mut g = 0;
    while g + 2 <= k4 {
        mca_region!("BEGIN", "neon-gemm-u8i8-3x8", R, 64 * R);
        let (ga, gb) = (
            wt.add(g * PANEL_GROUP_BYTES),
            wt.add((g + 1) * PANEL_GROUP_BYTES),
        );
        let wa = [vld1q_s8(ga), vld1q_s8(ga.add(16))];
        let wb = [vld1q_s8(gb), vld1q_s8(gb.add(16))];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            two_groups(acc_r, &wa, &wb, xg(r, g), xg(r, g + 1));
        }
        mca_region!("END", "neon-gemm-u8i8-3x8", R, 64 * R);
        g += 2;
    }
    if g < k4 {
        // An odd last group, paired with zero weights (whose products add nothing).
        let ga = wt.add(g * PANEL_GROUP_BYTES);
        let wa = [vld1q_s8(ga), vld1q_s8(ga.add(16))];
        let zero = [vdupq_n_s8(0); 2];
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let xa = xg(r, g);
            two_groups(acc_r, &wa, &zero, xa, xa);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let sums = [vpaddq_s32(a[0], a[1]), vpaddq_s32(a[2], a[3])];
        store_row(&sums, ep, o0, valid, y.add(r * ys));
    }
}

/// Two panel groups of one row into its accumulators: group a's weights `wa` (8 outputs
/// × 4 inputs, two registers) times its inputs `xa`, plus group b's, summed per output
/// lane in i16 (two products always fit) and folded into the i32 pairs.
#[inline(always)]
unsafe fn two_groups(
    acc: &mut [int32x4_t; 4],
    wa: &[int8x16_t; 2],
    wb: &[int8x16_t; 2],
    xa: int8x16_t,
    xb: int8x16_t,
) {
    for h in 0..2 {
        let lo = vmlal_s8(
            vmull_s8(vget_low_s8(wa[h]), vget_low_s8(xa)),
            vget_low_s8(wb[h]),
            vget_low_s8(xb),
        );
        let hi = vmlal_high_s8(vmull_high_s8(wa[h], xa), wb[h], xb);
        acc[2 * h] = vpadalq_s16(acc[2 * h], lo);
        acc[2 * h + 1] = vpadalq_s16(acc[2 * h + 1], hi);
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
