//! The kernels compile, without a GPU: NVRTC (the `nvidia-cuda-nvrtc-cu12` wheel in CI)
//! turns the program into PTX and machine code for Jetson Orin (sm_87) and Hopper
//! (sm_90), and every kernel the backend launches is in it. Skips, saying so, where
//! NVRTC cannot be loaded — unless `VLM_REQUIRE_NVRTC` is set, as CI sets it.

use vlm_cuda::kernels::{self, CI_ARCHES, ENTRY_POINTS, SOURCE};

fn nvrtc_or_skip(test: &str) -> bool {
    if kernels::nvrtc_available() {
        return true;
    }
    assert!(
        std::env::var_os("VLM_REQUIRE_NVRTC").is_none(),
        "VLM_REQUIRE_NVRTC is set but NVRTC (libnvrtc.so or libnvrtc.so.12) cannot be \
         loaded: put the nvidia-cuda-nvrtc-cu12 wheel's lib directory on LD_LIBRARY_PATH"
    );
    eprintln!("SKIPPED {test}: NVRTC (libnvrtc.so or libnvrtc.so.12) is not on this machine");
    false
}

#[test]
fn every_kernel_compiles_for_orin_and_hopper() {
    if !nvrtc_or_skip("every_kernel_compiles_for_orin_and_hopper") {
        return;
    }
    let (major, minor) = kernels::nvrtc_version().unwrap();
    for arch in CI_ARCHES {
        let c = kernels::compile(arch).unwrap_or_else(|e| panic!("{e}"));
        for name in ENTRY_POINTS {
            assert!(
                c.ptx.contains(&format!(".entry {name}(")),
                "{name} is missing from the {arch} PTX"
            );
        }
        // The tensor-core GEMM is compiled in for sm_80 and up.
        assert!(
            c.ptx
                .contains("mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32"),
            "{arch}: no int8 tensor-core product in the PTX"
        );
        let cubin = c.cubin.expect("machine code for a real architecture");
        // An ELF image: ptxas ran on the PTX (inline assembly included).
        assert_eq!(&cubin[..4], b"\x7fELF", "{arch}: not machine code");
        eprintln!(
            "compiled {} kernels for {arch} with NVRTC {major}.{minor}: {} bytes of PTX, {} of machine code",
            ENTRY_POINTS.len(),
            c.ptx.len(),
            cubin.len()
        );
    }
}

/// Turing (sm_75) and Jetson Xavier (sm_72) have dp4a but no int8 `mma.sync` of this
/// shape: the program still compiles there, without it (the backend launches dp4a's GEMM
/// on such a GPU). NVRTC 13 no longer targets sm_72 (CUDA 13 dropped Volta), so Xavier is
/// checked with NVRTC 12 only, and the log says when it was not.
#[test]
fn the_program_compiles_for_a_gpu_without_int8_tensor_core_products() {
    if !nvrtc_or_skip("the_program_compiles_for_a_gpu_without_int8_tensor_core_products") {
        return;
    }
    let (major, minor) = kernels::nvrtc_version().unwrap();
    let mut arches = vec!["sm_75"];
    if kernels::nvrtc_targets(major, 72) {
        arches.push("sm_72");
    } else {
        // The rule the backend opens a device by is NVRTC's own.
        assert!(
            kernels::compile("sm_72").is_err(),
            "NVRTC {major}.{minor} compiles for sm_72, which nvrtc_targets denies"
        );
        eprintln!("sm_72 not compiled: NVRTC {major}.{minor} does not target it");
    }
    for arch in arches {
        let c = kernels::compile(arch).unwrap_or_else(|e| panic!("{e}"));
        assert!(!c.ptx.contains("mma.sync"), "{arch}");
        assert!(c.ptx.contains("dp4a"), "{arch}");
    }
}

#[test]
fn a_compile_error_names_the_architecture_and_carries_the_log() {
    if !nvrtc_or_skip("a_compile_error_names_the_architecture_and_carries_the_log") {
        return;
    }
    let e = kernels::compile("sm_1")
        .err()
        .expect("no such architecture");
    assert!(e.to_string().contains("sm_1"), "{e}");
}

/// The entry-point list is the source's `__global__` functions, no more, no less.
#[test]
fn the_entry_points_are_the_sources_kernels() {
    let mut found: Vec<&str> = SOURCE
        .split("__global__")
        .skip(1)
        .filter_map(|rest| {
            // `__global__ void [__launch_bounds__(n)] NAME(`
            let mut after = rest.split_once("void")?.1.trim_start();
            if let Some(bounded) = after.strip_prefix("__launch_bounds__") {
                after = bounded.split_once(')')?.1;
            }
            after.split('(').next().map(str::trim)
        })
        .collect();
    found.sort_unstable();
    let mut listed = ENTRY_POINTS.to_vec();
    listed.sort_unstable();
    assert_eq!(found, listed);
}

/// The constants the CUDA C spells by their bits are the runtime's.
#[test]
fn the_kernels_constants_are_the_references() {
    use vlm_runtime::kernels::scalar::{GELU_TANH_EXP2, GELU_TANH_EXP2_CUBE, SILU_EXP2};
    for (name, v) in [
        ("VLM_SILU_EXP2", SILU_EXP2),
        ("VLM_GELU_TANH_EXP2", GELU_TANH_EXP2),
        ("VLM_GELU_TANH_EXP2_CUBE", GELU_TANH_EXP2_CUBE),
    ] {
        let want = format!("#define {name} __int_as_float({:#010x})", v.to_bits());
        assert!(SOURCE.contains(&want), "{name}: expected `{want}`");
    }
    let poly = vlm_runtime::kernels::scalar::EXP2_POLY;
    for c in poly.iter().skip(1) {
        assert!(
            SOURCE.contains(&format!("{c:?}f")),
            "EXP2_POLY's {c} is not in the source"
        );
    }
}
