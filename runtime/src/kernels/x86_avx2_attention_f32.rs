//! Multi-head attention for AVX2: `simd_attention_f32` in 8-lane registers, 16 keys or
//! columns (2 registers) per block, so 4 query rows hold 8 accumulators of the 16
//! registers. `attention` is fp32 (within tolerance of the reference),
//! `attention_bf16` is `Precision::Bf16` bit for bit.

use super::scalar::{MatMut, MatRef};
use super::simd_attention_f32::{attention as generic, check};
use super::x86_avx2_math::F32x8;

/// Registers of keys (or value columns) per block.
const NB: usize = 2;

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
    // SAFETY: the dispatcher selected this kernel only where AVX2 and FMA are
    // supported; bounds checked above.
    unsafe { f32_impl(q, k, v, heads, head_dim, scale, out, scratch) }
}

/// `Precision::Bf16` attention, emulated in f32 FMAs (see `simd_attention_f32`).
#[allow(clippy::too_many_arguments)]
pub fn attention_bf16(
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

#[target_feature(enable = "avx2,fma")]
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
    generic::<F32x8, NB, false>(q, k, v, heads, dh, scale, out, scratch)
}

#[target_feature(enable = "avx2,fma")]
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
    generic::<F32x8, NB, true>(q, k, v, heads, dh, scale, out, scratch)
}
