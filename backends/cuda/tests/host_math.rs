//! The kernels' scalar CUDA C gives the reference's bits, checked without a GPU: the
//! system C++ compiler builds kernels/common.cuh and kernels/erf.cu as plain C++ (with
//! tests/host_shim.h standing in for CUDA's built-ins, and no contraction into fused
//! multiply-adds, as NVRTC's --fmad=false), and a small driver (tests/host_math_driver.cpp)
//! evaluates them over a sweep of f32 bit patterns for comparison with
//! `vlm_runtime::kernels::scalar`, `libm::erff` and `libm::expf` (fp32 attention's).
//!
//! This proves the CUDA C is the reference's algorithm, operation for operation; the
//! GPU's IEEE single-precision arithmetic then gives the same bits (NaN payloads aside:
//! the GPU makes every NaN its canonical one). Skips, saying so, where no C++ compiler
//! runs (`CXX`, or `c++`) — unless `VLM_REQUIRE_CXX` is set, for CI, which installs g++.

use std::path::{Path, PathBuf};
use std::process::Command;

use vlm_runtime::kernels::scalar::{activate, bf16_round, exp2_clamped};
use vlm_runtime::ops::Activation;

/// The driver's outputs per input, in its order.
const COLUMNS: [&str; N] = [
    "vlm_erff",
    "vlm_expf",
    "vlm_activate(none)",
    "vlm_activate(gelu_tanh)",
    "vlm_activate(gelu_erf)",
    "vlm_activate(silu)",
    "vlm_exp2_clamped",
    "vlm_bf16_round",
];

/// How many outputs the driver writes per input.
const N: usize = 8;

/// A dense sweep takes every STRIDE-th bit pattern: a prime, so the low mantissa bits
/// and the exponents are all visited in many combinations.
const STRIDE: usize = 997;
/// The denser sweep's stride, where erff's rational and exponential branches are.
const DENSE_STRIDE: usize = 13;

/// The reference's value for each of the driver's columns.
fn reference(x: f32) -> [f32; N] {
    let act = |code: u32| activate(x, Activation::from_code(code).expect("an activation code"));
    [
        libm::erff(x),
        libm::expf(x),
        act(0),
        act(1),
        act(2),
        act(3),
        exp2_clamped(x),
        bf16_round(x),
    ]
}

fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".to_string())
}

fn cxx_or_skip(test: &str) -> bool {
    let cxx = compiler();
    if Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return true;
    }
    assert!(
        std::env::var_os("VLM_REQUIRE_CXX").is_none(),
        "VLM_REQUIRE_CXX is set but the C++ compiler `{cxx}` does not run: install g++"
    );
    eprintln!("SKIPPED {test}: no C++ compiler (`{cxx}`) on this machine");
    false
}

/// Builds the driver into `dir`, returning its path.
fn build_driver(dir: &Path) -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exe = dir.join("host_math_driver");
    let out = Command::new(compiler())
        .args([
            "-std=c++17",
            "-O2",
            "-ffp-contract=off",
            "-fno-fast-math",
            "-Wall",
        ])
        .arg("-I")
        .arg(crate_dir.join("kernels"))
        .arg("-I")
        .arg(crate_dir.join("tests"))
        .arg(crate_dir.join("tests/host_math_driver.cpp"))
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("running the C++ compiler");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the kernels' C++ did not compile:\n{log}"
    );
    if !log.trim().is_empty() {
        eprintln!("compiler warnings:\n{log}");
    }
    exe
}

/// Runs the driver on `inputs`, returning N output bit patterns per input.
fn run_driver(exe: &Path, dir: &Path, inputs: &[u32]) -> Vec<[u32; N]> {
    let (inp, outp) = (dir.join("inputs.bin"), dir.join("outputs.bin"));
    std::fs::write(&inp, bytemuck::cast_slice::<u32, u8>(inputs)).expect("writing the inputs");
    let out = Command::new(exe)
        .arg(&inp)
        .arg(&outp)
        .output()
        .expect("running the driver");
    assert!(
        out.status.success(),
        "the driver failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&outp).expect("reading the outputs");
    assert_eq!(
        bytes.len(),
        inputs.len() * N * 4,
        "the driver wrote a short output"
    );
    bytes
        .chunks_exact(N * 4)
        .map(|row| {
            std::array::from_fn(|i| u32::from_ne_bytes(row[i * 4..i * 4 + 4].try_into().unwrap()))
        })
        .collect()
}

/// Every input's f32 bit pattern: the dense sweep, a denser one over |x| in [0.5, 10),
/// the special values, and each side of every branch threshold in erff and expf.
fn inputs() -> Vec<u32> {
    let mut v: Vec<u32> = (0..=u32::MAX).step_by(STRIDE).collect();
    // Where erff and exact GELU use the exponentials (|x| ≥ 0.84375 and its √2 multiple),
    // a slip in operation order moves only a few results by one ulp: of one such slip
    // (expf's polynomial regrouped), the every-997th sweep caught 4 results, this 74.
    for sign in [0, 0x8000_0000] {
        v.extend(
            (0x3f00_0000..0x4120_0000u32)
                .step_by(DENSE_STRIDE)
                .map(|b| b | sign),
        );
    }
    let specials = [
        0.0f32,
        f32::INFINITY,
        f32::MAX,
        f32::MIN_POSITIVE,
        f32::EPSILON,
        1e-30,
        1e-3,
        0.5,
        0.84375,
        1.0,
        1.25,
        2.857,
        1.0 / 0.35,
        6.0,
        9.0,
        10.0,
        1e30,
        88.0,
        126.0,
        127.0,
        // erff(x·1/√2) crosses its thresholds at √2 times them.
        0.84375 * core::f32::consts::SQRT_2,
        1.25 * core::f32::consts::SQRT_2,
        6.0 * core::f32::consts::SQRT_2,
    ];
    for s in specials {
        v.extend([s.to_bits(), (-s).to_bits()]);
    }
    // Denormals, and NaNs quiet and signalling, of both signs and with payloads.
    for b in [
        1u32,
        2,
        0x0040_0000,
        0x007f_ffff,
        0x7fc0_0000,
        0x7f80_0001,
        0x7fa5_5555,
        0x7fff_ffff,
    ] {
        v.extend([b, b | 0x8000_0000]);
    }
    // Branch thresholds (erff's and expf's), 4 patterns either side.
    for t in [
        0x3180_0000u32, // erff: |x| < 2^-28
        0x3f58_0000,    // erff: |x| < 0.84375
        0x3fa0_0000,    // erff: |x| < 1.25
        0x4036_db6d,    // erff: |x| < 1/0.35
        0x40c0_0000,    // erff: |x| < 6
        0x3900_0000,    // expf: |x| > 2^-14
        0x3eb1_7218,    // expf: |x| > ln 2 / 2
        0x3f85_1592,    // expf: |x| > 1.5 ln 2
        0x42ae_ac50,    // expf: |x| >= 87.33655
        0x42b1_7218,    // expf: x >= 88.722839
        0x42cf_f1b5,    // expf: x <= -103.972084
    ] {
        for b in t - 4..=t + 4 {
            v.extend([b, b | 0x8000_0000]);
        }
    }
    v
}

#[test]
fn the_kernels_scalar_functions_give_the_references_bits() {
    if !cxx_or_skip("the_kernels_scalar_functions_give_the_references_bits") {
        return;
    }
    // Per process: a debug and a release run of this test share CARGO_TARGET_TMPDIR.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("host_math-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("creating the test's directory");
    let exe = build_driver(&dir);
    let inputs = inputs();
    let got = run_driver(&exe, &dir, &inputs);

    let mut mismatches = [0usize; N];
    let mut shown = 0;
    for (&bits, got) in inputs.iter().zip(&got) {
        let x = f32::from_bits(bits);
        for (col, want) in reference(x).into_iter().enumerate() {
            // Bits, not values: -0 against +0 and one NaN against another are mismatches.
            if got[col] != want.to_bits() {
                mismatches[col] += 1;
                if shown < 40 {
                    shown += 1;
                    eprintln!(
                        "MISMATCH {}({x:e} = {bits:#010x}): CUDA C {:#010x} ({:e}), reference {:#010x} ({want:e})",
                        COLUMNS[col],
                        got[col],
                        f32::from_bits(got[col]),
                        want.to_bits()
                    );
                }
            }
        }
    }
    for (name, n) in COLUMNS.iter().zip(mismatches) {
        eprintln!("{name}: {n} mismatches in {} inputs", inputs.len());
    }
    let _ = std::fs::remove_dir_all(&dir);
    let total: usize = mismatches.iter().sum();
    assert_eq!(
        total, 0,
        "{total} results differ from the reference's bits (first ones above)"
    );
}
