//! The fp32 reference path: both SigLIP towers run by tract-onnx, exactly as exported.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;
use vlm_models::siglip::ModelConfig;
use vlm_runtime::Scorer;

use crate::preprocess::{load_rgb8, pixel_values};
use crate::tokenize::TextEncoder;
use crate::{Error, Result};

type Plan = Arc<TypedRunnableModel>;

/// A SigLIP model folder loaded for fp32 inference.
pub struct Fp32Siglip {
    dir: PathBuf,
    config: ModelConfig,
    vision: Plan,
    text: Plan,
    tokenizer: Option<TextEncoder>,
}

fn load_plan(path: &Path, fact: InferenceFact) -> Result<Plan> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_owned(),
        });
    }
    let onnx = |e: TractError| Error::Onnx {
        path: path.to_owned(),
        msg: format!("{e:#}"),
    };
    tract_onnx::onnx()
        .model_for_path(path)
        .map_err(onnx)?
        .with_input_fact(0, fact)
        .map_err(onnx)?
        .into_optimized()
        .map_err(onnx)?
        .into_runnable()
        .map_err(onnx)
}

fn run_single(plan: &Plan, input: Tensor, tower: &'static str, dim: usize) -> Result<Vec<f32>> {
    let err = |e: TractError| Error::Inference {
        tower,
        msg: format!("{e:#}"),
    };
    let out = plan.run(tvec!(input.into())).map_err(err)?;
    let first = out.first().ok_or_else(|| Error::Inference {
        tower,
        msg: "the model has no output".into(),
    })?;
    let view = first.to_plain_array_view::<f32>().map_err(err)?;
    let values: Vec<f32> = view.iter().copied().collect();
    if values.len() != dim {
        return Err(Error::Inference {
            tower,
            msg: format!(
                "output has shape {:?}, expected [1, {dim}] (config embed_dim)",
                view.shape()
            ),
        });
    }
    Ok(values)
}

impl Fp32Siglip {
    /// Loads `dir/config.json`, both towers and (if the folder ships one) the tokenizer.
    pub fn load(dir: &Path) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::NotFound {
                path: dir.to_owned(),
            });
        }
        let config = ModelConfig::load(dir)?;
        let [h, w] = config.preprocess.size;
        let vision = load_plan(
            &dir.join(&config.vision.onnx),
            f32::fact([1, 3, h, w]).into(),
        )?;
        let text = load_plan(
            &dir.join(&config.text.onnx),
            i64::fact([1, config.text.max_length]).into(),
        )?;
        let tokenizer = match &config.tokenizer {
            Some(file) => Some(TextEncoder::load(&dir.join(file), &config.text)?),
            None => None,
        };
        Ok(Self {
            dir: dir.to_owned(),
            config,
            vision,
            text,
            tokenizer,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn scorer(&self) -> Scorer {
        Scorer {
            logit_scale: self.config.logit_scale,
            logit_bias: self.config.logit_bias,
        }
    }

    /// The vision tower's input for one image file.
    pub fn pixels_for(&self, path: &Path) -> Result<Vec<f32>> {
        let img = load_rgb8(path)?;
        Ok(pixel_values(&img, &self.config.preprocess)?)
    }

    /// The (unnormalised) image embedding of an image file.
    pub fn embed_image(&self, path: &Path) -> Result<Vec<f32>> {
        let pixels = self.pixels_for(path)?;
        self.embed_pixels(pixels)
    }

    /// The image embedding of preprocessed `[3, H, W]` pixel values.
    pub fn embed_pixels(&self, pixels: Vec<f32>) -> Result<Vec<f32>> {
        let [h, w] = self.config.preprocess.size;
        let input = Tensor::from_shape(&[1, 3, h, w], &pixels).map_err(|e| Error::Inference {
            tower: "vision",
            msg: format!("{e:#}"),
        })?;
        run_single(&self.vision, input, "vision", self.config.embed_dim)
    }

    /// The token ids a text becomes.
    pub fn token_ids(&self, text: &str) -> Result<Vec<i64>> {
        self.tokenizer
            .as_ref()
            .ok_or(Error::NoTokenizer)?
            .encode(text)
            .map_err(Error::from)
    }

    /// The (unnormalised) text embedding of a text.
    pub fn embed_text(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.token_ids(text)?;
        self.embed_ids(&ids)
    }

    /// The text embedding of `max_length` token ids.
    pub fn embed_ids(&self, ids: &[i64]) -> Result<Vec<f32>> {
        let vocab = self.config.text.vocab_size as i64;
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= vocab) {
            return Err(Error::Inference {
                tower: "text",
                msg: format!("token id {bad} is outside the vocabulary (0..{vocab})"),
            });
        }
        let input = Tensor::from_shape(&[1, ids.len()], ids).map_err(|e| Error::Inference {
            tower: "text",
            msg: format!("{e:#}"),
        })?;
        run_single(&self.text, input, "text", self.config.embed_dim)
    }
}

impl crate::Embedder for Fp32Siglip {
    fn scorer(&self) -> Scorer {
        Fp32Siglip::scorer(self)
    }

    fn embed_image(&self, path: &Path) -> Result<Vec<f32>> {
        Fp32Siglip::embed_image(self, path)
    }

    fn embed_text(&self, text: &str) -> Result<Vec<f32>> {
        Fp32Siglip::embed_text(self, text)
    }
}
