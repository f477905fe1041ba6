//! fp32 GEMM for AVX2: `simd_gemm_f32` in 8-lane registers, two per 16-lane group, tiles
//! of 2 rows × 2 outputs (8 accumulators of the 16 registers). The scalar reference's
//! bits.

use super::x86_avx2_math::F32x8;

super::simd_gemm_f32::entry_point!(F32x8, 2 x 2, "avx2");
