//! RMS norm, RoPE and the GLU gate for AVX-512: `simd_norm_rope_glu_f32` in 16-lane
//! registers, the scalar reference's bits.

use super::x86_avx512_math::F32x16;

super::simd_norm_rope_glu_f32::entry_points!(F32x16, "avx512f,fma");
