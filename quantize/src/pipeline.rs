//! `vlm quantize` end to end: a SigLIP model folder and a calibration folder in, one
//! int8 artifact and an accuracy report out.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vlm_runtime::score::{cosine, l2_normalize};
use vlm_runtime::Role;

use crate::calibrate::Sample;
use crate::eval::{evaluate, EvalReport};
use crate::graph::{Graph, TowerInput};
use crate::import::import_tower;
use crate::int8::{quantize_tower, Options, TowerReport};
use crate::runner::{meta_from_config, reproducible, single_tower, Artifact};
use crate::writer::{write_artifact, AlignedBytes, ArtifactParts, LabelSet};
use crate::{Error, Fp32Siglip, Result};

/// The calibration folder's optional prompt file for the text tower.
pub const PROMPTS_FILE: &str = "prompts.txt";

const IMAGE_EXTENSIONS: [&str; 11] = [
    "png", "jpg", "jpeg", "bmp", "gif", "tif", "tiff", "webp", "ppm", "pgm", "pnm",
];

/// The runtime's fp32 path must reproduce tract on the same input to this cosine, or the
/// import is refused (calibrating a wrong graph would be silent).
pub const IMPORT_MIN_COSINE: f32 = 0.9999;

pub struct Request {
    pub model_dir: PathBuf,
    pub calib_dir: PathBuf,
    pub options: Options,
    /// Labels whose text embeddings the artifact stores (device-side classification).
    pub labels: Vec<String>,
    /// Extra prompts for calibrating the text tower.
    pub prompts: Vec<String>,
    /// A zero-shot evaluation folder (eval.json): fp32 vs int8 accuracy in the report.
    pub eval_data: Option<PathBuf>,
    /// Store the image tower and the labels only, for a device that classifies against
    /// the stored labels and never embeds text (a microcontroller's flash holds no text
    /// tower or tokenizer). Needs labels.
    pub image_only: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileSizes {
    pub onnx_bytes: u64,
    pub artifact_bytes: u64,
    /// artifact / ONNX.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ZeroShot {
    pub fp32: EvalReport,
    pub int8: EvalReport,
}

/// Everything `vlm quantize` measured.
#[derive(Debug, Clone, Serialize)]
pub struct QuantReport {
    pub model: PathBuf,
    pub options: Options,
    /// Runtime fp32 vs tract on the first calibration input of each tower.
    pub import_check: Vec<(String, f32)>,
    pub towers: Vec<TowerReport>,
    pub sizes: FileSizes,
    pub labels: usize,
    /// What calibrated the text tower.
    pub text_calibration: String,
    pub zero_shot: Option<ZeroShot>,
}

/// Image files directly inside `dir`, sorted by name.
pub fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// A calibration folder's images: an error naming the folder when it is missing or has
/// none.
pub fn calibration_images(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::NotFound {
            path: dir.to_owned(),
        });
    }
    let files = image_files(dir)?;
    if files.is_empty() {
        return Err(Error::Calibration(format!(
            "{}: no calibration images (png, jpg, …) in the folder",
            dir.display()
        )));
    }
    Ok(files)
}

/// The non-blank lines of a prompts or labels file, trimmed, `#` comments skipped.
pub fn text_lines(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
}

/// A prompts file (`prompts.txt`): one prompt per line.
pub fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Ok(text_lines(&text).collect())
}

/// Splits samples into calibration and check sets: a quarter held out when there are
/// enough, so the accuracy budget is not checked on the data that set the ranges.
pub(crate) fn split<T: Clone>(samples: Vec<T>) -> (Vec<T>, Vec<T>) {
    if samples.len() < 8 {
        return (samples.clone(), samples);
    }
    let (mut calib, mut check) = (Vec::new(), Vec::new());
    for (i, s) in samples.into_iter().enumerate() {
        if i % 4 == 3 {
            check.push(s);
        } else {
            calib.push(s);
        }
    }
    (calib, check)
}

/// Token sequences for calibrating a text tower that comes without a tokenizer (a
/// random-weight export): random ids of random length, then end-of-text and padding as
/// the tokenizer would place them. Deterministic (a fixed linear congruential sequence).
fn synthetic_tokens(t: &vlm_models::siglip::TextConfig, count: usize) -> Vec<Sample> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    (0..count)
        .map(|_| {
            let len = 1 + next() % t.max_length;
            let mut ids: Vec<u32> = (0..len).map(|_| (next() % t.vocab_size) as u32).collect();
            if let Some(eos) = t.eos_token_id {
                if let Some(last) = ids.last_mut() {
                    *last = eos;
                }
            }
            ids.resize(t.max_length, t.pad_token_id);
            Sample::Tokens(ids)
        })
        .collect()
}

/// Imports one tower and checks the runtime's fp32 execution of it against tract.
fn import_checked(fp32: &Fp32Siglip, image: bool, probe: &Sample) -> Result<(Graph, f32)> {
    let cfg = fp32.config();
    let (path, kind, input) = if image {
        (
            fp32.dir().join(&cfg.vision.onnx),
            Role::ImageEncoder,
            TowerInput::Pixels {
                channels: cfg.vision.num_channels,
                height: cfg.preprocess.size[0],
                width: cfg.preprocess.size[1],
            },
        )
    } else {
        (
            fp32.dir().join(&cfg.text.onnx),
            Role::TextEncoder,
            TowerInput::Tokens {
                len: cfg.text.max_length,
            },
        )
    };
    let graph = import_tower(&path, kind, input)?;
    let ours = single_tower(&graph)?;
    let (a, b) = match probe {
        Sample::Pixels(p) => (ours.embed_pixels(p)?, fp32.embed_pixels(p.clone())?),
        Sample::Tokens(t) => {
            let ids: Vec<i64> = t.iter().map(|&i| i as i64).collect();
            (ours.embed_ids(t)?, fp32.embed_ids(&ids)?)
        }
        Sample::Sequence { .. } => {
            return Err(Error::Calibration(
                "a SigLIP tower takes no decoder sequence".into(),
            ))
        }
    };
    let c = cosine(&a, &b);
    if c.is_nan() || c < IMPORT_MIN_COSINE {
        return Err(Error::Import {
            path,
            node: String::new(),
            msg: format!(
                "the lowered graph disagrees with tract on the same input (cosine {c:.6}, need {IMPORT_MIN_COSINE})"
            ),
        });
    }
    Ok((graph, c))
}

/// Runs the whole pipeline. `progress(stage, done, total)` reports long steps.
pub fn quantize_model(
    req: &Request,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(AlignedBytes, QuantReport)> {
    if req.image_only && req.labels.is_empty() {
        return Err(Error::Calibration(
            "an image-only artifact classifies against stored labels: give at least one label"
                .into(),
        ));
    }
    let fp32 = Fp32Siglip::load(&req.model_dir)?;
    let cfg = fp32.config().clone();
    let files = calibration_images(&req.calib_dir)?;
    let mut images = Vec::new();
    for (i, f) in files.iter().enumerate() {
        images.push(Sample::Pixels(fp32.pixels_for(f)?));
        progress("loading calibration images", i + 1, files.len());
    }
    let mut prompts = req.prompts.clone();
    let prompt_file = req.calib_dir.join(PROMPTS_FILE);
    if prompt_file.is_file() {
        prompts.extend(read_prompts(&prompt_file)?);
    }
    prompts.extend(req.labels.iter().cloned());
    let (texts, text_calibration) = if cfg.tokenizer.is_none() {
        if !req.labels.is_empty() {
            return Err(Error::Calibration(
                "labels need a tokenizer, and the model folder ships none".into(),
            ));
        }
        (
            synthetic_tokens(&cfg.text, 64),
            "synthetic token ids (the model ships no tokenizer)".to_string(),
        )
    } else {
        if prompts.is_empty() {
            return Err(Error::Calibration(format!(
                "the text tower needs calibration prompts: put {PROMPTS_FILE} (one prompt per line) in {} or pass labels",
                req.calib_dir.display()
            )));
        }
        let mut texts = Vec::new();
        for p in &prompts {
            let ids = fp32.token_ids(p)?;
            texts.push(Sample::Tokens(ids.into_iter().map(|i| i as u32).collect()));
        }
        let n = texts.len();
        (texts, format!("{n} prompts"))
    };

    let (vision, vcheck) = import_checked(&fp32, true, &images[0])?;
    let (text, tcheck) = import_checked(&fp32, false, &texts[0])?;

    let (icalib, icheck) = split(images);
    let (tcalib, tcheck_set) = split(texts);
    let qv = quantize_tower(&vision, &icalib, &icheck, &req.options, progress)?;
    let qt = quantize_tower(&text, &tcalib, &tcheck_set, &req.options, progress)?;

    let config_json = std::fs::read(req.model_dir.join(vlm_models::siglip::CONFIG_FILE))
        .map_err(|e| Error::io(req.model_dir.join(vlm_models::siglip::CONFIG_FILE), e))?;
    let tokenizer_json = match &cfg.tokenizer {
        Some(t) => Some(
            std::fs::read(req.model_dir.join(t))
                .map_err(|e| Error::io(req.model_dir.join(t), e))?,
        ),
        None => None,
    };
    // The fp32 graphs (checked against tract at import) as one artifact with the model's
    // tokenizer and config, run in the reference's order. The stored labels' embeddings
    // come from it, not from tract, whose kernels round differently on every CPU; so
    // does the report's fp32 side, so that both sides of the zero-shot comparison are
    // the same numbers on every CPU and a budget cannot pass on one machine and fail on
    // another by a near-tie.
    let fp32_graphs = if req.labels.is_empty() && req.eval_data.is_none() {
        None
    } else {
        let bytes = write_artifact(&ArtifactParts {
            meta: meta_from_config(&cfg).to_words().to_vec(),
            graphs: vec![&vision, &text],
            tokenizer_json: tokenizer_json.as_deref(),
            config_json: Some(&config_json),
            labels: None,
            vocab: None,
            prompt_ids: None,
        })?;
        Some(reproducible(bytes, Path::new("the fp32 graphs"))?)
    };
    let label_embeddings: Vec<f32> = match &fp32_graphs {
        Some(g) => req
            .labels
            .iter()
            .map(|l| {
                let mut e = g.embed_text(l)?;
                l2_normalize(&mut e);
                Ok(e)
            })
            .collect::<Result<Vec<_>>>()?
            .concat(),
        None => Vec::new(),
    };
    let labels = (!req.labels.is_empty()).then_some(LabelSet {
        names: &req.labels,
        embeddings: &label_embeddings,
    });
    // Both towers, or the image tower alone (`image_only`: no text tower, no tokenizer).
    let write = |both_towers: bool| {
        write_artifact(&ArtifactParts {
            meta: meta_from_config(&cfg).to_words().to_vec(),
            graphs: if both_towers {
                vec![&qv.graph, &qt.graph]
            } else {
                vec![&qv.graph]
            },
            tokenizer_json: if both_towers {
                tokenizer_json.as_deref()
            } else {
                None
            },
            config_json: Some(&config_json),
            labels,
            vocab: None,
            prompt_ids: None,
        })
    };
    let bytes = write(!req.image_only)?;

    let onnx_bytes = [&cfg.vision.onnx, &cfg.text.onnx]
        .iter()
        .map(|f| {
            std::fs::metadata(req.model_dir.join(f))
                .map(|m| m.len())
                .unwrap_or(0)
        })
        .sum::<u64>();
    let sizes = FileSizes {
        onnx_bytes,
        artifact_bytes: bytes.len() as u64,
        ratio: bytes.len() as f64 / onnx_bytes.max(1) as f64,
    };
    let zero_shot = match &req.eval_data {
        Some(dir) => {
            // The evaluation embeds its prompts with the int8 text tower: an image-only
            // artifact is evaluated through the full one, whose image graph is the same.
            let evaluated = if req.image_only {
                write(true)?
            } else {
                bytes.clone()
            };
            let artifact = Artifact::from_aligned(evaluated, Path::new("the new artifact"))?;
            let reference = fp32_graphs.as_ref().expect("built when eval data is given");
            let fp = evaluate(reference, dir, |d, t| {
                progress("zero-shot eval, fp32", d, t)
            })?;
            let q = evaluate(&artifact, dir, |d, t| {
                progress("zero-shot eval, int8", d, t)
            })?;
            Some(ZeroShot { fp32: fp, int8: q })
        }
        None => None,
    };
    let report = QuantReport {
        model: req.model_dir.clone(),
        options: req.options.clone(),
        import_check: vec![
            (Role::ImageEncoder.name().into(), vcheck),
            (Role::TextEncoder.name().into(), tcheck),
        ],
        towers: vec![qv.report, qt.report],
        sizes,
        labels: req.labels.len(),
        text_calibration,
        zero_shot,
    };
    Ok((bytes, report))
}

/// How closely an artifact reproduces its fp32 source on given inputs.
#[derive(Debug, Clone, Serialize)]
pub struct Fidelity {
    pub images: crate::int8::CosineStats,
    /// None when there was no text to check (no prompts for a model with a tokenizer).
    pub texts: Option<crate::int8::CosineStats>,
    /// What the text inputs were.
    pub text_inputs: String,
}

/// Embedding cosine of `artifact` against the fp32 model folder on every image in
/// `images` (files) and every prompt (or, for a model with no tokenizer, `synthetic`
/// random token sequences).
pub fn fidelity(
    artifact: &Artifact,
    fp32: &Fp32Siglip,
    images: &[PathBuf],
    prompts: &[String],
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<Fidelity> {
    let mut ic = Vec::new();
    for (i, f) in images.iter().enumerate() {
        let pixels = fp32.pixels_for(f)?;
        let q = artifact.embed_pixels(&pixels)?;
        let r = fp32.embed_pixels(pixels)?;
        ic.push(cosine(&q, &r));
        progress("images", i + 1, images.len());
    }
    let cfg = fp32.config();
    let (samples, text_inputs) = if cfg.tokenizer.is_none() {
        (
            synthetic_tokens(&cfg.text, prompts.len().max(images.len()).max(1)),
            "synthetic token ids (the model ships no tokenizer)".to_string(),
        )
    } else {
        let mut v = Vec::new();
        for p in prompts {
            v.push(Sample::Tokens(
                fp32.token_ids(p)?.into_iter().map(|i| i as u32).collect(),
            ));
        }
        let n = v.len();
        let what = if n == 0 {
            format!(
                "none (no prompts: put {PROMPTS_FILE}, one prompt per line, in the data folder)"
            )
        } else {
            format!("{n} prompts")
        };
        (v, what)
    };
    let mut tc = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if let Sample::Tokens(t) = s {
            let q = artifact.embed_ids(t)?;
            let ids: Vec<i64> = t.iter().map(|&i| i as i64).collect();
            tc.push(cosine(&q, &fp32.embed_ids(&ids)?));
        }
        progress("texts", i + 1, samples.len());
    }
    Ok(Fidelity {
        images: crate::int8::CosineStats::of(&ic),
        texts: (!tc.is_empty()).then(|| crate::int8::CosineStats::of(&tc)),
        text_inputs,
    })
}
