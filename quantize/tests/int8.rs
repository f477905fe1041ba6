//! The int8 pipeline on the shipped demo model: calibration on the shipped calibration
//! folder, the accuracy budget, the artifact read back and run by the runtime.

use std::path::{Path, PathBuf};

use vlm_quantize::int8::Options;
use vlm_quantize::pipeline::{quantize_model, Request};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The shipped demo model on its calibration folder, no labels.
fn demo(options: Options) -> Request {
    Request {
        model_dir: root().join("models/demo"),
        calib_dir: root().join("models/demo-calib"),
        options,
        labels: vec![],
        prompts: vec![],
        eval_data: None,
        image_only: false,
    }
}

#[test]
fn demo_model_quantizes_within_budget() {
    let req = Request {
        labels: vec!["a red circle".into(), "a blue star".into()],
        ..demo(Options::default())
    };
    let (bytes, report) = quantize_model(&req, &mut |_, _, _| {}).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    for t in &report.towers {
        assert!(
            t.cosine.median >= 0.99,
            "{} median cosine {}",
            t.tower,
            t.cosine.median
        );
    }
    assert!(
        report.sizes.ratio <= 0.27,
        "artifact is {:.1} % of the ONNX size",
        100.0 * report.sizes.ratio
    );
    assert_eq!(bytes.len() as u64, report.sizes.artifact_bytes);
}

/// An unreachable budget: the most sensitive layers fall back to fp32 (as many as
/// allowed), the report names them and says the budget was missed, and the artifact
/// holds those layers in fp32 and still runs.
#[test]
fn missed_budget_keeps_the_most_sensitive_layers_in_fp32() {
    use vlm_quantize::Artifact;
    use vlm_runtime::ops::{Linear, Op, PatchEmbed, Weights};
    use vlm_runtime::Role;

    let req = demo(Options {
        min_cosine: 1.0 + 1e-6,
        max_fallback: 2,
        ..Options::default()
    });
    let (bytes, report) = quantize_model(&req, &mut |_, _, _| {}).unwrap();
    let artifact = Artifact::from_aligned(bytes, Path::new("fallback")).unwrap();
    for (t, kind) in report
        .towers
        .iter()
        .zip([Role::ImageEncoder, Role::TextEncoder])
    {
        assert!(!t.budget_met);
        assert_eq!(t.fallback.len(), 2, "{}: {:?}", t.tower, t.fallback);
        let model = artifact.runtime();
        let tower = model.graph(kind).unwrap();
        let fp32: Vec<String> = tower
            .ops()
            .filter(|(_, op)| {
                matches!(
                    op,
                    Op::Linear(Linear {
                        weights: Weights::F32 { .. },
                        ..
                    }) | Op::PatchEmbed(PatchEmbed {
                        weights: Weights::F32 { .. },
                        ..
                    })
                )
            })
            .map(|(name, _)| name.to_string())
            .collect();
        let mut want = t.fallback.clone();
        want.sort();
        let mut got = fp32;
        got.sort();
        assert_eq!(got, want, "{}", t.tower);
        for l in &t.layers {
            let expect = if t.fallback.contains(&l.name) {
                "fp32"
            } else {
                l.precision
            };
            assert_eq!(l.precision, expect);
        }
    }
    let pixels = vec![0.1f32; 3 * 64 * 64];
    assert!(artifact
        .embed_pixels(&pixels)
        .unwrap()
        .iter()
        .all(|v| v.is_finite()));
}

/// No fp32 fallback (`--max-fallback 0`) does not stop the 7-bit rungs of the ladder:
/// with a budget no int8 tower meets, every 7-bit activation and weight goes back to 8
/// bits, and no layer to fp32.
#[test]
fn no_fallback_still_takes_seven_bit_widths_back() {
    use vlm_quantize::int8::{ActivationBits, WeightBits};

    let req = demo(Options {
        min_cosine: 1.0 + 1e-6,
        max_fallback: 0,
        weight_bits: WeightBits::Seven,
        activation_bits: ActivationBits::Seven,
        ..Options::default()
    });
    let (_, report) = quantize_model(&req, &mut |_, _, _| {}).unwrap();
    for t in &report.towers {
        assert!(!t.budget_met);
        assert!(t.fallback.is_empty(), "{}: {:?}", t.tower, t.fallback);
        let linears: Vec<_> = t
            .layers
            .iter()
            .filter(|l| l.own_sqnr_db.is_some())
            .collect();
        assert!(!linears.is_empty());
        for l in linears {
            assert_eq!(l.precision, "int8", "{} {}", t.tower, l.name);
        }
    }
}

/// Every range method quantizes the demo within the default budget.
#[test]
fn every_calibration_method_meets_the_budget() {
    use vlm_quantize::calibrate::Method;
    for method in [Method::MinMax, Method::Percentile(0.9999), Method::Mse] {
        let req = demo(Options {
            method,
            ..Options::default()
        });
        let (_, report) = quantize_model(&req, &mut |_, _, _| {}).unwrap();
        for t in &report.towers {
            eprintln!(
                "{} {}: median cosine {}",
                method.name(),
                t.tower,
                t.cosine.median
            );
            assert!(
                t.cosine.median >= 0.995,
                "{} {}: {}",
                method.name(),
                t.tower,
                t.cosine.median
            );
        }
    }
}
