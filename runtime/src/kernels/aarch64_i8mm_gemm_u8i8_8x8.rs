//! int8 GEMM for the Armv8.6 int8 matrix multiply (`usmmla`): tiles of 8 activation
//! rows × 8 outputs (half a weight panel). One `usmmla` is a 2×8 by 8×2 block: 2 rows ×
//! 8 inputs (u8) against 2 outputs × 8 inputs (s8) into a 2×2 i32 block, 32
//! multiply-adds, twice `sdot`'s. u8 × s8 is the GEMM's own product (`smmla`, its
//! signed sibling, would need the dotprod kernel's fix-up), so there is none.
//!
//! Zipping the 32-bit lanes of two consecutive panel groups (outputs × 4 inputs each)
//! gives [o k0–3, o k4–7] pairs: the 2×8 weight blocks, built once per tile for all of
//! its rows. The i8mm intrinsics are unstable in Rust, hence `asm!`.

use core::arch::aarch64::*;
use core::arch::asm;

use super::aarch64_neon_gemm_u8i8_3x8::store_row;
use super::scalar::check_gemm_bounds;
use super::scalar::{Epilogue, MatMut};
use crate::format::{PANEL_K, PANEL_N};

/// 4 row pairs × 4 output pairs = 16 accumulators, plus 4 weight blocks: the 32
/// registers with room for loads; 8 rows amortise the weight zips, and a half panel
/// that is only padding is skipped.
const MR: usize = 8;
const NR: usize = 8;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: i8mm support was checked by the dispatcher; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

#[target_feature(enable = "i8mm")]
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
            match mr.div_ceil(2) {
                4 => tile::<4>(xt, qs, k4, wt, mr, ep, o0, valid, yt, out.stride),
                3 => tile::<3>(xt, qs, k4, wt, mr, ep, o0, valid, yt, out.stride),
                2 => tile::<2>(xt, qs, k4, wt, mr, ep, o0, valid, yt, out.stride),
                _ => tile::<1>(xt, qs, k4, wt, mr, ep, o0, valid, yt, out.stride),
            }
            m += mr;
        }
    }
}

/// `rows` (≤ 2·`P`) rows from `x` (stride `qs`) × the 8 outputs `o0..` whose weights
/// start at `wt`, written to `y` (stride `ys`, column 0).
#[inline]
#[target_feature(enable = "i8mm")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const P: usize>(
    x: *const u8,
    qs: usize,
    k4: usize,
    wt: *const i8,
    rows: usize,
    ep: &Epilogue,
    o0: usize,
    valid: usize,
    y: *mut f32,
    ys: usize,
) {
    // An odd last row is paired with itself; its twin is computed and dropped.
    let mut xr = [(x, x); P];
    for (i, pair) in xr.iter_mut().enumerate() {
        let a = x.add(2 * i * qs);
        *pair = (a, if 2 * i + 1 < rows { a.add(qs) } else { a });
    }
    // acc[i][j]: rows 2i, 2i+1 × outputs 2j, 2j+1, as [r0 o0, r0 o1, r1 o0, r1 o1].
    let mut acc = [[vdupq_n_s32(0); 4]; P];
    for s in 0..k4 / 2 {
        mca_region!("BEGIN", "i8mm-gemm-u8i8-8x8", 2 * P, 128 * P);
        let g = wt.add(2 * s * PANEL_GROUP_BYTES);
        let wv = blocks(
            [vld1q_s8(g), vld1q_s8(g.add(16))],
            [
                vld1q_s8(g.add(PANEL_GROUP_BYTES)),
                vld1q_s8(g.add(PANEL_GROUP_BYTES + 16)),
            ],
        );
        for (a, &(r0, r1)) in acc.iter_mut().zip(&xr) {
            let off = 2 * s * PANEL_K;
            let xv = vcombine_u8(vld1_u8(r0.add(off)), vld1_u8(r1.add(off)));
            for (aj, &wj) in a.iter_mut().zip(&wv) {
                *aj = usmmla(*aj, xv, wj);
            }
        }
        mca_region!("END", "i8mm-gemm-u8i8-8x8", 2 * P, 128 * P);
    }
    if k4 % 2 == 1 {
        // The last group alone: zero weights stand in for inputs 4–7, so whatever
        // sits in those activation lanes (a copy of inputs 0–3) adds nothing, and
        // nothing past the row is read.
        let g = wt.add((k4 - 1) * PANEL_GROUP_BYTES);
        let zero = vdupq_n_s8(0);
        let wv = blocks([vld1q_s8(g), vld1q_s8(g.add(16))], [zero, zero]);
        for (a, &(r0, r1)) in acc.iter_mut().zip(&xr) {
            let off = (k4 - 1) * PANEL_K;
            let x0 = (r0.add(off) as *const u32).read_unaligned();
            let x1 = (r1.add(off) as *const u32).read_unaligned();
            let xv = vcombine_u8(
                vreinterpret_u8_u32(vdup_n_u32(x0)),
                vreinterpret_u8_u32(vdup_n_u32(x1)),
            );
            for (aj, &wj) in a.iter_mut().zip(&wv) {
                *aj = usmmla(*aj, xv, wj);
            }
        }
    }
    for (i, a) in acc.iter().enumerate() {
        let (a, b) = (
            [vreinterpretq_s64_s32(a[0]), vreinterpretq_s64_s32(a[1])],
            [vreinterpretq_s64_s32(a[2]), vreinterpretq_s64_s32(a[3])],
        );
        let top = [
            vreinterpretq_s32_s64(vzip1q_s64(a[0], a[1])),
            vreinterpretq_s32_s64(vzip1q_s64(b[0], b[1])),
        ];
        store_row(&top, ep, o0, valid, y.add(2 * i * ys));
        if 2 * i + 1 < rows {
            let bottom = [
                vreinterpretq_s32_s64(vzip2q_s64(a[0], a[1])),
                vreinterpretq_s32_s64(vzip2q_s64(b[0], b[1])),
            ];
            store_row(&bottom, ep, o0, valid, y.add((2 * i + 1) * ys));
        }
    }
}

/// The 2×8 weight blocks of outputs (0,1), (2,3), (4,5), (6,7) from a half panel's two
/// registers in group g (`lo`) and g+1 (`hi`).
#[inline(always)]
unsafe fn blocks(lo: [int8x16_t; 2], hi: [int8x16_t; 2]) -> [int8x16_t; 4] {
    let zip = |a: int8x16_t, b: int8x16_t| {
        let (a, b) = (vreinterpretq_s32_s8(a), vreinterpretq_s32_s8(b));
        [
            vreinterpretq_s8_s32(vzip1q_s32(a, b)),
            vreinterpretq_s8_s32(vzip2q_s32(a, b)),
        ]
    };
    let ([b0, b1], [b2, b3]) = (zip(lo[0], hi[0]), zip(lo[1], hi[1]));
    [b0, b1, b2, b3]
}

/// `acc[2i + j] += Σ_l x[8i + l] · w[8j + l]` (u8 × s8). No `target_feature` (Rust refuses
/// it beside `inline(always)`): it is assembled inside its callers, which enable i8mm.
#[inline(always)]
unsafe fn usmmla(mut acc: int32x4_t, x: uint8x16_t, w: int8x16_t) -> int32x4_t {
    asm!(
        "usmmla {acc:v}.4s, {x:v}.16b, {w:v}.16b",
        acc = inout(vreg) acc,
        x = in(vreg) x,
        w = in(vreg) w,
        options(pure, nomem, nostack, preserves_flags)
    );
    acc
}
