//! The int8 multiply-accumulate ceiling of the AVX2 kernels' own instruction pair on one
//! core: `vpmaddwd` (16 exact i16 × i16 products, summed in pairs) then `vpaddd`, on ymm
//! registers only. `vpmaddubsw` would do twice the products but saturates, which
//! `x86_avx2_gemm_u8i8_2x16` refuses, so it is not the ceiling that kernel can reach.
//! Each chain feeds its accumulator back in as the multiplicand, or the loop-invariant
//! product would be hoisted out of the loop; that makes a chain `vpmaddwd` + `vpaddd`
//! long (4–6 cycles), and 14 chains (the 15th register holds the other operand) cover
//! that at 2 `vpmaddwd` per cycle.

use core::arch::x86_64::*;

use super::Isa;

const CHAINS: usize = 14;
/// Products one ymm `vpmaddwd` (with its `vpaddd`) adds up.
const MACS_PER_OP: u64 = 16;

/// Runs `iters` rounds of 14 `vpmaddwd` + `vpaddd` and returns the multiply-accumulates
/// done. Panics when the CPU has no AVX2.
pub fn run(iters: u64) -> u64 {
    assert!(Isa::X86Avx2.supported());
    // SAFETY: AVX2 support asserted above; the loop touches registers only.
    let sum = unsafe { chains(iters) };
    core::hint::black_box(sum);
    iters * CHAINS as u64 * MACS_PER_OP
}

#[target_feature(enable = "avx2")]
unsafe fn chains(iters: u64) -> i32 {
    let b = _mm256_set1_epi32(core::hint::black_box(0xff81_007f_u32 as i32));
    let mut acc = [_mm256_set1_epi32(core::hint::black_box(0x0003_00ff)); CHAINS];
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm256_add_epi32(*c, _mm256_madd_epi16(*c, b));
        }
    }
    let mut total = _mm256_setzero_si256();
    for c in acc {
        total = _mm256_add_epi32(total, c);
    }
    let mut lanes = [0i32; 8];
    _mm256_storeu_si256(lanes.as_mut_ptr() as *mut __m256i, total);
    lanes.iter().fold(0, |s, &x| s.wrapping_add(x))
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_the_macs_it_does() {
        if super::Isa::X86Avx2.supported() {
            assert_eq!(super::run(3), 3 * 14 * 16);
        }
    }
}
