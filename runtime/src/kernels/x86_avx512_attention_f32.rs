//! Multi-head attention for AVX-512 in f32 registers: `simd_attention_f32` in 16-lane
//! registers, 32 keys or columns (2 registers) per block and 6 query rows, so 12
//! accumulators: measured faster than 4 rows × 4 registers at 196 and 1,024 keys, as
//! each block's broadcast query element then feeds its FMAs from fewer key loads. `attention` is fp32 (within tolerance of the
//! reference); `attention_bf16` computes `Precision::Bf16` bit for bit on AVX-512 CPUs
//! without bf16 dot products (Skylake-SP to Ice Lake): no faster than f32, but the same
//! bits as every other CPU running that artifact.

use super::x86_avx512_math::F32x16;

super::simd_attention_f32::entry_points!(F32x16, 2, 6, "avx512f,fma");
