//! fp32 GEMM for AVX-512: `simd_gemm_f32` in 16-lane registers, tiles of 4 rows × 4
//! outputs (16 accumulators of the 32 registers). The scalar reference's bits.

use super::x86_avx512_math::F32x16;

super::simd_gemm_f32::entry_point!(F32x16, 4 x 4, "avx512f");
