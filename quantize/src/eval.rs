//! Zero-shot evaluation over a data folder that describes its own tasks.
//!
//! `eval.json` in the folder lists classification tasks (each item an image, its
//! candidate prompts and the right one) and retrieval splits (images with captions).
//! The metric definitions here are the recipe's, line for line, so the Rust figures
//! can be compared with the ones the recipe measured in PyTorch.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};
use vlm_runtime::score::cosine;

use crate::{Embedder, Error, Result};

pub const EVAL_FILE: &str = "eval.json";
pub const EVAL_FORMAT: &str = "vlm-edge-zero-shot-eval";
pub const RECALL_AT: [usize; 3] = [1, 5, 10];

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

/// Resolves an item's image inside the data folder; paths may not leave it.
fn image_path(dir: &Path, eval_file: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(Error::EvalData {
            path: eval_file.to_owned(),
            msg: format!("image path {rel:?} leaves the data folder"),
        });
    }
    Ok(dir.join(p))
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

    let mut tasks = Vec::new();
    for task in &spec.tasks {
        let mut correct = 0;
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
                .image(image_path(data_dir, &eval_file, &item.image)?)?
                .to_vec();
            let mut scores = Vec::with_capacity(labels.len());
            for label in labels {
                scores.push(cosine(&image, emb.text(label)?));
            }
            correct += usize::from(argmax(&scores) == item.gold);
            done += 1;
            progress(done, total);
        }
        tasks.push(TaskResult {
            name: task.name.clone(),
            correct,
            total: task.items.len(),
            accuracy: percent(correct, task.items.len()),
        });
    }

    let mut retrieval = Vec::new();
    for split in &spec.retrieval {
        let mut images = Vec::new();
        let mut captions: Vec<&str> = Vec::new();
        let mut caption_of = Vec::new();
        for item in &split.items {
            images.push(
                emb.image(image_path(data_dir, &eval_file, &item.image)?)?
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
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.1, 0.5, 0.5]), 1);
        assert_eq!(argmax(&[2.0]), 0);
    }

    #[test]
    fn image_paths_stay_inside_the_data_folder() {
        let f = Path::new("d/eval.json");
        assert!(image_path(Path::new("d"), f, "../secret.png").is_err());
        assert!(image_path(Path::new("d"), f, "/etc/passwd").is_err());
        assert_eq!(
            image_path(Path::new("d"), f, "images/a.png").unwrap(),
            Path::new("d/images/a.png")
        );
    }
}
