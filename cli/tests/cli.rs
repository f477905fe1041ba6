//! The `vlm` binary end to end on the shipped demo model: results, and bad input
//! answered with one clear line, exit code 2 and nothing on stdout.

use std::path::PathBuf;
mod common;
use common::{assert_clean_failure, root, tmp, vlm, vlm_json};

fn demo() -> PathBuf {
    root().join("models/demo")
}

fn example(name: &str) -> String {
    demo()
        .join("examples")
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn classifies_the_shipped_examples_with_the_default_model() {
    let labels = "red circle,blue star,yellow triangle,green heart";
    let v = vlm_json(&[
        "classify",
        &example("red-circle.png"),
        &example("two-blue-stars.png"),
        &example("yellow-triangle-wide.jpg"),
        "--labels",
        labels,
        "--template",
        "a {}",
        "--json",
    ]);
    let top: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["labels"][0]["label"].as_str().unwrap())
        .collect();
    assert_eq!(top, ["red circle", "blue star", "yellow triangle"]);
    for r in v.as_array().unwrap() {
        let labels = r["labels"].as_array().unwrap();
        assert_eq!(labels.len(), 4);
        // Independent sigmoids: each in [0, 1], not summing to 1 by construction.
        for l in labels {
            let p = l["probability"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&p));
        }
    }
}

/// `--threshold P` keeps exactly the labels at or above P, each image on its own: a
/// multi-label filter, unlike `--top`.
#[test]
fn threshold_keeps_the_labels_at_or_above_it() {
    let labels = "red circle,blue star,yellow triangle,green heart,purple cross";
    let (red, stars) = (example("red-circle.png"), example("two-blue-stars.png"));
    let run = |extra: &[&str]| {
        let mut args = vec![
            "classify",
            red.as_str(),
            stars.as_str(),
            "--labels",
            labels,
            "--template",
            "a {}",
            "--json",
        ];
        args.extend_from_slice(extra);
        let v = vlm_json(&args);
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| {
                r["labels"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["probability"].as_f64().unwrap())
                    .collect::<Vec<f64>>()
            })
            .collect::<Vec<_>>()
    };
    let all = run(&[]);
    // A threshold between the two images' best probabilities: the kept labels are
    // exactly those at or above it, whichever image they belong to.
    let mut probs: Vec<f64> = all.iter().flatten().copied().collect();
    probs.sort_by(f64::total_cmp);
    let p = probs[probs.len() / 2];
    let kept = run(&["--threshold", &p.to_string()]);
    for (a, k) in all.iter().zip(&kept) {
        // In f32, as the CLI compares: the JSON numbers are f32 values printed shortest.
        let want: Vec<f64> = a
            .iter()
            .copied()
            .filter(|&x| x as f32 >= p as f32)
            .collect();
        assert_eq!(*k, want, "threshold {p}");
    }
    assert!(kept.iter().flatten().count() < probs.len());
    assert_eq!(run(&["--threshold", "0"]), all);
    assert!(run(&["--threshold", "1"])
        .iter()
        .all(|k| k.iter().all(|&x| x >= 1.0)));
    for bad in ["1.5", "-0.1", "NaN", "half"] {
        let out = vlm(&[
            "classify",
            &example("red-circle.png"),
            "--labels",
            labels,
            "--threshold",
            bad,
        ]);
        assert_eq!(out.status.code(), Some(2), "--threshold {bad}");
        assert!(out.stdout.is_empty());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a probability"),
            "--threshold {bad}"
        );
    }
}

#[test]
fn labels_file_and_table_output() {
    let file = tmp("labels.txt");
    std::fs::write(&file, "# shapes\nred circle\n\nblue star\n").unwrap();
    let out = vlm(&[
        "classify",
        &example("red-circle.png"),
        "--labels-file",
        file.to_str().unwrap(),
        "--model",
        demo().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[1].ends_with("red circle"), "{text}");
}

#[test]
fn embed_prints_unit_vectors_of_the_models_dimension() {
    let out = vlm(&[
        "embed",
        "--image",
        &example("red-circle.png"),
        "--text",
        "a red circle",
        "--normalize",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(demo().join("config.json")).unwrap())
            .unwrap();
    let dim = cfg["embed_dim"].as_u64().unwrap() as usize;
    let rows: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        let e: Vec<f64> = r["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(e.len(), dim);
        let norm: f64 = e.iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn missing_image() {
    let out = vlm(&["classify", "no/such/photo.png", "--labels", "a,b"]);
    assert_clean_failure(&out, "no/such/photo.png");
}

#[test]
fn non_image_file() {
    let f = tmp("notes.jpg");
    std::fs::write(&f, "plain text, not a JPEG").unwrap();
    let out = vlm(&["classify", f.to_str().unwrap(), "--labels", "a,b"]);
    assert_clean_failure(&out, "notes.jpg");
}

#[test]
fn corrupt_image_leaves_no_partial_output() {
    let bytes = std::fs::read(example("two-blue-stars.png")).unwrap();
    let f = tmp("cut.png");
    std::fs::write(&f, &bytes[..bytes.len() / 2]).unwrap();
    // The good image comes first: its result must not be printed either.
    let out = vlm(&[
        "classify",
        &example("red-circle.png"),
        f.to_str().unwrap(),
        "--labels",
        "a,b",
    ]);
    assert_clean_failure(&out, "cut.png");
}

#[test]
fn truncated_jpeg() {
    let bytes = std::fs::read(example("chelsea-cat.jpg")).unwrap();
    let f = tmp("cut.jpg");
    std::fs::write(&f, &bytes[..bytes.len() / 3]).unwrap();
    let out = vlm(&["classify", f.to_str().unwrap(), "--labels", "a,b"]);
    assert_clean_failure(&out, "cut.jpg");
}

#[test]
fn huge_image_is_refused_before_decoding() {
    // A BMP header announcing 60000 x 60000 pixels (10 GB of RGB), and no pixels.
    let (w, h): (i32, i32) = (60_000, 60_000);
    let mut bmp = Vec::new();
    bmp.extend_from_slice(b"BM");
    bmp.extend_from_slice(&(54u32 + 64).to_le_bytes());
    bmp.extend_from_slice(&[0; 4]);
    bmp.extend_from_slice(&54u32.to_le_bytes());
    bmp.extend_from_slice(&40u32.to_le_bytes());
    bmp.extend_from_slice(&w.to_le_bytes());
    bmp.extend_from_slice(&h.to_le_bytes());
    bmp.extend_from_slice(&1u16.to_le_bytes());
    bmp.extend_from_slice(&24u16.to_le_bytes());
    bmp.extend_from_slice(&[0; 24]);
    bmp.extend_from_slice(&[0; 64]);
    let f = tmp("huge.bmp");
    std::fs::write(&f, &bmp).unwrap();
    let out = vlm(&["classify", f.to_str().unwrap(), "--labels", "a,b"]);
    assert_clean_failure(&out, "huge.bmp");
    assert!(String::from_utf8_lossy(&out.stderr).contains("too large"));
}

#[test]
fn missing_model_file() {
    let dir = tmp("model-without-text");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "vision.onnx", "tokenizer.json"] {
        std::fs::copy(demo().join(f), dir.join(f)).unwrap();
    }
    let out = vlm(&[
        "classify",
        &example("red-circle.png"),
        "--labels",
        "a",
        "--model",
        dir.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "text.onnx");
    let out = vlm(&[
        "classify",
        &example("red-circle.png"),
        "--labels",
        "a",
        "--model",
        "no/such/model",
    ]);
    assert_clean_failure(&out, "no/such/model");
}

#[test]
fn empty_label_list() {
    for labels in ["", " , ,"] {
        let out = vlm(&["classify", &example("red-circle.png"), "--labels", labels]);
        assert_clean_failure(&out, "no labels");
    }
    let empty = tmp("empty-labels.txt");
    std::fs::write(&empty, "# nothing\n\n").unwrap();
    let out = vlm(&[
        "classify",
        &example("red-circle.png"),
        "--labels-file",
        empty.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, "no labels");
    let out = vlm(&[
        "classify",
        &example("red-circle.png"),
        "--labels-file",
        "no/labels.txt",
    ]);
    assert_clean_failure(&out, "no/labels.txt");
}

#[test]
fn template_without_placeholder() {
    let out = vlm(&[
        "classify",
        &example("red-circle.png"),
        "--labels",
        "a",
        "--template",
        "a photo",
    ]);
    assert_clean_failure(&out, "--template");
}

/// `vlm eval zero-shot --model models/demo --data models/<folder>` as JSON.
fn eval_demo_on(folder: &str) -> serde_json::Value {
    let data = root().join("models").join(folder);
    vlm_json(&[
        "eval",
        "zero-shot",
        "--model",
        demo().to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ])
}

/// Rust's figures against the ones the recipe measured in PyTorch: within half a point
/// (as the foundation issue asks: PIL's and the image crate's resampling differ by at
/// most a grey level, which may flip a borderline item), or one item where a task has
/// fewer than 200.
fn assert_matches_recipe(got: &serde_json::Value, want: &serde_json::Value) {
    let (g, w) = (
        got["tasks"].as_array().unwrap(),
        want["tasks"].as_array().unwrap(),
    );
    assert_eq!(g.len(), w.len());
    for (g, w) in g.iter().zip(w) {
        assert_eq!(g["name"], w["name"]);
        let (a, b) = (
            g["accuracy"].as_f64().unwrap(),
            w["accuracy"].as_f64().unwrap(),
        );
        let tolerance = (100.0 / w["total"].as_f64().unwrap()).max(0.5) + 1e-9;
        eprintln!("{}: rust {a:.2} recipe {b:.2}", g["name"]);
        assert!(
            (a - b).abs() <= tolerance,
            "{}: {a} vs recipe {b}",
            g["name"]
        );
        // The probabilities use the model's t and b: lost or misread, these move far.
        for key in ["median_true", "median_best_wrong"] {
            let (a, b) = (
                g["calibration"][key].as_f64().unwrap(),
                w["calibration"][key].as_f64().unwrap(),
            );
            assert!(
                (a - b).abs() <= 0.02,
                "{}: {key} {a} vs recipe {b}",
                g["name"]
            );
        }
    }
    for (g, w) in got["retrieval"]
        .as_array()
        .unwrap()
        .iter()
        .zip(want["retrieval"].as_array().unwrap())
    {
        for key in ["image_to_text", "text_to_image"] {
            for k in 0..3 {
                let (a, b) = (g[key][k].as_f64().unwrap(), w[key][k].as_f64().unwrap());
                assert!((a - b).abs() <= 0.5, "{key}[{k}]: {a} vs recipe {b}");
            }
        }
    }
}

fn demo_manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(demo().join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn eval_reproduces_the_recipes_fp32_figures() {
    let manifest = demo_manifest();
    let got = eval_demo_on(manifest["eval_data"]["folder"].as_str().unwrap());
    assert_matches_recipe(&got, &manifest["fp32_figures"]);
}

/// The independent drawings are 128 px: the processor's resize runs, unlike on the eval
/// set (64 px, the model's size).
#[test]
fn eval_reproduces_the_recipes_figures_on_the_independent_drawings() {
    let manifest = demo_manifest();
    let drawings = &manifest["drawings"];
    let got = eval_demo_on(drawings["folder"].as_str().unwrap());
    assert_matches_recipe(&got, &drawings["figures"]);
}

#[test]
fn eval_with_a_missing_data_folder() {
    let out = vlm(&["eval", "zero-shot", "--data", "no/such/data"]);
    assert_clean_failure(&out, "no/such/data");
}

/// Every image variant the decoder's fuzzer starts from (each format and JPEG kind,
/// CMYK and YCCK included, 16-bit PNGs, a 1×1 and an 8000×10) classifies.
#[test]
fn every_image_variant_classifies() {
    let seeds = root().join("host/fuzz/seeds");
    let mut files: Vec<String> = std::fs::read_dir(&seeds)
        .unwrap()
        .map(|e| e.unwrap().path().to_str().unwrap().to_owned())
        .collect();
    files.sort();
    assert!(files.iter().any(|f| f.contains("cmyk")) && files.iter().any(|f| f.contains("ycck")));
    let mut args = vec!["classify"];
    args.extend(files.iter().map(String::as_str));
    args.extend(["--labels", "a red circle,a blue star", "--json"]);
    let v = vlm_json(&args);
    assert_eq!(v.as_array().unwrap().len(), files.len());
}

/// A bug that panics still ends as one `vlm: error:` line and exit 2, whether the panic
/// went through the panic hook or was resumed without it (as libjpeg's errors are).
#[test]
fn a_panic_is_one_error_line_and_exit_2() {
    for mode in ["panic", "resume"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_vlm"))
            .args(["classify", &example("red-circle.png"), "--labels", "a,b"])
            .env("VLM_DEBUG_PANIC", mode)
            .env_remove("VLM_MODEL")
            .output()
            .unwrap();
        assert_clean_failure(&out, "vlm: error: internal error");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("test panic"), "{mode}: {err}");
    }
}

/// `--device cuda` where the machine has no usable GPU: one line naming the reason, exit
/// 2; `--device auto` warns and answers on the CPU, as `--device cpu` does. On a machine
/// with a GPU the backend's own tests (backends/cuda/tests/gpu.rs) take over.
#[cfg(feature = "cuda")]
#[test]
fn device_cuda_without_a_gpu_fails_cleanly_and_auto_falls_back() {
    let why = match vlm_cuda::device_count() {
        Err(e) => e.to_string(),
        Ok(0) => "no CUDA device 0: this machine has 0".to_string(),
        Ok(n) => {
            eprintln!("SKIPPED device_cuda_without_a_gpu_fails_cleanly_and_auto_falls_back: this machine has {n} GPU(s)");
            return;
        }
    };
    let img = example("red-circle.png");
    let args = |device: &'static str| {
        [
            "classify",
            img.as_str(),
            "--labels",
            "a red circle,a blue square",
            "--device",
            device,
            "--json",
        ]
        .map(str::to_owned)
    };
    let run = |device| {
        let a = args(device);
        vlm(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let cuda = run("cuda");
    assert_clean_failure(&cuda, "--device cuda:0");
    assert!(String::from_utf8_lossy(&cuda.stderr).contains(&why));
    let folder = vlm(&[
        "bench",
        "--model",
        demo().to_str().unwrap(),
        "--device",
        "cuda:1",
    ]);
    assert_clean_failure(&folder, "model folder");
    let auto = run("auto");
    let cpu = run("cpu");
    assert_eq!(auto.status.code(), Some(0));
    assert_eq!(auto.stdout, cpu.stdout, "auto answers as the CPU does");
    let warning = String::from_utf8_lossy(&auto.stderr);
    assert!(warning.contains("warning: --device auto") && warning.contains("running on the CPU"));
    for bad in ["gpu", "cuda:x"] {
        let out = vlm(&["classify", img.as_str(), "--device", bad]);
        assert_eq!(out.status.code(), Some(2));
        assert!(String::from_utf8_lossy(&out.stderr).contains("expected cpu, cuda, cuda:N or auto"));
    }
}
