//! The parts of a Hugging Face `config.json` the captioner families share: a SigLIP
//! vision tower's and a Llama-style language model's settings, read with the defaults the
//! `transformers` config classes apply.

use std::path::{Path, PathBuf};

use serde_json::Value;
use vlm_runtime::ops::Activation;

use crate::{Error, Result};

/// One object of a config.json, with the path of keys that led to it for errors.
#[derive(Clone, Copy)]
pub struct Json<'a> {
    pub v: &'a Value,
    pub file: &'a Path,
    pub at: &'a str,
}

impl<'a> Json<'a> {
    pub fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::Checkpoint {
            path: self.file.to_owned(),
            msg: if self.at.is_empty() {
                msg.to_string()
            } else {
                format!("{}: {msg}", self.at)
            },
        }
    }

    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.v.get(key).filter(|v| !v.is_null())
    }

    pub fn obj(&self, key: &'a str) -> Result<Json<'a>> {
        match self.get(key) {
            Some(v) if v.is_object() => Ok(Json {
                v,
                file: self.file,
                at: key,
            }),
            _ => Err(self.err(format!("no {key} object"))),
        }
    }

    pub fn usize(&self, key: &str) -> Result<usize> {
        self.usize_opt(key)?
            .ok_or_else(|| self.err(format!("{key} is missing")))
    }

    pub fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }

    pub fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .filter(|&x| x <= u32::MAX as u64)
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.err(format!("{key} is not a count"))),
        }
    }

    pub fn f64_or(&self, key: &str, default: f64) -> Result<f64> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .ok_or_else(|| self.err(format!("{key} is not a number"))),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("{key} is not true or false"))),
        }
    }

    pub fn str_or(&self, key: &str, default: &'a str) -> Result<&'a str> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_str()
                .ok_or_else(|| self.err(format!("{key} is not text"))),
        }
    }

    /// An integer or a list of integers (`eos_token_id` may be either).
    pub fn ids(&self, key: &str) -> Result<Vec<u32>> {
        let bad = || self.err(format!("{key} is not a token id or a list of them"));
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_u64()
                        .filter(|&x| x < u32::MAX as u64)
                        .map(|x| x as u32)
                })
                .collect::<Option<Vec<_>>>()
                .ok_or_else(bad),
            Some(v) => Ok(vec![v
                .as_u64()
                .filter(|&x| x < u32::MAX as u64)
                .ok_or_else(bad)? as u32]),
        }
    }

    pub fn activation(&self, key: &str, default: &str) -> Result<Activation> {
        let name = self.str_or(key, default)?;
        activation(name).ok_or_else(|| self.err(format!("activation {name:?} is not supported")))
    }
}

/// A Hugging Face activation name (`ACT2FN`) as the runtime's.
pub fn activation(name: &str) -> Option<Activation> {
    Some(match name {
        "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Activation::GeluTanh,
        "gelu" => Activation::GeluErf,
        "silu" | "swish" => Activation::Silu,
        _ => return None,
    })
}

/// A model folder's config.json, parsed.
pub struct ConfigFile {
    pub path: PathBuf,
    pub value: Value,
}

impl ConfigFile {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
            path: path.clone(),
            msg: format!("not valid JSON: {e}"),
        })?;
        if !value.is_object() {
            return Err(Error::Checkpoint {
                path,
                msg: "not a JSON object".into(),
            });
        }
        Ok(Self { path, value })
    }

    pub fn root(&self) -> Json<'_> {
        Json {
            v: &self.value,
            file: &self.path,
            at: "",
        }
    }

    /// The first of `architectures`.
    pub fn architecture(&self) -> Result<&str> {
        self.value
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .ok_or_else(|| self.root().err("architectures names no model class"))
    }
}

/// A SigLIP vision tower (`SiglipVisionConfig`, `Idefics3VisionConfig`,
/// `Idefics2VisionConfig`).
#[derive(Debug, Clone, Copy)]
pub struct VisionConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub channels: usize,
    pub image_size: usize,
    pub patch: usize,
    pub eps: f32,
    pub act: Activation,
}

impl VisionConfig {
    pub fn read(j: Json) -> Result<Self> {
        let c = Self {
            hidden: j.usize_or("hidden_size", 768)?,
            intermediate: j.usize_or("intermediate_size", 3072)?,
            layers: j.usize_or("num_hidden_layers", 12)?,
            heads: j.usize_or("num_attention_heads", 12)?,
            channels: j.usize_or("num_channels", 3)?,
            image_size: j.usize_or("image_size", 224)?,
            patch: j.usize_or("patch_size", 16)?,
            eps: j.f64_or("layer_norm_eps", 1e-6)? as f32,
            act: j.activation("hidden_act", "gelu_pytorch_tanh")?,
        };
        if c.heads == 0
            || !c.hidden.is_multiple_of(c.heads)
            || c.patch == 0
            || c.image_size < c.patch
        {
            return Err(j.err("hidden size, heads, image size and patch do not fit together"));
        }
        Ok(c)
    }

    /// Patches per side.
    pub fn side(&self) -> usize {
        self.image_size / self.patch
    }
}

/// A Llama-style decoder: Llama, Qwen2, Mistral, Gemma.
#[derive(Debug, Clone, Copy)]
pub struct TextConfig {
    pub hidden: usize,
    pub intermediate: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub eps: f32,
    pub rope_theta: f64,
    pub act: Activation,
    pub tied: bool,
    /// Gemma: RMSNorm multiplies by `1 + w`, and input embeddings are scaled by √hidden.
    pub gemma: bool,
    pub max_positions: usize,
}

impl TextConfig {
    /// `tied_default`: the outer config's `tie_word_embeddings`, which the text config's
    /// own value (if any) overrides.
    pub fn read(j: Json, tied_default: bool) -> Result<Self> {
        let model_type = j.str_or("model_type", "llama")?;
        let gemma = match model_type {
            "llama" | "qwen2" | "mistral" => false,
            "gemma" => true,
            other => {
                return Err(j.err(format!(
                    "language model type {other:?} is not supported (llama, qwen2, mistral, gemma)"
                )))
            }
        };
        let hidden = j.usize("hidden_size")?;
        let heads = j.usize("num_attention_heads")?;
        if heads == 0 {
            return Err(j.err("num_attention_heads is 0"));
        }
        let head_dim = j.usize_or("head_dim", hidden / heads)?;
        let kv_heads = j.usize_or("num_key_value_heads", heads)?;
        // transformers 5 keeps RoPE settings in `rope_parameters`; older files in
        // `rope_theta` and `rope_scaling`.
        let rope = j.get("rope_parameters").filter(|v| v.is_object());
        let theta_default = 10000.0;
        let rope_theta = match rope {
            Some(r) => Json { v: r, ..j }.f64_or("rope_theta", theta_default)?,
            None => j.f64_or("rope_theta", theta_default)?,
        };
        let rope_type = rope
            .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            .or_else(|| {
                j.get("rope_scaling")
                    .and_then(|r| r.get("rope_type").or_else(|| r.get("type")))
            })
            .and_then(|t| t.as_str())
            .unwrap_or("default");
        if rope_type != "default" {
            return Err(j.err(format!("RoPE scaling {rope_type:?} is not supported")));
        }
        let act_key = if gemma && j.get("hidden_activation").is_some() {
            "hidden_activation"
        } else {
            "hidden_act"
        };
        let c = Self {
            hidden,
            intermediate: j.usize("intermediate_size")?,
            layers: j.usize("num_hidden_layers")?,
            heads,
            kv_heads,
            head_dim,
            vocab: j.usize("vocab_size")?,
            eps: j.f64_or("rms_norm_eps", 1e-6)? as f32,
            rope_theta,
            act: j.activation(act_key, if gemma { "gelu_pytorch_tanh" } else { "silu" })?,
            tied: j.bool_or("tie_word_embeddings", tied_default)?,
            gemma,
            max_positions: j.usize_or("max_position_embeddings", 2048)?,
        };
        if c.kv_heads == 0
            || !c.heads.is_multiple_of(c.kv_heads)
            || c.head_dim == 0
            || !c.head_dim.is_multiple_of(2)
        {
            return Err(j.err("attention heads, key/value heads and head size do not fit together"));
        }
        if c.vocab == 0 || c.hidden == 0 || c.layers == 0 {
            return Err(j.err("an empty language model"));
        }
        Ok(c)
    }
}
