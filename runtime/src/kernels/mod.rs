//! Kernels, one file per ISA × op × type × tile, all behind [`Isa`]: the dispatch is this
//! one `match`, chosen once per session. `scalar` is the reference every other kernel is
//! tested against (`tests/kernels.rs`): integer results bit for bit, floats within the
//! tolerance written beside the test.
//!
//! Choice: with `std`, the best ISA the running CPU has (and `VLM_KERNELS=<name>` forces
//! one, for A/B runs on one binary); without `std`, what the build targets.
//!
//! The f32-register attention of NEON, AVX2 and AVX-512 is one plan written once over
//! `simd::F32Simd` (`simd_attention_f32`); each ISA's file instantiates it in 4, 8 or
//! 16 lanes. The three Arm levels differ only in their GEMM: the float kernels are NEON.

/// Brackets one iteration of an Arm int8 kernel's inner loop for llvm-mca:
/// `scripts/arm-mca.sh` builds the runtime with `--cfg vlm_mca` and asks llvm-mca how
/// many cycles each bracketed region takes per core. The region's name carries the tile's
/// row count and the multiply-accumulates one iteration does, which the script divides by.
/// In every other build it is nothing.
#[cfg(all(vlm_mca, target_arch = "aarch64", target_feature = "neon"))]
macro_rules! mca_region {
    ($edge:literal, $name:literal, $rows:expr, $macs:expr) => {
        core::arch::asm!(
            concat!("// LLVM-MCA-", $edge, " ", $name, "-r{r}-macs{m}"),
            r = const $rows,
            m = const $macs,
            options(nomem, nostack, preserves_flags)
        )
    };
}
#[cfg(all(not(vlm_mca), target_arch = "aarch64", target_feature = "neon"))]
macro_rules! mca_region {
    ($($t:tt)*) => {};
}

pub mod scalar;
// The ISA-generic kernels, for the ISAs that instantiate them.
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[allow(unsafe_code)]
mod simd;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[allow(unsafe_code)]
mod simd_attention_f32;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[allow(unsafe_code)]
mod simd_attention_i8kv;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[allow(unsafe_code)]
mod simd_gemm_f32;
#[cfg(any(
    target_arch = "x86_64",
    all(target_arch = "aarch64", target_feature = "neon")
))]
#[allow(unsafe_code)]
mod simd_norm_rope_glu_f32;

#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_dotprod_gemm_u8i8_4x16;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_i8mm_gemm_u8i8_8x8;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_neon_attention_f32;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_neon_attention_i8kv;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_neon_gemm_f32_2x2;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_neon_gemm_u8i8_3x8;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_neon_layernorm_f32;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_neon_math;
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
#[allow(unsafe_code)]
pub mod aarch64_neon_norm_rope_glu_f32;
#[cfg(all(target_arch = "arm", any(feature = "arm-dsp", not(target_os = "none"))))]
#[allow(unsafe_code)]
pub mod arm_dsp_gemm_u8i8_1x4;
#[cfg(all(target_arch = "arm", target_os = "none", feature = "arm-mve"))]
#[allow(unsafe_code)]
pub mod arm_mve_gemm_u8i8_1x4;
#[cfg(target_arch = "arm")]
#[allow(unsafe_code)]
pub mod armv7_neon_gemm_u8i8_1x8;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_attention_f32;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_attention_i8kv;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_gemm_f32_3x2;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_gemm_u7i7_4x16;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_gemm_u8i7_4x16;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_gemm_u8i8_4x16;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_gemv_u8i8_1x16;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_layernorm_f32;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_math;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_norm_rope_glu_f32;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx2_peak;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512_attention_f32;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512_gemm_f32_4x4;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512_layernorm_f32;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512_math;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512_norm_rope_glu_f32;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512bf16_attention_bf16;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512vnni_gemm_u8i8_8x32;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512vnni_gemv_u8i8_1x16;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avx512vnni_peak;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avxvnni_gemm_u8i8_4x16;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avxvnni_gemv_u8i8_1x16;
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
pub mod x86_avxvnni_peak;

use crate::ops::{Activation, Precision};
use scalar::{Epilogue, MatMut, MatRef, Panels};

/// Query rows the SIMD attention kernels process per block, at most (each ISA picks its
/// own count up to this; f32, bf16 emulated in f32).
const ATTENTION_ROWS: usize = 6;
const ATTENTION_BF16_ROWS: usize = 6;

/// Scratch floats of the f32 SIMD attention: one head's transposed keys and a block of
/// score rows.
const fn attention_f32_scratch(head_dim: usize, nk: usize) -> usize {
    head_dim
        .saturating_mul(nk)
        .saturating_add(nk.saturating_mul(ATTENTION_ROWS))
}

/// Scratch words of the bf16 SIMD attention: one head's key pairs (`⌈dh/2⌉ × nk`) and
/// value pairs (`⌈nk/2⌉ × dh`), and for a block of query rows their pairs, score rows and
/// weight pairs.
const fn attention_bf16_scratch(head_dim: usize, nk: usize) -> usize {
    let (dhp, nkp) = (head_dim.div_ceil(2), nk.div_ceil(2));
    dhp.saturating_mul(nk)
        .saturating_add(nkp.saturating_mul(head_dim))
        .saturating_add(
            dhp.saturating_add(nk)
                .saturating_add(nkp)
                .saturating_mul(ATTENTION_BF16_ROWS),
        )
}

/// Scratch floats of the f32 SIMD attention computing bf16 (no bf16 instructions): its
/// f32 scratch plus one head's rounded values and a block's rounded queries.
const fn attention_bf16_emulated_scratch(head_dim: usize, nk: usize) -> usize {
    attention_f32_scratch(head_dim, nk)
        .saturating_add(nk.saturating_mul(head_dim))
        .saturating_add(head_dim.saturating_mul(ATTENTION_ROWS))
}

/// The element-wise functions each SIMD math module computes bit for bit like the scalar
/// reference: its `element_wise` applies one to a register's worth of lanes, so one test
/// battery checks every ISA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementWise {
    /// `scalar::exp2_clamped`.
    Exp2,
    /// `scalar::softmax_weight`, for arguments ≤ 126 or a quiet NaN (a softmax's
    /// differences are arithmetic results: never signalling).
    SoftmaxWeight,
    /// `scalar::activate(_, GeluTanh)`.
    GeluTanh,
    /// `scalar::bf16_round`.
    Bf16Round,
}

/// An instruction-set level with its own kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    /// x86-64 with AVX2 (and FMA): int8 through `vpmaddubsw`, exact on flipped
    /// activations and symmetric weights.
    X86Avx2,
    /// x86-64 with AVX2, FMA and AVX-VNNI (ymm `vpdpbusd`, no AVX-512): the AVX2 kernels
    /// but for the int8 GEMM.
    X86AvxVnni,
    /// x86-64 with AVX-512 (F, BW, VL) and VNNI: `vpdpbusd`.
    X86Avx512Vnni,
    /// AArch64 baseline NEON: int8 through exact 16-bit products.
    ArmNeon,
    /// AArch64 with the dot product extension (Armv8.2+): `sdot`.
    ArmDotprod,
    /// AArch64 with the int8 matrix multiply extension (Armv8.6+): `usmmla`.
    ArmI8mm,
    /// 32-bit Arm with NEON (armv7 boards; found at run time on Linux): the int8 GEMM,
    /// exact 16-bit products as on baseline AArch64 NEON; the scalar reference for the
    /// rest (32-bit NEON float arithmetic flushes subnormals, which would change bits).
    ArmV7Neon,
    /// 32-bit Arm with the DSP instructions (`smlad`) and no NEON: Cortex-M4 / M7 / M33
    /// with DSP / M55 / M85 (opted in by the runtime's `arm-dsp` feature: Armv8-M's DSP
    /// extension is optional and bare metal cannot ask), and any Armv6+ Linux core. The
    /// int8 GEMM; the scalar reference for the rest.
    ArmDsp,
    /// Armv8.1-M with Helium (MVE) and the DSP instructions: Cortex-M55 / M85 (opted in
    /// by the runtime's `arm-mve` feature). The int8 GEMM; the scalar reference for the
    /// rest.
    ArmMve,
}

/// Whether the kernel's auxiliary vector says the CPU has NEON (`HWCAP_NEON`). Rust's
/// `is_arm_feature_detected!` and its 32-bit Arm target features are not stable, so
/// the one word is read from `/proc/self/auxv` (pairs of 32-bit type and value), once.
#[cfg(all(target_arch = "arm", feature = "std"))]
fn armv7_hwcap_neon() -> bool {
    const AT_HWCAP: u32 = 16;
    const HWCAP_NEON: u32 = 1 << 12;
    static NEON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *NEON.get_or_init(|| {
        let Ok(auxv) = std::fs::read("/proc/self/auxv") else {
            return false;
        };
        auxv.chunks_exact(8)
            .map(|e| {
                let word = |i: usize| u32::from_ne_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
                (word(0), word(4))
            })
            .find(|&(kind, _)| kind == AT_HWCAP)
            .is_some_and(|(_, caps)| caps & HWCAP_NEON != 0)
    })
}

/// Every ISA, best first.
pub const ALL: [Isa; 10] = [
    Isa::X86Avx512Vnni,
    Isa::X86AvxVnni,
    Isa::X86Avx2,
    Isa::ArmI8mm,
    Isa::ArmDotprod,
    Isa::ArmNeon,
    Isa::ArmV7Neon,
    Isa::ArmMve,
    Isa::ArmDsp,
    Isa::Scalar,
];

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::X86Avx2 => "x86-avx2",
            Isa::X86AvxVnni => "x86-avxvnni",
            Isa::X86Avx512Vnni => "x86-avx512vnni",
            Isa::ArmNeon => "aarch64-neon",
            Isa::ArmDotprod => "aarch64-dotprod",
            Isa::ArmI8mm => "aarch64-i8mm",
            Isa::ArmV7Neon => "armv7-neon",
            Isa::ArmDsp => "arm-dsp",
            Isa::ArmMve => "arm-mve",
        }
    }

    pub fn from_name(name: &str) -> Option<Isa> {
        ALL.into_iter().find(|i| i.name() == name)
    }

    /// Whether the running CPU can execute this ISA's kernels.
    pub fn supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Isa::X86Avx2 => {
                std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
            }
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Isa::X86AvxVnni => Isa::X86Avx2.supported() && std::is_x86_feature_detected!("avxvnni"),
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Isa::X86Avx512Vnni => {
                std::is_x86_feature_detected!("avx512f")
                    && std::is_x86_feature_detected!("avx512bw")
                    && std::is_x86_feature_detected!("avx512vl")
                    && std::is_x86_feature_detected!("avx512vnni")
                    && std::is_x86_feature_detected!("fma")
            }
            #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
            Isa::X86Avx2 => cfg!(all(target_feature = "avx2", target_feature = "fma")),
            #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
            Isa::X86AvxVnni => cfg!(all(
                target_feature = "avx2",
                target_feature = "fma",
                target_feature = "avxvnni"
            )),
            #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
            Isa::X86Avx512Vnni => cfg!(all(
                target_feature = "avx512f",
                target_feature = "avx512bw",
                target_feature = "avx512vl",
                target_feature = "avx512vnni",
                target_feature = "fma"
            )),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::X86Avx2 | Isa::X86AvxVnni | Isa::X86Avx512Vnni => false,
            // NEON is in every AArch64 application target (the Arm kernels are built
            // only there); the soft-float embedded targets lack it.
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon => true,
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", feature = "std"))]
            Isa::ArmDotprod => std::arch::is_aarch64_feature_detected!("dotprod"),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", feature = "std"))]
            Isa::ArmI8mm => std::arch::is_aarch64_feature_detected!("i8mm"),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(feature = "std")))]
            Isa::ArmDotprod => cfg!(target_feature = "dotprod"),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon", not(feature = "std")))]
            Isa::ArmI8mm => cfg!(target_feature = "i8mm"),
            #[cfg(not(all(target_arch = "aarch64", target_feature = "neon")))]
            Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm => false,
            #[cfg(all(target_arch = "arm", feature = "std"))]
            Isa::ArmV7Neon => armv7_hwcap_neon(),
            #[cfg(not(all(target_arch = "arm", feature = "std")))]
            Isa::ArmV7Neon => false,
            #[cfg(all(target_arch = "arm", target_os = "none"))]
            Isa::ArmDsp => cfg!(feature = "arm-dsp"),
            #[cfg(all(target_arch = "arm", not(target_os = "none")))]
            Isa::ArmDsp => true,
            #[cfg(not(target_arch = "arm"))]
            Isa::ArmDsp => false,
            // Helium kernels are built only for bare-metal M-profile cores.
            Isa::ArmMve => cfg!(all(
                target_arch = "arm",
                target_os = "none",
                feature = "arm-mve",
                feature = "arm-dsp"
            )),
        }
    }

    /// The best supported ISA, unless `VLM_KERNELS` names another supported one.
    pub fn detect() -> Isa {
        #[cfg(feature = "std")]
        if let Some(forced) = std::env::var("VLM_KERNELS")
            .ok()
            .and_then(|n| Isa::from_name(&n))
            .filter(|i| i.supported())
        {
            return forced;
        }
        ALL.into_iter()
            .find(|i| i.supported())
            .unwrap_or(Isa::Scalar)
    }

    /// `out = epilogue(q · Wᵀ)`: `q` is `out.rows` rows of `scalar::q_stride(k)` bytes,
    /// `w` panel-packed int8 `[out.cols, k]`. Callers pass only supported ISAs.
    pub fn gemm_u8i8(self, q: &[u8], k: usize, w: Panels, ep: &Epilogue, out: MatMut) {
        let Panels {
            w,
            narrow,
            narrow_x,
        } = w;
        // Only AVX2 has kernels of their own for 7-bit weights and activations.
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (narrow, narrow_x);
        match self {
            #[cfg(target_arch = "x86_64")]
            // One row: the matrix–vector kernel (the same bits, read at memory speed).
            Isa::X86Avx512Vnni if self.supported() && out.rows == 1 => {
                x86_avx512vnni_gemv_u8i8_1x16::gemv(q, k, w, ep, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx512Vnni if self.supported() => {
                x86_avx512vnni_gemm_u8i8_8x32::gemm(q, k, w, ep, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86AvxVnni if self.supported() && out.rows == 1 => {
                x86_avxvnni_gemv_u8i8_1x16::gemv(q, k, w, ep, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86AvxVnni if self.supported() => {
                x86_avxvnni_gemm_u8i8_4x16::gemm(q, k, w, ep, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 if self.supported() && out.rows == 1 => {
                x86_avx2_gemv_u8i8_1x16::gemv(q, k, w, ep, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 if self.supported() && narrow && narrow_x => {
                x86_avx2_gemm_u7i7_4x16::gemm(q, k, w, ep, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 if self.supported() && narrow => {
                x86_avx2_gemm_u8i7_4x16::gemm(q, k, w, ep, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 if self.supported() => x86_avx2_gemm_u8i8_4x16::gemm(q, k, w, ep, out),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmI8mm if self.supported() => aarch64_i8mm_gemm_u8i8_8x8::gemm(q, k, w, ep, out),
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmDotprod if self.supported() => {
                aarch64_dotprod_gemm_u8i8_4x16::gemm(q, k, w, ep, out)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon if self.supported() => aarch64_neon_gemm_u8i8_3x8::gemm(q, k, w, ep, out),
            #[cfg(target_arch = "arm")]
            Isa::ArmV7Neon if self.supported() => armv7_neon_gemm_u8i8_1x8::gemm(q, k, w, ep, out),
            #[cfg(all(target_arch = "arm", any(feature = "arm-dsp", not(target_os = "none"))))]
            Isa::ArmDsp if self.supported() => arm_dsp_gemm_u8i8_1x4::gemm(q, k, w, ep, out),
            #[cfg(all(target_arch = "arm", target_os = "none", feature = "arm-mve"))]
            Isa::ArmMve if self.supported() => arm_mve_gemm_u8i8_1x4::gemm(q, k, w, ep, out),
            _ => scalar::gemm_u8i8(q, k, w, ep, out),
        }
    }

    /// `out = act(x · Wᵀ + bias)` in fp32, `W` row-major `[out.cols, x.cols]`: the
    /// reference's bits on every ISA (`simd_gemm_f32`).
    pub fn gemm_f32(
        self,
        x: MatRef,
        w: &[f32],
        bias: Option<&[f32]>,
        act: crate::ops::Activation,
        out: MatMut,
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx512Vnni if self.supported() => {
                x86_avx512_gemm_f32_4x4::gemm(x, w, bias, act, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 | Isa::X86AvxVnni if self.supported() => {
                x86_avx2_gemm_f32_3x2::gemm(x, w, bias, act, out)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm if self.supported() => {
                aarch64_neon_gemm_f32_2x2::gemm(x, w, bias, act, out)
            }
            _ => scalar::linear_f32(x, w, bias, act, out),
        }
    }

    /// [`Isa::gemm_f32`] with the rows split across `threads` scoped threads (each row
    /// is computed as on one thread: the same bits).
    #[cfg(feature = "std")]
    pub fn gemm_f32_threads(
        self,
        threads: usize,
        x: MatRef,
        w: &[f32],
        bias: Option<&[f32]>,
        act: crate::ops::Activation,
        out: MatMut,
    ) {
        split_rows(threads, 8, out, core::iter::repeat(()), |row, m, ()| {
            self.gemm_f32(x.rows_from(row, m.rows), w, bias, act, m)
        });
    }

    /// [`Isa::gemm_u8i8`] across `threads` threads (std only: a Jetson or a Pi has 4–12
    /// cores; a microcontroller has one). Few rows (a decoder step, a prefill chunk) are
    /// split by weight panels, so each thread streams its share of the weights once;
    /// with more than one row, every block but the first writes into `spare` (of
    /// [`gemm_u8i8_spare_floats`] floats; shorter: the rows are split instead), copied
    /// into place after. Many rows are split by rows.
    #[cfg(feature = "std")]
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_u8i8_threads(
        self,
        threads: usize,
        q: &[u8],
        k: usize,
        w: Panels,
        ep: &Epilogue,
        out: MatMut,
        spare: &mut [f32],
    ) {
        if splits_by_panels(threads, &out, spare) {
            return split_panels(threads, k, w, ep, out, spare, &|w, ep, m| {
                self.gemm_u8i8(q, k, w, ep, m)
            });
        }
        let qs = scalar::q_stride(k);
        split_rows(
            threads,
            ROW_SPLIT_MIN_ROWS,
            out,
            core::iter::repeat(()),
            |row, m, ()| self.gemm_u8i8(&q[row * qs..], k, w, ep, m),
        );
    }

    /// Quantizes `x` to u8 into `q` ([`Isa::quantize_u8`]; with no `x`, `q` holds it
    /// already) and multiplies it as [`Isa::gemm_u8i8_threads`] does. Split by rows, each
    /// thread quantizes its own rows: one thread quantizing them all while the others
    /// wait cost about 1 % of a 2-thread image tower.
    #[cfg(feature = "std")]
    #[allow(clippy::too_many_arguments)]
    pub fn quantize_gemm_u8i8_threads(
        self,
        threads: usize,
        x: Option<(MatRef, scalar::XQuant)>,
        q: &mut [u8],
        k: usize,
        w: Panels,
        ep: &Epilogue,
        out: MatMut,
        spare: &mut [f32],
    ) {
        if splits_by_panels(threads, &out, spare) {
            if let Some((x, p)) = x {
                self.quantize_u8(x, p.scale, p.zero, p.top, q);
            }
            return self.gemm_u8i8_threads(threads, q, k, w, ep, out, spare);
        }
        let qs = scalar::q_stride(k);
        split_rows_with_bytes(threads, ROW_SPLIT_MIN_ROWS, out, q, qs, |row, m, q| {
            if let Some((x, p)) = x {
                self.quantize_u8(x.rows_from(row, m.rows), p.scale, p.zero, p.top, q);
            }
            self.gemm_u8i8(q, k, w, ep, m)
        });
    }

    /// Scratch floats [`Isa::attention`] needs for `nk` keys (the most any ISA needs for
    /// this precision, so one artifact's plan serves every CPU).
    pub const fn attention_scratch_floats(
        head_dim: usize,
        nk: usize,
        precision: Precision,
    ) -> usize {
        let simd = match precision {
            Precision::F32 => attention_f32_scratch(head_dim, nk),
            Precision::Bf16 => {
                let (a, b) = (
                    attention_bf16_scratch(head_dim, nk),
                    attention_bf16_emulated_scratch(head_dim, nk),
                );
                if a > b {
                    a
                } else {
                    b
                }
            }
        };
        let reference = scalar::attention_scratch(head_dim, nk, precision);
        if simd > reference {
            simd
        } else {
            reference
        }
    }

    /// Whether this ISA's CPUs multiply bf16 natively (AVX-512 BF16 on x86).
    #[cfg(target_arch = "x86_64")]
    fn has_bf16(self) -> bool {
        match self {
            #[cfg(all(target_arch = "x86_64", feature = "std"))]
            Isa::X86Avx512Vnni => std::is_x86_feature_detected!("avx512bf16"),
            #[cfg(all(target_arch = "x86_64", not(feature = "std")))]
            Isa::X86Avx512Vnni => cfg!(target_feature = "avx512bf16"),
            _ => false,
        }
    }

    /// Multi-head attention (see [`scalar::attention`]).
    #[allow(clippy::too_many_arguments)]
    pub fn attention(
        self,
        q: MatRef,
        k: MatRef,
        v: MatRef,
        heads: usize,
        head_dim: usize,
        scale: f32,
        precision: Precision,
        out: MatMut,
        scratch: &mut [f32],
    ) {
        match (self, precision) {
            #[cfg(target_arch = "x86_64")]
            (Isa::X86Avx512Vnni, Precision::F32) if self.supported() => {
                x86_avx512_attention_f32::attention(q, k, v, heads, head_dim, scale, out, scratch)
            }
            #[cfg(target_arch = "x86_64")]
            (Isa::X86Avx512Vnni, Precision::Bf16) if self.supported() && self.has_bf16() => {
                x86_avx512bf16_attention_bf16::attention(
                    q, k, v, heads, head_dim, scale, out, scratch,
                )
            }
            #[cfg(target_arch = "x86_64")]
            (Isa::X86Avx512Vnni, Precision::Bf16) if self.supported() => {
                x86_avx512_attention_f32::attention_bf16(
                    q, k, v, heads, head_dim, scale, out, scratch,
                )
            }
            #[cfg(target_arch = "x86_64")]
            (Isa::X86Avx2 | Isa::X86AvxVnni, Precision::F32) if self.supported() => {
                x86_avx2_attention_f32::attention(q, k, v, heads, head_dim, scale, out, scratch)
            }
            #[cfg(target_arch = "x86_64")]
            (Isa::X86Avx2 | Isa::X86AvxVnni, Precision::Bf16) if self.supported() => {
                x86_avx2_attention_f32::attention_bf16(
                    q, k, v, heads, head_dim, scale, out, scratch,
                )
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            (Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm, Precision::F32) if self.supported() => {
                aarch64_neon_attention_f32::attention(q, k, v, heads, head_dim, scale, out, scratch)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            (Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm, Precision::Bf16)
                if self.supported() =>
            {
                aarch64_neon_attention_f32::attention_bf16(
                    q, k, v, heads, head_dim, scale, out, scratch,
                )
            }
            _ => scalar::attention(q, k, v, heads, head_dim, scale, precision, out, scratch),
        }
    }

    /// Row-wise layer norm (see [`scalar::layer_norm`]).
    pub fn layer_norm(self, x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, out: MatMut) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx512Vnni if self.supported() => {
                x86_avx512_layernorm_f32::layer_norm(x, gamma, beta, eps, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 | Isa::X86AvxVnni if self.supported() => {
                x86_avx2_layernorm_f32::layer_norm(x, gamma, beta, eps, out)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm if self.supported() => {
                aarch64_neon_layernorm_f32::layer_norm(x, gamma, beta, eps, out)
            }
            _ => scalar::layer_norm(x, gamma, beta, eps, out),
        }
    }

    /// Row-wise RMS norm (see [`scalar::rms_norm`]).
    pub fn rms_norm(self, x: MatRef, gamma: &[f32], eps: f32, out: MatMut) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx512Vnni if self.supported() => {
                x86_avx512_norm_rope_glu_f32::rms_norm(x, gamma, eps, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 | Isa::X86AvxVnni if self.supported() => {
                x86_avx2_norm_rope_glu_f32::rms_norm(x, gamma, eps, out)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm if self.supported() => {
                aarch64_neon_norm_rope_glu_f32::rms_norm(x, gamma, eps, out)
            }
            _ => scalar::rms_norm(x, gamma, eps, out),
        }
    }

    /// One query head over an int8 KV cache (see [`scalar::attention_i8kv_head`]): the
    /// reference's bits on every ISA. x86 levels above AVX2 take the AVX2 build (the
    /// step is memory-bound).
    #[allow(clippy::too_many_arguments)]
    pub fn attention_i8kv_head(
        self,
        q: &[f32],
        k: scalar::I8Rows,
        v: scalar::I8Rows,
        head: usize,
        keys: usize,
        scale: f32,
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 | Isa::X86AvxVnni | Isa::X86Avx512Vnni
                if self.supported() && Isa::X86Avx2.supported() =>
            {
                x86_avx2_attention_i8kv::attention_i8kv_head(
                    q, k, v, head, keys, scale, out, scratch,
                )
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm if self.supported() => {
                aarch64_neon_attention_i8kv::attention_i8kv_head(
                    q, k, v, head, keys, scale, out, scratch,
                )
            }
            _ => scalar::attention_i8kv_head(q, k, v, head, keys, scale, out, scratch, |w| {
                w.iter_mut().for_each(|x| *x = scalar::softmax_weight(*x))
            }),
        }
    }

    /// Rotary position embedding in place (see [`scalar::rope`]).
    pub fn rope(self, x: MatMut, heads: usize, head_dim: usize, table: &[f32], first: usize) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx512Vnni if self.supported() => {
                x86_avx512_norm_rope_glu_f32::rope(x, heads, head_dim, table, first)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 | Isa::X86AvxVnni if self.supported() => {
                x86_avx2_norm_rope_glu_f32::rope(x, heads, head_dim, table, first)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm if self.supported() => {
                aarch64_neon_norm_rope_glu_f32::rope(x, heads, head_dim, table, first)
            }
            _ => scalar::rope(x, heads, head_dim, table, first),
        }
    }

    /// A gated linear unit's gate (see [`scalar::glu`]).
    pub fn glu(self, x: MatRef, act: Activation, out: MatMut) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx512Vnni if self.supported() => {
                x86_avx512_norm_rope_glu_f32::glu(x, act, out)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 | Isa::X86AvxVnni if self.supported() => {
                x86_avx2_norm_rope_glu_f32::glu(x, act, out)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm if self.supported() => {
                aarch64_neon_norm_rope_glu_f32::glu(x, act, out)
            }
            _ => scalar::glu(x, act, out),
        }
    }

    /// Quantizes activations to u8 (see [`scalar::quantize_u8`]).
    pub fn quantize_u8(self, x: MatRef, scale: f32, zero: i32, top: u8, q: &mut [u8]) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx512Vnni if self.supported() => {
                x86_avx512_math::quantize_u8(x, scale, zero, top, q)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::X86Avx2 | Isa::X86AvxVnni if self.supported() => {
                x86_avx2_math::quantize_u8(x, scale, zero, top, q)
            }
            #[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
            Isa::ArmNeon | Isa::ArmDotprod | Isa::ArmI8mm if self.supported() => {
                aarch64_neon_math::quantize_u8(x, scale, zero, top, q)
            }
            _ => scalar::quantize_u8(x, scale, zero, top, q),
        }
    }
}

/// Runs `f(first_row, block)` on `out` split into row blocks, one per thread, for a
/// row-by-row op (layer norm, a residual sum): each row is computed as on one thread.
/// Below 16 rows (a decoder step, a short prefill) the hand-off would cost about what
/// it saves, so those run here whole. Without std, one block.
pub(crate) fn by_rows(threads: usize, out: MatMut, f: impl Fn(usize, MatMut) + Sync) {
    #[cfg(feature = "std")]
    split_rows(threads, 16, out, core::iter::repeat(()), |row, m, ()| {
        f(row, m)
    });
    #[cfg(not(feature = "std"))]
    {
        let _ = threads;
        f(0, out)
    }
}

/// Runs `f(first_row, block, extra)` on `out` split into row blocks of at least
/// `min_rows` rows (below a few rows per thread the hand-off costs more than it saves),
/// one per thread, each with the next of `extras` (its own scratch, say). The blocks run
/// on rayon's pool through nested `join`s, whose jobs live on the stack: splitting
/// allocates nothing, so decoding stays allocation-free on any number of threads, and a
/// hand-off costs microseconds where spawning a thread per op cost tens. One block runs
/// right here.
#[cfg(feature = "std")]
pub(crate) fn split_rows<T: Send>(
    threads: usize,
    min_rows: usize,
    out: MatMut,
    mut extras: impl Iterator<Item = T> + Send,
    f: impl Fn(usize, MatMut, T) + Sync,
) {
    let per = rows_per_block(threads, min_rows, out.rows);
    let (rows, cols, stride) = (out.rows, out.cols, out.stride);
    blocks(
        out.data,
        0,
        rows,
        per,
        &mut extras,
        &|row, n, data, x| {
            f(
                row,
                MatMut {
                    data,
                    rows: n,
                    cols,
                    stride,
                },
                x,
            )
        },
        stride,
    );
}

/// Rows in each of [`split_rows`]' blocks but the last.
#[cfg(feature = "std")]
fn rows_per_block(threads: usize, min_rows: usize, rows: usize) -> usize {
    rows.div_ceil(threads.min(rows / min_rows.max(1)).max(1))
}

/// [`split_rows`] with the same rows of a byte matrix beside `out` (`bytes`, of
/// `byte_stride` bytes a row) handed to each block.
#[cfg(feature = "std")]
pub(crate) fn split_rows_with_bytes(
    threads: usize,
    min_rows: usize,
    out: MatMut,
    bytes: &mut [u8],
    byte_stride: usize,
    f: impl Fn(usize, MatMut, &mut [u8]) + Sync,
) {
    let per = rows_per_block(threads, min_rows, out.rows);
    let chunks = bytes.chunks_mut((per * byte_stride).max(1));
    split_rows(threads, min_rows, out, chunks, f);
}

/// `data` (rows `first..first + left` of a matrix with `stride`) in blocks of `per`
/// rows: the first on this thread, the rest joined beside it.
#[cfg(feature = "std")]
fn blocks<T: Send, I: Iterator<Item = T> + Send>(
    data: &mut [f32],
    first: usize,
    left: usize,
    per: usize,
    extras: &mut I,
    f: &(impl Fn(usize, usize, &mut [f32], T) + Sync),
    stride: usize,
) {
    let x = extras.next().expect("an extra for every block");
    if left <= per {
        return f(first, left, data, x);
    }
    let (head, tail) = data.split_at_mut(per * stride);
    crate::team::join(
        || f(first, per, head, x),
        || blocks(tail, first + per, left - per, per, extras, f, stride),
    );
}

/// Rows at most that [`Isa::gemm_u8i8_threads`] splits by weight panels: below this, a
/// row split would have every thread stream all the weights for a few rows each.
pub const PANEL_SPLIT_ROWS: usize = 16;

/// Rows at least in each block of a threaded int8 GEMM split by rows.
#[cfg(feature = "std")]
const ROW_SPLIT_MIN_ROWS: usize = 8;

/// Whether [`Isa::gemm_u8i8_threads`] splits `out` by weight panels (few rows, and the
/// spare they need) rather than by rows.
#[cfg(feature = "std")]
fn splits_by_panels(threads: usize, out: &MatMut, spare: &[f32]) -> bool {
    out.rows <= PANEL_SPLIT_ROWS
        && spare.len() >= gemm_u8i8_spare_floats(out.rows, out.cols, threads)
}

/// Spare floats [`Isa::gemm_u8i8_threads`] wants for a `rows × cols` output on
/// `threads` threads (none for one row or one thread, or rows it splits by rows).
pub const fn gemm_u8i8_spare_floats(rows: usize, cols: usize, threads: usize) -> usize {
    if threads <= 1 || rows <= 1 || rows > PANEL_SPLIT_ROWS {
        0
    } else {
        // Each block after the first takes at most the columns left of its parent's,
        // and there are `threads - 1` of them.
        rows * cols * (threads - 1)
    }
}

/// A few-row GEMM (a decoder step's, a prefill chunk's) split by output columns: blocks
/// of whole pairs of weight panels, one per thread, each computing its columns exactly
/// as the whole call would (the same bits). One row's columns are contiguous; with more
/// rows the second block onwards is computed into `spare` and copied into place.
#[cfg(feature = "std")]
fn split_panels(
    threads: usize,
    k: usize,
    w: Panels,
    ep: &Epilogue,
    out: MatMut,
    spare: &mut [f32],
    f: &(impl Fn(Panels, &Epilogue, MatMut) + Sync),
) {
    use crate::format::{PANEL_K, PANEL_N};
    let panel_bytes = scalar::q_stride(k) / PANEL_K * PANEL_N * PANEL_K;
    let panels = out.cols.div_ceil(PANEL_N);
    let per = panels.div_ceil(threads.max(1)).next_multiple_of(2);
    let cols = (per * PANEL_N).min(out.cols);
    let rest = out.cols - cols;
    let (rows, stride) = (out.rows, out.stride);
    if threads <= 1 || per < 4 || per >= panels || (rows > 1 && spare.len() < rows * rest) {
        return f(w, ep, out);
    }
    let (w_head, w_tail) = w.split_at(per * panel_bytes);
    let ep_tail = Epilogue {
        x_scale: ep.x_scale,
        w_scale: &ep.w_scale[cols..],
        bias: ep.bias.map(|b| &b[cols..]),
        act: ep.act,
    };
    let mat = |data, cols, stride| MatMut {
        data,
        rows,
        cols,
        stride,
    };
    // One row's columns are contiguous: the tail block writes its own slice. With more
    // rows it writes `mine`, copied into place once both blocks are done.
    let (mine, spare) = spare.split_at_mut(if rows == 1 { 0 } else { rows * rest });
    let out = out.data;
    let (head, tail) = if rows == 1 {
        out.split_at_mut(cols)
    } else {
        (&mut *out, &mut *mine)
    };
    crate::team::join(
        || f(w_head, ep, mat(head, cols, stride)),
        || {
            split_panels(
                threads - 1,
                k,
                w_tail,
                &ep_tail,
                mat(tail, rest, rest),
                spare,
                f,
            )
        },
    );
    if rows > 1 {
        for (r, src) in mine.chunks_exact(rest).enumerate() {
            out[r * stride + cols..r * stride + cols + rest].copy_from_slice(src);
        }
    }
}
