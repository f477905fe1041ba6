//! Hugging Face captioning checkpoints — a model folder as `save_pretrained` writes it
//! (config.json, model.safetensors, tokenizer.json, the processor's config) — read
//! straight from their tensors into runtime graphs, one file per architecture
//! (`idefics3.rs`, `llava.rs`) over shared parts (`siglip_vision.rs`, `llama.rs`).
//!
//! Why safetensors and not ONNX (the SigLIP towers' route): the safetensors file is what
//! every one of these checkpoints ships, exactly as trained, with no export step that
//! could drop the KV cache or fold the causal mask; the graphs a decoder needs (prefill
//! and step over one cache) are the runtime's own shapes, so writing them from the
//! tensors is shorter than pattern-matching an exported graph into them.

mod build;
pub mod checkpoint;
pub mod config;
mod idefics2;
mod idefics3;
pub mod llama;
mod llava;
mod paligemma;
mod preprocess;
pub mod siglip_vision;

use std::path::Path;

use vlm_models::captioner::{Arch, Meta};

pub use checkpoint::Checkpoint;
pub use config::ConfigFile;

use crate::graph::Graph;
use crate::writer::{write_artifact, AlignedBytes, ArtifactParts};
use crate::{Error, Result};

/// How to lay the decoder out: the KV cache's length and the prefill chunk (PaliGemma's
/// whole prompt must fit one chunk: its image tokens and the text).
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Positions the cache holds (prompt, image tokens and caption together).
    pub context: usize,
    /// Input embeddings per prefill run.
    pub prefill_rows: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            context: 512,
            prefill_rows: 16,
        }
    }
}

/// A captioning model read from its folder: graphs and settings, ready to write.
pub struct Captioner {
    pub meta: Meta,
    /// Image encoder, projector, token embedding, prefill, decoder step.
    pub graphs: Vec<Graph>,
    /// The decoder as int8 calibration runs it (every row's logits); not written.
    pub calibration: Graph,
    pub tokenizer_json: Vec<u8>,
    pub config_json: Vec<u8>,
}

/// Whether `dir` holds a Hugging Face captioner (a config.json naming one of the
/// supported `*ForConditionalGeneration` classes, or any class: the error names it).
pub fn is_hf_folder(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && (dir.join("model.safetensors").is_file()
            || dir.join("model.safetensors.index.json").is_file())
}

/// Reads a captioner's folder.
pub fn load(dir: &Path, layout: Layout) -> Result<Captioner> {
    let cfg = ConfigFile::load(dir)?;
    let class = cfg.architecture()?;
    let arch = Arch::from_class_name(class).ok_or_else(|| {
        cfg.root().err(format!(
            "architecture {class} is not supported (supported: {})",
            Arch::ALL.map(|a| a.class_name()).join(", ")
        ))
    })?;
    if layout.context == 0 || layout.prefill_rows == 0 || layout.prefill_rows > layout.context {
        return Err(Error::Checkpoint {
            path: dir.to_owned(),
            msg: format!(
                "a context of {} with prefill chunks of {} cannot hold a prompt",
                layout.context, layout.prefill_rows
            ),
        });
    }
    let ck = Checkpoint::open(dir)?;
    let pre = preprocess::read(dir)?;
    let parts = match arch {
        Arch::Idefics3 => idefics3::load(&cfg, &ck, layout)?,
        Arch::Llava => llava::load(&cfg, &ck, layout)?,
        Arch::Idefics2 => idefics2::load(&cfg, &ck, layout)?,
        Arch::PaliGemma => paligemma::load(&cfg, &ck, layout)?,
    };
    let tok_path = dir.join("tokenizer.json");
    let tokenizer_json = std::fs::read(&tok_path).map_err(|e| Error::io(&tok_path, e))?;
    let tokenizer =
        tokenizers::Tokenizer::from_bytes(&tokenizer_json).map_err(|e| Error::Tokenizer {
            path: tok_path.clone(),
            msg: e.to_string(),
        })?;
    let (bos, stops) = special_tokens(&cfg, &tokenizer, arch)?;
    let bos = match arch {
        Arch::PaliGemma => bos,
        _ => None,
    };
    let meta = Meta {
        arch,
        channels: parts.vision.channels,
        height: parts.vision.image_size,
        width: parts.vision.image_size,
        resample: pre.resample,
        rescale: pre.rescale,
        mean: pre.mean,
        std: pre.std,
        convert_rgb: pre.convert_rgb,
        hidden: parts.text.hidden,
        vocab_size: parts.text.vocab,
        image_token: parts.image_token,
        image_tokens: parts.image_tokens,
        prefill_rows: parts.prefill_rows,
        context: layout.context,
        bos,
        stops,
        longest_edge_first: match arch {
            Arch::Idefics3 => pre.longest_edge.unwrap_or(0),
            _ => 0,
        },
    };
    let config_json = stored_config(&cfg, dir)?;
    Ok(Captioner {
        meta,
        graphs: parts.graphs,
        calibration: parts.calibration,
        tokenizer_json,
        config_json,
    })
}

/// The config.json the artifact carries: the folder's, with the prompt its recipe
/// trained on (`vlm_caption.json`'s `prompt`, if the folder has one) as
/// `vlm_caption.prompt`, which `vlm caption` uses when given none.
fn stored_config(cfg: &ConfigFile, dir: &Path) -> Result<Vec<u8>> {
    let mut v = cfg.value.clone();
    let extra = dir.join(CAPTION_FILE);
    if extra.is_file() {
        let text = std::fs::read_to_string(&extra).map_err(|e| Error::io(&extra, e))?;
        let x: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: extra.clone(),
            msg: format!("not valid JSON: {e}"),
        })?;
        let prompt = x
            .get("prompt")
            .and_then(|p| p.as_str())
            .ok_or_else(|| Error::Checkpoint {
                path: extra.clone(),
                msg: "no prompt".into(),
            })?;
        v["vlm_caption"] = serde_json::json!({ "prompt": prompt });
    }
    serde_json::to_vec_pretty(&v).map_err(|e| Error::Checkpoint {
        path: cfg.path.clone(),
        msg: e.to_string(),
    })
}

/// A captioner folder's own file beside Hugging Face's: the prompt it was trained with.
pub const CAPTION_FILE: &str = "vlm_caption.json";

/// What a family's loader returns.
pub(crate) struct Parts {
    pub vision: config::VisionConfig,
    pub text: config::TextConfig,
    pub image_token: u32,
    pub image_tokens: usize,
    /// Rows per prefill run (the layout's, or more where the family needs it).
    pub prefill_rows: usize,
    pub graphs: Vec<Graph>,
    pub calibration: Graph,
}

/// The beginning-of-sequence token a prompt starts with (when the tokenizer does not add
/// it itself) and the tokens that end a caption.
fn special_tokens(
    cfg: &ConfigFile,
    tok: &tokenizers::Tokenizer,
    arch: Arch,
) -> Result<(Option<u32>, [Option<u32>; vlm_models::captioner::MAX_STOPS])> {
    let root = cfg.root();
    let text = root.obj("text_config").ok();
    let mut ids = root.ids("eos_token_id")?;
    if let Some(t) = text {
        ids.extend(t.ids("eos_token_id")?);
    }
    // The chat families end a turn with their own token, which generation stops on.
    let by_name: &[&str] = match arch {
        Arch::Idefics3 | Arch::Idefics2 => &["<end_of_utterance>"],
        Arch::Llava | Arch::PaliGemma => &[],
    };
    for n in by_name {
        if let Some(id) = tok.token_to_id(n) {
            ids.push(id);
        }
    }
    let mut bos = root.ids("bos_token_id")?.first().copied();
    if let (None, Some(t)) = (bos, text) {
        bos = t.ids("bos_token_id")?.first().copied();
    }
    let mut stops = [None; vlm_models::captioner::MAX_STOPS];
    let mut k = 0;
    for id in ids {
        if !stops.contains(&Some(id)) && k < stops.len() {
            stops[k] = Some(id);
            k += 1;
        }
    }
    Ok((bos, stops))
}

impl Captioner {
    /// The artifact: every graph fp32.
    pub fn write(&self) -> Result<AlignedBytes> {
        write_artifact(&ArtifactParts {
            meta: self.meta.to_words().to_vec(),
            graphs: self.graphs.iter().collect(),
            tokenizer_json: Some(&self.tokenizer_json),
            config_json: Some(&self.config_json),
            labels: None,
            vocab: None,
            prompt_ids: None,
        })
    }
}
