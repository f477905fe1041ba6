//! The int8 multiply-accumulate ceiling of AVX-512 VNNI on one core: `vpdpbusd` on zmm
//! registers only, no loads or stores, so benchmarks can say what fraction of it a GEMM
//! reaches. 16 independent accumulator chains: more than latency × throughput on any
//! VNNI core so far (Ice Lake to Zen 5: latency 4–5, at most 2 per cycle), so the loop is
//! bound by issue rate alone.

use core::arch::x86_64::*;

use super::Isa;

const CHAINS: usize = 16;
/// u8 × i8 products one zmm `vpdpbusd` adds up.
const MACS_PER_OP: u64 = 64;

/// Runs `iters` rounds of 16 `vpdpbusd` and returns the multiply-accumulates done.
/// Panics when the CPU has no AVX-512 VNNI (a caller times only the session's ISA).
pub fn run(iters: u64) -> u64 {
    assert!(Isa::X86Avx512Vnni.supported());
    // SAFETY: AVX-512 VNNI support asserted above; the loop touches registers only.
    let sum = unsafe { chains(iters) };
    // Keeps the accumulators live: without a use of the result the loop is dead code.
    core::hint::black_box(sum);
    iters * CHAINS as u64 * MACS_PER_OP
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn chains(iters: u64) -> i32 {
    // Operands the optimiser cannot see through, so nothing is folded or hoisted.
    let a = _mm512_set1_epi32(core::hint::black_box(0x0102_0304));
    let b = _mm512_set1_epi32(core::hint::black_box(0x01ff_02fe));
    let mut acc = [_mm512_setzero_si512(); CHAINS];
    for _ in 0..iters {
        for c in acc.iter_mut() {
            *c = _mm512_dpbusd_epi32(*c, a, b);
        }
    }
    let mut total = _mm512_setzero_si512();
    for c in acc {
        total = _mm512_add_epi32(total, c);
    }
    _mm512_reduce_add_epi32(total)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counts_the_macs_it_does() {
        if super::Isa::X86Avx512Vnni.supported() {
            assert_eq!(super::run(3), 3 * 16 * 64);
        }
    }
}
