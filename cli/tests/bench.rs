//! `vlm bench` on the demo model quantized here: the figures it promises are printed
//! (never their values: timings depend on the machine), and a missing model is one
//! clean error line.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::{root, tmp, vlm};
use std::sync::OnceLock;

/// The demo artifact, quantized once for every test in this file.
fn artifact() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = tmp("demo.vlmq");
        let q = vlm(&[
            "quantize",
            "--model",
            root().join("models/demo").to_str().unwrap(),
            "--calib",
            root().join("models/demo-calib").to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--json",
        ]);
        assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
        out
    })
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
