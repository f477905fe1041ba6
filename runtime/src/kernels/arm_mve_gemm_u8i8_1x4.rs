//! int8 GEMM for Arm cores with Helium (M-profile Vector Extension, Armv8.1-M):
//! Cortex-M55 and M85. Tiles of 1 activation row × 4 outputs, 16 inputs a step.
//!
//! `vmladava.s8` multiplies 16 pairs of signed bytes and adds all 16 products to a
//! 32-bit register; it has no unsigned × signed form, so activations are flipped to
//! `q − 128` (signed) and each output's `128·Σ_k w` is added back once per tile, as on
//! AVX2 and plain NEON: exact, the scalar kernel's integers. One output's 16 weights of
//! a step are 4 words 64 bytes apart in the panel (4 groups), which one gather load
//! (`vldrw.u32` with a vector of offsets) brings in. A step is then 1 activation load, 1
//! flip, and 4 × (gather + `vmladava`) for 64 multiply–adds. Groups past the last full
//! step (fewer than 4) go through the DSP kernel's tile (`smlad`), which every Helium
//! core has. The epilogue is the scalar one.
//!
//! In `asm!` (Rust has no Helium intrinsics); compiled only with the runtime's
//! `arm-mve` feature, for a core named with `-C target-cpu=cortex-m55` (or `m85`), so
//! the assembler accepts the instructions.

use core::arch::asm;

use super::arm_dsp_gemm_u8i8_1x4::tile as dsp_tile;
use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use crate::format::{PANEL_K, PANEL_N};

const NR: usize = 4;
const _: () = assert!(PANEL_N.is_multiple_of(NR) && PANEL_K == 4);
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;
/// Panel groups a step covers: 16 inputs.
const STEP_GROUPS: usize = 4;
/// Byte offsets of output 0's weight words in a step's 4 groups.
static GATHER: [u32; 4] = [0, 64, 128, 192];

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    let steps = k4 / STEP_GROUPS;
    let done = steps * STEP_GROUPS;
    let (qp, wp, yp) = (q.as_ptr(), w.as_ptr(), out.data.as_mut_ptr());
    for o0 in (0..out.cols).step_by(NR) {
        let valid = (out.cols - o0).min(NR);
        let wt = (o0 / PANEL_N) * k4 * PANEL_GROUP_BYTES + (o0 % PANEL_N) * PANEL_K;
        // SAFETY: `check_gemm_bounds` asserted `q` holds `out.rows` rows of `qs = 4·k4`
        // bytes and `w` every panel's `k4` groups (a last partial panel padded to 16
        // outputs, so the tile's words exist even past `out.cols`); the steps read
        // groups `0..done` and the DSP tile the rest; only `valid` outputs are written.
        unsafe {
            let wt = wp.add(wt);
            let fix = flip_fix(wt, steps);
            for m in 0..out.rows {
                let qr = qp.add(m * qs);
                let mut acc = fix;
                row(qr, wt, steps, &mut acc);
                let rest = dsp_tile(
                    qr.add(done * PANEL_K),
                    wt.add(done * PANEL_GROUP_BYTES),
                    k4 - done,
                );
                let y = yp.add(m * out.stride + o0);
                for j in 0..valid {
                    *y.add(j) = ep.apply(acc[j].wrapping_add(rest[j]), o0 + j);
                }
            }
        }
    }
}

/// `128·Σ w` of each of the tile's 4 outputs over the first `steps` steps.
unsafe fn flip_fix(w: *const i8, steps: usize) -> [i32; NR] {
    let (mut s0, mut s1, mut s2, mut s3) = (0i32, 0i32, 0i32, 0i32);
    if steps > 0 {
        asm!(
            // Gather offsets of output 0's words in 4 groups; outputs 1–3 add 4, 8, 12.
            "vldrw.u32 q2, [{off}]",
            "vadd.i32 q3, q2, {four}",
            "vadd.i32 q4, q3, {four}",
            "vadd.i32 q5, q4, {four}",
            "2:",
            "vldrw.u32 q1, [{w}, q2]",
            "vaddva.s8 r0, q1",
            "vldrw.u32 q1, [{w}, q3]",
            "vaddva.s8 r2, q1",
            "vldrw.u32 q1, [{w}, q4]",
            "vaddva.s8 r4, q1",
            "vldrw.u32 q1, [{w}, q5]",
            "vaddva.s8 r8, q1",
            "add {w}, {w}, #256",
            "subs {n}, {n}, #1",
            "bne 2b",
            w = inout(reg) w => _,
            n = inout(reg) steps => _,
            off = in(reg) GATHER.as_ptr(),
            four = in(reg) 4u32,
            // `vaddva` and `vmladava` accumulate into even-numbered registers only.
            inout("r0") s0,
            inout("r2") s1,
            inout("r4") s2,
            inout("r8") s3,
            out("q1") _, out("q2") _, out("q3") _, out("q4") _, out("q5") _,
            options(nostack, readonly),
        );
    }
    [s0 << 7, s1 << 7, s2 << 7, s3 << 7]
}

/// Adds to `acc` the flipped activations' products over `steps` steps of 16 inputs.
unsafe fn row(q: *const u8, w: *const i8, steps: usize, acc: &mut [i32; NR]) {
    if steps == 0 {
        return;
    }
    let [mut a0, mut a1, mut a2, mut a3] = *acc;
    asm!(
        "vmov.i8 q7, #0x80",
        "vldrw.u32 q2, [{off}]",
        "vadd.i32 q3, q2, {four}",
        "vadd.i32 q4, q3, {four}",
        "vadd.i32 q5, q4, {four}",
        "2:",
        "vldrb.u8 q0, [{q}], #16",
        "veor q0, q0, q7",
        "vldrw.u32 q1, [{w}, q2]",
        "vmladava.s8 r0, q0, q1",
        "vldrw.u32 q1, [{w}, q3]",
        "vmladava.s8 r2, q0, q1",
        "vldrw.u32 q1, [{w}, q4]",
        "vmladava.s8 r4, q0, q1",
        "vldrw.u32 q1, [{w}, q5]",
        "vmladava.s8 r8, q0, q1",
        "add {w}, {w}, #256",
        "subs {n}, {n}, #1",
        "bne 2b",
        q = inout(reg) q => _,
        w = inout(reg) w => _,
        n = inout(reg) steps => _,
        off = in(reg) GATHER.as_ptr(),
        four = in(reg) 4u32,
        inout("r0") a0,
        inout("r2") a1,
        inout("r4") a2,
        inout("r8") a3,
        out("q0") _, out("q1") _, out("q2") _, out("q3") _, out("q4") _, out("q5") _, out("q7") _,
        options(nostack, readonly),
    );
    *acc = [a0, a1, a2, a3];
}
