//! Zero-shot classification: every label scored independently with σ(t·cos + b).

use vlm_runtime::{logits_into, rank_into, sigmoid, Scorer};

use crate::{Error, Result};

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RankedLabel {
    pub label: String,
    pub probability: f32,
    /// t·cos + b, before the sigmoid: finer-grained than a probability near 0 or 1.
    pub logit: f32,
}

/// Scores `image` against each label's text embedding and returns the labels ranked,
/// most probable first.
pub fn rank_labels(
    scorer: &Scorer,
    image: &[f32],
    labels: &[String],
    label_embeddings: &[Vec<f32>],
) -> Result<Vec<RankedLabel>> {
    if labels.is_empty() {
        return Err(Error::NoLabels);
    }
    let flat: Vec<f32> = label_embeddings.iter().flatten().copied().collect();
    let mut logits = vec![0.0f32; labels.len()];
    logits_into(scorer, image, &flat, &mut logits).map_err(|error| Error::Runtime {
        what: "scoring labels",
        error,
    })?;
    // Probabilities saturate at 0 or 1 in f32; rank by the logit, which does not.
    let mut order = vec![0usize; labels.len()];
    rank_into(&logits, &mut order).map_err(|error| Error::Runtime {
        what: "ranking labels",
        error,
    })?;
    Ok(order
        .into_iter()
        .map(|i| RankedLabel {
            label: labels[i].clone(),
            probability: sigmoid(logits[i]),
            logit: logits[i],
        })
        .collect())
}
