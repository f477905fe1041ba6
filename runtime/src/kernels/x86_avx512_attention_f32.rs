//! Multi-head attention for AVX-512 in f32 registers: `simd_attention_f32` in 16-lane
//! registers, 64 keys or columns (4 registers) per block, so 4 query rows hold 16
//! accumulators of the 32 registers. `attention` is fp32 (within tolerance of the
//! reference); [`attention_bf16_emulated`] computes `Precision::Bf16` bit for bit on
//! AVX-512 CPUs without bf16 dot products (Skylake-SP to Ice Lake): no faster than f32,
//! but the same bits as every other CPU running that artifact.

use super::scalar::{MatMut, MatRef};
use super::simd_attention_f32::{attention as generic, check};
use super::x86_avx512_math::F32x16;

/// Registers of keys (or value columns) per block.
const NB: usize = 4;

#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    head_dim: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    check::<false>(&q, &k, &v, heads, head_dim, &out, scratch.len());
    // SAFETY: the dispatcher selected this kernel only where AVX-512 is supported;
    // bounds checked above.
    unsafe { f32_impl(q, k, v, heads, head_dim, scale, out, scratch) }
}

/// `Precision::Bf16` attention, emulated in f32 FMAs (see `simd_attention_f32`).
#[allow(clippy::too_many_arguments)]
pub fn attention_bf16_emulated(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    head_dim: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    check::<true>(&q, &k, &v, heads, head_dim, &out, scratch.len());
    // SAFETY: as above.
    unsafe { bf16_impl(q, k, v, heads, head_dim, scale, out, scratch) }
}

#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn f32_impl(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    dh: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    generic::<F32x16, NB, false>(q, k, v, heads, dh, scale, out, scratch)
}

#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn bf16_impl(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    dh: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    generic::<F32x16, NB, true>(q, k, v, heads, dh, scale, out, scratch)
}
