//! fp32 GEMM for AVX2: `simd_gemm_f32` in 8-lane registers, two per 16-lane group, tiles
//! of 3 rows × 2 outputs (12 accumulators of the 16 registers). Of the tiles that fit,
//! 3 × 2 measured best on a 3072-deep layer (19.6 G multiply-adds/s against 16.8 for
//! 2 × 2 and 18.0 for 4 × 1, one Xeon core); 4 × 1 leads on 768-deep ones (22.0 against
//! 19.9), where fallback layers are rarer. The scalar reference's bits.

use super::x86_avx2_math::F32x8;

super::simd_gemm_f32::entry_point!(F32x8, 3 x 2, "avx2");
