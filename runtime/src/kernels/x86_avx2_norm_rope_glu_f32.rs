//! RMS norm, RoPE and the GLU gate for AVX2: `simd_norm_rope_glu_f32` in 8-lane
//! registers, the scalar reference's bits.

use super::x86_avx2_math::F32x8;

super::simd_norm_rope_glu_f32::entry_points!(F32x8, "avx2,fma");
