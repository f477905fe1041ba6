//! Zero-shot evaluation over a data folder that describes its own tasks.
//!
//! `eval.json` in the folder lists classification tasks (each item an image, its
//! candidate prompts and the right one) and retrieval splits (images with captions).
//! The metric definitions here are the recipe's, line for line, so the Rust figures
//! can be compared with the ones the recipe measured in PyTorch.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use vlm_host::data_folder::resolve;
use vlm_runtime::score::{cosine, sigmoid};

use crate::{Embedder, Error, Result};

pub const EVAL_FILE: &str = "eval.json";
pub const EVAL_FORMAT: &str = "vlm-edge-zero-shot-eval";
pub const RECALL_AT: [usize; 3] = [1, 5, 10];
/// Equal-width probability bins of the reliability diagram.
pub const RELIABILITY_BINS: usize = 10;

#[derive(Debug, Deserialize)]
struct EvalFile {
    format: String,
    version: u32,
    tasks: Vec<TaskSpec>,
    #[serde(default)]
    retrieval: Vec<RetrievalSpec>,
}

#[derive(Debug, Deserialize)]
struct TaskSpec {
    name: String,
    /// Candidate prompts shared by every item (items may bring their own instead).
    #[serde(default)]
    labels: Vec<String>,
    items: Vec<TaskItem>,
}

#[derive(Debug, Deserialize)]
struct TaskItem {
    image: String,
    gold: usize,
    #[serde(default)]
    labels: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RetrievalSpec {
    name: String,
    items: Vec<RetrievalItem>,
}

#[derive(Debug, Deserialize)]
struct RetrievalItem {
    image: String,
    caption: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskResult {
    pub name: String,
    pub correct: usize,
    pub total: usize,
    /// Top-1 accuracy in percent.
    pub accuracy: f64,
    /// What the model's sigmoid probabilities σ(t·cos + b) mean on this task.
    pub calibration: Calibration,
}

/// SigLIP scores every label on its own, so a user may keep every label whose
/// probability passes a threshold; these figures say whether that threshold means
/// anything. Each item has one right label among its candidates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Median over items of the right label's probability (numpy's median).
    pub median_true: f64,
    /// Median over items of the highest probability among the wrong labels.
    pub median_best_wrong: f64,
    /// Items whose right label reaches 0.5 and whose wrong labels all stay below it, percent.
    pub threshold_exact: f64,
    /// The reliability diagram over every (item, label) pair: bin `i` holds the
    /// probabilities in `[i/10, (i+1)/10)` (1.0 falls in the last).
    pub bins: Vec<ReliabilityBin>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReliabilityBin {
    pub lower: f64,
    pub upper: f64,
    /// (item, label) pairs whose probability falls in the bin.
    pub count: usize,
    /// Their mean probability (0 when the bin is empty).
    pub mean_probability: f64,
    /// The fraction of them that are the right label (0 when the bin is empty).
    pub observed: f64,
}

/// Probabilities of one task's items: the right label's and every wrong one's.
#[derive(Default)]
struct ProbabilityTally {
    true_p: Vec<f64>,
    best_wrong_p: Vec<f64>,
    exact: usize,
    /// Per bin: count, sum of probabilities, right labels.
    bins: [(usize, f64, usize); RELIABILITY_BINS],
}

impl ProbabilityTally {
    fn add(&mut self, probabilities: &[f64], gold: usize) {
        let mut best_wrong = 0.0f64;
        for (i, &p) in probabilities.iter().enumerate() {
            let bin = ((p * RELIABILITY_BINS as f64) as usize).min(RELIABILITY_BINS - 1);
            let b = &mut self.bins[bin];
            b.0 += 1;
            b.1 += p;
            b.2 += usize::from(i == gold);
            if i != gold {
                best_wrong = best_wrong.max(p);
            }
        }
        let t = probabilities[gold];
        self.exact += usize::from(t >= 0.5 && best_wrong < 0.5);
        self.true_p.push(t);
        self.best_wrong_p.push(best_wrong);
    }

    fn finish(mut self) -> Calibration {
        let items = self.true_p.len();
        Calibration {
            median_true: median(&mut self.true_p),
            median_best_wrong: median(&mut self.best_wrong_p),
            threshold_exact: percent(self.exact, items),
            bins: self
                .bins
                .iter()
                .enumerate()
                .map(|(i, &(count, sum, right))| ReliabilityBin {
                    lower: i as f64 / RELIABILITY_BINS as f64,
                    upper: (i + 1) as f64 / RELIABILITY_BINS as f64,
                    count,
                    mean_probability: if count == 0 { 0.0 } else { sum / count as f64 },
                    observed: if count == 0 {
                        0.0
                    } else {
                        right as f64 / count as f64
                    },
                })
                .collect(),
        }
    }
}

/// The median as numpy computes it (the mean of the two middle values when even); 0
/// for no values.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetrievalResult {
    pub name: String,
    pub images: usize,
    pub captions: usize,
    /// Image→text Recall@1/5/10, percent.
    pub image_to_text: [f64; 3],
    /// Text→image Recall@1/5/10, percent.
    pub text_to_image: [f64; 3],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    pub tasks: Vec<TaskResult>,
    pub retrieval: Vec<RetrievalResult>,
}

struct Embeddings<'m> {
    model: &'m dyn Embedder,
    images: HashMap<PathBuf, Vec<f32>>,
    texts: HashMap<String, Vec<f32>>,
}

impl<'m> Embeddings<'m> {
    fn image(&mut self, path: PathBuf) -> Result<&[f32]> {
        if !self.images.contains_key(&path) {
            let e = self.model.embed_image(&path)?;
            self.images.insert(path.clone(), e);
        }
        Ok(&self.images[&path])
    }

    fn text(&mut self, text: &str) -> Result<&[f32]> {
        if !self.texts.contains_key(text) {
            let e = self.model.embed_text(text)?;
            self.texts.insert(text.to_owned(), e);
        }
        Ok(&self.texts[text])
    }
}

/// Index of the first maximum (as numpy's argmax).
fn argmax(scores: &[f32]) -> usize {
    let mut best = 0;
    for (i, s) in scores.iter().enumerate() {
        if *s > scores[best] {
            best = i;
        }
    }
    best
}

fn percent(hits: usize, total: usize) -> f64 {
    if total == 0 {
        0.0
    } else {
        100.0 * hits as f64 / total as f64
    }
}

/// Runs every task and retrieval split of `data_dir/eval.json` on `model`.
/// `progress` is called with (done, total) items.
pub fn evaluate(
    model: &dyn Embedder,
    data_dir: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport> {
    let eval_file = data_dir.join(EVAL_FILE);
    let text = std::fs::read_to_string(&eval_file).map_err(|e| Error::io(&eval_file, e))?;
    let spec: EvalFile = serde_json::from_str(&text).map_err(|e| Error::EvalData {
        path: eval_file.clone(),
        msg: e.to_string(),
    })?;
    if spec.format != EVAL_FORMAT || spec.version != 1 {
        return Err(Error::EvalData {
            path: eval_file,
            msg: format!(
                "format {:?} version {} is not {EVAL_FORMAT:?} version 1",
                spec.format, spec.version
            ),
        });
    }
    let total: usize = spec.tasks.iter().map(|t| t.items.len()).sum::<usize>()
        + spec.retrieval.iter().map(|r| r.items.len()).sum::<usize>();
    let mut done = 0;
    let mut emb = Embeddings {
        model,
        images: HashMap::new(),
        texts: HashMap::new(),
    };

    let scorer = model.scorer();
    let mut tasks = Vec::new();
    for task in &spec.tasks {
        let mut correct = 0;
        let mut tally = ProbabilityTally::default();
        for item in &task.items {
            let labels = item.labels.as_deref().unwrap_or(&task.labels);
            if item.gold >= labels.len() {
                return Err(Error::EvalData {
                    path: eval_file,
                    msg: format!(
                        "task {:?}: item {:?} has gold {} but {} labels",
                        task.name,
                        item.image,
                        item.gold,
                        labels.len()
                    ),
                });
            }
            let image = emb
                .image(resolve(data_dir, &eval_file, &item.image)?)?
                .to_vec();
            let mut scores = Vec::with_capacity(labels.len());
            for label in labels {
                scores.push(cosine(&image, emb.text(label)?));
            }
            correct += usize::from(argmax(&scores) == item.gold);
            let probabilities: Vec<f64> = scores
                .iter()
                .map(|&c| f64::from(sigmoid(scorer.logit_of_cosine(c))))
                .collect();
            tally.add(&probabilities, item.gold);
            done += 1;
            progress(done, total);
        }
        tasks.push(TaskResult {
            name: task.name.clone(),
            correct,
            total: task.items.len(),
            accuracy: percent(correct, task.items.len()),
            calibration: tally.finish(),
        });
    }

    let mut retrieval = Vec::new();
    for split in &spec.retrieval {
        let mut images = Vec::new();
        let mut captions: Vec<&str> = Vec::new();
        let mut caption_of = Vec::new();
        for item in &split.items {
            images.push(
                emb.image(resolve(data_dir, &eval_file, &item.image)?)?
                    .to_vec(),
            );
            let idx = match captions.iter().position(|c| *c == item.caption) {
                Some(i) => i,
                None => {
                    captions.push(&item.caption);
                    captions.len() - 1
                }
            };
            caption_of.push(idx);
            done += 1;
            progress(done, total);
        }
        let texts: Vec<Vec<f32>> = captions
            .iter()
            .map(|c| emb.text(c).map(<[f32]>::to_vec))
            .collect::<Result<_>>()?;
        // sim[i][c]: image i against unique caption c.
        let sim: Vec<Vec<f32>> = images
            .iter()
            .map(|im| texts.iter().map(|t| cosine(im, t)).collect())
            .collect();
        let mut i2t = [0usize; 3];
        for (i, row) in sim.iter().enumerate() {
            let gold = row[caption_of[i]];
            let rank = row.iter().filter(|s| **s > gold).count();
            for (k, at) in RECALL_AT.iter().enumerate() {
                i2t[k] += usize::from(rank < *at);
            }
        }
        let mut t2i = [0usize; 3];
        for (c, _) in captions.iter().enumerate() {
            let best_gold = (0..images.len())
                .filter(|&i| caption_of[i] == c)
                .map(|i| sim[i][c])
                .fold(f32::NEG_INFINITY, f32::max);
            let rank = (0..images.len())
                .filter(|&i| caption_of[i] != c && sim[i][c] > best_gold)
                .count();
            for (k, at) in RECALL_AT.iter().enumerate() {
                t2i[k] += usize::from(rank < *at);
            }
        }
        retrieval.push(RetrievalResult {
            name: split.name.clone(),
            images: images.len(),
            captions: captions.len(),
            image_to_text: i2t.map(|h| percent(h, images.len())),
            text_to_image: t2i.map(|h| percent(h, captions.len())),
        });
    }
    Ok(EvalReport { tasks, retrieval })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_is_numpys() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }

    #[test]
    fn reliability_bins_count_every_label_once() {
        let mut t = ProbabilityTally::default();
        t.add(&[0.95, 0.05, 0.55], 0);
        t.add(&[0.2, 0.58, 1.0], 2);
        let c = t.finish();
        assert_eq!(c.bins.iter().map(|b| b.count).sum::<usize>(), 6);
        assert_eq!(c.median_true, (0.95 + 1.0) / 2.0);
        assert_eq!(c.median_best_wrong, (0.55 + 0.58) / 2.0);
        assert_eq!(c.threshold_exact, 0.0);
        let last = &c.bins[RELIABILITY_BINS - 1];
        assert_eq!((last.count, last.observed), (2, 1.0));
        let first = &c.bins[0];
        assert_eq!((first.count, first.observed), (1, 0.0));
        let five = &c.bins[5];
        assert_eq!(five.count, 2);
        assert!((five.mean_probability - 0.565).abs() < 1e-12);
    }

    #[test]
    fn an_item_passes_the_threshold_only_alone() {
        let mut t = ProbabilityTally::default();
        t.add(&[0.7, 0.2], 0);
        t.add(&[0.7, 0.5], 0);
        assert_eq!(t.finish().threshold_exact, 50.0);
    }

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5]), 1);
        assert_eq!(argmax(&[2.0]), 0);
    }
}
