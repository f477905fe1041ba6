//! The int8 multiply-accumulate ceiling of the AVX2 kernels' own instructions on one
//! core: `vpsignb` (the weights given the activations' signs), `vpmaddubsw` (32 u8 × i8
//! products, summed in pairs), `vpmaddwd` against ones (the pairs into i32) then
//! `vpaddd`: `x86_avx2_gemm_u8i8_4x16`'s inner step, on ymm registers only. Each chain
//! feeds its accumulator back in as the multiplicand, or the loop-invariant product
//! would be hoisted out of the loop; that makes a chain four instructions long, and 12
//! chains (the other registers hold the weight operand, ones and a product) keep the
//! multiply ports busy through it. `run_narrow` is the same without `vpsignb`:
//! `x86_avx2_gemm_u8i7_4x16`'s step, whose 7-bit weights need no sign trick;
//! `run_narrow_x` adds two `vpmaddubsw` (64 products) before each `vpmaddwd`:
//! `x86_avx2_gemm_u7i7_4x16`'s step, for 7-bit weights and activations.

use core::arch::x86_64::*;

use super::Isa;

const CHAINS: usize = 12;
/// Products one ymm `vpmaddubsw` (with its `vpsignb`, `vpmaddwd` and `vpaddd`) adds up.
const MACS_PER_OP: u64 = 32;

/// Runs `iters` rounds of 12 `vpsignb` + `vpmaddubsw` + `vpmaddwd` + `vpaddd` and
/// returns the multiply-accumulates done. Panics when the CPU has no AVX2.
pub fn run(iters: u64) -> u64 {
    counted::<true, false>(iters)
}

/// [`run`] for 7-bit weights: 12 chains of `vpmaddubsw` + `vpmaddwd` + `vpaddd`.
pub fn run_narrow(iters: u64) -> u64 {
    counted::<false, false>(iters)
}

/// [`run`] for 7-bit weights and activations: 12 chains of two `vpmaddubsw`, `vpaddw`,
/// `vpmaddwd` and `vpaddd`, twice the products a step.
pub fn run_narrow_x(iters: u64) -> u64 {
    counted::<false, true>(iters)
}

fn counted<const SIGNED: bool, const PAIRED: bool>(iters: u64) -> u64 {
    assert!(Isa::X86Avx2.supported());
    // SAFETY: AVX2 support asserted above; the loop touches registers only.
    let sum = unsafe { chains::<SIGNED, PAIRED>(iters) };
    core::hint::black_box(sum);
    let per_step = if PAIRED { 2 } else { 1 } * MACS_PER_OP;
    iters * CHAINS as u64 * per_step
}

/// `SIGNED`: the 8-bit kernel's step (the weights given the activations' signs, then
/// the activations' magnitudes times them); otherwise the 7-bit kernel's (the u8
/// activations times the weights as they are).
#[target_feature(enable = "avx2")]
unsafe fn chains<const SIGNED: bool, const PAIRED: bool>(iters: u64) -> i32 {
    let w = if SIGNED {
        0x7f81_017f_u32
    } else {
        0x3fc1_013f_u32
    };
    let b = _mm256_set1_epi32(core::hint::black_box(w as i32));
    // A second weight operand, so the two products of a paired step are not one.
    let b2 = _mm256_set1_epi32(core::hint::black_box(0x3f3f_c1c1_u32 as i32));
    let ones = _mm256_set1_epi16(core::hint::black_box(1));
    let mut acc = [_mm256_set1_epi32(core::hint::black_box(0x0003_00ff)); CHAINS];
    for _ in 0..iters {
        for c in acc.iter_mut() {
            let pairs = if SIGNED {
                _mm256_maddubs_epi16(b, _mm256_sign_epi8(*c, b))
            } else if PAIRED {
                _mm256_add_epi16(_mm256_maddubs_epi16(*c, b), _mm256_maddubs_epi16(*c, b2))
            } else {
                _mm256_maddubs_epi16(*c, b)
            };
            *c = _mm256_add_epi32(*c, _mm256_madd_epi16(pairs, ones));
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
            assert_eq!(super::run(3), 3 * 12 * 32);
            assert_eq!(super::run_narrow(3), 3 * 12 * 32);
            assert_eq!(super::run_narrow_x(3), 3 * 12 * 64);
        }
    }
}
