//! `vlm caption` and `vlm eval caption` end to end on a Hugging Face captioner folder:
//! the recipe writes a tiny random-weight `Idefics3ForConditionalGeneration` as
//! `save_pretrained` does (needs the recipe's Python: `VLM_PYTHON`, else the venv
//! `scripts/setup-python.sh` makes; skipped without one unless `VLM_REQUIRE_PYTHON`);
//! every bad input is one clean error line and exit 2.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{assert_clean_failure, root, tmp, vlm};

fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VLM_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")?;
    let p = PathBuf::from(home).join(".cache/vlm-edge/venv/bin/python");
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var_os("VLM_REQUIRE_PYTHON").is_none(),
        "VLM_REQUIRE_PYTHON is set but no recipe Python was found"
    );
    eprintln!("SKIPPED: no recipe Python environment (see scripts/setup-python.sh)");
    None
}

/// A tiny random Idefics3 captioner folder, made once per test binary.
fn folder() -> Option<PathBuf> {
    let py = python()?;
    let dir = tmp("idefics3");
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    let out = Command::new(py)
        .args([
            "-m",
            "vlm_recipes.hf_captioners",
            "make",
            "--family",
            "idefics3",
            "--size",
            "tiny",
            "--out",
        ])
        .arg(&dir)
        .current_dir(root().join("models/recipes"))
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(dir)
}

fn image(i: usize) -> String {
    root()
        .join(format!("models/demo-eval/images/{i:05}.png"))
        .to_string_lossy()
        .into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn captions_images_as_json_and_streamed() {
    let Some(dir) = folder() else { return };
    let d = dir.to_str().unwrap();
    let (a, b) = (image(0), image(1));
    let out = vlm(&[
        "caption",
        &a,
        &b,
        "--model",
        d,
        "--max-tokens",
        "6",
        "--json",
        "--threads",
        "1",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v.as_array().unwrap();
    assert_eq!(items.len(), 2);
    for it in items {
        let tokens = it["tokens"].as_array().unwrap();
        assert!(tokens.len() <= 6);
        assert!(it["caption"].is_string());
    }
    // Streaming prints the same caption (one line per image, after its name).
    let out = vlm(&["caption", &a, "--model", d, "--max-tokens", "6", "--stream"]);
    assert!(out.status.success());
    let streamed = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(streamed, items[0]["caption"].as_str().unwrap());
}

#[test]
fn bad_inputs_fail_cleanly() {
    let Some(dir) = folder() else { return };
    let d = dir.to_str().unwrap();
    let img = image(0);

    let out = vlm(&["caption", &img, "--model", d, "--max-tokens", "0"]);
    assert_clean_failure(&out, "--max-tokens");

    let junk = tmp("junk.png");
    std::fs::write(&junk, b"not a picture at all").unwrap();
    let out = vlm(&["caption", junk.to_str().unwrap(), "--model", d]);
    assert_clean_failure(&out, "junk.png");

    let out = vlm(&["caption", "no-such.png", "--model", d]);
    assert_clean_failure(&out, "no-such.png");

    // An architecture the runtime does not know.
    let other = tmp("unknown-arch");
    copy_dir(&dir, &other);
    let cfg = other.join("config.json");
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(
        &cfg,
        text.replace(
            "Idefics3ForConditionalGeneration",
            "BlipForConditionalGeneration",
        ),
    )
    .unwrap();
    let out = vlm(&["caption", &img, "--model", other.to_str().unwrap()]);
    assert_clean_failure(&out, "BlipForConditionalGeneration is not supported");

    // A config that disagrees with a tensor's shape.
    let shape = tmp("wrong-shape");
    copy_dir(&dir, &shape);
    let cfg = shape.join("config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    let inter = v["text_config"]["intermediate_size"].as_u64().unwrap();
    v["text_config"]["intermediate_size"] = (inter + 8).into();
    std::fs::write(&cfg, serde_json::to_string(&v).unwrap()).unwrap();
    let out = vlm(&["caption", &img, "--model", shape.to_str().unwrap()]);
    assert_clean_failure(&out, "gate_proj.weight has shape");

    // A checkpoint without one of its tensors: rename it in the header, same length.
    let missing = tmp("missing-tensor");
    copy_dir(&dir, &missing);
    let st = missing.join("model.safetensors");
    let mut bytes = std::fs::read(&st).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = String::from_utf8(bytes[8..8 + n].to_vec()).unwrap();
    let renamed = header.replace("\"lm_head.weight\"", "\"lm_head.wEight\"");
    assert_ne!(header, renamed);
    bytes[8..8 + n].copy_from_slice(renamed.as_bytes());
    std::fs::write(&st, bytes).unwrap();
    let out = vlm(&["caption", &img, "--model", missing.to_str().unwrap()]);
    assert_clean_failure(&out, "tensor lm_head.weight is missing");

    // A truncated checkpoint.
    let cut = tmp("truncated");
    copy_dir(&dir, &cut);
    let st = cut.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let out = vlm(&["caption", &img, "--model", cut.to_str().unwrap()]);
    assert_clean_failure(&out, "model.safetensors");
}

#[test]
fn eval_caption_scores_a_caption_set() {
    let Some(dir) = folder() else { return };
    let Some(py) = python() else { return };
    let set = tmp("captions");
    let out = Command::new(py)
        .args(["-m", "vlm_recipes.captionset", "--out"])
        .arg(&set)
        .args(["--per-pair", "1", "--per-count", "2"])
        .current_dir(root().join("models/recipes"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = vlm(&[
        "eval",
        "caption",
        "--model",
        dir.to_str().unwrap(),
        "--data",
        set.to_str().unwrap(),
        "--max-tokens",
        "4",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let images = v["images"].as_u64().unwrap() as usize;
    assert!(images > 0);
    assert_eq!(v["captions"].as_array().unwrap().len(), images);
    assert_eq!(v["bleu"].as_array().unwrap().len(), 4);
    assert!(v["cider_d"].as_f64().unwrap() >= 0.0);
}
