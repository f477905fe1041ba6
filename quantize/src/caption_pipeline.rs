//! `vlm quantize` for a captioner: a Hugging Face captioning folder (any family `hf`
//! reads) and a folder of calibration images in, one int8 artifact — image encoder,
//! projector, token embedding and decoder — and a report out.
//!
//! Each graph goes through the towers' procedure (`int8::quantize_tower`: SmoothQuant,
//! static activation ranges, per-channel weights, fp32 fallback of the most sensitive
//! layers until the output cosine meets the budget), on what that graph sees while the
//! fp32 model captions the calibration images: pixels for the image encoder, vision
//! features for the projector, and for the decoder each whole sequence — prompt with
//! image embeddings, then the caption's tokens — fed in the runs generation feeds it.
//! The decoder is calibrated as one graph with every row's logits (`Captioner::
//! calibration`), and its prefill and step graphs take the same int8 weights from it,
//! so the artifact stores them once.

use std::path::{Path, PathBuf};

use serde::Serialize;
use vlm_host::caption::Captioner as HostCaptioner;
use vlm_host::caption_eval::{caption_all, report as caption_report, CaptionReport, CaptionSet};
use vlm_models::generate::{greedy, Options as GenerateOptions};
use vlm_runtime::ops::Op;
use vlm_runtime::{Input, Role};

use crate::calibrate::Sample;
use crate::graph::Graph;
use crate::hf::{self, Layout};
use crate::int8::{adopt, quantize_embedding, quantize_tower, Options, TowerReport};
pub use crate::kv_cache::{self, KvCache};
use crate::pipeline::{calibration_images, split};
use crate::runner::reproducible;
use crate::writer::{write_artifact, AlignedBytes, ArtifactParts};
use crate::{Error, Result};

pub struct CaptionRequest {
    pub model_dir: PathBuf,
    pub calib_dir: PathBuf,
    pub options: Options,
    /// The text after the image while calibrating (None: the prompt the model was
    /// trained with, else none).
    pub prompt: Option<String>,
    /// Caption tokens at most per calibration image.
    pub max_tokens: usize,
    pub layout: Layout,
    /// A caption set (captions.json): fp32 and int8 captions scored side by side.
    pub eval_data: Option<PathBuf>,
    /// How the decoder keeps its keys and values.
    pub kv_cache: KvCache,
}

/// The decoder's KV cache as written.
#[derive(Debug, Clone, Serialize)]
pub struct KvCacheReport {
    pub storage: KvCache,
    /// Key and value caches (two per layer).
    pub caches: usize,
    /// Positions each holds.
    pub positions: usize,
    /// Their bytes together, and what f32 rows would take.
    pub bytes: u64,
    pub f32_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CalibrationSet {
    pub images: usize,
    /// Decoder rows (prompt and caption positions) over all calibration sequences.
    pub decoder_rows: usize,
    pub prompt: String,
}

/// How often int8 greedy decoding gives fp32's very tokens.
#[derive(Debug, Clone, Serialize)]
pub struct Agreement {
    pub images: usize,
    /// Images whose int8 caption has exactly the fp32 caption's tokens.
    pub identical: usize,
    /// Of all fp32 caption tokens, those int8 produced before its first difference.
    pub tokens_before_divergence: f64,
}

impl Agreement {
    fn of(fp32: &[Vec<u32>], int8: &[Vec<u32>]) -> Self {
        let (mut same, mut kept, mut total) = (0, 0usize, 0usize);
        for (a, b) in fp32.iter().zip(int8) {
            same += usize::from(a == b);
            kept += a.iter().zip(b).take_while(|(x, y)| x == y).count();
            total += a.len();
        }
        Self {
            images: fp32.len(),
            identical: same,
            tokens_before_divergence: kept as f64 / total.max(1) as f64,
        }
    }

    pub fn identical_share(&self) -> f64 {
        self.identical as f64 / self.images.max(1) as f64
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptionEval {
    pub data: PathBuf,
    pub fp32: CaptionReport,
    pub int8: CaptionReport,
    pub agreement: Agreement,
}

#[derive(Debug, Clone, Serialize)]
pub struct CaptionQuantReport {
    pub model: PathBuf,
    pub architecture: &'static str,
    pub options: Options,
    pub calibration: CalibrationSet,
    /// Image encoder, projector and decoder (prefill and step share its weights).
    pub graphs: Vec<TowerReport>,
    /// Greedy captions of the held-out calibration images, int8 against fp32.
    pub agreement: Agreement,
    pub fp32_bytes: u64,
    pub artifact_bytes: u64,
    /// What a device gets to caption without a tokenizer.
    pub device: DeviceText,
    pub kv_cache: KvCacheReport,
    pub eval: Option<CaptionEval>,
}

/// The token table and prompt stored for devices (`vlm-lite`).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceText {
    pub prompt_tokens: usize,
    /// Tokens in the stored table; 0 when none could be made.
    pub vocab_tokens: usize,
    /// Why there is no table (the tokenizer's decoder is not one the table reproduces).
    pub no_vocab_because: Option<String>,
}

/// What the fp32 model did with one calibration image.
struct Traced {
    pixels: Vec<f32>,
    features: Vec<f32>,
    sequence: Sample,
    tokens: Vec<u32>,
}

/// Captions one image in fp32 and records every graph's input on the way.
fn trace(
    cap: &HostCaptioner,
    pixels: Vec<f32>,
    prompt: &str,
    opts: &GenerateOptions,
) -> Result<Traced> {
    let meta = *cap.meta();
    let ids = cap.prompt_ids(prompt)?;
    let (a, w) = cap.buffers();
    let (mut arena, mut work) = (vec![0u8; a], vec![0.0f32; w]);
    // One pass, as `Captioner::caption` makes it (greedy, no repetition penalty), keeping
    // what the projector and decoder were fed on the way.
    let (features, image, tokens) = {
        let gen_err = vlm_host::Error::Generate;
        let mut g = cap.generator(&mut arena, &mut work)?;
        g.encode_image(&pixels).map_err(gen_err)?;
        let (features, image) = (g.features().to_vec(), g.image_embeddings().to_vec());
        g.prefill(&ids, opts.max_tokens).map_err(gen_err)?;
        let mut out = vec![0u32; opts.max_tokens];
        let n = greedy(&mut g, opts, &mut [], &mut out, |_| true).map_err(gen_err)?;
        out.truncate(n);
        (features, image, out)
    };
    let d = meta.hidden;
    let mut rows = Vec::with_capacity((ids.len() + tokens.len()) * d);
    let mut image_row = 0;
    for &id in ids.iter().chain(&tokens) {
        if id == meta.image_token && image_row < meta.image_tokens {
            rows.extend_from_slice(&image[image_row * d..(image_row + 1) * d]);
            image_row += 1;
        } else {
            rows.extend(
                cap.model()
                    .run(Role::TokenEmbedding, Input::U32(&[id]), None)?,
            );
        }
    }
    // As generation feeds them: a prompt that attends both ways in one run, then a
    // token at a time; a causal one in chunks of the prefill's capacity (one run or
    // many, the same function).
    let total = ids.len() + tokens.len();
    let runs: Vec<usize> = if meta.arch.prefix_attends_both_ways() {
        std::iter::once(ids.len())
            .chain(std::iter::repeat_n(1, tokens.len()))
            .collect()
    } else {
        (0..total)
            .step_by(meta.prefill_rows)
            .map(|at| meta.prefill_rows.min(total - at))
            .collect()
    };
    Ok(Traced {
        pixels,
        features,
        sequence: Sample::Sequence { rows, runs },
        tokens,
    })
}

/// Greedy token ids of every image, on one model.
fn captions_of(
    cap: &HostCaptioner,
    pixels: &[Vec<f32>],
    prompt: &str,
    opts: &GenerateOptions,
) -> Result<Vec<Vec<u32>>> {
    pixels
        .iter()
        .map(|p| Ok(cap.caption(p, prompt, opts, |_| true)?.tokens))
        .collect()
}

fn host_captioner(bytes: AlignedBytes, what: &str) -> Result<HostCaptioner> {
    Ok(HostCaptioner::from_model(reproducible(
        bytes,
        Path::new(what),
    )?)?)
}

/// Runs the whole pipeline. `progress(stage, done, total)` reports long steps.
pub fn quantize_captioner(
    req: &CaptionRequest,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<(AlignedBytes, CaptionQuantReport)> {
    if req.max_tokens == 0 {
        return Err(Error::Calibration(
            "calibration captions need at least one token".into(),
        ));
    }
    let files = calibration_images(&req.calib_dir)?;
    let eval_set = match &req.eval_data {
        Some(dir) => Some((dir, CaptionSet::load(dir)?)),
        None => None,
    };
    progress("reading the checkpoint", 0, 1);
    let mut model = hf::load(&req.model_dir, req.layout)?;
    let fp32_bytes = model.write()?;
    let fp32_size = fp32_bytes.len() as u64;
    let fp32 = host_captioner(fp32_bytes, "the fp32 graphs")?;
    let prompt = fp32.prompt_or_default(req.prompt.as_deref());
    let opts = GenerateOptions {
        max_tokens: req.max_tokens,
        repetition_penalty: 1.0,
    };
    let mut traced = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        traced.push(trace(&fp32, fp32.pixels(f)?, &prompt, &opts)?);
        progress(
            "captioning the calibration images (fp32)",
            i + 1,
            files.len(),
        );
    }
    let decoder_rows = traced
        .iter()
        .map(|t| match &t.sequence {
            Sample::Sequence { runs, .. } => runs.iter().sum::<usize>(),
            _ => 0,
        })
        .sum();
    let (calib, check) = split(traced.iter().collect());
    let samples = |f: &dyn Fn(&Traced) -> Sample| {
        (
            calib.iter().map(|t| f(t)).collect::<Vec<_>>(),
            check.iter().map(|t| f(t)).collect::<Vec<_>>(),
        )
    };
    let (ic, ie) = samples(&|t| Sample::Pixels(t.pixels.clone()));
    let (pc, pe) = samples(&|t| Sample::Pixels(t.features.clone()));
    let (dc, de) = samples(&|t| t.sequence.clone());
    let index = |role: Role| -> Result<usize> {
        model
            .graphs
            .iter()
            .position(|g| g.role == role)
            .ok_or_else(|| Error::Calibration(format!("the model has no {} graph", role.name())))
    };
    let (gi, gp, ge, gf, gs) = (
        index(Role::ImageEncoder)?,
        index(Role::Projector)?,
        index(Role::TokenEmbedding)?,
        index(Role::Prefill)?,
        index(Role::Decoder)?,
    );
    let qi = quantize_tower(&model.graphs[gi], &ic, &ie, &req.options, progress)?;
    let qp = quantize_tower(&model.graphs[gp], &pc, &pe, &req.options, progress)?;
    let qd = quantize_tower(&model.calibration, &dc, &de, &req.options, progress)?;
    let mut qd_report = qd.report;
    qd_report.tower = "decoder";
    model.graphs[gi] = qi.graph;
    model.graphs[gp] = qp.graph;
    model.graphs[ge] = quantize_embedding(&model.graphs[ge]);
    adopt(&mut model.graphs[gf], &qd.graph);
    adopt(&mut model.graphs[gs], &qd.graph);
    let f32_cache = cache_bytes(&model.graphs[gs]);
    // What the caches hold, not what was asked: heads that are not a multiple of 4 wide
    // keep f32 rows, and the report must not call them int8.
    let mut storage = KvCache::F32;
    if req.kv_cache == KvCache::Int8 {
        // The prefill and the step share their caches by name: both change alike.
        kv_cache::to_int8(&mut model.graphs[gf]);
        if kv_cache::to_int8(&mut model.graphs[gs]) > 0 {
            storage = KvCache::Int8;
        }
    }
    let kv_report = KvCacheReport {
        storage,
        caches: cache_count(&model.graphs[gs]),
        positions: req.layout.context,
        bytes: cache_bytes(&model.graphs[gs]),
        f32_bytes: f32_cache,
    };
    // For devices: the prompt as ids and each token's bytes, the table checked on every
    // token alone and on every calibration caption.
    let prompt_ids = fp32.prompt_ids(&prompt)?;
    let vocab = fp32.token_bytes().and_then(|table| {
        for t in &traced {
            fp32.check_token_bytes(&table, &t.tokens)?;
        }
        Ok(table)
    });
    let device = DeviceText {
        prompt_tokens: prompt_ids.len(),
        vocab_tokens: vocab.as_ref().map_or(0, |v| v.tokens.len()),
        no_vocab_because: vocab.as_ref().err().cloned(),
    };
    let bytes = write_artifact(&ArtifactParts {
        meta: model.meta.to_words().to_vec(),
        graphs: model.graphs.iter().collect(),
        tokenizer_json: Some(&model.tokenizer_json),
        config_json: Some(&model.config_json),
        labels: None,
        vocab: vocab.as_ref().ok(),
        prompt_ids: Some(&prompt_ids),
    })?;
    let int8 = host_captioner(bytes.clone(), "the new artifact")?;
    let held_out: Vec<Vec<f32>> = check.iter().map(|t| t.pixels.clone()).collect();
    progress("captioning the held-out calibration images (int8)", 0, 1);
    let agreement = Agreement::of(
        &check.iter().map(|t| t.tokens.clone()).collect::<Vec<_>>(),
        &captions_of(&int8, &held_out, &prompt, &opts)?,
    );
    let eval = match eval_set {
        Some((dir, set)) => {
            let mut run = |cap: &HostCaptioner, what: &str| {
                caption_all(&set, cap, &prompt, &opts, |d, t| progress(what, d, t))
            };
            let f = run(&fp32, "caption eval, fp32")?;
            let q = run(&int8, "caption eval, int8")?;
            let text = |c: &[vlm_host::caption::Caption]| -> Vec<String> {
                c.iter().map(|c| c.text.trim().to_string()).collect()
            };
            let tokens = |c: &[vlm_host::caption::Caption]| -> Vec<Vec<u32>> {
                c.iter().map(|c| c.tokens.clone()).collect()
            };
            Some(CaptionEval {
                data: dir.to_owned(),
                fp32: caption_report(&set, &text(&f)),
                int8: caption_report(&set, &text(&q)),
                agreement: Agreement::of(&tokens(&f), &tokens(&q)),
            })
        }
        None => None,
    };
    let report = CaptionQuantReport {
        model: req.model_dir.clone(),
        architecture: model.meta.arch.class_name(),
        options: req.options.clone(),
        calibration: CalibrationSet {
            images: files.len(),
            decoder_rows,
            prompt,
        },
        graphs: vec![qi.report, qp.report, qd_report],
        agreement,
        fp32_bytes: fp32_size,
        artifact_bytes: bytes.len() as u64,
        device,
        kv_cache: kv_report,
        eval,
    };
    Ok((bytes, report))
}

/// The state buffers attention reads keys or values from.
fn caches(g: &Graph) -> Vec<u32> {
    let mut bufs: Vec<u32> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Attention(a) if g.is_state(a.k.buf) => Some([a.k.buf, a.v.buf]),
            _ => None,
        })
        .flatten()
        .collect();
    bufs.sort_unstable();
    bufs.dedup();
    bufs
}

fn cache_count(g: &Graph) -> usize {
    caches(g).len()
}

fn cache_bytes(g: &Graph) -> u64 {
    caches(g)
        .iter()
        .map(|&b| 4 * g.buffers[b as usize] as u64)
        .sum()
}
