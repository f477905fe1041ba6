//! Caption metrics exactly as the COCO caption evaluation (pycocoevalcap 1.2) computes
//! them: corpus BLEU-1..4 with the "closest" reference length, and CIDEr-D (σ = 6,
//! clipped n-gram weights, IDF from the references, × 10).
//!
//! Written here because no maintained Rust crate reproduces pycocoevalcap's numbers,
//! quirks included, and captioning papers report those numbers: CIDEr-D's length
//! penalty counts *bigrams* (the reference code's `length` is incremented for n = 2),
//! BLEU breaks length ties towards the shorter reference, and both add the same tiny
//! constants to avoid dividing by zero. A test compares with pycocoevalcap itself.
//!
//! Inputs are tokenized already: words separated by spaces ([`tokenize`] does what the
//! COCO tokenizer does to plain lowercase captions: lowercase, punctuation dropped).

use std::collections::BTreeMap;

/// The n-gram orders both metrics use.
pub const MAX_N: usize = 4;
/// CIDEr-D's length penalty width.
pub const CIDER_SIGMA: f64 = 6.0;

/// Lowercases and drops the punctuation the COCO tokenizer removes, leaving words
/// separated by single spaces.
pub fn tokenize(text: &str) -> String {
    const PUNCTUATION: &[char] = &[
        '.', ',', '!', '?', ';', ':', '"', '\'', '(', ')', '[', ']', '{', '}', '-', '_', '/', '\\',
        '@', '#', '$', '%', '&', '*', '+', '=', '<', '>', '|', '`', '~', '^',
    ];
    text.to_lowercase()
        .split(|c: char| c.is_whitespace() || PUNCTUATION.contains(&c))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

// Ordered maps: every sum over n-grams runs in one order, so a score is the same to
// the last bit from run to run (a HashMap's order changes with its random seed).
type Counts<'a> = BTreeMap<&'a [&'a str], usize>;

/// A sentence as both metrics read it: its length in words and its n-gram counts
/// (orders 1 to `MAX_N`), counted once for BLEU, the document frequencies and CIDEr-D.
struct Cooked<'a> {
    len: usize,
    counts: Counts<'a>,
}

fn cook<'a>(words: &'a [&'a str]) -> Cooked<'a> {
    let mut counts = BTreeMap::new();
    for n in 1..=MAX_N {
        for gram in words.windows(n) {
            *counts.entry(gram).or_insert(0) += 1;
        }
    }
    Cooked {
        len: words.len(),
        counts,
    }
}

/// One image's candidate and references, cooked.
type CookedSample<'a> = (Cooked<'a>, Vec<Cooked<'a>>);

/// One image: its candidate caption and its reference captions.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    pub candidate: &'a str,
    pub references: &'a [String],
}

/// The corpus scores.
#[derive(Debug, Clone, PartialEq)]
pub struct CaptionScores {
    /// BLEU-1 .. BLEU-4 over the corpus.
    pub bleu: [f64; MAX_N],
    /// CIDEr-D, the mean of `cider_d_per_image`.
    pub cider_d: f64,
    pub cider_d_per_image: Vec<f64>,
}

/// Scores candidates against references (both tokenized). Images without references
/// are the caller's error: pycocoevalcap asserts there is at least one.
pub fn score(samples: &[Sample]) -> CaptionScores {
    let words: Vec<(Vec<&str>, Vec<Vec<&str>>)> = samples
        .iter()
        .map(|s| {
            (
                s.candidate.split_whitespace().collect(),
                s.references
                    .iter()
                    .map(|r| r.split_whitespace().collect())
                    .collect(),
            )
        })
        .collect();
    let cooked: Vec<CookedSample> = words
        .iter()
        .map(|(cand, refs)| (cook(cand), refs.iter().map(|r| cook(r)).collect()))
        .collect();
    let cider = cider_d(&cooked);
    CaptionScores {
        bleu: bleu(&cooked),
        cider_d: if cider.is_empty() {
            0.0
        } else {
            cider.iter().sum::<f64>() / cider.len() as f64
        },
        cider_d_per_image: cider,
    }
}

fn bleu(samples: &[CookedSample]) -> [f64; MAX_N] {
    const TINY: f64 = 1e-15;
    const SMALL: f64 = 1e-9;
    let (mut test_len, mut ref_len) = (0usize, 0usize);
    let mut guess = [0usize; MAX_N];
    let mut correct = [0usize; MAX_N];
    for (cand, refs) in samples {
        let mut max_ref: Counts = BTreeMap::new();
        for r in refs {
            for (&g, &c) in &r.counts {
                let m = max_ref.entry(g).or_insert(0);
                *m = (*m).max(c);
            }
        }
        for (g, &c) in &cand.counts {
            correct[g.len() - 1] += c.min(max_ref.get(g).copied().unwrap_or(0));
        }
        for (k, slot) in guess.iter_mut().enumerate() {
            *slot += (cand.len + 1).saturating_sub(k + 1);
        }
        test_len += cand.len;
        // The closest reference length; a tie goes to the shorter.
        ref_len += refs
            .iter()
            .map(|r| (r.len.abs_diff(cand.len), r.len))
            .min()
            .map_or(0, |(_, l)| l);
    }
    let mut out = [0.0; MAX_N];
    let mut product = 1.0f64;
    for k in 0..MAX_N {
        product *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        out[k] = product.powf(1.0 / (k + 1) as f64);
    }
    let ratio = (test_len as f64 + TINY) / (ref_len as f64 + SMALL);
    if ratio < 1.0 {
        for b in &mut out {
            *b *= (1.0 - 1.0 / ratio).exp();
        }
    }
    out
}

/// An n-gram vector of tf·idf weights per order, its norms, and the length CIDEr-D's
/// penalty compares (the bigram count, as the reference code has it).
struct TfIdf<'a> {
    weights: [BTreeMap<&'a [&'a str], f64>; MAX_N],
    norm: [f64; MAX_N],
    length: usize,
}

fn tf_idf<'a>(s: &Cooked<'a>, df: &BTreeMap<&[&str], f64>, log_images: f64) -> TfIdf<'a> {
    let mut v = TfIdf {
        weights: Default::default(),
        norm: [0.0; MAX_N],
        length: 0,
    };
    for (&g, &tf) in &s.counts {
        let n = g.len() - 1;
        let idf = log_images - df.get(g).copied().unwrap_or(0.0).max(1.0).ln();
        let w = tf as f64 * idf;
        v.weights[n].insert(g, w);
        v.norm[n] += w * w;
        if n == 1 {
            v.length += tf;
        }
    }
    for x in &mut v.norm {
        *x = x.sqrt();
    }
    v
}

fn cider_d(samples: &[CookedSample]) -> Vec<f64> {
    // Document frequency: in how many images' references an n-gram appears.
    let mut df: BTreeMap<&[&str], f64> = BTreeMap::new();
    for (_, refs) in samples {
        let mut seen: Vec<&[&str]> = refs.iter().flat_map(|r| r.counts.keys().copied()).collect();
        seen.sort_unstable();
        seen.dedup();
        for g in seen {
            *df.entry(g).or_insert(0.0) += 1.0;
        }
    }
    let log_images = (samples.len() as f64).ln();
    samples
        .iter()
        .map(|(cand, refs)| {
            let hyp = tf_idf(cand, &df, log_images);
            let mut total = [0.0f64; MAX_N];
            for r in refs {
                let rv = tf_idf(r, &df, log_images);
                let delta = hyp.length as f64 - rv.length as f64;
                let penalty = (-(delta * delta) / (2.0 * CIDER_SIGMA * CIDER_SIGMA)).exp();
                for (n, sum) in total.iter_mut().enumerate() {
                    let mut val = 0.0;
                    for (g, &h) in &hyp.weights[n] {
                        let r = rv.weights[n].get(g).copied().unwrap_or(0.0);
                        val += h.min(r) * r;
                    }
                    if hyp.norm[n] != 0.0 && rv.norm[n] != 0.0 {
                        val /= hyp.norm[n] * rv.norm[n];
                    }
                    *sum += val * penalty;
                }
            }
            let mean = total.iter().sum::<f64>() / MAX_N as f64;
            mean / refs.len().max(1) as f64 * 10.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refs(r: &[&str]) -> Vec<String> {
        r.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn tokenize_lowercases_and_drops_punctuation() {
        assert_eq!(tokenize("A Red circle, left.  "), "a red circle left");
        assert_eq!(tokenize("..."), "");
    }

    #[test]
    fn a_candidate_equal_to_its_reference_scores_bleu_one() {
        let r = refs(&["a red circle in the centre"]);
        let s = score(&[Sample {
            candidate: "a red circle in the centre",
            references: &r,
        }]);
        for b in s.bleu {
            assert!((b - 1.0).abs() < 1e-6, "{b}");
        }
    }

    #[test]
    fn bleu_takes_the_closest_reference_length_and_the_shorter_on_a_tie() {
        // Candidate of 3 words, references of 2 and 4: a tie, so 2 (no brevity penalty).
        let r = refs(&["a star", "a blue star here"]);
        let s = score(&[Sample {
            candidate: "a blue star",
            references: &r,
        }]);
        assert!((s.bleu[0] - 1.0).abs() < 1e-6, "{:?}", s.bleu);
    }

    #[test]
    fn cider_d_penalises_length_in_bigrams_and_ranks_the_right_caption_first() {
        let r1 = refs(&["a red circle", "one red circle"]);
        let r2 = refs(&["two blue stars", "two stars"]);
        let good = score(&[
            Sample {
                candidate: "a red circle",
                references: &r1,
            },
            Sample {
                candidate: "two blue stars",
                references: &r2,
            },
        ]);
        let bad = score(&[
            Sample {
                candidate: "two blue stars",
                references: &r1,
            },
            Sample {
                candidate: "a red circle",
                references: &r2,
            },
        ]);
        assert!(good.cider_d > bad.cider_d, "{good:?} {bad:?}");
        assert_eq!(bad.cider_d, 0.0);
    }
}
