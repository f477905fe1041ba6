//! A `no_std` crate with no allocator that uses the runtime the way firmware will:
//! classify one camera frame's embedding against label embeddings stored in flash.
//! Built for `thumbv7em-none-eabihf` in CI; a build that pulls in `std` or `alloc`
//! anywhere below it fails to link there.
#![no_std]

use vlm_runtime::{rank_into, score_into, Error, Scorer};

/// Ranks `LABELS` label embeddings of dimension `DIM` against one image embedding,
/// entirely in caller-owned, fixed-size buffers.
pub fn best_label<const DIM: usize, const LABELS: usize>(
    scorer: &Scorer,
    image: &[f32; DIM],
    labels: &[[f32; DIM]; LABELS],
) -> Result<(usize, f32), Error> {
    let mut probs = [0.0f32; LABELS];
    let mut order = [0usize; LABELS];
    score_into(scorer, image, labels.as_flattened(), &mut probs)?;
    rank_into(&probs, &mut order)?;
    let best = *order.first().ok_or(Error::NoLabels)?;
    Ok((best, probs[best]))
}

/// The whole device path from an artifact in flash: validate it in place, run the image
/// encoder over a caller-provided arena (a `static mut`-free `&mut [u8]`), score against
/// the label embeddings stored at quantize time. Returns the best label's index and
/// probability.
pub fn classify_in_flash(
    artifact: &[u8],
    arena: &mut [u8],
    pixels: &[f32],
    embedding: &mut [f32],
) -> Result<(usize, f32), Error> {
    let model = vlm_runtime::Model::from_bytes(artifact)?;
    let mut session = vlm_runtime::Session::new(&model, arena)?;
    session.encode_image(pixels, embedding)?;
    let labels = model.labels().ok_or(Error::NoLabels)?;
    // The family's code reads its settings from the metadata the runtime carries.
    let scorer = vlm_models::siglip::Meta::from_model(&model)
        .map_err(|_| {
            Error::Format(vlm_runtime::FormatError::BadField {
                field: "SigLIP metadata",
            })
        })?
        .scorer();
    let mut best = (0usize, f32::NEG_INFINITY);
    for i in 0..labels.count {
        let p = scorer.probability(embedding, labels.embedding(i));
        if p > best.1 {
            best = (i, p);
        }
    }
    if labels.count == 0 {
        return Err(Error::NoLabels);
    }
    Ok(best)
}

/// Touches the architecture's no_std conventions too, so they stay no_std.
pub fn default_resample() -> vlm_models::siglip::Resample {
    vlm_models::siglip::Resample::Bicubic
}

#[cfg(test)]
mod tests {
    #[test]
    fn picks_the_closest_label() {
        let s = vlm_runtime::Scorer {
            logit_scale: 10.0,
            logit_bias: -5.0,
        };
        let (best, p) = super::best_label(&s, &[0.0, 1.0], &[[1.0, 0.0], [0.0, 1.0]]).unwrap();
        assert_eq!(best, 1);
        assert!(p > 0.99);
    }
}
