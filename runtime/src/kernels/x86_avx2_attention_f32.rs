//! Multi-head attention for AVX2: `simd_attention_f32` in 8-lane registers, 16 keys or
//! columns (2 registers) per block and 6 query rows, so 12 accumulators of the 16
//! registers: 12 independent FMA chains where the two FMA ports at 4 cycles' latency
//! need 8 (with 4 rows, exactly 8, the loop ran at about 75 % of its FMA bound). `attention` is fp32 (within tolerance of the reference),
//! `attention_bf16` is `Precision::Bf16` bit for bit.

use super::x86_avx2_math::F32x8;

super::simd_attention_f32::entry_points!(F32x8, 2, 6, "avx2,fma");
