//! SigLIP (and fixed-resolution SigLIP 2): a ViT image tower with a MAP pooling head and
//! a text transformer pooled at its last position, scored with σ(t·cos + b).
//!
//! A model folder, as the export recipe writes it from any Hugging Face SigLIP
//! checkpoint, holds `config.json` (described by [`ModelConfig`]), `vision.onnx`,
//! `text.onnx` and `tokenizer.json`.

/// The `format` value of a SigLIP model folder's config.json.
pub const FOLDER_FORMAT: &str = "vlm-edge-siglip-onnx";
/// The folder format version this code reads.
pub const FOLDER_FORMAT_VERSION: u32 = 1;
pub const CONFIG_FILE: &str = "config.json";

/// How the image is resized to the model's input size (PIL's filter names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "std", serde(rename_all = "lowercase"))]
pub enum Resample {
    Nearest,
    Bilinear,
    Bicubic,
    Lanczos,
}

/// How text is padded before the text tower. SigLIP pools the last position and was
/// trained on inputs padded to the full length, so `MaxLength` is the only rule that
/// reproduces its embeddings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "std", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "std", serde(rename_all = "snake_case"))]
pub enum Padding {
    MaxLength,
}

pub use meta::{Meta, MetaError, META_VERSION};

mod meta {
    use super::Resample;
    use vlm_runtime::names::family;
    use vlm_runtime::{FamilyMeta, Model, Role};

    /// The layout version of SigLIP's words in the META section.
    pub const META_VERSION: u32 = 1;
    /// Words of SigLIP's metadata.
    const WORDS: usize = 20;

    /// SigLIP's settings, as the artifact carries them (FORMAT.md, `META`, SigLIP).
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Meta {
        pub embed_dim: usize,
        /// `t`, already exponentiated.
        pub logit_scale: f32,
        pub logit_bias: f32,
        pub channels: usize,
        pub height: usize,
        pub width: usize,
        pub resample: Resample,
        pub rescale: f64,
        pub mean: [f32; 3],
        pub std: [f32; 3],
        pub convert_rgb: bool,
        pub max_length: usize,
        pub pad_id: u32,
        pub eos_id: u32,
        pub vocab_size: usize,
    }

    /// Why an artifact's metadata is not SigLIP's, or disagrees with its graphs.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum MetaError {
        #[error("the artifact is a {found} model, not SigLIP")]
        Family { found: &'static str },
        #[error("SigLIP metadata version {found} is not supported (this build reads {supported})")]
        Version { found: u32, supported: u32 },
        #[error("SigLIP metadata: invalid {field}")]
        BadField { field: &'static str },
    }

    const RESAMPLES: [Resample; 4] = [
        Resample::Nearest,
        Resample::Bilinear,
        Resample::Bicubic,
        Resample::Lanczos,
    ];

    impl Meta {
        /// The processor's rescale and per-channel normalisation.
        pub fn normalize(&self) -> vlm_runtime::preprocess::Normalize {
            vlm_runtime::preprocess::Normalize {
                rescale: self.rescale,
                mean: self.mean,
                std: self.std,
            }
        }

        /// The META section: family, version, word count, 0, then SigLIP's words.
        pub fn to_words(&self) -> [u32; 4 + WORDS] {
            let mut w = [0u32; 4 + WORDS];
            w[..4].copy_from_slice(&[family::SIGLIP, META_VERSION, WORDS as u32, 0]);
            let f = &mut w[4..];
            let r = self.rescale.to_bits();
            f[0] = self.embed_dim as u32;
            f[1] = self.logit_scale.to_bits();
            f[2] = self.logit_bias.to_bits();
            f[3] = self.channels as u32;
            f[4] = self.height as u32;
            f[5] = self.width as u32;
            f[6] = RESAMPLES
                .iter()
                .position(|x| *x == self.resample)
                .unwrap_or(0) as u32;
            f[7] = r as u32;
            f[8] = (r >> 32) as u32;
            for i in 0..3 {
                f[9 + i] = self.mean[i].to_bits();
                f[12 + i] = self.std[i].to_bits();
            }
            f[15] = self.convert_rgb as u32;
            f[16] = self.max_length as u32;
            f[17] = self.pad_id;
            f[18] = self.eos_id;
            f[19] = self.vocab_size as u32;
            w
        }

        /// Reads SigLIP's metadata and checks it against the artifact's graphs: the image
        /// encoder takes `channels × height × width` f32 pixels, the text encoder
        /// `max_length` token ids, and both give one `embed_dim` embedding.
        pub fn from_model(model: &Model) -> Result<Self, MetaError> {
            let meta = Self::from_family(&model.meta)?;
            let bad = |field| MetaError::BadField { field };
            let one_port = |role: Role, len: usize| -> Result<(), MetaError> {
                let Some(g) = model.graph(role) else {
                    return Ok(());
                };
                let (mut inputs, mut outputs) = (g.inputs(), g.outputs());
                let ok = matches!((inputs.next(), inputs.next()), (Some(i), None) if i.len() == len)
                    && matches!((outputs.next(), outputs.next()), (Some(o), None) if o.len() == meta.embed_dim);
                ok.then_some(()).ok_or(bad(role.name()))
            };
            let pixels = meta
                .channels
                .checked_mul(meta.height)
                .and_then(|x| x.checked_mul(meta.width))
                .ok_or(bad("image size"))?;
            one_port(Role::ImageEncoder, pixels)?;
            one_port(Role::TextEncoder, meta.max_length)?;
            if model.labels().is_some_and(|l| l.dim != meta.embed_dim) {
                return Err(bad("label embedding size"));
            }
            Ok(meta)
        }

        /// Reads SigLIP's words, without looking at the graphs.
        pub fn from_family(m: &FamilyMeta) -> Result<Self, MetaError> {
            if m.family != family::SIGLIP {
                return Err(MetaError::Family {
                    found: vlm_runtime::names::name_of(vlm_runtime::names::FAMILIES, m.family),
                });
            }
            if m.version != META_VERSION {
                return Err(MetaError::Version {
                    found: m.version,
                    supported: META_VERSION,
                });
            }
            let w = m.words;
            let bad = |field| MetaError::BadField { field };
            if w.len() < WORDS {
                return Err(bad("length"));
            }
            let f = f32::from_bits;
            let meta = Meta {
                embed_dim: w[0] as usize,
                logit_scale: f(w[1]),
                logit_bias: f(w[2]),
                channels: w[3] as usize,
                height: w[4] as usize,
                width: w[5] as usize,
                resample: *RESAMPLES.get(w[6] as usize).ok_or(bad("resample"))?,
                rescale: f64::from_bits(w[7] as u64 | ((w[8] as u64) << 32)),
                mean: [f(w[9]), f(w[10]), f(w[11])],
                std: [f(w[12]), f(w[13]), f(w[14])],
                convert_rgb: w[15] != 0,
                max_length: w[16] as usize,
                pad_id: w[17],
                eos_id: w[18],
                vocab_size: w[19] as usize,
            };
            if meta.embed_dim == 0 || meta.embed_dim > vlm_runtime::format::MAX_DIM {
                return Err(bad("embed_dim"));
            }
            if !meta.logit_scale.is_finite() || !meta.logit_bias.is_finite() {
                return Err(bad("logit scale or bias"));
            }
            if meta.std.iter().any(|s| !s.is_finite() || *s == 0.0)
                || meta.mean.iter().any(|m| !m.is_finite())
                || !meta.rescale.is_finite()
            {
                return Err(bad("image normalisation"));
            }
            Ok(meta)
        }

        /// SigLIP's sigmoid scoring with this model's scale and bias.
        pub fn scorer(&self) -> vlm_runtime::Scorer {
            vlm_runtime::Scorer {
                logit_scale: self.logit_scale,
                logit_bias: self.logit_bias,
            }
        }
    }
}

#[cfg(feature = "std")]
pub use config::*;

#[cfg(feature = "std")]
mod config {
    use super::*;
    use serde::{Deserialize, Serialize};
    use std::path::{Path, PathBuf};

    #[derive(Debug, thiserror::Error)]
    pub enum ConfigError {
        #[error("{path}: cannot read: {source}")]
        Read {
            path: PathBuf,
            source: std::io::Error,
        },
        #[error("{path}: not a valid model config: {source}")]
        Parse {
            path: PathBuf,
            source: serde_json::Error,
        },
        #[error("{path}: {problem}")]
        Invalid { path: PathBuf, problem: String },
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct VisionConfig {
        pub onnx: String,
        pub input: String,
        pub output: String,
        pub image_size: usize,
        pub patch_size: usize,
        pub num_channels: usize,
        pub hidden_size: usize,
        pub intermediate_size: usize,
        pub num_hidden_layers: usize,
        pub num_attention_heads: usize,
        pub layer_norm_eps: f64,
        pub hidden_act: String,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct TextConfig {
        pub onnx: String,
        pub input: String,
        pub output: String,
        pub vocab_size: usize,
        pub hidden_size: usize,
        pub intermediate_size: usize,
        pub num_hidden_layers: usize,
        pub num_attention_heads: usize,
        pub projection_size: usize,
        pub layer_norm_eps: f64,
        pub hidden_act: String,
        pub max_length: usize,
        pub padding: Padding,
        pub pad_token_id: u32,
        pub eos_token_id: Option<u32>,
    }

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct PreprocessConfig {
        /// [height, width]
        pub size: [usize; 2],
        pub resample: Resample,
        pub rescale_factor: f64,
        pub image_mean: [f32; 3],
        pub image_std: [f32; 3],
        pub convert_rgb: bool,
    }

    /// A SigLIP model folder's config.json.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    pub struct ModelConfig {
        pub format: String,
        pub format_version: u32,
        pub architecture: String,
        pub vision: VisionConfig,
        pub text: TextConfig,
        pub preprocess: PreprocessConfig,
        pub embed_dim: usize,
        /// The learned temperature t, already exponentiated (t = exp(t')).
        pub logit_scale: f32,
        pub logit_bias: f32,
        /// The tokenizer file in the folder, if it ships one.
        pub tokenizer: Option<String>,
    }

    impl ModelConfig {
        /// Parses and checks a config.json; `path` names it in errors.
        pub fn from_json(text: &str, path: &Path) -> Result<Self, ConfigError> {
            let cfg: ModelConfig =
                serde_json::from_str(text).map_err(|source| ConfigError::Parse {
                    path: path.to_owned(),
                    source,
                })?;
            cfg.validate().map_err(|problem| ConfigError::Invalid {
                path: path.to_owned(),
                problem,
            })?;
            Ok(cfg)
        }

        pub fn load(dir: &Path) -> Result<Self, ConfigError> {
            let path = dir.join(CONFIG_FILE);
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            Self::from_json(&text, &path)
        }

        fn validate(&self) -> Result<(), String> {
            if self.format != FOLDER_FORMAT {
                return Err(format!(
                    "format is {:?}, expected {FOLDER_FORMAT:?}",
                    self.format
                ));
            }
            if self.format_version != FOLDER_FORMAT_VERSION {
                return Err(format!(
                    "format_version {} is not supported (this build reads {FOLDER_FORMAT_VERSION})",
                    self.format_version
                ));
            }
            if self.architecture != "siglip" {
                return Err(format!(
                    "architecture {:?} is not siglip",
                    self.architecture
                ));
            }
            let [h, w] = self.preprocess.size;
            // Bounds keep a hostile config from asking for absurd buffers.
            const MAX_SIDE: usize = 4096;
            if h == 0 || w == 0 || h > MAX_SIDE || w > MAX_SIDE {
                return Err(format!("preprocess.size {h}x{w} is outside 1..={MAX_SIDE}"));
            }
            if self.vision.num_channels != 3 {
                return Err(format!(
                    "vision.num_channels is {}, only RGB (3) is supported",
                    self.vision.num_channels
                ));
            }
            if self.text.max_length == 0 || self.text.max_length > 4096 {
                return Err(format!(
                    "text.max_length {} is outside 1..=4096",
                    self.text.max_length
                ));
            }
            if self.embed_dim == 0 {
                return Err("embed_dim is zero".into());
            }
            let bad = |v: &f32| !v.is_finite();
            if self.preprocess.image_mean.iter().any(bad)
                || self
                    .preprocess
                    .image_std
                    .iter()
                    .any(|s| bad(s) || *s <= 0.0)
            {
                return Err("preprocess.image_mean/std must be finite, std positive".into());
            }
            if !(self.preprocess.rescale_factor.is_finite() && self.preprocess.rescale_factor > 0.0)
            {
                return Err("preprocess.rescale_factor must be finite and positive".into());
            }
            if !self.logit_scale.is_finite() || !self.logit_bias.is_finite() {
                return Err("logit_scale / logit_bias are not finite".into());
            }
            Ok(())
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        pub(crate) const SAMPLE: &str = r#"{
          "format": "vlm-edge-siglip-onnx", "format_version": 1, "architecture": "siglip",
          "vision": {"onnx": "vision.onnx", "input": "pixel_values", "output": "image_embeds",
            "image_size": 64, "patch_size": 8, "num_channels": 3, "hidden_size": 128,
            "intermediate_size": 512, "num_hidden_layers": 4, "num_attention_heads": 4,
            "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh"},
          "text": {"onnx": "text.onnx", "input": "input_ids", "output": "text_embeds",
            "vocab_size": 200, "hidden_size": 128, "intermediate_size": 512,
            "num_hidden_layers": 3, "num_attention_heads": 4, "projection_size": 128,
            "layer_norm_eps": 1e-6, "hidden_act": "gelu_pytorch_tanh", "max_length": 16,
            "padding": "max_length", "pad_token_id": 0, "eos_token_id": 1},
          "preprocess": {"size": [64, 64], "resample": "bicubic", "rescale_factor": 0.00392156862745098,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "convert_rgb": true},
          "embed_dim": 128, "logit_scale": 10.0, "logit_bias": -10.0, "tokenizer": "tokenizer.json"
        }"#;

        #[test]
        fn parses_a_model_folder_config() {
            let cfg = ModelConfig::from_json(SAMPLE, Path::new("config.json")).unwrap();
            assert_eq!(cfg.preprocess.resample, Resample::Bicubic);
            assert_eq!(cfg.text.padding, Padding::MaxLength);
            assert_eq!(cfg.text.max_length, 16);
        }

        #[test]
        fn refuses_wrong_format_and_absurd_sizes_naming_the_file() {
            for (from, to) in [
                ("\"format_version\": 1", "\"format_version\": 9"),
                ("\"size\": [64, 64]", "\"size\": [0, 64]"),
                ("\"size\": [64, 64]", "\"size\": [64, 1000000]"),
                ("\"architecture\": \"siglip\"", "\"architecture\": \"clip\""),
                (
                    "\"image_std\": [0.5, 0.5, 0.5]",
                    "\"image_std\": [0.5, 0.0, 0.5]",
                ),
            ] {
                let bad = SAMPLE.replace(from, to);
                let err = ModelConfig::from_json(&bad, Path::new("m/config.json")).unwrap_err();
                assert!(err.to_string().starts_with("m/config.json: "), "{err}");
            }
            let err = ModelConfig::from_json("{", Path::new("x.json")).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }));
        }
    }
}
