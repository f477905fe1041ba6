//! Multi-head attention for NEON: `simd_attention_f32` in 4-lane registers, 16 keys or
//! columns (4 registers) per block, so 4 query rows hold 16 accumulators of the 32
//! registers. `attention` is fp32 (within tolerance of the reference), `attention_bf16`
//! is `Precision::Bf16` bit for bit.

use super::aarch64_neon_math::F32x4;
use super::scalar::{MatMut, MatRef};
use super::simd_attention_f32::{attention as generic, check};

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
    // SAFETY: NEON is in every AArch64 application target; bounds checked above.
    unsafe { generic::<F32x4, NB, false>(q, k, v, heads, head_dim, scale, out, scratch) }
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
    unsafe { generic::<F32x4, NB, true>(q, k, v, heads, head_dim, scale, out, scratch) }
}
