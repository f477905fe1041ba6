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
//! The dotprod intrinsics are unstable in Rust, hence `asm!`; the 4-row tile's loop is
//! one `asm!` block, scheduled by hand for in-order cores such as the Cortex-A55
//! (`pairs_4x16`), the shorter tiles' the compiler's.

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
    // Full tiles run their iterations in pairs through the hand-scheduled loop, all but
    // the last one or two (its loads look one iteration ahead, which must exist).
    let mut first = 0;
    if let Some(acc4) = acc.first_chunk_mut::<4>() {
        let pairs = full.saturating_sub(1) / 2;
        if pairs > 0 {
            pairs_4x16(acc4, x, qs, wt, pairs);
            first = 2 * pairs;
        }
    }
    for b in first..full {
        if R < 4 {
            mca_region!("BEGIN", "dotprod-gemm-u8i8-4x16", R, 256 * R);
        }
        for (r, v) in xv.iter_mut().enumerate() {
            let xb = vld1q_u8(x.add(r * qs + b * GROUPS * PANEL_K));
            *v = vreinterpretq_s8_u8(veorq_u8(xb, flip));
        }
        let gp = wt.add(b * GROUPS * PANEL_GROUP_BYTES);
        group::<0, R>(&mut acc, gp, &xv);
        group::<1, R>(&mut acc, gp.add(PANEL_GROUP_BYTES), &xv);
        group::<2, R>(&mut acc, gp.add(2 * PANEL_GROUP_BYTES), &xv);
        group::<3, R>(&mut acc, gp.add(3 * PANEL_GROUP_BYTES), &xv);
        if R < 4 {
            mca_region!("END", "dotprod-gemm-u8i8-4x16", R, 256 * R);
        }
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

/// Iterations `0 .. 2·pairs` of a 4-row tile (4 panel groups each: 16 activation bytes
/// of each row against 256 weight bytes), added into `acc`; iteration `2·pairs` must
/// exist, since the loads look one iteration ahead.
///
/// Written out by hand for in-order cores, where the compiled loop stalled: the Cortex-A55
/// issues no load beside a NEON instruction and waits for a load's result in order, and
/// LLVM had put every `ldp` just before the `sdot`s that need it and advanced the rows
/// with post-incremented loads (which llvm-mca's A55 model charges 4 cycles). Here:
/// - each weight register is reloaded with the next group's vector right after its
///   last `sdot`, 12 instructions before its first use;
/// - the next iteration's activations load into the other bank of 4 registers (v0–v3,
///   v8–v11) half an iteration ahead, indexed by one offset register, and are flipped
///   to signed (`+ 0x80` per byte: the same bits as `^ 0x80`, which the A55 model
///   issues a cycle slower after an `sdot`) a quarter iteration ahead;
/// - two iterations per loop, so the banks alternate without moves.
///
/// llvm-mca 19 (`scripts/arm-mca.sh`): the A55 at 180 cycles per 2048 MACs, 71 % of its
/// `sdot` peak (the compiled loop: 114 per 1024, 56 %); the A76 and A78 (the A57 model)
/// 84 → 94 %; Neoverse N1 and N2 94 % as before.
/// Registers: accumulators v16–v31 (`acc[r][j]` in v(16 + 4r + j)), weights v4–v7,
/// activation banks v0–v3 and v8–v11, the flip v12.
#[inline]
#[target_feature(enable = "dotprod")]
unsafe fn pairs_4x16(
    acc: &mut [[int32x4_t; 4]; 4],
    x: *const u8,
    qs: usize,
    wt: *const i8,
    pairs: usize,
) {
    let [[a00, a01, a02, a03], [a10, a11, a12, a13], [a20, a21, a22, a23], [a30, a31, a32, a33]] =
        acc;
    let rows = [x, x.add(qs), x.add(2 * qs), x.add(3 * qs)];
    // Bank A reads iteration 2i + 2 through `b*` (the rows 16 bytes on), bank B
    // iteration 2i + 1 through `a*`, both at offset `o` = 16 + 32i.
    let next = rows.map(|r| r.add(GROUPS * PANEL_K));
    asm!(
        "movi v12.16b, #0x80",
        "ldr q0, [{a0}]",
        "ldr q1, [{a1}]",
        "ldr q2, [{a2}]",
        "ldr q3, [{a3}]",
        "ldp q4, q5, [{w}]",
        "ldp q6, q7, [{w}, #32]",
        "add v0.16b, v0.16b, v12.16b",
        "add v1.16b, v1.16b, v12.16b",
        "add v2.16b, v2.16b, v12.16b",
        "add v3.16b, v3.16b, v12.16b",
        "2:",
        // Found by scripts/arm-mca.sh (a comment to the assembler).
        "// LLVM-MCA-BEGIN dotprod-gemm-u8i8-4x16-r4-macs2048",
            "sdot v16.4s, v4.16b, v0.4b[0]",
            "sdot v20.4s, v4.16b, v1.4b[0]",
            "sdot v24.4s, v4.16b, v2.4b[0]",
            "sdot v28.4s, v4.16b, v3.4b[0]",
            "ldr q4, [{w}, #64]",
            "sdot v17.4s, v5.16b, v0.4b[0]",
            "sdot v21.4s, v5.16b, v1.4b[0]",
            "sdot v25.4s, v5.16b, v2.4b[0]",
            "sdot v29.4s, v5.16b, v3.4b[0]",
            "ldr q5, [{w}, #80]",
            "sdot v18.4s, v6.16b, v0.4b[0]",
            "sdot v22.4s, v6.16b, v1.4b[0]",
            "sdot v26.4s, v6.16b, v2.4b[0]",
            "sdot v30.4s, v6.16b, v3.4b[0]",
            "ldr q6, [{w}, #96]",
            "sdot v19.4s, v7.16b, v0.4b[0]",
            "sdot v23.4s, v7.16b, v1.4b[0]",
            "sdot v27.4s, v7.16b, v2.4b[0]",
            "sdot v31.4s, v7.16b, v3.4b[0]",
            "ldr q7, [{w}, #112]",
            "sdot v16.4s, v4.16b, v0.4b[1]",
            "sdot v20.4s, v4.16b, v1.4b[1]",
            "sdot v24.4s, v4.16b, v2.4b[1]",
            "sdot v28.4s, v4.16b, v3.4b[1]",
            "ldr q4, [{w}, #128]",
            "ldr q8, [{a0}, {o}]",
            "sdot v17.4s, v5.16b, v0.4b[1]",
            "sdot v21.4s, v5.16b, v1.4b[1]",
            "sdot v25.4s, v5.16b, v2.4b[1]",
            "sdot v29.4s, v5.16b, v3.4b[1]",
            "ldr q5, [{w}, #144]",
            "ldr q9, [{a1}, {o}]",
            "sdot v18.4s, v6.16b, v0.4b[1]",
            "sdot v22.4s, v6.16b, v1.4b[1]",
            "sdot v26.4s, v6.16b, v2.4b[1]",
            "sdot v30.4s, v6.16b, v3.4b[1]",
            "ldr q6, [{w}, #160]",
            "ldr q10, [{a2}, {o}]",
            "sdot v19.4s, v7.16b, v0.4b[1]",
            "sdot v23.4s, v7.16b, v1.4b[1]",
            "sdot v27.4s, v7.16b, v2.4b[1]",
            "sdot v31.4s, v7.16b, v3.4b[1]",
            "ldr q7, [{w}, #176]",
            "ldr q11, [{a3}, {o}]",
            "sdot v16.4s, v4.16b, v0.4b[2]",
            "sdot v20.4s, v4.16b, v1.4b[2]",
            "sdot v24.4s, v4.16b, v2.4b[2]",
            "sdot v28.4s, v4.16b, v3.4b[2]",
            "ldr q4, [{w}, #192]",
            "sdot v17.4s, v5.16b, v0.4b[2]",
            "sdot v21.4s, v5.16b, v1.4b[2]",
            "sdot v25.4s, v5.16b, v2.4b[2]",
            "sdot v29.4s, v5.16b, v3.4b[2]",
            "ldr q5, [{w}, #208]",
            "sdot v18.4s, v6.16b, v0.4b[2]",
            "sdot v22.4s, v6.16b, v1.4b[2]",
            "sdot v26.4s, v6.16b, v2.4b[2]",
            "sdot v30.4s, v6.16b, v3.4b[2]",
            "ldr q6, [{w}, #224]",
            "sdot v19.4s, v7.16b, v0.4b[2]",
            "sdot v23.4s, v7.16b, v1.4b[2]",
            "sdot v27.4s, v7.16b, v2.4b[2]",
            "sdot v31.4s, v7.16b, v3.4b[2]",
            "ldr q7, [{w}, #240]",
            "sdot v16.4s, v4.16b, v0.4b[3]",
            "sdot v20.4s, v4.16b, v1.4b[3]",
            "sdot v24.4s, v4.16b, v2.4b[3]",
            "sdot v28.4s, v4.16b, v3.4b[3]",
            "ldr q4, [{w}, #256]",
            "add v8.16b, v8.16b, v12.16b",
            "sdot v17.4s, v5.16b, v0.4b[3]",
            "sdot v21.4s, v5.16b, v1.4b[3]",
            "sdot v25.4s, v5.16b, v2.4b[3]",
            "sdot v29.4s, v5.16b, v3.4b[3]",
            "ldr q5, [{w}, #272]",
            "add v9.16b, v9.16b, v12.16b",
            "sdot v18.4s, v6.16b, v0.4b[3]",
            "sdot v22.4s, v6.16b, v1.4b[3]",
            "sdot v26.4s, v6.16b, v2.4b[3]",
            "sdot v30.4s, v6.16b, v3.4b[3]",
            "ldr q6, [{w}, #288]",
            "add v10.16b, v10.16b, v12.16b",
            "sdot v19.4s, v7.16b, v0.4b[3]",
            "sdot v23.4s, v7.16b, v1.4b[3]",
            "sdot v27.4s, v7.16b, v2.4b[3]",
            "sdot v31.4s, v7.16b, v3.4b[3]",
            "ldr q7, [{w}, #304]",
            "add v11.16b, v11.16b, v12.16b",
            "sdot v16.4s, v4.16b, v8.4b[0]",
            "sdot v20.4s, v4.16b, v9.4b[0]",
            "sdot v24.4s, v4.16b, v10.4b[0]",
            "sdot v28.4s, v4.16b, v11.4b[0]",
            "ldr q4, [{w}, #320]",
            "sdot v17.4s, v5.16b, v8.4b[0]",
            "sdot v21.4s, v5.16b, v9.4b[0]",
            "sdot v25.4s, v5.16b, v10.4b[0]",
            "sdot v29.4s, v5.16b, v11.4b[0]",
            "ldr q5, [{w}, #336]",
            "sdot v18.4s, v6.16b, v8.4b[0]",
            "sdot v22.4s, v6.16b, v9.4b[0]",
            "sdot v26.4s, v6.16b, v10.4b[0]",
            "sdot v30.4s, v6.16b, v11.4b[0]",
            "ldr q6, [{w}, #352]",
            "sdot v19.4s, v7.16b, v8.4b[0]",
            "sdot v23.4s, v7.16b, v9.4b[0]",
            "sdot v27.4s, v7.16b, v10.4b[0]",
            "sdot v31.4s, v7.16b, v11.4b[0]",
            "ldr q7, [{w}, #368]",
            "sdot v16.4s, v4.16b, v8.4b[1]",
            "sdot v20.4s, v4.16b, v9.4b[1]",
            "sdot v24.4s, v4.16b, v10.4b[1]",
            "sdot v28.4s, v4.16b, v11.4b[1]",
            "ldr q4, [{w}, #384]",
            "ldr q0, [{b0}, {o}]",
            "sdot v17.4s, v5.16b, v8.4b[1]",
            "sdot v21.4s, v5.16b, v9.4b[1]",
            "sdot v25.4s, v5.16b, v10.4b[1]",
            "sdot v29.4s, v5.16b, v11.4b[1]",
            "ldr q5, [{w}, #400]",
            "ldr q1, [{b1}, {o}]",
            "sdot v18.4s, v6.16b, v8.4b[1]",
            "sdot v22.4s, v6.16b, v9.4b[1]",
            "sdot v26.4s, v6.16b, v10.4b[1]",
            "sdot v30.4s, v6.16b, v11.4b[1]",
            "ldr q6, [{w}, #416]",
            "ldr q2, [{b2}, {o}]",
            "sdot v19.4s, v7.16b, v8.4b[1]",
            "sdot v23.4s, v7.16b, v9.4b[1]",
            "sdot v27.4s, v7.16b, v10.4b[1]",
            "sdot v31.4s, v7.16b, v11.4b[1]",
            "ldr q7, [{w}, #432]",
            "ldr q3, [{b3}, {o}]",
            "sdot v16.4s, v4.16b, v8.4b[2]",
            "sdot v20.4s, v4.16b, v9.4b[2]",
            "sdot v24.4s, v4.16b, v10.4b[2]",
            "sdot v28.4s, v4.16b, v11.4b[2]",
            "ldr q4, [{w}, #448]",
            "sdot v17.4s, v5.16b, v8.4b[2]",
            "sdot v21.4s, v5.16b, v9.4b[2]",
            "sdot v25.4s, v5.16b, v10.4b[2]",
            "sdot v29.4s, v5.16b, v11.4b[2]",
            "ldr q5, [{w}, #464]",
            "sdot v18.4s, v6.16b, v8.4b[2]",
            "sdot v22.4s, v6.16b, v9.4b[2]",
            "sdot v26.4s, v6.16b, v10.4b[2]",
            "sdot v30.4s, v6.16b, v11.4b[2]",
            "ldr q6, [{w}, #480]",
            "sdot v19.4s, v7.16b, v8.4b[2]",
            "sdot v23.4s, v7.16b, v9.4b[2]",
            "sdot v27.4s, v7.16b, v10.4b[2]",
            "sdot v31.4s, v7.16b, v11.4b[2]",
            "ldr q7, [{w}, #496]",
            "sdot v16.4s, v4.16b, v8.4b[3]",
            "sdot v20.4s, v4.16b, v9.4b[3]",
            "sdot v24.4s, v4.16b, v10.4b[3]",
            "sdot v28.4s, v4.16b, v11.4b[3]",
            "ldr q4, [{w}, #512]",
            "add v0.16b, v0.16b, v12.16b",
            "sdot v17.4s, v5.16b, v8.4b[3]",
            "sdot v21.4s, v5.16b, v9.4b[3]",
            "sdot v25.4s, v5.16b, v10.4b[3]",
            "sdot v29.4s, v5.16b, v11.4b[3]",
            "ldr q5, [{w}, #528]",
            "add v1.16b, v1.16b, v12.16b",
            "sdot v18.4s, v6.16b, v8.4b[3]",
            "sdot v22.4s, v6.16b, v9.4b[3]",
            "sdot v26.4s, v6.16b, v10.4b[3]",
            "sdot v30.4s, v6.16b, v11.4b[3]",
            "ldr q6, [{w}, #544]",
            "add v2.16b, v2.16b, v12.16b",
            "sdot v19.4s, v7.16b, v8.4b[3]",
            "sdot v23.4s, v7.16b, v9.4b[3]",
            "sdot v27.4s, v7.16b, v10.4b[3]",
            "sdot v31.4s, v7.16b, v11.4b[3]",
            "ldr q7, [{w}, #560]",
            "add v3.16b, v3.16b, v12.16b",
        "add {o}, {o}, #32",
        "add {w}, {w}, #512",
        "subs {n}, {n}, #1",
        "b.ne 2b",
        a0 = in(reg) rows[0],
        a1 = in(reg) rows[1],
        a2 = in(reg) rows[2],
        a3 = in(reg) rows[3],
        b0 = in(reg) next[0],
        b1 = in(reg) next[1],
        b2 = in(reg) next[2],
        b3 = in(reg) next[3],
        o = inout(reg) GROUPS * PANEL_K => _,
        w = inout(reg) wt => _,
        n = inout(reg) pairs => _,
        inout("v16") *a00,
        inout("v17") *a01,
        inout("v18") *a02,
        inout("v19") *a03,
        inout("v20") *a10,
        inout("v21") *a11,
        inout("v22") *a12,
        inout("v23") *a13,
        inout("v24") *a20,
        inout("v25") *a21,
        inout("v26") *a22,
        inout("v27") *a23,
        inout("v28") *a30,
        inout("v29") *a31,
        inout("v30") *a32,
        inout("v31") *a33,
        out("v0") _,
        out("v1") _,
        out("v2") _,
        out("v3") _,
        out("v4") _,
        out("v5") _,
        out("v6") _,
        out("v7") _,
        out("v8") _,
        out("v9") _,
        out("v10") _,
        out("v11") _,
        out("v12") _,
        options(nostack, readonly),
    );
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
