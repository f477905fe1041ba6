//! SigLIP's sigmoid scoring: p = σ(t · cos(image, text) + b), one independent
//! probability per label (not a softmax: labels do not compete, several may be true
//! and none need be).

use crate::Error;

/// σ(x), written to stay finite for any input (exp never sees a large positive value).
#[inline]
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + libm::expf(-x))
    } else {
        let e = libm::expf(x);
        e / (1.0 + e)
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Scales `v` to unit length in place; a zero vector stays zero (cosine 0 with everything).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = libm::sqrtf(dot(v, v));
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
}

/// Cosine similarity; 0 when either vector is zero.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let na = libm::sqrtf(dot(a, a));
    let nb = libm::sqrtf(dot(b, b));
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot(a, b) / (na * nb)
}

/// The model's learned temperature `t` (already exponentiated) and bias `b`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scorer {
    pub logit_scale: f32,
    pub logit_bias: f32,
}

impl Scorer {
    /// The logit t·cos + b for one image and one text embedding.
    pub fn logit(&self, image: &[f32], text: &[f32]) -> f32 {
        self.logit_of_cosine(cosine(image, text))
    }

    /// t·cos + b for a cosine already computed (an evaluation that ranks by cosine).
    pub fn logit_of_cosine(&self, cos: f32) -> f32 {
        self.logit_scale * cos + self.logit_bias
    }

    /// σ(t·cos + b).
    pub fn probability(&self, image: &[f32], text: &[f32]) -> f32 {
        sigmoid(self.logit(image, text))
    }
}

/// Writes t·cos + b of one image embedding against each row of `texts`, a row-major
/// `[labels × dim]` block of text embeddings, into `out` (one logit per label).
pub fn logits_into(
    scorer: &Scorer,
    image: &[f32],
    texts: &[f32],
    out: &mut [f32],
) -> Result<(), Error> {
    let dim = image.len();
    if dim == 0 {
        return Err(Error::ZeroDim);
    }
    if !texts.len().is_multiple_of(dim) {
        return Err(Error::NotMultiple {
            what: "texts",
            got: texts.len(),
            dim,
        });
    }
    let labels = texts.len() / dim;
    if labels == 0 {
        return Err(Error::NoLabels);
    }
    if out.len() != labels {
        return Err(Error::BufferSize {
            what: "out",
            got: out.len(),
            expected: labels,
        });
    }
    for (l, text) in out.iter_mut().zip(texts.chunks_exact(dim)) {
        *l = scorer.logit(image, text);
    }
    Ok(())
}

/// As [`logits_into`], then σ of each: one independent probability per label.
pub fn score_into(
    scorer: &Scorer,
    image: &[f32],
    texts: &[f32],
    out: &mut [f32],
) -> Result<(), Error> {
    logits_into(scorer, image, texts, out)?;
    out.iter_mut().for_each(|p| *p = sigmoid(*p));
    Ok(())
}

/// Writes into `order` the label indices sorted by descending score (stable: equal
/// scores keep label order; NaN ranks last). Insertion sort: label lists are short
/// and this needs no allocation.
pub fn rank_into(scores: &[f32], order: &mut [usize]) -> Result<(), Error> {
    if order.len() != scores.len() {
        return Err(Error::BufferSize {
            what: "order",
            got: order.len(),
            expected: scores.len(),
        });
    }
    let key = |i: usize| {
        let s = scores[i];
        if s.is_nan() {
            f32::NEG_INFINITY
        } else {
            s
        }
    };
    for (i, slot) in order.iter_mut().enumerate() {
        *slot = i;
    }
    for i in 1..order.len() {
        let mut j = i;
        while j > 0 && key(order[j - 1]) < key(order[j]) {
            order.swap(j - 1, j);
            j -= 1;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn sigmoid_is_finite_and_symmetric() {
        for x in [-1e30f32, -100.0, -1.0, 0.0, 1.0, 100.0, 1e30] {
            let s = sigmoid(x);
            assert!(s.is_finite() && (0.0..=1.0).contains(&s), "{x} -> {s}");
            assert!((s + sigmoid(-x) - 1.0).abs() < 1e-6);
        }
        assert_eq!(sigmoid(0.0), 0.5);
    }

    #[test]
    fn probabilities_are_independent_per_label() {
        // Two labels equally close to the image both get a high probability: a softmax
        // would split the mass, SigLIP's sigmoid does not.
        let scorer = Scorer {
            logit_scale: 10.0,
            logit_bias: -5.0,
        };
        let image = [1.0, 0.0];
        let texts = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let mut p = [0.0; 3];
        score_into(&scorer, &image, &texts, &mut p).unwrap();
        assert!((p[0] - sigmoid(5.0)).abs() < 1e-6);
        assert_eq!(p[0], p[1]);
        assert!((p[2] - sigmoid(-5.0)).abs() < 1e-6);
    }

    #[test]
    fn bad_buffers_are_errors() {
        let s = Scorer {
            logit_scale: 1.0,
            logit_bias: 0.0,
        };
        let mut out = [0.0; 2];
        assert_eq!(score_into(&s, &[], &[], &mut out), Err(Error::ZeroDim));
        assert!(matches!(
            score_into(&s, &[1.0, 2.0], &[1.0, 2.0, 3.0], &mut out),
            Err(Error::NotMultiple { .. })
        ));
        assert_eq!(
            score_into(&s, &[1.0], &[], &mut out[..0]),
            Err(Error::NoLabels)
        );
        assert!(matches!(
            score_into(&s, &[1.0], &[1.0], &mut out),
            Err(Error::BufferSize { .. })
        ));
        assert!(rank_into(&[1.0], &mut [0usize; 2]).is_err());
    }

    proptest! {
        #[test]
        fn cosine_is_bounded_and_scale_free(
            a in prop::collection::vec(-100.0f32..100.0, 1..64),
            k in 0.01f32..100.0,
        ) {
            let b: Vec<f32> = a.iter().map(|x| x * k).collect();
            let c = cosine(&a, &b);
            let zero = a.iter().all(|x| *x == 0.0);
            prop_assert!(zero || (c - 1.0).abs() < 1e-4, "cos {}", c);
            let mut n = a.clone();
            l2_normalize(&mut n);
            let want = if zero { 0.0 } else { 1.0 };
            prop_assert!((cosine(&n, &a) - want).abs() < 1e-4, "normalised cos {}", cosine(&n, &a));
        }

        #[test]
        fn ranking_sorts_descending_and_is_a_permutation(
            scores in prop::collection::vec(prop_oneof![Just(f32::NAN), -10.0f32..10.0], 0..40),
        ) {
            let mut order = vec![0usize; scores.len()];
            rank_into(&scores, &mut order).unwrap();
            let mut seen = order.clone();
            seen.sort_unstable();
            prop_assert_eq!(seen, (0..scores.len()).collect::<Vec<_>>());
            for w in order.windows(2) {
                let (a, b) = (scores[w[0]], scores[w[1]]);
                prop_assert!(b.is_nan() || a >= b);
                if a == b { prop_assert!(w[0] < w[1]); }
            }
        }
    }
}
