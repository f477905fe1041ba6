//! Attention over an int8 KV cache for AVX2 (and the x86 levels above it, whose wider
//! registers a memory-bound decoder step would not use): `simd_attention_i8kv` in
//! 8-lane registers, the scalar reference's bits.

use super::x86_avx2_math::F32x8;

super::simd_attention_i8kv::entry_points!(F32x8, "avx2,fma");
