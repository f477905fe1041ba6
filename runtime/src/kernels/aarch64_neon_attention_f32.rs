//! Multi-head attention for NEON: `simd_attention_f32` in 4-lane registers, 16 keys or
//! columns (4 registers) per block, so 4 query rows hold 16 accumulators of the 32
//! registers. `attention` is fp32 (within tolerance of the reference), `attention_bf16`
//! is `Precision::Bf16` bit for bit.

use super::aarch64_neon_math::F32x4;

super::simd_attention_f32::entry_points!(F32x4, 4, 4, "neon");
