//! fp32 GEMM for NEON: `simd_gemm_f32` in 4-lane registers, four per 16-lane group,
//! tiles of 2 rows × 2 outputs (16 accumulators of the 32 registers). The scalar
//! reference's bits.

use super::aarch64_neon_math::F32x4;

super::simd_gemm_f32::entry_point!(F32x4, 2 x 2, "neon");
