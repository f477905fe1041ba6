//! `vlm quantize` on the shipped demo model, then the artifact used by `classify`, `eval`
//! and `embed`; and bad input to both answered with one clear line, exit 2, no artifact.

use std::path::Path;

mod common;
use common::{assert_clean_failure, root, tmp, vlm, vlm_json};

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The acceptance budget of the int8 pipeline on the demo model: 1 point below fp32,
/// counted in items, since no set resolves finer than one: at most `max(1, ⌊n/100⌋)` of
/// a set of `n` more misses (108 items: 1; 636: 6; 70 captions: 1, i.e. 1.43 points).
/// Both sides are the same numbers on every CPU (the artifact is byte-identical, and the
/// report's fp32 side runs the runtime's fp32 graphs in the reference order), so the
/// verdict cannot depend on the machine.
fn allowed_extra_misses(n: usize) -> i64 {
    (n / 100).max(1) as i64
}

/// Hits out of `n` from a percentage the report rounded nowhere (`100·hits/n`).
fn hits(percent: f64, n: usize) -> i64 {
    (percent * n as f64 / 100.0).round() as i64
}
/// Artifact size against the fp32 ONNX files.
const MAX_SIZE_RATIO: f64 = 0.27;

#[test]
fn demo_model_quantizes_within_the_accuracy_budget_and_the_artifact_runs() {
    let out = tmp("demo.vlmq");
    let html = tmp("report.html");
    let demo = root().join("models/demo");
    let eval = root().join("models/demo-eval");
    let args = demo_quantize(&["--eval", p(&eval), "--out", p(&out), "--report", p(&html)]);
    let q = vlm(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&q.stdout);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert!(stdout.contains("zero-shot"), "{stdout}");
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(html.with_extension("json")).unwrap())
            .unwrap();

    let ratio = report["sizes"]["ratio"].as_f64().unwrap();
    assert!(
        ratio <= MAX_SIZE_RATIO,
        "artifact is {:.1} % of the ONNX",
        100.0 * ratio
    );
    assert_eq!(
        report["sizes"]["artifact_bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    let zs = &report["zero_shot"];
    let (fp, q8) = (&zs["fp32"], &zs["int8"]);
    let mut checked = 0;
    for (a, b) in fp["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .zip(q8["tasks"].as_array().unwrap())
    {
        let n = a["total"].as_u64().unwrap() as usize;
        let drop = a["correct"].as_i64().unwrap() - b["correct"].as_i64().unwrap();
        assert!(
            drop <= allowed_extra_misses(n),
            "{}: int8 gets {drop} fewer of {n} right than fp32 (budget {})",
            a["name"],
            allowed_extra_misses(n)
        );
        // Quantization must not move what a threshold means either.
        for key in ["median_true", "median_best_wrong"] {
            let (x, y) = (
                a["calibration"][key].as_f64().unwrap(),
                b["calibration"][key].as_f64().unwrap(),
            );
            assert!(
                (x - y).abs() <= 0.05,
                "{}: {key} fp32 {x} int8 {y}",
                a["name"]
            );
        }
        checked += 1;
    }
    for (a, b) in fp["retrieval"]
        .as_array()
        .unwrap()
        .iter()
        .zip(q8["retrieval"].as_array().unwrap())
    {
        for (dir, count) in [("image_to_text", "images"), ("text_to_image", "captions")] {
            let n = a[count].as_u64().unwrap() as usize;
            let drop = hits(a[dir][1].as_f64().unwrap(), n) - hits(b[dir][1].as_f64().unwrap(), n);
            assert!(
                drop <= allowed_extra_misses(n),
                "{dir} R@5: int8 finds {drop} fewer of {n} than fp32 (budget {})",
                allowed_extra_misses(n)
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "the report has {checked} zero-shot rows");

    // The artifact runs on the runtime: eval reproduces the report's int8 figures.
    let again = vlm_json(&[
        "eval",
        "zero-shot",
        "--model",
        p(&out),
        "--data",
        p(&root().join("models/demo-eval")),
        "--json",
    ]);
    assert_eq!(again, *q8);

    // Stored labels: classify with the image tower alone.
    let red = root().join("models/demo/examples/red-circle.png");
    let r = vlm_json(&["classify", p(&red), "--model", p(&out), "--json"]);
    assert_eq!(r[0]["labels"][0]["label"], "a red circle");
    assert_eq!(
        r[0]["labels"].as_array().unwrap().len(),
        DEMO_LABELS.split(',').count()
    );

    // Labels given at run time go through the int8 text tower and its stored tokenizer.
    let r = vlm_json(&[
        "classify",
        p(&red),
        "--model",
        p(&out),
        "--labels",
        "blue star,red circle",
        "--json",
    ]);
    assert_eq!(r[0]["labels"][0]["label"], "red circle");

    // Fidelity against the fp32 folder on the example images, as JSON and as a table.
    let examples = root().join("models/demo/examples");
    let fidelity = |extra: &[&str]| {
        let mut args = vec![
            "eval",
            "fidelity",
            "--model",
            p(&out),
            "--reference",
            p(&demo),
        ];
        args.extend(["--data", p(&examples)]);
        args.extend(extra);
        let f = vlm(&args);
        assert!(f.status.success(), "{}", String::from_utf8_lossy(&f.stderr));
        f.stdout
    };
    let f: serde_json::Value = serde_json::from_slice(&fidelity(&["--json"])).unwrap();
    assert!(f["images"]["min"].as_f64().unwrap() > 0.99, "{f}");
    // No prompts.txt there: the text tower is not checked, and says so (no NaN row).
    assert!(f["texts"].is_null(), "{f}");
    let table = String::from_utf8(fidelity(&[])).unwrap();
    assert!(
        !table.contains("NaN") && table.contains("no prompts"),
        "{table}"
    );

    hostile_artifacts_are_refused(&out);
}

/// Damaged copies of a good artifact, each refused with one line naming the file.
fn hostile_artifacts_are_refused(good: &Path) {
    let bytes = std::fs::read(good).unwrap();
    let red = root().join("models/demo/examples/red-circle.png");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "truncated",
            bytes[..bytes.len() / 2].to_vec(),
            "header says the file is",
        ),
        ("empty", Vec::new(), "truncated"),
        (
            "magic",
            [b"NOTVLMQ!".as_slice(), &bytes[8..]].concat(),
            "wrong magic",
        ),
        (
            "flipped",
            {
                let mut b = bytes.clone();
                let i = b.len() - 100;
                b[i] ^= 0x40;
                b
            },
            "checksum",
        ),
    ];
    for (name, data, needle) in cases {
        let path = tmp(&format!("{name}.vlmq"));
        std::fs::write(&path, data).unwrap();
        let out = vlm(&["classify", p(&red), "--model", p(&path), "--labels", "a,b"]);
        assert_clean_failure(&out, needle);
        assert!(String::from_utf8_lossy(&out.stderr).contains(p(&path)));
    }
}

#[test]
fn quantize_refuses_bad_input_and_writes_nothing() {
    let demo = root().join("models/demo");
    let calib = root().join("models/demo-calib");
    let out = tmp("never.vlmq");
    let run = |model: &Path, calib: &Path, out: &Path| {
        vlm(&[
            "quantize",
            "--model",
            p(model),
            "--calib",
            p(calib),
            "--out",
            p(out),
        ])
    };
    assert_clean_failure(&run(&tmp("no-such-model"), &calib, &out), "no-such-model");
    assert_clean_failure(&run(&demo, &tmp("no-such-calib"), &out), "no-such-calib");
    let empty = tmp("empty-calib");
    std::fs::create_dir_all(&empty).unwrap();
    assert_clean_failure(&run(&demo, &empty, &out), "no calibration images");
    // A corrupt image in the calibration folder is named.
    let bad = tmp("bad-calib");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    std::fs::write(bad.join("prompts.txt"), "a red circle\n").unwrap();
    assert_clean_failure(&run(&demo, &bad, &out), "broken.png");
    assert_clean_failure(
        &run(&demo, &calib, &tmp("no-such-dir/out.vlmq")),
        "output folder does not exist",
    );
    // 7-bit activations exist only beside 7-bit weights.
    let x7 = vlm(&[
        "quantize",
        "--model",
        p(&demo),
        "--calib",
        p(&calib),
        "--activation-bits",
        "7",
        "--out",
        p(&out),
    ]);
    assert_clean_failure(
        &x7,
        "--activation-bits 7 applies to layers with 7-bit weights",
    );
    assert!(!out.exists(), "a failed run left {}", out.display());
    let left: Vec<_> = std::fs::read_dir(out.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left behind: {left:?}");
}

/// A captioner folder quantizes from the command line into an artifact `vlm caption`
/// runs (the library test `caption_int8` holds it to the caption budgets); options that
/// only mean something for SigLIP, and bad calibration input, are refused with one line
/// and no file.
#[test]
fn captioner_quantizes_and_refuses_bad_input() {
    let model = root().join("models/demo-captioner");
    let calib = tmp("caption-calib");
    std::fs::create_dir_all(&calib).unwrap();
    for i in 0..4 {
        let name = format!("calib-{i:03}.png");
        std::fs::copy(
            root().join("models/demo-calib").join(&name),
            calib.join(&name),
        )
        .unwrap();
    }
    let out = tmp("captioner.vlmq");
    let html = tmp("captioner.html");
    let run = |extra: &[&str], calib: &Path, out: &Path| {
        let mut args = vec!["quantize", "--model", p(&model), "--calib", p(calib)];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", p(out)]);
        vlm(&args)
    };
    let never = tmp("never-captioner.vlmq");
    assert_clean_failure(&run(&["--labels", "a,b"], &calib, &never), "captioner");
    assert_clean_failure(&run(&["--max-tokens", "0"], &calib, &never), "--max-tokens");
    let empty = tmp("empty-caption-calib");
    std::fs::create_dir_all(&empty).unwrap();
    assert_clean_failure(&run(&[], &empty, &never), "no calibration images");
    let bad = tmp("bad-caption-calib");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("broken.png"), b"\x89PNG\r\n\x1a\nnot really").unwrap();
    assert_clean_failure(&run(&[], &bad, &never), "broken.png");
    assert_clean_failure(
        &run(&["--eval", p(&tmp("no-such-captions"))], &calib, &never),
        "no-such-captions",
    );
    assert!(!never.exists());

    let q = run(&["--report", p(&html)], &calib, &out);
    let stdout = String::from_utf8_lossy(&q.stdout);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    for needle in [
        "== image encoder graph ==",
        "== projector graph ==",
        "== decoder graph ==",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    assert!(std::fs::read_to_string(&html).unwrap().contains("<svg"));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(html.with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(report["calibration"]["images"], 4);
    assert_eq!(
        report["artifact_bytes"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    let c = vlm_json(&[
        "caption",
        p(&root().join("models/demo-captions/images/00000.png")),
        "--model",
        p(&out),
        "--json",
    ]);
    let caption = c[0]["caption"].as_str().unwrap();
    assert!(!caption.trim().is_empty(), "{c}");
    // Calibration runs the reference's bits: the scalar kernels write the same file.
    let scalar = tmp("captioner-scalar.vlmq");
    let q = std::process::Command::new(env!("CARGO_BIN_EXE_vlm"))
        .args([
            "quantize",
            "--model",
            p(&model),
            "--calib",
            p(&calib),
            "--out",
            p(&scalar),
        ])
        .env("VLM_KERNELS", "scalar")
        .output()
        .unwrap();
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    assert!(
        std::fs::read(&scalar).unwrap() == std::fs::read(&out).unwrap(),
        "VLM_KERNELS=scalar wrote another captioner artifact"
    );
}

/// The artifact is computed the same way on every CPU: `vlm quantize` under each kernel
/// set this CPU supports (the best one, the lower ones, the scalar reference) writes the
/// same bytes, and so does a run on one core. `scripts/repro-check.sh` compares against
/// aarch64 under QEMU too. With
/// `scripts/demo.sh`'s flags, those bytes are the demo artifact compiled into `vlm`
/// (`models/demo.vlmq`), which therefore cannot drift from the code that makes it.
#[test]
fn quantize_writes_the_same_artifact_under_every_kernel_set() {
    let isas: Vec<&str> = vlm_runtime::kernels::ALL
        .into_iter()
        .filter(|i| i.supported())
        .map(|i| i.name())
        .collect();
    assert!(isas.contains(&"scalar"));
    // Every kernel set on every core, then the default set on one core (where `taskset`
    // can pin one): calibration splits its work over the cores, and no split may move a
    // bit.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let taskset = cores > 1
        && std::process::Command::new("taskset")
            .args(["-c", "0", "true"])
            .status()
            .is_ok_and(|s| s.success());
    // (name, kernel set); no set: the default one, on one core.
    let mut runs: Vec<(String, Option<&str>)> =
        isas.iter().map(|&i| (i.to_string(), Some(i))).collect();
    if taskset {
        runs.push(("one core".to_string(), None));
    } else {
        eprintln!("not compared on one core: {cores} core(s), or no taskset here");
    }
    let mut first: Option<(String, Vec<u8>)> = None;
    for (run, isa) in &runs {
        let out = tmp(&format!("repro-{}.vlmq", run.replace(' ', "-")));
        let mut cmd = match isa {
            Some(isa) => {
                let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_vlm"));
                c.env("VLM_KERNELS", isa);
                c
            }
            None => {
                let mut c = std::process::Command::new("taskset");
                c.args(["-c", "0", env!("CARGO_BIN_EXE_vlm")])
                    .env_remove("VLM_KERNELS");
                c
            }
        };
        cmd.args(demo_quantize(&["--out", p(&out)]))
            .env_remove("VLM_MODEL");
        let q = cmd.output().unwrap();
        assert!(
            q.status.success(),
            "{run}: {}",
            String::from_utf8_lossy(&q.stderr)
        );
        let bytes = std::fs::read(&out).unwrap();
        match &first {
            None => first = Some((run.clone(), bytes)),
            Some((name, want)) => {
                let at = want.iter().zip(&bytes).position(|(a, b)| a != b);
                assert!(
                    *want == bytes,
                    "{run} wrote another artifact than {name}: {} vs {} bytes, first difference at byte {at:?}",
                    bytes.len(),
                    want.len()
                );
            }
        }
    }
    let (_, bytes) = first.expect("at least the scalar set");
    let shipped = std::fs::read(root().join("models/demo.vlmq")).unwrap();
    assert!(
        bytes == shipped,
        "models/demo.vlmq (compiled into vlm) is not what this code writes: \
         run scripts/demo.sh and copy target/demo/demo.vlmq there"
    );
    eprintln!(
        "same artifact under {isas:?}{}, and it is the shipped demo artifact",
        if taskset { " and on one core" } else { "" }
    );
}

/// `--weight-bits 7`: every int8 layer that keeps the budget gets 7-bit weights (a layer
/// that does not goes back to 8 bits before any goes to fp32), the report says which, and
/// the artifact embeds to the same bits under every kernel set: AVX2's narrow GEMM and
/// the others compute the same sums.
#[test]
fn seven_bit_weights_embed_the_same_under_every_kernel_set() {
    narrow_demo_embeds_alike(
        "demo-w7.vlmq",
        &["--weight-bits", "7"],
        "int8 (7-bit weights)",
    );
}

/// `--activation-bits 7` with `--weight-bits 7`: the layers that keep the budget take
/// their inputs in 0..127 too, the report says which, and the artifact embeds to the
/// same bits under every kernel set: AVX2's paired GEMM (two byte multiplies summed in
/// 16 bits) and the others compute the same sums, and every ISA quantizes to 0..127.
#[test]
fn seven_bit_activations_embed_the_same_under_every_kernel_set() {
    narrow_demo_embeds_alike(
        "demo-w7x7.vlmq",
        &["--weight-bits", "7", "--activation-bits", "7"],
        "int8 (7-bit weights and activations)",
    );
}

/// Quantizes the demo with `args`: more than half of each tower's int8 layers must end at
/// `precision` within the budget, and every kernel set must embed alike.
fn narrow_demo_embeds_alike(name: &str, args: &[&str], precision: &str) {
    let out = tmp(name);
    let (model, calib) = (root().join("models/demo"), root().join("models/demo-calib"));
    let mut cmd = vec![
        "quantize",
        "--model",
        p(&model),
        "--calib",
        p(&calib),
        "--attention",
        DEMO_ATTENTION,
        "--json",
        "--out",
        p(&out),
    ];
    cmd.extend_from_slice(args);
    let q = vlm(&cmd);
    assert!(q.status.success(), "{}", String::from_utf8_lossy(&q.stderr));
    let report: serde_json::Value = serde_json::from_slice(&q.stdout).unwrap();
    assert_eq!(report["options"]["weight_bits"], "seven");
    for tower in report["towers"].as_array().unwrap() {
        let precisions: Vec<&str> = tower["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| !l["own_sqnr_db"].is_null())
            .map(|l| l["precision"].as_str().unwrap())
            .collect();
        let narrow = precisions.iter().filter(|p| **p == precision).count();
        assert!(
            2 * narrow > precisions.len(),
            "{}: {narrow} of {} layers {precision}",
            tower["tower"],
            precisions.len()
        );
        assert!(tower["budget_met"].as_bool().unwrap(), "{}", tower["tower"]);
    }
    let image = root().join("models/demo-calib/calib-000.png");
    let mut first: Option<(&str, Vec<u8>)> = None;
    for isa in vlm_runtime::kernels::ALL
        .into_iter()
        .filter(|i| i.supported())
    {
        let e = std::process::Command::new(env!("CARGO_BIN_EXE_vlm"))
            .args(["embed", "--model", p(&out), "--image", p(&image)])
            .args(["--text", "a red circle"])
            .env("VLM_KERNELS", isa.name())
            .output()
            .unwrap();
        assert!(e.status.success(), "{}", String::from_utf8_lossy(&e.stderr));
        match &first {
            None => first = Some((isa.name(), e.stdout)),
            // JSON floats print their shortest round trip: equal text, equal bits.
            Some((name, want)) => assert!(
                *want == e.stdout,
                "VLM_KERNELS={} embeds otherwise than {name}",
                isa.name()
            ),
        }
    }
}

/// `scripts/demo.sh`'s labels.
const DEMO_LABELS: &str =
    "red circle,blue star,yellow triangle,green heart,purple cross,orange square";
/// `scripts/demo.sh`'s attention precision (see the comment there).
const DEMO_ATTENTION: &str = "fp32";

/// `vlm quantize` of the demo model as `scripts/demo.sh` runs it, then `extra`.
fn demo_quantize(extra: &[&str]) -> Vec<String> {
    let (model, calib) = (root().join("models/demo"), root().join("models/demo-calib"));
    let args = [
        "quantize",
        "--model",
        p(&model),
        "--calib",
        p(&calib),
        "--labels",
        DEMO_LABELS,
        "--template",
        "a {}",
        "--attention",
        DEMO_ATTENTION,
    ];
    args.iter().chain(extra).map(|a| a.to_string()).collect()
}

/// `vlm quantize --target`: the shipped microcontroller artifact (`models/demo-mcu.vlmq`,
/// which the firmware examples embed) is what this code writes, on every kernel set; it
/// holds the image tower and the labels only and still classifies; a label set too big
/// for the part's flash, no labels, an unknown part and a captioner are refused with one
/// line naming the problem and no file.
#[test]
fn quantize_for_a_microcontroller_checks_the_part_and_writes_the_shipped_artifact() {
    let demo = root().join("models/demo");
    let calib = root().join("models/demo-calib");
    let run = |extra: &[&str], out: &Path| {
        let mut args = vec![
            "quantize",
            "--model",
            p(&demo),
            "--calib",
            p(&calib),
            "--template",
            "a {}",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--out", p(out)]);
        vlm(&args)
    };
    let out = tmp("mcu.vlmq");
    for target in ["cortex-m7", "cortex-m55"] {
        let q = run(&["--labels", DEMO_LABELS, "--target", target], &out);
        let stderr = String::from_utf8_lossy(&q.stderr);
        assert!(q.status.success(), "{stderr}");
        assert!(
            stderr.contains(&format!("{target} ("))
                && stderr.contains("flash")
                && stderr.contains("RAM"),
            "the budget is printed: {stderr}"
        );
        assert!(
            std::fs::read(&out).unwrap()
                == std::fs::read(root().join("models/demo-mcu.vlmq")).unwrap(),
            "models/demo-mcu.vlmq is not what `vlm quantize --target {target}` writes: \
             rebuild it with firmware-examples/README.md's command"
        );
    }
    let r = vlm_json(&[
        "classify",
        p(&root().join("models/demo/examples/red-circle.png")),
        "--model",
        p(&out),
        "--json",
    ]);
    assert_eq!(r[0]["labels"][0]["label"], "a red circle");
    let other_labels = vlm(&[
        "classify",
        p(&root().join("models/demo/examples/red-circle.png")),
        "--model",
        p(&out),
        "--labels",
        "a cat",
    ]);
    assert_clean_failure(&other_labels, "no text tower");

    let never = tmp("never-mcu.vlmq");
    // 3000 labels: 3000 × 128 floats is 1.5 MiB of embeddings, over the 2 MiB of flash
    // with the tower and the firmware.
    let many = tmp("many-labels.txt");
    let labels: Vec<String> = (0..3000).map(|i| format!("shape number {i}")).collect();
    std::fs::write(&many, labels.join("\n")).unwrap();
    assert_clean_failure(
        &run(
            &["--labels-file", p(&many), "--target", "cortex-m7"],
            &never,
        ),
        "does not fit cortex-m7 (STM32H743ZI): flash",
    );
    assert_clean_failure(&run(&["--target", "cortex-m55"], &never), "--labels");
    assert_clean_failure(
        &run(&["--labels", "a,b", "--target", "cortex-m0"], &never),
        "cortex-m0",
    );
    let captioner = vlm(&[
        "quantize",
        "--model",
        p(&root().join("models/demo-captioner")),
        "--calib",
        p(&calib),
        "--target",
        "cortex-m7",
        "--out",
        p(&never),
    ]);
    assert_clean_failure(&captioner, "captioner");
    assert!(!never.exists());
}
