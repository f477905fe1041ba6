//! The GPU battery without a GPU: the Rust stack unchanged (cudarc, the backend, the
//! launches), over a fake CUDA driver that runs the kernels' own CUDA C on the CPU.
//!
//! The test builds the driver with the system C++ compiler — tests/emu/fake_cuda.cpp,
//! and `kernels::SOURCE` compiled as host C++ through tests/emu/cuda_shim.h, once per
//! emulated architecture — and loads it before anything asks for CUDA. Its SONAME is
//! `libcuda.so`, so cudarc's own `dlopen("libcuda.so")` gets it back. The emulated GPU
//! is strict where a real one is undefined (a barrier some threads skip, a shuffle from
//! an exited lane, a read past an allocation), and such a kernel fails its launch.
//!
//! sm_87 takes the tensor-core GEMM; sm_75, run in a child process (a process has one
//! driver), the dp4a GEMM. NVRTC still compiles the program, for `Gpu::open`, though the
//! emulator ignores the machine code. Without NVRTC or a C++ compiler each test prints
//! SKIPPED and passes — unless `VLM_REQUIRE_NVRTC` / `VLM_REQUIRE_CXX` is set.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use vlm_cuda::{device_count, kernels, Gpu};

mod common;

/// The architectures emulated, as compute capability × 10: the first in this process.
const ARCHES: [u32; 2] = [87, 75];
/// Picks the emulated architecture of a process (the child's sm_75).
const ARCH_VAR: &str = "VLM_EMU_CC";
const FLAGS: &[&str] = &[
    "-std=c++17",
    "-O2",
    // NVRTC compiles with --fmad=false: no product and sum may fuse here either.
    "-ffp-contract=off",
    // The kernels reinterpret shared and device bytes as CUDA code does.
    "-fno-strict-aliasing",
    // g++ 12.2 at -O2 miscompiles the bf16 attention's pairwise sum, `acc = acc + q[c + 1]
    // * k[c + 1]; acc = acc + q[c] * k[c];`: its SLP vectorizer adds the even product twice.
    // A compiler bug, not the kernel's: that loop alone, in a function of its own with
    // nothing undefined (-fsanitize=undefined is silent), gives the wrong sums at -O2 and
    // the right ones with -fno-tree-vectorize. NVRTC is another compiler; the real-GPU
    // battery checks its code.
    "-fno-tree-vectorize",
    "-fPIC",
];

extern "C" {
    fn dlopen(file: *const c_char, mode: c_int) -> *mut c_void;
    fn dlerror() -> *const c_char;
}
const RTLD_NOW: c_int = 2;
const RTLD_GLOBAL: c_int = 0x100;

fn compiler() -> String {
    std::env::var("CXX").unwrap_or_else(|_| "c++".to_string())
}

fn arch() -> u32 {
    match std::env::var(ARCH_VAR) {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|a| ARCHES.contains(a))
            .unwrap_or_else(|| panic!("{ARCH_VAR}={v}: expected one of {ARCHES:?}")),
        Err(_) => ARCHES[0],
    }
}

/// Why the emulated GPU cannot run here, if it cannot; panics instead where a `VLM_REQUIRE_*`
/// variable says the tool must be there.
fn missing_tool() -> Option<String> {
    if !cfg!(target_arch = "x86_64") {
        return Some("the emulator's fiber switch is written for x86-64 only".to_string());
    }
    let cxx = compiler();
    let has_cxx = Command::new(&cxx)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_cxx {
        assert!(
            std::env::var_os("VLM_REQUIRE_CXX").is_none(),
            "VLM_REQUIRE_CXX is set, but `{cxx}` does not run"
        );
        return Some(format!(
            "no C++ compiler (`{cxx}`) to build the emulated driver"
        ));
    }
    if !kernels::nvrtc_available() {
        assert!(
            std::env::var_os("VLM_REQUIRE_NVRTC").is_none(),
            "VLM_REQUIRE_NVRTC is set, but NVRTC cannot be loaded"
        );
        return Some("NVRTC cannot be loaded (Gpu::open compiles the program)".to_string());
    }
    None
}

/// `SOURCE` as host C++: each `extern __shared__ T name[];` becomes the shim's macro,
/// which makes every such array the one dynamic shared memory.
fn host_source() -> String {
    const DECL: &str = "extern __shared__ ";
    let mut out = String::new();
    let mut rest = kernels::SOURCE;
    while let Some(at) = rest.find(DECL) {
        out.push_str(&rest[..at]);
        let end = at + rest[at..].find(';').expect("a declaration ends");
        let decl = rest[at + DECL.len()..end].trim();
        let (ty, name) = decl.rsplit_once(' ').expect("`T name[]`");
        let name = name.strip_suffix("[]").expect("an unsized array");
        out.push_str(&format!("VLM_EMU_DYNAMIC_SHARED({ty}, {name})"));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// Every kernel of the source with its `__launch_bounds__` ("0" for none).
fn kernels_in_source() -> Vec<(String, String)> {
    const MARK: &str = "extern \"C\" __global__ void";
    let mut found = Vec::new();
    for piece in kernels::SOURCE.split(MARK).skip(1) {
        let mut rest = piece.trim_start();
        let mut bounds = "0".to_string();
        if let Some(r) = rest.strip_prefix("__launch_bounds__(") {
            let close = r.find(')').expect("launch bounds close");
            bounds = r[..close].trim().to_string();
            rest = r[close + 1..].trim_start();
        }
        let name = rest[..rest.find('(').expect("a parameter list")].trim();
        found.push((name.to_string(), bounds));
    }
    found
}

fn wrapper(arch: u32, shim: &Path) -> String {
    let table: String = kernels_in_source()
        .iter()
        .map(|(name, bounds)| format!("    VLM_EMU_KERNEL({name}, {bounds}),\n"))
        .collect();
    format!(
        "#include \"{shim}\"\n\
         #define VLM_EMULATED 1\n\
         #define __CUDA_ARCH__ {cuda_arch}\n\
         #include \"kernels.cu\"\n\
         static const vlm_emu_kernel vlm_emu_kernels[] = {{\n{table}}};\n\
         extern \"C\" const vlm_emu_kernel* vlm_emu_table(int* n) {{\n\
         \x20   *n = (int)(sizeof vlm_emu_kernels / sizeof vlm_emu_kernels[0]);\n\
         \x20   return vlm_emu_kernels;\n\
         }}\n\
         extern \"C\" int vlm_emu_arch(void) {{ return {cuda_arch}; }}\n",
        shim = shim.display(),
        cuda_arch = arch * 10,
    )
}

fn library_name(arch: u32) -> String {
    format!("libcuda-emulated-sm{arch}.so")
}

fn compile(args: &[&str], dir: &Path) -> std::process::Child {
    Command::new(compiler())
        .args(args)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the C++ compiler runs")
}

fn finish(child: std::process::Child, what: &str) {
    let out = child.wait_with_output().expect("the C++ compiler ends");
    assert!(
        out.status.success(),
        "building {what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The drivers' folder, built unless a build of the same sources is there already.
fn build() -> PathBuf {
    let emu = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emu");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{p:?}: {e}"));
    let (driver, shim) = (emu.join("fake_cuda.cpp"), emu.join("cuda_shim.h"));
    let source = host_source();
    let mut key = 0xcbf2_9ce4_8422_2325u64;
    let parts = [
        source.clone(),
        read(&driver),
        read(&shim),
        read(&emu.join("../host_shim.h")),
        FLAGS.join(" "),
        compiler(),
    ];
    for b in parts.iter().flat_map(|p| p.bytes().chain([0])) {
        key = (key ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let dir = root.join(format!("vlm-emu-{key:016x}"));
    if ARCHES.iter().all(|&a| dir.join(library_name(a)).is_file()) {
        return dir;
    }
    // Built apart and renamed into place, so a concurrent run never sees half a build.
    let tmp = root.join(format!("vlm-emu-{key:016x}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    std::fs::write(tmp.join("kernels.cu"), &source).unwrap();
    let driver_path = driver.display().to_string();
    let mut jobs = vec![(
        compile(
            &[FLAGS, &["-c", &driver_path, "-o", "fake_cuda.o"]].concat(),
            &tmp,
        ),
        "the fake driver".to_string(),
    )];
    for a in ARCHES {
        let w = format!("kernels_sm{a}.cpp");
        std::fs::write(tmp.join(&w), wrapper(a, &shim)).unwrap();
        let o = format!("kernels_sm{a}.o");
        jobs.push((
            compile(&[FLAGS, &["-c", &w, "-o", &o]].concat(), &tmp),
            format!("the kernels for sm_{a}"),
        ));
    }
    for (child, what) in jobs {
        finish(child, &what);
    }
    for a in ARCHES {
        let lib = library_name(a);
        let o = format!("kernels_sm{a}.o");
        let args = [
            "-shared",
            "-o",
            &lib,
            "fake_cuda.o",
            &o,
            // What cudarc asks the loader for: an object already loaded under this
            // SONAME is the one dlopen returns.
            "-Wl,-soname,libcuda.so",
            "-Wl,-z,defs",
            "-pthread",
        ];
        finish(compile(&args, &tmp), &lib);
    }
    if std::fs::rename(&tmp, &dir).is_err() {
        // Another run got there first with the same build.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    dir
}

/// Loads this process's emulated driver (once), or says why it cannot run here.
fn driver() -> Result<u32, String> {
    static LOADED: OnceLock<Result<u32, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            if let Some(why) = missing_tool() {
                return Err(why);
            }
            let arch = arch();
            let lib = build().join(library_name(arch));
            let path = CString::new(lib.to_str().expect("a UTF-8 path")).unwrap();
            // SAFETY: a library this test built; its initializers only set up statics.
            // The handle is never closed: cudarc holds symbols from it for good.
            let handle = unsafe { dlopen(path.as_ptr(), RTLD_NOW | RTLD_GLOBAL) };
            if handle.is_null() {
                // SAFETY: dlerror's string describes the failed dlopen just made.
                let e = unsafe { CStr::from_ptr(dlerror()) };
                panic!("loading {lib:?}: {}", e.to_string_lossy());
            }
            Ok(arch)
        })
        .clone()
}

/// The emulated GPU, checked to be the emulator (not a real driver found first).
fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    let arch = match driver() {
        Ok(a) => a,
        Err(why) => {
            eprintln!("SKIPPED {test}: {why}");
            return None;
        }
    };
    assert_eq!(device_count().unwrap(), 1);
    let gpu = Gpu::open(0).unwrap_or_else(|e| panic!("opening the emulated GPU: {e}"));
    assert!(
        gpu.name().contains("emulated"),
        "cudarc loaded another driver: {}",
        gpu.name()
    );
    let cc = gpu.capability();
    assert_eq!((cc.0 * 10 + cc.1) as u32, arch);
    Some(Arc::new(gpu))
}

#[test]
fn every_op_matches_the_reference_on_an_emulated_gpu() {
    if let Some(gpu) = gpu_or_skip("every_op_matches_the_reference_on_an_emulated_gpu") {
        common::battery(&gpu);
    }
}

/// A small ViT encoder (every op of a SigLIP tower, chained) against the reference.
#[test]
fn an_encoder_tower_matches_the_reference_on_an_emulated_gpu() {
    if let Some(gpu) = gpu_or_skip("an_encoder_tower_matches_the_reference_on_an_emulated_gpu") {
        common::tower(&gpu, (2, 40, 64, 4, 128));
    }
}

/// The other architectures (sm_75: the dp4a GEMM) in child processes, each with its
/// own driver.
#[test]
fn the_battery_passes_on_every_emulated_architecture() {
    let test = "the_battery_passes_on_every_emulated_architecture";
    if std::env::var_os(ARCH_VAR).is_some() {
        // A child, or a run pinned to one architecture: the other tests cover it.
        return;
    }
    if let Some(why) = missing_tool() {
        eprintln!("SKIPPED {test}: {why}");
        return;
    }
    build();
    for a in &ARCHES[1..] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "every_op_matches_the_reference_on_an_emulated_gpu",
                "an_encoder_tower_matches_the_reference_on_an_emulated_gpu",
                "the_demo_model_matches_the_cpu_on_an_emulated_gpu",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ARCH_VAR, a.to_string())
            .output()
            .unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        for line in log.lines().filter(|l| l.contains("emulated GPU")) {
            eprintln!("{line}");
        }
        assert!(
            out.status.success(),
            "sm_{a}:\n{}\n{log}",
            String::from_utf8_lossy(&out.stdout)
        );
        let ran = String::from_utf8_lossy(&out.stdout);
        assert!(ran.contains("3 passed"), "sm_{a} ran: {ran}");
        assert!(!log.contains("SKIPPED"), "sm_{a} skipped: {log}");
    }
}

/// The built-in demo artifact through the host crate, both towers, against the CPU.
#[test]
fn the_demo_model_matches_the_cpu_on_an_emulated_gpu() {
    if let Some(gpu) = gpu_or_skip("the_demo_model_matches_the_cpu_on_an_emulated_gpu") {
        common::demo(gpu);
    }
}
