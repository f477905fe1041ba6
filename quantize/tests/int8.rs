//! The int8 pipeline on the shipped demo model: calibration on the shipped calibration
//! folder, the accuracy budget, the artifact read back and run by the runtime.

use std::path::{Path, PathBuf};

use vlm_quantize::int8::Options;
use vlm_quantize::pipeline::{quantize_model, Request};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[test]
fn demo_model_quantizes_within_budget() {
    let req = Request {
        model_dir: root().join("models/demo"),
        calib_dir: root().join("models/demo-calib"),
        options: Options::default(),
        labels: vec!["a red circle".into(), "a blue star".into()],
        prompts: vec![],
        eval_data: None,
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
