//! The int8 pipeline on exported architectures no test of the demo names: the real
//! base-size SigLIP (random weights; the acceptance figure: median image-embedding
//! cosine vs fp32 ≥ 0.999 over 20 held-out photos) and a differently shaped SigLIP
//! (another width, head count, depth, patch and image size), with no code change.
//!
//! Needs the recipe's Python (`VLM_PYTHON`, default the venv `scripts/setup-python.sh`
//! makes); without one the tests say so and pass, unless `VLM_REQUIRE_PYTHON` is set.

use std::path::{Path, PathBuf};
mod common;
use common::{python_or_skip, recipe};

use vlm_quantize::int8::{ActivationBits, Options, WeightBits};
use vlm_quantize::pipeline::{fidelity, image_files, quantize_model, Request};
use vlm_quantize::{Artifact, Fp32Siglip};

/// The acceptance figure for the base-size image tower.
const BASE_MIN_MEDIAN_COSINE: f32 = 0.999;

/// Exports `arch` (with overrides) and writes two photo sets: one to calibrate on, one
/// to check on. None when skipped.
fn setup(tag: &str, overrides: Option<&str>, side: u32) -> Option<(PathBuf, PathBuf, PathBuf)> {
    let py = python_or_skip(tag)?;
    let root = std::env::temp_dir().join(format!("vlm-int8-{tag}-{}", std::process::id()));
    let (model, calib, check) = (root.join("model"), root.join("calib"), root.join("check"));
    let mut args = vec![
        "-m",
        "vlm_recipes.export",
        "--random",
        "siglip-base-patch16-224",
    ];
    if let Some(o) = overrides {
        args.extend(["--random-config", o]);
    }
    args.extend(["--out", model.to_str().unwrap()]);
    recipe(&py, &args);
    let side = side.to_string();
    for (dir, seed) in [(&calib, "1"), (&check, "2")] {
        recipe(
            &py,
            &[
                "-m",
                "vlm_recipes.photos",
                "--out",
                dir.to_str().unwrap(),
                "--count",
                "20",
                "--seed",
                seed,
                "--side",
                &side,
            ],
        );
    }
    Some((model, calib, check))
}

/// Quantizes with `options`; the held-out image and text cosine medians, and the share of
/// each tower's linear layers at `precision` (if given).
fn run(
    tag: &str,
    (model, calib, check): (&Path, &Path, &Path),
    options: Options,
    precision: Option<&str>,
) -> (f32, f32, Vec<f64>) {
    let req = Request {
        model_dir: model.to_owned(),
        calib_dir: calib.to_owned(),
        options,
        labels: vec![],
        prompts: vec![],
        eval_data: None,
        image_only: false,
    };
    let (bytes, report) = quantize_model(&req, &mut |_, _, _| {}).unwrap();
    assert!(
        report.sizes.ratio <= 0.27,
        "{tag}: artifact {:.3} of the ONNX",
        report.sizes.ratio
    );
    let artifact = Artifact::from_aligned(bytes, Path::new(tag)).unwrap();
    let fp32 = Fp32Siglip::load(model).unwrap();
    let f = fidelity(
        &artifact,
        &fp32,
        &image_files(check).unwrap(),
        &[],
        &mut |_, _, _| {},
    )
    .unwrap();
    eprintln!(
        "{tag}: images {:?}, texts {:?}, size ratio {:.4}, fallback {:?}",
        f.images,
        f.texts,
        report.sizes.ratio,
        report
            .towers
            .iter()
            .map(|t| &t.fallback)
            .collect::<Vec<_>>()
    );
    assert_eq!(f.images.count, 20);
    let shares = report
        .towers
        .iter()
        .map(|t| {
            let linears: Vec<_> = t
                .layers
                .iter()
                .filter(|l| l.own_sqnr_db.is_some())
                .collect();
            let at = linears
                .iter()
                .filter(|l| Some(l.precision) == precision)
                .count();
            at as f64 / linears.len().max(1) as f64
        })
        .collect();
    (
        f.images.median,
        f.texts.expect("synthetic token ids").median,
        shares,
    )
}

#[test]
fn base_size_siglip_int8_matches_fp32() {
    let Some((model, calib, check)) = setup("base", None, 256) else {
        return;
    };
    let (img, txt, _) = run("base", (&model, &calib, &check), Options::default(), None);
    assert!(img >= BASE_MIN_MEDIAN_COSINE, "median image cosine {img}");
    assert!(txt >= BASE_MIN_MEDIAN_COSINE, "median text cosine {txt}");
    let _ = std::fs::remove_dir_all(model.parent().unwrap());
}

/// Another width (96), head count (6), depth (3), patch (14) and image size (56), exact
/// GELU; text 80 wide, 5 heads, 2 layers, vocabulary 300, length 12.
const ODD: &str = r#"{"vision": {"hidden_size": 96, "num_attention_heads": 6, "num_hidden_layers": 3,
    "intermediate_size": 200, "patch_size": 14, "image_size": 56, "hidden_act": "gelu"},
    "text": {"hidden_size": 80, "num_attention_heads": 5, "num_hidden_layers": 2,
    "intermediate_size": 160, "vocab_size": 300, "max_position_embeddings": 12,
    "projection_size": 96}}"#;

#[test]
fn differently_shaped_siglip_quantizes_and_runs() {
    let Some((model, calib, check)) = setup("odd", Some(ODD), 96) else {
        return;
    };
    let sets = (model.as_path(), calib.as_path(), check.as_path());
    let (img, txt, _) = run("odd", sets, Options::default(), None);
    assert!(img >= 0.99 && txt >= 0.99, "median cosines {img} {txt}");
    // 7-bit weights and activations (the AVX2 opt-in) on a shape no other test names:
    // the same budget, and most layers keep both 7-bit widths.
    let seven = Options {
        weight_bits: WeightBits::Seven,
        activation_bits: ActivationBits::Seven,
        ..Options::default()
    };
    let both = "int8 (7-bit weights and activations)";
    let (img, txt, shares) = run("odd 7+7", sets, seven, Some(both));
    assert!(
        img >= 0.99 && txt >= 0.99,
        "7+7: median cosines {img} {txt}"
    );
    assert!(
        shares.iter().all(|s| *s > 0.5),
        "7+7 layer shares {shares:?}"
    );
    let _ = std::fs::remove_dir_all(model.parent().unwrap());
}
