//! The caption metrics (`vlm_host::caption_metrics`) equal pycocoevalcap's to 1e-6: the
//! recipe draws captions from the scene grammar (right, one attribute wrong, unrelated)
//! and scores them with pycocoevalcap; Rust scores the same samples.
//!
//! Needs the recipe's Python (see `common`).

mod common;

use vlm_host::caption_metrics::{score, tokenize, Sample};

#[derive(serde::Deserialize)]
struct Drawn {
    candidate: String,
    references: Vec<String>,
}

#[derive(serde::Deserialize)]
struct Expected {
    bleu: [f64; 4],
    cider_d: f64,
    cider_d_per_image: Vec<f64>,
}

#[test]
fn bleu_and_cider_d_equal_pycocoevalcap() {
    let Some(py) = common::python_or_skip("caption metrics against pycocoevalcap") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("vlm-caption-metrics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (samples, scores) = (dir.join("samples.json"), dir.join("scores.json"));
    let s = samples.to_str().unwrap();
    common::recipe(
        &py,
        &["-m", "vlm_recipes.caption_metrics", "make", "--out", s],
    );
    common::recipe(
        &py,
        &[
            "-m",
            "vlm_recipes.caption_metrics",
            "score",
            "--samples",
            s,
            "--out",
            scores.to_str().unwrap(),
        ],
    );
    let drawn: Vec<Drawn> = serde_json::from_slice(&std::fs::read(&samples).unwrap()).unwrap();
    let want: Expected = serde_json::from_slice(&std::fs::read(&scores).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).ok();

    // The grammar's captions are tokenized already: tokenizing again changes nothing.
    for d in &drawn {
        assert_eq!(tokenize(&d.candidate), d.candidate);
    }
    let got = score(
        &drawn
            .iter()
            .map(|d| Sample {
                candidate: &d.candidate,
                references: &d.references,
            })
            .collect::<Vec<_>>(),
    );
    for (k, (g, w)) in got.bleu.iter().zip(want.bleu).enumerate() {
        assert!(
            (g - w).abs() <= 1e-6,
            "BLEU-{}: {g} vs pycocoevalcap {w}",
            k + 1
        );
    }
    assert!(
        (got.cider_d - want.cider_d).abs() <= 1e-6,
        "CIDEr-D {} vs pycocoevalcap {}",
        got.cider_d,
        want.cider_d
    );
    assert_eq!(got.cider_d_per_image.len(), want.cider_d_per_image.len());
    for (i, (g, w)) in got
        .cider_d_per_image
        .iter()
        .zip(&want.cider_d_per_image)
        .enumerate()
    {
        assert!((g - w).abs() <= 1e-6, "image {i}: CIDEr-D {g} vs {w}");
    }
    // The draw spreads the scores: a metric stuck at 0 or 1 would not show here.
    assert!(want.bleu[3] > 0.2 && want.bleu[3] < 0.95, "{:?}", want.bleu);
}

/// The recipe's caption eval set, read by `vlm_host::caption_eval`: a captioner that
/// says the first reference gets every object and count right; one that says the same
/// caption for every image gets almost nothing right.
#[test]
fn the_caption_eval_set_scores_its_own_references_as_right() {
    use vlm_host::caption_eval::{report, CaptionSet};
    let Some(py) = common::python_or_skip("the caption eval set") else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("vlm-captionset-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    common::recipe(
        &py,
        &[
            "-m",
            "vlm_recipes.captionset",
            "--out",
            d,
            "--per-pair",
            "1",
            "--per-count",
            "8",
        ],
    );
    let set = CaptionSet::load(&dir).unwrap();
    let oracle: Vec<String> = set.items.iter().map(|i| i.references[0].clone()).collect();
    let r = report(&set, &oracle);
    for g in &r.groups {
        assert_eq!(g.objects_named, 100.0, "{g:?}");
        assert_eq!(g.count_right, 100.0, "{g:?}");
    }
    assert!(r.cider_d > 1.0 && r.bleu[3] > 0.5, "{r:?}");
    let same = vec!["a red circle".to_string(); set.items.len()];
    let r2 = report(&set, &same);
    assert!(r2.groups[0].objects_named < 10.0, "{r2:?}");
    assert!(r2.cider_d < r.cider_d / 4.0, "{r2:?}");
    std::fs::remove_dir_all(&dir).ok();
}
