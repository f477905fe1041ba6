//! Random-weight base-size SigLIP and SigLIP 2 (the real google/siglip-base-patch16-224
//! and google/siglip2-base-patch16-224 architectures), exported by the recipe, load in
//! the Rust path and match onnxruntime on the same inputs.
//!
//! Needs the recipe's Python environment: `VLM_PYTHON` names its interpreter (default:
//! the venv `scripts/setup-python.sh` makes). Without one the test says so and passes,
//! unless `VLM_REQUIRE_PYTHON` is set (CI sets it), where it fails.

mod common;
use common::{python_or_skip, recipe};

use vlm_quantize::Fp32Siglip;
use vlm_runtime::score::cosine;

/// tract and onnxruntime sum in different orders; random-weight towers 12 layers deep
/// still agree to this.
const MIN_COSINE: f32 = 0.9999;

fn check(arch: &str) {
    let Some(py) = python_or_skip(arch) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("vlm-base-{arch}-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    let reference = dir.join("ort.json");
    recipe(
        &py,
        &["-m", "vlm_recipes.export", "--random", arch, "--out", d],
    );
    recipe(
        &py,
        &[
            "-m",
            "vlm_recipes.ort_reference",
            "--model",
            d,
            "--out",
            reference.to_str().unwrap(),
        ],
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&reference).unwrap()).unwrap();
    let floats = |k: &str| -> Vec<f32> {
        r[k].as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let ids: Vec<i64> = r["input_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    let model = Fp32Siglip::load(&dir).unwrap();
    assert_eq!(model.config().vision.hidden_size, 768);
    assert_eq!(model.config().preprocess.size, [224, 224]);
    let img = model.embed_pixels(floats("pixel_values")).unwrap();
    let txt = model.embed_ids(&ids).unwrap();
    let ci = cosine(&img, &floats("image_embedding"));
    let ct = cosine(&txt, &floats("text_embedding"));
    eprintln!("{arch}: tract vs onnxruntime cosine: image {ci:.7}, text {ct:.7}");
    std::fs::remove_dir_all(&dir).ok();
    assert!(ci >= MIN_COSINE, "{arch} image tower: cosine {ci}");
    assert!(ct >= MIN_COSINE, "{arch} text tower: cosine {ct}");
}

#[test]
fn siglip_base_patch16_224_matches_onnxruntime() {
    check("siglip-base-patch16-224");
}

#[test]
fn siglip2_base_patch16_224_matches_onnxruntime() {
    check("siglip2-base-patch16-224");
}
