//! int8 GEMM for 32-bit Arm cores with the DSP instructions and no NEON: Cortex-M4, M7,
//! M33 / M35P with the DSP extension, M55 and M85 (and every Armv6+ A-profile core,
//! where NEON is usually the better choice): tiles of 1 activation row × 4 outputs.
//!
//! `smlad` multiplies two pairs of signed 16-bit lanes and adds both products to a
//! 32-bit accumulator. Four activation bytes (unsigned) split into their even and odd
//! bytes zero-extended to 16 bits (a mask, and a shift and mask); the four weight bytes
//! of an output's panel group split the same way sign-extended (`sxtb16`); two `smlad`
//! then add the group's four products. Each product fits 16 × 16 bits signed (0..255
//! times −127..127) and the sum is the scalar kernel's i32, in any order: exact. The 4
//! outputs' weights of one group are 16 contiguous bytes of the panel, so a group is 5
//! word loads, 2 activation unpacks and 4 × 4 instructions for 16 multiply–adds, against
//! about 14 instructions per multiply–add in the scalar reference.
//!
//! `sxtb16` and `smlad` are in `asm!`: Rust's intrinsics for them (`core::arch::arm`'s
//! DSP functions) are not stable. On Armv8-M Mainline the DSP extension is optional, so
//! the assembler accepts them only with the core named (`-C target-cpu=cortex-m55`, as
//! the board profiles' builds pass) or `-C target-feature=+dsp`; bare-metal builds
//! compile this module only with the runtime's `arm-dsp` feature. Each block is pure and touches no memory, so the
//! compiler schedules the loads and the loop around them. The epilogue is the scalar
//! one (`Epilogue::apply`).

use core::arch::asm;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use crate::format::{PANEL_K, PANEL_N};

/// Outputs per tile: a quarter panel, whose weights are contiguous in each group.
const NR: usize = 4;
const _: () = assert!(PANEL_N.is_multiple_of(NR) && PANEL_K == 4);
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    let (qp, wp, yp) = (q.as_ptr(), w.as_ptr(), out.data.as_mut_ptr());
    for o0 in (0..out.cols).step_by(NR) {
        let valid = (out.cols - o0).min(NR);
        let wt = (o0 / PANEL_N) * k4 * PANEL_GROUP_BYTES + (o0 % PANEL_N) * PANEL_K;
        for m in 0..out.rows {
            // SAFETY: `check_gemm_bounds` asserted `q` holds `out.rows` rows of `qs =
            // 4·k4` bytes, `w` every panel's `k4` groups (a last partial panel padded to
            // 16 outputs, so the tile's 4 words exist even past `out.cols`) and `out`
            // its rows; only `valid` outputs are written.
            unsafe {
                let acc = tile(qp.add(m * qs), wp.add(wt), k4);
                let y = yp.add(m * out.stride + o0);
                for (j, a) in acc.iter().enumerate().take(valid) {
                    *y.add(j) = ep.apply(*a, o0 + j);
                }
            }
        }
    }
}

/// The i32 sums of one activation row (`k4` groups of 4 bytes at `q`) with the 4
/// outputs whose first group's weights are at `w`. The Helium kernel finishes its tiles'
/// last groups with it.
#[inline(always)]
pub(super) unsafe fn tile(q: *const u8, w: *const i8, k4: usize) -> [i32; NR] {
    let mut acc = [0i32; NR];
    for g in 0..k4 {
        let a = q.add(g * PANEL_K).cast::<u32>().read_unaligned();
        // uxtb16 as a mask: bytes 0 and 2, and 1 and 3, in 16-bit lanes.
        let even = a & 0x00FF_00FF;
        let odd = (a >> 8) & 0x00FF_00FF;
        let wg = w.add(g * PANEL_GROUP_BYTES).cast::<u32>();
        for (j, acc) in acc.iter_mut().enumerate() {
            *acc = dot4(*acc, even, odd, wg.add(j).read_unaligned());
        }
    }
    acc
}

/// `acc` plus the four products of the activation lanes `even` (bytes 0, 2) and `odd`
/// (bytes 1, 3) with the weight bytes of `w`.
#[inline(always)]
unsafe fn dot4(mut acc: i32, even: u32, odd: u32, w: u32) -> i32 {
    asm!(
        "sxtb16 {t}, {w}",
        "sxtb16 {w}, {w}, ror #8",
        "smlad {acc}, {even}, {t}, {acc}",
        "smlad {acc}, {odd}, {w}, {acc}",
        acc = inout(reg) acc,
        even = in(reg) even,
        odd = in(reg) odd,
        w = inout(reg) w => _,
        t = out(reg) _,
        options(pure, nomem, nostack),
    );
    acc
}
