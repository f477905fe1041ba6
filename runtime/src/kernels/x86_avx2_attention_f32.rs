//! Multi-head attention for AVX2: `simd_attention_f32` in 8-lane registers, 16 keys or
//! columns (2 registers) per block, so 4 query rows hold 8 accumulators of the 16
//! registers. `attention` is fp32 (within tolerance of the reference),
//! `attention_bf16` is `Precision::Bf16` bit for bit.

use super::x86_avx2_math::F32x8;

super::simd_attention_f32::entry_points!(F32x8, 2, "avx2,fma");
