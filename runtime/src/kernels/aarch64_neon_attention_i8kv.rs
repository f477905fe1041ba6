//! Attention over an int8 KV cache for AArch64 NEON: `simd_attention_i8kv` in 4-lane
//! registers, the scalar reference's bits.

use super::aarch64_neon_math::F32x4;

super::simd_attention_i8kv::entry_points!(F32x4, "neon");
