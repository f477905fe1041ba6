//! The Rust fp32 path reproduces the recipe's PyTorch embeddings (Hugging Face
//! processor and tokenizer) for the shipped example images and captions.
//!
//! Runs on the shipped demo model; `VLM_GOLDEN_MODELS` (paths joined by ':') adds more
//! model folders with a golden.json, such as the recipe's CI smoke export.

use std::path::{Path, PathBuf};

use vlm_quantize::preprocess::{load_rgb8, resize_rgb8};
use vlm_quantize::Fp32Siglip;
use vlm_runtime::score::cosine;

/// Same pixels, so only float summation order differs (tract vs PyTorch).
const MIN_COSINE: f32 = 0.9999;

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo")
}

fn models() -> Vec<PathBuf> {
    let mut dirs = vec![demo_model()];
    if let Ok(extra) = std::env::var("VLM_GOLDEN_MODELS") {
        dirs.extend(
            extra
                .split(':')
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
        );
    }
    dirs
}

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The decoded and resized 8-bit pixels equal the Hugging Face processor's (Pillow's)
/// exactly, JPEG included.
fn check_pixels(model: &Fp32Siglip, path: &Path, want: &serde_json::Value) {
    let img = load_rgb8(path).unwrap();
    let got = resize_rgb8(&img, &model.config().preprocess);
    let want: Vec<i64> = want
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    assert_eq!(got.as_raw().len(), want.len(), "{}", path.display());
    let max = got
        .as_raw()
        .iter()
        .zip(&want)
        .map(|(a, b)| (i64::from(*a) - b).abs())
        .max()
        .unwrap_or(0);
    assert_eq!(
        max,
        0,
        "{}: pixels differ from the processor's by up to {max}",
        path.display()
    );
}

#[test]
fn embeddings_match_the_recipes_pytorch_golden_file() {
    for dir in models() {
        let golden: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap())
                .unwrap();
        let model = Fp32Siglip::load(&dir).unwrap();
        let images = golden["images"].as_array().unwrap();
        assert!(!images.is_empty());
        for img in images {
            let file = img["file"].as_str().unwrap();
            check_pixels(&model, &dir.join(file), &img["resized_rgb8"]);
            let got = model.embed_image(&dir.join(file)).unwrap();
            let c = cosine(&got, &floats(&img["embedding"]));
            eprintln!("{}: image {file}: cosine {c:.7}", dir.display());
            assert!(c >= MIN_COSINE, "{file}: cosine {c} < {MIN_COSINE}");
        }
        for txt in golden["texts"].as_array().unwrap() {
            let text = txt["text"].as_str().unwrap();
            let ids: Vec<i64> = txt["input_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            assert_eq!(model.token_ids(text).unwrap(), ids, "token ids of {text:?}");
            let got = model.embed_text(text).unwrap();
            let c = cosine(&got, &floats(&txt["embedding"]));
            eprintln!("{}: text {text:?}: cosine {c:.7}", dir.display());
            assert!(c >= MIN_COSINE, "{text:?}: cosine {c} < {MIN_COSINE}");
        }
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn broken_model_folders_are_errors_naming_the_file() {
    let base = std::env::temp_dir().join(format!("vlm-broken-{}", std::process::id()));
    type Breaker = dyn Fn(&Path);
    let cases: [(&str, &Breaker); 4] = [
        ("text.onnx", &|d| {
            std::fs::remove_file(d.join("text.onnx")).unwrap()
        }),
        ("vision.onnx", &|d| {
            let bytes = std::fs::read(d.join("vision.onnx")).unwrap();
            std::fs::write(d.join("vision.onnx"), &bytes[..bytes.len() / 3]).unwrap()
        }),
        ("config.json", &|d| {
            std::fs::write(d.join("config.json"), b"{\"format\": 3").unwrap()
        }),
        ("tokenizer.json", &|d| {
            std::fs::write(d.join("tokenizer.json"), b"[]").unwrap()
        }),
    ];
    for (i, (culprit, breakit)) in cases.iter().enumerate() {
        let dir = base.join(i.to_string());
        copy_dir(&demo_model(), &dir);
        breakit(&dir);
        let err = match Fp32Siglip::load(&dir) {
            Ok(_) => panic!("a model folder with a broken {culprit} loaded"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains(culprit),
            "error does not name {culprit}: {err}"
        );
    }
    std::fs::remove_dir_all(&base).ok();
}
