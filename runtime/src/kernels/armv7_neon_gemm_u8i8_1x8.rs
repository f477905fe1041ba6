//! int8 GEMM for 32-bit Arm with NEON (armv7 boards: Cortex-A7 / A9 / A15 / A53 in
//! 32-bit mode): tiles of 1 activation row × 8 outputs (half a weight panel).
//!
//! The plain AArch64 NEON kernel's scheme (`aarch64_neon_gemm_u8i8_3x8`): activations
//! flipped to `q − 128`, each output's `128·Σ_k w` added back once per weight tile,
//! `vmull.s8` of one panel group plus `vmlal.s8` of the next in the same i16 lanes (two
//! products of a flipped activation and a symmetric weight always fit), `vpadal.s16`
//! into i32: exact, the scalar kernel's integers.
//!
//! Written in `asm!` because Rust's 32-bit Arm NEON intrinsics (and its vector types,
//! which `asm!` operands would need) are not stable: each loop is one assembly block
//! that keeps the accumulators in fixed registers and exchanges them with memory at
//! its ends. One row, because most armv7 cores (A7, A9, A53) run NEON in order: with
//! 16 q registers, two rows (8 accumulators) leave room for only 2 products in flight,
//! and each product's multiply, accumulate and fold then wait on one another; one row
//! keeps 4 in flight (llvm-mca, A9 model: 21 cycles per 64 MACs against 31.5 per row
//! for two rows; A57 model: 10.1 against 9.1). The epilogue is the scalar one
//! (`Epilogue::apply`): 32-bit NEON float arithmetic flushes subnormals to zero, which
//! would break the reference's bits, and VFP does not.

use core::arch::asm;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use crate::format::{PANEL_K, PANEL_N};

/// Half a panel: 8 outputs × 4 inputs of a group are two q registers.
const NR: usize = 8;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;
/// The flip, applied to 4 activation bytes at a time in a core register (the A32
/// instruction set cannot encode it as an immediate).
const FLIP: u32 = 0x8080_8080;

/// A tile's i32 sums: outputs `o` of the tile in lanes `2o` and `2o + 1` (the sums over
/// inputs 0–1 and 2–3 of each group), the layout `vpadal.s16` leaves.
type Sums = [i32; 2 * NR];

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: this module is only built with NEON enabled; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qp, wp, yp) = (q.as_ptr(), w.as_ptr(), out.data.as_mut_ptr());
    // Weight tile outer: its k4·32 bytes stay in L1 while every row passes over them,
    // and its share of the flip is computed once.
    for o0 in (0..out.cols).step_by(NR) {
        let valid = (out.cols - o0).min(NR);
        let wt = wp.add((o0 / PANEL_N) * k4 * PANEL_GROUP_BYTES + (o0 % PANEL_N) * PANEL_K);
        let fix = flip_fix(wt, k4);
        for m in 0..out.rows {
            let mut acc = fix;
            row(qp.add(m * qs), wt, k4, &mut acc);
            let y = yp.add(m * out.stride + o0);
            for j in 0..valid {
                *y.add(j) = ep.apply(acc[2 * j].wrapping_add(acc[2 * j + 1]), o0 + j);
            }
        }
    }
}

/// `128·Σ_k w[o][k]` of the tile at `wt`, in [`Sums`] layout.
unsafe fn flip_fix(wt: *const i8, k4: usize) -> Sums {
    let mut fix = [0i32; 2 * NR];
    asm!(
        ".fpu neon",
        "vmov.i32 q0, #0",
        "vmov.i32 q1, #0",
        "vmov.i32 q2, #0",
        "vmov.i32 q3, #0",
        "cmp r12, #0",
        "beq 2f",
        "1:",
        "vld1.8 {{d16-d19}}, [r1], r2",
        // Weights of outputs 0–1 (d16), 2–3 (d17), 4–5 (d18), 6–7 (d19): pairs summed
        // to i16, then widened into the sums' lanes.
        "vpaddl.s8 q8, q8",
        "vpaddl.s8 q9, q9",
        "vaddw.s16 q0, q0, d16",
        "vaddw.s16 q1, q1, d17",
        "vaddw.s16 q2, q2, d18",
        "vaddw.s16 q3, q3, d19",
        "subs r12, r12, #1",
        "bne 1b",
        "2:",
        "vshl.i32 q0, q0, #7",
        "vshl.i32 q1, q1, #7",
        "vshl.i32 q2, q2, #7",
        "vshl.i32 q3, q3, #7",
        "vst1.32 {{d0-d3}}, [r0]!",
        "vst1.32 {{d4-d7}}, [r0]",
        inout("r1") wt => _,
        inout("r12") k4 => _,
        in("r2") PANEL_GROUP_BYTES,
        inout("r0") fix.as_mut_ptr() => _,
        clobber_abi("C"),
        options(nostack),
    );
    fix
}

/// One row (`x`) over the tile at `wt`, added into `acc`.
unsafe fn row(x: *const u8, wt: *const i8, k4: usize, acc: &mut Sums) {
    asm!(
        ".fpu neon",
        // q4 (d8, d9) is callee-saved: the fourth product borrows it.
        "vpush {{d8-d9}}",
        "vld1.32 {{d0-d3}}, [r0]!",
        "vld1.32 {{d4-d7}}, [r0]",
        // An odd group count: the first group alone (integer sums: any order).
        "lsrs r12, r12, #1",
        "bcc 2f",
        "ldr r5, [r2], #4",
        "eor r5, r5, r4",
        "vdup.32 d24, r5",
        "vld1.8 {{d16-d19}}, [r1]!",
        "add r1, r1, #32",
        "vmull.s8 q14, d16, d24",
        "vmull.s8 q15, d17, d24",
        "vmull.s8 q13, d18, d24",
        "vmull.s8 q4, d19, d24",
        "vpadal.s16 q0, q14",
        "vpadal.s16 q1, q15",
        "vpadal.s16 q2, q13",
        "vpadal.s16 q3, q4",
        "2:",
        "cmp r12, #0",
        "beq 3f",
        "1:",
        // Found by scripts/arm-mca.sh (a comment to the assembler).
        "@ LLVM-MCA-BEGIN armv7neon-gemm-u8i8-1x8-r1-macs64",
        // The row's 4 flipped inputs of groups a and b, repeated across a d register.
        "ldr r5, [r2], #4",
        "ldr r8, [r2], #4",
        "eor r5, r5, r4",
        "eor r8, r8, r4",
        "vdup.32 d24, r5",
        "vdup.32 d25, r8",
        // Groups a (q8, q9) and b (q10, q11): outputs 0–3 and 4–7, 4 inputs each; the
        // next group of the same 8 outputs is a panel group (64 bytes) on.
        "vld1.8 {{d16-d19}}, [r1]!",
        "add r1, r1, #32",
        "vld1.8 {{d20-d23}}, [r1]!",
        "add r1, r1, #32",
        // a's products of outputs 0–1, 2–3, 4–5, 6–7, then b's added in the same i16
        // lanes, then folded into i32: 4 independent chains.
        "vmull.s8 q14, d16, d24",
        "vmull.s8 q15, d17, d24",
        "vmull.s8 q13, d18, d24",
        "vmull.s8 q4, d19, d24",
        "vmlal.s8 q14, d20, d25",
        "vmlal.s8 q15, d21, d25",
        "vmlal.s8 q13, d22, d25",
        "vmlal.s8 q4, d23, d25",
        "vpadal.s16 q0, q14",
        "vpadal.s16 q1, q15",
        "vpadal.s16 q2, q13",
        "vpadal.s16 q3, q4",
        "subs r12, r12, #1",
        "bne 1b",
        "3:",
        "sub r0, r0, #32",
        "vst1.32 {{d0-d3}}, [r0]!",
        "vst1.32 {{d4-d7}}, [r0]",
        "vpop {{d8-d9}}",
        inout("r0") acc.as_mut_ptr() => _,
        inout("r1") wt => _,
        inout("r2") x => _,
        inout("r12") k4 => _,
        in("r4") FLIP,
        out("r5") _,
        out("r8") _,
        clobber_abi("C"),
    );
}
