//! Multi-head attention for AVX-512 in f32 registers: `simd_attention_f32` in 16-lane
//! registers, 64 keys or columns (4 registers) per block, so 4 query rows hold 16
//! accumulators of the 32 registers. `attention` is fp32 (within tolerance of the
//! reference); `attention_bf16` computes `Precision::Bf16` bit for bit on AVX-512 CPUs
//! without bf16 dot products (Skylake-SP to Ice Lake): no faster than f32, but the same
//! bits as every other CPU running that artifact.

use super::x86_avx512_math::F32x16;

super::simd_attention_f32::entry_points!(F32x16, 4, "avx512f,fma");
