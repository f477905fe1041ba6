//! int8 GEMM for the Armv8.2 dot product (`sdot`): tiles of 4 activation rows × 16
//! outputs (one weight panel). A 64-byte panel group is four registers of 4 outputs ×
//! 4 inputs, exactly `sdot`'s 4 lanes × 4 bytes; the activations ride in its by-element
//! operand, 4 groups per 16-byte load.
//!
//! `sdot` is signed × signed and the activations are u8, so they enter as `q − 128`
//! (a sign-bit flip) and each output gets `128·Σ_k w[o][k]` back: an `sdot` of the panel
//! against ones, once per panel for every row, seeding the accumulators. The i32 sums
//! are then the scalar kernel's exactly (wrapping, like every i32 sum here).
//!
//! The dotprod intrinsics are unstable in Rust, hence `asm!`.

use core::arch::aarch64::*;
use core::arch::asm;

use super::aarch64_neon_gemm_u8i8_3x8::store_row;
use super::scalar::check_gemm_bounds;
use super::scalar::{Epilogue, MatMut};
use crate::format::{PANEL_K, PANEL_N};

/// 16 accumulators, 4 activation and 4 weight registers: room left in the 32 for the
/// loads of the next group to overlap.
const MR: usize = 4;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;
/// Groups of 4 inputs per 16-byte activation load.
const GROUPS: usize = 4;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: dotprod support was checked by the dispatcher; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

#[target_feature(enable = "dotprod")]
unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qp, yp) = (q.as_ptr(), out.data.as_mut_ptr());
    let ones = vdupq_n_s8(1);
    // Panel outer: the fix-up is computed once per panel, and the panel stays in L1
    // while every row passes over it.
    for p in 0..out.cols.div_ceil(PANEL_N) {
        let wt = w.as_ptr().add(p * k4 * PANEL_GROUP_BYTES);
        let mut fix = [vdupq_n_s32(0); 4];
        for g in 0..k4 {
            for (j, f) in fix.iter_mut().enumerate() {
                *f = sdot(*f, vld1q_s8(wt.add(g * PANEL_GROUP_BYTES + 16 * j)), ones);
            }
        }
        for f in fix.iter_mut() {
            *f = vshlq_n_s32::<7>(*f);
        }
        let o0 = p * PANEL_N;
        let valid = (out.cols - o0).min(PANEL_N);
        let mut m = 0;
        while m < out.rows {
            let mr = (out.rows - m).min(MR);
            let (xt, yt) = (qp.add(m * qs), yp.add(m * out.stride));
            match mr {
                4 => tile::<4>(xt, qs, k4, wt, &fix, ep, o0, valid, yt, out.stride),
                3 => tile::<3>(xt, qs, k4, wt, &fix, ep, o0, valid, yt, out.stride),
                2 => tile::<2>(xt, qs, k4, wt, &fix, ep, o0, valid, yt, out.stride),
                _ => tile::<1>(xt, qs, k4, wt, &fix, ep, o0, valid, yt, out.stride),
            }
            m += mr;
        }
    }
}

/// `R` rows from `x` (stride `qs`) × the panel at `wt` (outputs `o0..`), written to `y`
/// (stride `ys`, column 0).
#[inline]
#[target_feature(enable = "dotprod")]
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
    let mut acc = [*fix; R];
    let flip = vdupq_n_u8(0x80);
    let mut xv = [vdupq_n_s8(0); R];
    let full = k4 / GROUPS;
    for b in 0..full {
        mca_region!("BEGIN", "dotprod-gemm-u8i8-4x16", R, 256 * R);
        for (r, v) in xv.iter_mut().enumerate() {
            let xb = vld1q_u8(x.add(r * qs + b * GROUPS * PANEL_K));
            *v = vreinterpretq_s8_u8(veorq_u8(xb, flip));
        }
        let gp = wt.add(b * GROUPS * PANEL_GROUP_BYTES);
        group::<0, R>(&mut acc, gp, &xv);
        group::<1, R>(&mut acc, gp.add(PANEL_GROUP_BYTES), &xv);
        group::<2, R>(&mut acc, gp.add(2 * PANEL_GROUP_BYTES), &xv);
        group::<3, R>(&mut acc, gp.add(3 * PANEL_GROUP_BYTES), &xv);
        mca_region!("END", "dotprod-gemm-u8i8-4x16", R, 256 * R);
    }
    let rest = k4 % GROUPS;
    if rest > 0 {
        // A 16-byte load would run past the row (past the buffer, for the last row).
        for (r, v) in xv.iter_mut().enumerate() {
            let mut buf = [0u8; GROUPS * PANEL_K];
            let src = x.add(r * qs + full * GROUPS * PANEL_K);
            core::ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), rest * PANEL_K);
            *v = vreinterpretq_s8_u8(veorq_u8(vld1q_u8(buf.as_ptr()), flip));
        }
        let gp = wt.add(full * GROUPS * PANEL_GROUP_BYTES);
        group::<0, R>(&mut acc, gp, &xv);
        if rest > 1 {
            group::<1, R>(&mut acc, gp.add(PANEL_GROUP_BYTES), &xv);
        }
        if rest > 2 {
            group::<2, R>(&mut acc, gp.add(2 * PANEL_GROUP_BYTES), &xv);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        store_row(a, ep, o0, valid, y.add(r * ys));
    }
}

/// One group of 4 inputs (lane `L` of each row's activation register) into the tile.
#[inline(always)]
unsafe fn group<const L: i32, const R: usize>(
    acc: &mut [[int32x4_t; 4]; R],
    gp: *const i8,
    xv: &[int8x16_t; R],
) {
    for j in 0..4 {
        let wv = vld1q_s8(gp.add(16 * j));
        for (a, &x) in acc.iter_mut().zip(xv) {
            a[j] = sdot_lane::<L>(a[j], wv, x);
        }
    }
}

// No `target_feature` on these (Rust refuses it beside `inline(always)`): they are
// assembled inside their callers, which enable dotprod.

/// `acc[i] += Σ_j w[4i + j] · x[4L + j]`.
#[inline(always)]
unsafe fn sdot_lane<const L: i32>(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.4b[{l}]",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        l = const L,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}

/// `acc[i] += Σ_j w[4i + j] · x[4i + j]`.
#[inline(always)]
unsafe fn sdot(mut acc: int32x4_t, w: int8x16_t, x: int8x16_t) -> int32x4_t {
    asm!(
        "sdot {acc:v}.4s, {w:v}.16b, {x:v}.16b",
        acc = inout(vreg) acc,
        w = in(vreg) w,
        x = in(vreg) x,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}
