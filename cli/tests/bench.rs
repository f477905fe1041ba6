//! `vlm bench` on the demo model quantized here: the figures it promises are printed
//! (never their values: timings depend on the machine), and a missing model is one
//! clean error line.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{root, tmp, vlm, vlm_command};
use std::sync::OnceLock;

/// The demo model quantized to `name` with `extra` options.
fn quantize_demo(name: &str, extra: &[&str]) -> PathBuf {
    let out = tmp(name);
    let (model, calib) = (root().join("models/demo"), root().join("models/demo-calib"));
    let mut args = vec!["quantize", "--model", model.to_str().unwrap()];
    args.extend(["--calib", calib.to_str().unwrap()]);
    args.extend(["--out", out.to_str().unwrap(), "--json"]);
    args.extend(extra);
    let q = vlm(&args);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    out
}

/// The demo artifact, quantized once for every test in this file.
fn artifact() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| quantize_demo("demo.vlmq", &[]))
}

fn stdout_of(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn has_line(text: &str, key: &str) -> bool {
    text.lines().any(|l| l.starts_with(key))
}

#[test]
fn bench_prints_latency_throughput_and_peak() {
    let a = artifact().to_str().unwrap();
    for tower in ["vision", "text"] {
        let text = stdout_of(&vlm(&[
            "bench", "--model", a, "--tower", tower, "--runs", "2", "--warmup", "1",
        ]));
        for key in ["median", "min", "max", "GMAC/s", "peak", "runtime"] {
            assert!(has_line(&text, key), "no {key} line in:\n{text}");
        }
        assert!(text.contains(&format!("{tower} tower")), "{text}");
    }
}

#[test]
fn bench_json_and_kernels() {
    let a = artifact().to_str().unwrap();
    let out = stdout_of(&vlm(&[
        "bench",
        "--model",
        a,
        "--runs",
        "2",
        "--warmup",
        "1",
        "--threads",
        "2",
        "--kernels",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runtime"], "vlm-int8");
    assert_eq!(v["threads"], 2);
    for key in ["median_ms", "min_ms", "max_ms", "gmac_per_s"] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {v}");
    }
    assert!(v["min_ms"].as_f64() <= v["median_ms"].as_f64());
    assert!(v["median_ms"].as_f64() <= v["max_ms"].as_f64());
    assert!(v["macs"].as_u64().is_some_and(|m| m > 0));
    let shapes = v["kernels"].as_array().expect("a kernels list");
    assert!(!shapes.is_empty());
    for s in shapes {
        assert!(s["gmac_per_s"].as_f64().is_some_and(|x| x > 0.0), "{s}");
    }
    // Each shape once: the table is per distinct (M, K, N).
    let keys: Vec<_> = shapes.iter().map(|s| (&s["m"], &s["k"], &s["n"])).collect();
    for (i, k) in keys.iter().enumerate() {
        assert!(!keys[..i].contains(k), "{k:?} listed twice");
    }
    // Every timed run is reported, for scripts that pool runs over several rounds.
    let samples = v["samples_ms"].as_array().expect("a samples list");
    assert_eq!(samples.len(), 2);
    assert!(samples.iter().all(|x| x.as_f64().is_some_and(|x| x > 0.0)));
}

#[test]
fn bench_profile_accounts_for_every_op() {
    let a = artifact().to_str().unwrap();
    for tower in ["vision", "text"] {
        let out = stdout_of(&vlm(&[
            "bench",
            "--model",
            a,
            "--tower",
            tower,
            "--runs",
            "2",
            "--warmup",
            "0",
            "--profile",
            "--json",
        ]));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let rows = v["profile"].as_array().expect("a profile list");
        // Every op of the tower is in exactly one row, each row a distinct label.
        let ops = vlm_quantize::Artifact::load(Path::new(a))
            .unwrap()
            .runtime()
            .graph(match tower {
                "vision" => vlm_runtime::Role::ImageEncoder,
                _ => vlm_runtime::Role::TextEncoder,
            })
            .unwrap()
            .op_count();
        let calls: u64 = rows.iter().map(|r| r["calls"].as_u64().unwrap()).sum();
        assert_eq!(calls as usize, ops, "{v}");
        let labels: Vec<&str> = rows.iter().map(|r| r["op"].as_str().unwrap()).collect();
        for (i, l) in labels.iter().enumerate() {
            assert!(!labels[..i].contains(l), "{l} listed twice");
        }
        assert!(
            labels.iter().any(|l| l.starts_with("linear ")),
            "{labels:?}"
        );
        assert!(
            labels.iter().any(|l| l.starts_with("attention ")),
            "{labels:?}"
        );
        assert!(
            rows.iter()
                .all(|r| r["ms"].as_f64().is_some_and(|t| t >= 0.0)),
            "{v}"
        );
    }
    // The text table too.
    let text = stdout_of(&vlm(&[
        "bench",
        "--model",
        a,
        "--runs",
        "1",
        "--warmup",
        "0",
        "--profile",
    ]));
    assert!(text.contains("where the time goes"), "{text}");
    assert!(has_line(&text, "sum"), "{text}");
    // It profiles the vlm runtime: an fp32 folder is refused, cleanly.
    let out = vlm(&[
        "bench",
        "--model",
        root().join("models/demo").to_str().unwrap(),
        "--profile",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--profile"), "{stderr}");
}

#[test]
fn bench_times_the_fp32_folder_on_tract() {
    let demo = root().join("models/demo");
    let text = stdout_of(&vlm(&[
        "bench",
        "--model",
        demo.to_str().unwrap(),
        "--runs",
        "2",
        "--warmup",
        "1",
    ]));
    for key in ["median", "min", "max", "GMAC/s"] {
        assert!(has_line(&text, key), "no {key} line in:\n{text}");
    }
    assert!(text.contains("tract-fp32"), "{text}");
}

#[test]
fn bench_on_a_missing_model_is_one_error_line() {
    let missing = std::env::temp_dir().join("vlm-bench-no-such-model.vlmq");
    let out = vlm(&["bench", "--model", missing.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(out.stdout.is_empty());
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.starts_with("vlm: error: "), "{stderr}");
    assert!(stderr.contains("vlm-bench-no-such-model.vlmq"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// `vlm` with a kernel set forced and, where given, a library preloaded.
fn vlm_with(args: &[&str], kernels: Option<&str>, preload: Option<&Path>) -> Output {
    let mut c = vlm_command(args);
    if let Some(k) = kernels {
        c.env("VLM_KERNELS", k);
    }
    if let Some(p) = preload {
        c.env("LD_PRELOAD", p);
    }
    c.output().unwrap()
}

fn cpu_flags() -> Vec<String> {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn a_seven_bit_tower_is_measured_against_the_seven_bit_loop_on_avx2() {
    if !cpu_flags().iter().any(|f| f == "avx2") {
        eprintln!("skipped: this CPU has no AVX2");
        return;
    }
    let out = quantize_demo("demo7.vlmq", &["--weight-bits", "7"]);
    let bench = |model: &Path| -> serde_json::Value {
        let args = [
            "bench",
            "--model",
            model.to_str().unwrap(),
            "--runs",
            "1",
            "--warmup",
            "0",
            "--kernels",
            "--json",
        ];
        serde_json::from_str(&stdout_of(&vlm_with(&args, Some("x86-avx2"), None))).unwrap()
    };
    let narrow = bench(&out);
    assert_eq!(narrow["isa"], "x86-avx2", "{narrow}");
    let instruction = narrow["peak"]["instruction"].as_str().unwrap();
    assert!(instruction.contains("7-bit"), "{instruction}");
    assert!(!instruction.contains("vpsignb"), "{instruction}");
    // Each shape against its own width's loop: both widths' rows carry a percentage.
    for s in narrow["kernels"].as_array().unwrap() {
        assert!(s["peak_percent"].as_f64().is_some_and(|p| p > 0.0), "{s}");
    }
    let wide = bench(artifact());
    let instruction = wide["peak"]["instruction"].as_str().unwrap();
    assert!(instruction.contains("vpsignb"), "{instruction}");
}

/// `scripts/tier/x86_avx2_only.c`, the CPUID mask `BENCH_TIER=avx2` preloads into every
/// engine: under it vlm (like onnxruntime) finds AVX2 and nothing above it.
#[test]
fn the_avx2_tier_mask_hides_avx512_and_vnni() {
    let flags = cpu_flags();
    let has = |f: &str| flags.iter().any(|x| x == f);
    if !(has("avx512f") || has("avx_vnni")) || !has("cpuid_fault") {
        eprintln!("skipped: the mask needs a CPU with AVX-512 or AVX-VNNI and CPUID faulting");
        return;
    }
    let lib = tmp("x86_avx2_only.so");
    let cc = std::process::Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(root().join("scripts/tier/x86_avx2_only.c"))
        .output();
    let Ok(cc) = cc else {
        eprintln!("skipped: no C compiler");
        return;
    };
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let a = artifact().to_str().unwrap();
    let isa = |preload: Option<&Path>| -> String {
        let args = [
            "bench", "--model", a, "--runs", "1", "--warmup", "0", "--json",
        ];
        let v: serde_json::Value =
            serde_json::from_str(&stdout_of(&vlm_with(&args, None, preload))).unwrap();
        v["isa"].as_str().unwrap().to_string()
    };
    assert_ne!(isa(None), "x86-avx2");
    assert_eq!(isa(Some(&lib)), "x86-avx2");
    // A forced kernel set above what the masked CPU has is not taken either.
    let args = [
        "bench", "--model", a, "--runs", "1", "--warmup", "0", "--json",
    ];
    let v: serde_json::Value = serde_json::from_str(&stdout_of(&vlm_with(
        &args,
        Some("x86-avx512vnni"),
        Some(&lib),
    )))
    .unwrap();
    assert_eq!(v["isa"], "x86-avx2", "{v}");
}
