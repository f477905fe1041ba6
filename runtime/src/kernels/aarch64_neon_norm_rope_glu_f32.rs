//! RMS norm, RoPE and the GLU gate for NEON: `simd_norm_rope_glu_f32` in 4-lane
//! registers, the scalar reference's bits.

use super::aarch64_neon_math::F32x4;

super::simd_norm_rope_glu_f32::entry_points!(F32x4, "neon");
