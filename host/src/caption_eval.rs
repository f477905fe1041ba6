//! Caption evaluation over a data folder that describes itself (`captions.json`, made by
//! the recipe's `captionset`): BLEU-4 and CIDEr-D against every reference, and what a
//! user needs to trust a caption — each object's colour and shape named, the count
//! right — on seen and on held-out colour–shape pairs.
//!
//! The words the checks read (colours, shapes with their plurals, number words) come
//! from the file's `vocabulary`, so nothing here knows the generator's words.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::caption_metrics::{score, tokenize, Sample};
use crate::{Error, Result};

pub const CAPTIONS_FILE: &str = "captions.json";
pub const CAPTIONS_FORMAT: &str = "vlm-edge-caption-eval";

#[derive(Debug, Clone, Deserialize)]
pub struct Vocabulary {
    pub colours: Vec<String>,
    /// Each shape and the words that name it (singular, plural).
    pub shapes: HashMap<String, Vec<String>>,
    /// Number words and the count each means ("a" → 1, "three" → 3).
    pub numbers: HashMap<String, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Object {
    pub colour: String,
    pub shape: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    pub image: String,
    /// "single", "count" (one to three identical objects) or "pair".
    pub kind: String,
    pub references: Vec<String>,
    pub objects: Vec<Object>,
    pub held_out: bool,
}

#[derive(Debug, Deserialize)]
struct File {
    format: String,
    version: u32,
    vocabulary: Vocabulary,
    items: Vec<Item>,
}

/// A loaded, checked caption evaluation folder.
#[derive(Debug)]
pub struct CaptionSet {
    pub dir: PathBuf,
    pub vocabulary: Vocabulary,
    pub items: Vec<Item>,
}

impl CaptionSet {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(CAPTIONS_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let bad = |msg: String| Error::EvalData {
            path: path.clone(),
            msg,
        };
        let f: File = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if f.format != CAPTIONS_FORMAT || f.version != 1 {
            return Err(bad(format!(
                "format {:?} version {} is not {CAPTIONS_FORMAT:?} version 1",
                f.format, f.version
            )));
        }
        if f.items.is_empty() {
            return Err(bad("no items".into()));
        }
        for it in &f.items {
            crate::data_folder::resolve(dir, &path, &it.image)?;
            if it.references.is_empty() {
                return Err(bad(format!("{}: no reference captions", it.image)));
            }
            if let Some(o) = it.objects.iter().find(|o| {
                !f.vocabulary.colours.contains(&o.colour)
                    || !f.vocabulary.shapes.contains_key(&o.shape)
            }) {
                return Err(bad(format!(
                    "{}: object {} {} is not in the vocabulary",
                    it.image, o.colour, o.shape
                )));
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            vocabulary: f.vocabulary,
            items: f.items,
        })
    }

    /// An item's image (its path was checked to stay inside the folder at load).
    pub fn image_path(&self, item: &Item) -> PathBuf {
        self.dir.join(&item.image)
    }
}

/// What a caption says about the objects, read with the vocabulary: every
/// (number?, colour?, shape) phrase, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mention {
    count: Option<u32>,
    colour: Option<String>,
    shape: String,
}

fn mentions(v: &Vocabulary, caption: &str) -> Vec<Mention> {
    let words: Vec<String> = tokenize(caption).split(' ').map(str::to_owned).collect();
    let shape_of: HashMap<&str, &str> = v
        .shapes
        .iter()
        .flat_map(|(s, names)| names.iter().map(move |n| (n.as_str(), s.as_str())))
        .collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let Some(shape) = shape_of.get(w.as_str()) else {
            continue;
        };
        // Walk back over size words and the like to the colour and the number.
        let (mut colour, mut count) = (None, None);
        for back in words[..i].iter().rev().take(3) {
            if shape_of.contains_key(back.as_str()) {
                break;
            }
            if colour.is_none() && v.colours.contains(back) {
                colour = Some(back.clone());
            } else if let Some(&n) = v.numbers.get(back) {
                count = Some(n);
                break;
            }
        }
        out.push(Mention {
            count,
            colour,
            shape: (*shape).to_owned(),
        });
    }
    out
}

/// Whether a caption names every object by colour and shape and names nothing that is
/// not there; and, for identical objects, whether the number it gives is right.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Named {
    pub objects: bool,
    pub count: bool,
}

pub fn check_caption(v: &Vocabulary, item: &Item, caption: &str) -> Named {
    let said = mentions(v, caption);
    let present = |m: &Mention| {
        item.objects
            .iter()
            .any(|o| o.shape == m.shape && m.colour.as_ref().is_none_or(|c| *c == o.colour))
    };
    let named = |o: &Object| {
        said.iter()
            .any(|m| m.shape == o.shape && m.colour.as_deref() == Some(o.colour.as_str()))
    };
    let objects = item.objects.iter().all(named) && said.iter().all(present);
    let n = item.objects.len() as u32;
    let count = match said.first() {
        Some(m) if item.kind != "pair" => m.count == Some(n) && said.len() == 1,
        Some(_) => said.len() == 2 && said.iter().all(|m| m.count.is_none_or(|c| c == 1)),
        None => false,
    };
    Named { objects, count }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupResult {
    pub name: String,
    pub images: usize,
    /// Images whose caption names every object's colour and shape (and nothing else), %.
    pub objects_named: f64,
    /// Images whose caption gives the right number, %.
    pub count_right: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaptionReport {
    pub images: usize,
    pub bleu: [f64; 4],
    pub cider_d: f64,
    pub groups: Vec<GroupResult>,
}

/// Greedy captions of every item's image (in the set's order), `progress(done, total)`
/// after each.
#[cfg(feature = "model")]
pub fn caption_all(
    set: &CaptionSet,
    cap: &crate::caption::Captioner,
    prompt: &str,
    opts: &vlm_models::generate::Options,
    mut progress: impl FnMut(usize, usize),
) -> Result<Vec<crate::caption::Caption>> {
    let mut out = Vec::with_capacity(set.items.len());
    for (i, item) in set.items.iter().enumerate() {
        let pixels = cap.pixels(&set.image_path(item))?;
        out.push(cap.caption(&pixels, prompt, opts, |_| true)?);
        progress(i + 1, set.items.len());
    }
    Ok(out)
}

/// Scores one caption per item (in the set's order).
pub fn report(set: &CaptionSet, captions: &[String]) -> CaptionReport {
    assert_eq!(captions.len(), set.items.len(), "one caption per item");
    let tokenized: Vec<(String, Vec<String>)> = set
        .items
        .iter()
        .zip(captions)
        .map(|(it, c)| {
            (
                tokenize(c),
                it.references.iter().map(|r| tokenize(r)).collect(),
            )
        })
        .collect();
    let samples: Vec<Sample> = tokenized
        .iter()
        .map(|(c, r)| Sample {
            candidate: c,
            references: r,
        })
        .collect();
    let s = score(&samples);
    let checks: Vec<Named> = set
        .items
        .iter()
        .zip(captions)
        .map(|(it, c)| check_caption(&set.vocabulary, it, c))
        .collect();
    let group = |name: &str, keep: &dyn Fn(&Item) -> bool| {
        let picked: Vec<Named> = set
            .items
            .iter()
            .zip(&checks)
            .filter(|(it, _)| keep(it))
            .map(|(_, n)| *n)
            .collect();
        let pct = |f: &dyn Fn(&Named) -> bool| {
            if picked.is_empty() {
                0.0
            } else {
                100.0 * picked.iter().filter(|n| f(n)).count() as f64 / picked.len() as f64
            }
        };
        GroupResult {
            name: name.to_owned(),
            images: picked.len(),
            objects_named: pct(&|n| n.objects),
            count_right: pct(&|n| n.count),
        }
    };
    let groups = vec![
        group("single object, seen pairs", &|it| {
            it.kind == "single" && !it.held_out
        }),
        group("single object, held-out pairs", &|it| {
            it.kind == "single" && it.held_out
        }),
        group("identical objects (count)", &|it| {
            it.kind == "count" && !it.held_out
        }),
        group("two different objects", &|it| {
            it.kind == "pair" && !it.held_out
        }),
        group("any image with a held-out pair", &|it| it.held_out),
    ];
    CaptionReport {
        images: set.items.len(),
        bleu: s.bleu,
        cider_d: s.cider_d,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> Vocabulary {
        Vocabulary {
            colours: vec!["red".into(), "blue".into()],
            shapes: [("circle", "circles"), ("star", "stars")]
                .iter()
                .map(|(s, p)| (s.to_string(), vec![s.to_string(), p.to_string()]))
                .collect(),
            numbers: [("a", 1), ("one", 1), ("two", 2), ("three", 3)]
                .iter()
                .map(|(w, n)| (w.to_string(), *n))
                .collect(),
        }
    }

    fn item(kind: &str, objects: &[(&str, &str)]) -> Item {
        Item {
            image: "x.png".into(),
            kind: kind.into(),
            references: vec!["x".into()],
            objects: objects
                .iter()
                .map(|(c, s)| Object {
                    colour: c.to_string(),
                    shape: s.to_string(),
                })
                .collect(),
            held_out: false,
        }
    }

    #[test]
    fn a_caption_must_name_each_object_and_nothing_else() {
        let v = vocab();
        let one = item("single", &[("red", "circle")]);
        assert!(check_caption(&v, &one, "A small red circle.").objects);
        assert!(check_caption(&v, &one, "a red circle").count);
        assert!(!check_caption(&v, &one, "a blue circle").objects);
        assert!(
            !check_caption(&v, &one, "a circle").objects,
            "no colour named"
        );
        assert!(!check_caption(&v, &one, "a red circle and a blue star").objects);
        let pair = item("pair", &[("red", "circle"), ("blue", "star")]);
        assert!(check_caption(&v, &pair, "a blue star to the left of a red circle").objects);
        assert!(!check_caption(&v, &pair, "a red circle").objects);
    }

    #[test]
    fn the_count_is_the_number_word_before_the_objects() {
        let v = vocab();
        let three = item(
            "count",
            &[("blue", "star"), ("blue", "star"), ("blue", "star")],
        );
        assert!(check_caption(&v, &three, "three blue stars").count);
        assert!(check_caption(&v, &three, "three small blue stars").count);
        assert!(!check_caption(&v, &three, "two blue stars").count);
        assert!(!check_caption(&v, &three, "blue stars").count);
        assert!(check_caption(&v, &three, "three blue stars").objects);
    }
}
