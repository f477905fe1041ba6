//! The kernels' CUDA C, and their compilation with NVRTC.
//!
//! One program, compiled when a backend opens a device, for that device's own
//! architecture (`sm_XY`: NVRTC runs ptxas, so the driver loads machine code and JITs
//! nothing). Run-time compilation keeps the build free of a CUDA toolkit — the crate and
//! the CLI build and run anywhere, and only a machine with a GPU needs NVRTC.

use std::ffi::{c_char, CStr, CString};

use cudarc::nvrtc::{result, sys};

use crate::CudaError;

/// The program: the shared definitions, then each op family's kernels.
pub const SOURCE: &str = concat!(
    include_str!("../kernels/common.cuh"),
    include_str!("../kernels/erf.cu"),
    include_str!("../kernels/linear.cu"),
    include_str!("../kernels/norm.cu"),
    include_str!("../kernels/elementwise.cu"),
    include_str!("../kernels/gather.cu"),
    // cache.cu first: attention.cu quantizes its queries with the cache's helper.
    include_str!("../kernels/cache.cu"),
    include_str!("../kernels/attention.cu"),
);

/// Every kernel the backend launches (a test finds each in the compiled code).
pub const ENTRY_POINTS: &[&str] = &[
    "vlm_quantize_u8",
    "vlm_gemm_u8i8_dp4a_64x64",
    "vlm_gemm_u8i8_mma_128x64",
    "vlm_gemv_u8i8_dp4a",
    "vlm_linear_f32",
    "vlm_layer_norm",
    "vlm_rms_norm",
    "vlm_add",
    "vlm_activate_in_place",
    "vlm_glu",
    "vlm_rope",
    "vlm_im2col",
    "vlm_add_rows_in_place",
    "vlm_embedding",
    "vlm_copy_rows",
    "vlm_pixel_shuffle",
    "vlm_cache_append",
    "vlm_cache_append_i8",
    "vlm_attention_f32",
    "vlm_attention_bf16",
    "vlm_attention_i8kv",
];

/// The architectures CI compiles for without a GPU: Jetson Orin, and Hopper.
pub const CI_ARCHES: &[&str] = &["sm_87", "sm_90"];

/// Whether NVRTC can be loaded here.
pub fn nvrtc_available() -> bool {
    // SAFETY: only tries to open the library (dlopen), calling nothing in it.
    unsafe { sys::is_culib_present() }
}

/// NVRTC's version, (major, minor).
pub fn nvrtc_version() -> Result<(i32, i32), CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: two out-pointers to live integers.
    unsafe { sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|e| CudaError::Compile {
            arch: String::new(),
            log: format!("{e:?}"),
        })?;
    Ok((major, minor))
}

/// Whether NVRTC of major version `nvrtc_major` compiles for compute capability `cc`
/// (× 10: 72 for Xavier's 7.2). CUDA 13 dropped everything below Turing (7.5), Volta and
/// Xavier among them; CUDA 12 reaches back to Maxwell (5.0). The newest architecture each
/// knows is left to NVRTC, whose refusal names it.
pub fn nvrtc_targets(nvrtc_major: i32, cc: u32) -> bool {
    match nvrtc_major {
        ..=12 => cc >= 50,
        _ => cc >= 75,
    }
}

/// What NVRTC made of [`SOURCE`] for one architecture.
pub struct Compiled {
    /// The PTX text.
    pub ptx: String,
    /// The machine code (`arch` an `sm_XY`; `None` for a virtual `compute_XY`).
    pub cubin: Option<Vec<u8>>,
}

/// Compiles [`SOURCE`] for `arch` ("sm_87", "compute_90", …).
pub fn compile(arch: &str) -> Result<Compiled, CudaError> {
    if !nvrtc_available() {
        return Err(CudaError::NoNvrtc);
    }
    let fail = |log: String| CudaError::Compile {
        arch: arch.to_string(),
        log,
    };
    let src = CString::new(SOURCE).map_err(|_| fail("a NUL byte in the source".into()))?;
    let name = CString::new("vlm_kernels.cu").expect("no NUL");
    let prog = result::create_program(&src, Some(&name)).map_err(|e| fail(format!("{e:?}")))?;
    let options = [
        format!("--gpu-architecture={arch}"),
        // Two roundings for every product and sum, as the CPU reference: the fused
        // multiply-adds the kernels need are written out (fmaf).
        "--fmad=false".to_string(),
        "--std=c++17".to_string(),
        "-default-device".to_string(),
    ];
    // SAFETY: `prog` was just created and is destroyed once, below.
    let out = unsafe {
        let compiled = result::compile_program(prog, &options);
        let made = match compiled {
            Ok(()) => get(prog, arch),
            Err(e) => {
                let log = result::get_program_log(prog)
                    .map(|l| text(&l))
                    .unwrap_or_default();
                Err(fail(format!("{e:?}\n{log}")))
            }
        };
        let _ = result::destroy_program(prog);
        made
    };
    out
}

/// The PTX, and the machine code for a real architecture.
///
/// # Safety
/// `prog` is a program NVRTC compiled and has not destroyed.
unsafe fn get(prog: sys::nvrtcProgram, arch: &str) -> Result<Compiled, CudaError> {
    let fail = |e: cudarc::nvrtc::result::NvrtcError| CudaError::Compile {
        arch: arch.to_string(),
        log: format!("{e:?}"),
    };
    let ptx = text(&result::get_ptx(prog).map_err(fail)?);
    let cubin = if arch.starts_with("sm_") {
        let mut size = 0usize;
        sys::nvrtcGetCUBINSize(prog, &mut size)
            .result()
            .map_err(fail)?;
        let mut bytes = vec![0u8; size];
        sys::nvrtcGetCUBIN(prog, bytes.as_mut_ptr() as *mut c_char)
            .result()
            .map_err(fail)?;
        Some(bytes)
    } else {
        None
    };
    Ok(Compiled { ptx, cubin })
}

fn text(chars: &[c_char]) -> String {
    // NVRTC's strings end with a NUL. (c_char is i8 on x86 and u8 on Arm.)
    let bytes: &[u8] = bytemuck::cast_slice(chars);
    CStr::from_bytes_until_nul(bytes)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

#[cfg(test)]
mod tests {
    use super::nvrtc_targets;

    #[test]
    fn cuda_13_dropped_what_came_before_turing() {
        // Xavier (7.2), Turing (7.5), Orin (8.7), Hopper (9.0).
        assert!(nvrtc_targets(12, 72) && nvrtc_targets(12, 75) && nvrtc_targets(12, 90));
        assert!(!nvrtc_targets(13, 72) && !nvrtc_targets(13, 70));
        assert!(nvrtc_targets(13, 75) && nvrtc_targets(13, 87) && nvrtc_targets(13, 90));
        assert!(!nvrtc_targets(12, 35));
    }
}
