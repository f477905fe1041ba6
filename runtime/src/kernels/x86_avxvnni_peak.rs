//! The int8 multiply-accumulate ceiling of AVX-VNNI on one core: the VEX `vpdpbusd` on
//! ymm registers only, as `x86_avxvnni_gemm_u8i8_4x16` uses it. 14 independent chains
//! (the other two registers hold the operands): more than latency × throughput on the
//! cores that have it (latency 4–5, at most 2 per cycle), so issue rate alone bounds it.

use core::arch::x86_64::*;

use super::Isa;

const CHAINS: usize = 14;
/// u8 × i8 products one ymm `vpdpbusd` adds up.
const MACS_PER_OP: u64 = 32;

/// Runs `iters` rounds of 14 `vpdpbusd` and returns the multiply-accumulates done.
/// Panics when the CPU has no AVX-VNNI.
pub fn run(iters: u64) -> u64 {
    assert!(Isa::X86AvxVnni.supported());
    // SAFETY: AVX-VNNI support asserted above; the loop touches registers only.
    let sum = unsafe { chains(iters) };
    core::hint::black_box(sum);
    iters * CHAINS as u64 * MACS_PER_OP
}

#[target_feature(enable = "avx2,avxvnni")]
unsafe fn chains(iters: u64) -> i32 {
    // Operands the optimiser cannot see through, so nothing is folded or hoisted.
    let a = _mm256_set1_epi32(core::hint::black_box(0x0102_0304));
    let b = _mm256_set1_epi32(core::hint::black_box(0x01ff_02fe));
    let mut acc = [_mm256_setzero_si256(); CHAINS];
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm256_dpbusd_avx_epi32(*c, a, b);
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
        if super::Isa::X86AvxVnni.supported() {
            assert_eq!(super::run(3), 3 * 14 * 32);
        }
    }
}
