//! Captioning on a host: a captioner artifact (`vlm_models::captioner`) with its
//! tokenizer, the family's prompt layout around the image tokens, the image
//! preprocessing, and generation over buffers sized once per caption
//! (`vlm_models::generate`): nothing is allocated per token.

use std::path::Path;

use tokenizers::Tokenizer;
use vlm_models::captioner::{first_resize, Arch, Meta};
use vlm_models::generate::{beam, greedy, BeamWork, GenerateError, Generator, Options};
use vlm_models::siglip::PreprocessConfig;

use crate::model::Model;
use crate::{Error, Result};

/// A loaded captioner.
pub struct Captioner {
    model: Model,
    meta: Meta,
    tokenizer: Tokenizer,
}

/// One caption: its tokens and text.
#[derive(Debug, Clone, PartialEq)]
pub struct Caption {
    pub tokens: Vec<u32>,
    pub text: String,
}

fn gen_err(error: GenerateError) -> Error {
    Error::Generate(error)
}

impl Captioner {
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_model(Model::load(path)?)
    }

    pub fn from_model(model: Model) -> Result<Self> {
        let meta = Meta::from_model(model.runtime()).map_err(|error| Error::BadCaptioner {
            path: model.source().to_owned(),
            error,
        })?;
        let json = model.runtime().tokenizer_json().ok_or(Error::NoTokenizer)?;
        let tokenizer = Tokenizer::from_bytes(json).map_err(|e| Error::Tokenizer {
            path: model.source().to_owned(),
            msg: e.to_string(),
        })?;
        Ok(Self {
            model,
            meta,
            tokenizer,
        })
    }

    /// The prompt the model was trained with, if its folder named one
    /// (`vlm_caption.prompt` in the stored config.json).
    pub fn default_prompt(&self) -> Option<String> {
        let json = self.model.runtime().config_json()?;
        let v: serde_json::Value = serde_json::from_slice(json).ok()?;
        v.get("vlm_caption")?
            .get("prompt")?
            .as_str()
            .map(String::from)
    }

    /// `prompt` if given, else the one the model was trained with, else none.
    pub fn prompt_or_default(&self, prompt: Option<&str>) -> String {
        prompt
            .map(String::from)
            .or_else(|| self.default_prompt())
            .unwrap_or_default()
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The family's prompt text around one image, before tokenization: the image's
    /// token block where the family's processor puts it, then `prompt`.
    pub fn prompt_text(&self, prompt: &str) -> Result<String> {
        let name = |id: u32| {
            self.tokenizer
                .id_to_token(id)
                .ok_or_else(|| Error::Tokenize {
                    text: prompt.to_owned(),
                    msg: format!("the tokenizer has no image token {id}"),
                })
        };
        let image = name(self.meta.image_token)?.repeat(self.meta.image_tokens);
        Ok(match self.meta.arch {
            // Idefics3Processor without image splitting.
            Arch::Idefics3 => {
                let fake = "<fake_token_around_image>";
                format!("{fake}<global-img>{image}{fake}{prompt}")
            }
            // LlavaProcessor expands "<image>"; the prompt follows on its own line.
            Arch::Llava => format!("{image}\n{prompt}"),
            // Idefics2Processor without image splitting; it also puts a space between
            // the closing boundary token and text that follows it directly.
            Arch::Idefics2 => {
                let fake = "<fake_token_around_image>";
                let space = match prompt.chars().next() {
                    Some(c) if !c.is_whitespace() && c != '<' => " ",
                    _ => "",
                };
                format!("{fake}{image}{fake}{space}{prompt}")
            }
            // PaliGemmaProcessor: image tokens, <bos>, the prompt, a newline.
            Arch::PaliGemma => {
                let bos = match self.meta.bos {
                    Some(b) => name(b)?,
                    None => String::new(),
                };
                format!("{image}{bos}{prompt}\n")
            }
        })
    }

    /// The prompt's token ids, as the family's processor makes them.
    pub fn prompt_ids(&self, prompt: &str) -> Result<Vec<u32>> {
        let text = self.prompt_text(prompt)?;
        let enc = self
            .tokenizer
            .encode(text.as_str(), true)
            .map_err(|e| Error::Tokenize {
                text: prompt.to_owned(),
                msg: e.to_string(),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// The text of generated tokens (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.tokenizer
            .decode(ids, true)
            .map_err(|e| Error::Tokenize {
                text: format!("{ids:?}"),
                msg: e.to_string(),
            })
    }

    /// Each token's bytes, for a device to print captions without the tokenizer; `Err`
    /// says why the tokenizer's decoder cannot be put in a table.
    pub fn token_bytes(&self) -> std::result::Result<crate::detokenize::TokenBytes, String> {
        let json = self.model.runtime().tokenizer_json().unwrap_or_default();
        crate::detokenize::TokenBytes::new(&self.tokenizer, json)
    }

    /// `ids` decode the same through `table` as through the tokenizer.
    pub fn check_token_bytes(
        &self,
        table: &crate::detokenize::TokenBytes,
        ids: &[u32],
    ) -> std::result::Result<(), String> {
        table.check_ids(&self.tokenizer, ids)
    }

    /// The image encoder's input for an image file.
    pub fn pixels(&self, path: &Path) -> Result<Vec<f32>> {
        let img = crate::preprocess::load_rgb8(path)?;
        self.pixels_of(&img)
    }

    pub fn pixels_of(&self, img: &image::RgbImage) -> Result<Vec<f32>> {
        let m = &self.meta;
        let first;
        let img = match m.longest_edge_first {
            0 => img,
            edge => {
                let (h, w) = first_resize(img.height() as usize, img.width() as usize, edge);
                first = crate::resample::resize(img, w as u32, h as u32, m.resample);
                &first
            }
        };
        crate::preprocess::pixel_values(
            img,
            &PreprocessConfig {
                size: [m.height, m.width],
                resample: m.resample,
                rescale_factor: m.rescale,
                image_mean: m.mean,
                image_std: m.std,
                convert_rgb: m.convert_rgb,
            },
        )
    }

    /// Bytes of arena and floats of work buffer one caption needs.
    pub fn buffers(&self) -> (usize, usize) {
        let rt = self.model.runtime();
        (
            Generator::<vlm_runtime::Cpu>::arena_bytes(rt, self.model.options().threads),
            Generator::<vlm_runtime::Cpu>::work_floats(rt, &self.meta),
        )
    }

    /// A generator over caller-owned buffers (of [`Captioner::buffers`]' sizes), on the
    /// model's kernels and threads.
    pub fn generator<'a>(
        &'a self,
        arena: &'a mut [u8],
        work: &'a mut [f32],
    ) -> Result<Generator<'a, 'a, Box<dyn vlm_runtime::Backend>>> {
        let backend = self.model.backend()?;
        Generator::with_backend(self.model.runtime(), self.meta, arena, work, backend)
            .map_err(gen_err)
    }

    /// Beam search of `beams` beams (2 ..= `generate::MAX_BEAMS`) over `pixels` after
    /// `prompt`: every beam keeps its own arena (KV cache), all sized before the first
    /// token.
    pub fn caption_beam(
        &self,
        pixels: &[f32],
        prompt: &str,
        opts: &Options,
        beams: usize,
    ) -> Result<Caption> {
        if beams == 0 || beams > vlm_models::generate::MAX_BEAMS {
            return Err(gen_err(GenerateError::TooManyBeams {
                beams,
                max: vlm_models::generate::MAX_BEAMS,
            }));
        }
        let ids = self.prompt_ids(prompt)?;
        let (a, w) = self.buffers();
        let mut arenas: Vec<Vec<u8>> = (0..beams).map(|_| vec![0u8; a]).collect();
        let mut works: Vec<Vec<f32>> = (0..beams).map(|_| vec![0.0f32; w]).collect();
        let mut gens = Vec::with_capacity(beams);
        for (arena, work) in arenas.iter_mut().zip(works.iter_mut()) {
            gens.push(self.generator(arena, work)?);
        }
        gens[0].encode_image(pixels).map_err(gen_err)?;
        gens[0].prefill(&ids, opts.max_tokens).map_err(gen_err)?;
        let (s, f, t) = BeamWork::sizes(&gens[0], beams, opts.max_tokens);
        let (mut states, mut scores, mut tokens) = (vec![0u8; s], vec![0.0f32; f], vec![0u32; t]);
        let mut out = vec![0u32; opts.max_tokens];
        let work = BeamWork {
            states: &mut states,
            scores: &mut scores,
            tokens: &mut tokens,
        };
        let n = beam(&mut gens, opts, work, &mut out).map_err(gen_err)?;
        out.truncate(n);
        let text = self.decode(&out)?;
        Ok(Caption { tokens: out, text })
    }

    /// Greedy caption of `pixels` after `prompt`, each token shown to `on_token` as it
    /// comes (return `false` to stop).
    pub fn caption(
        &self,
        pixels: &[f32],
        prompt: &str,
        opts: &Options,
        on_token: impl FnMut(u32) -> bool,
    ) -> Result<Caption> {
        let ids = self.prompt_ids(prompt)?;
        let (a, w) = self.buffers();
        let (mut arena, mut work) = (vec![0u8; a], vec![0.0f32; w]);
        let mut seen = vec![
            false;
            if opts.repetition_penalty != 1.0 {
                self.meta.vocab_size
            } else {
                0
            }
        ];
        for &i in &ids {
            if let Some(s) = seen.get_mut(i as usize) {
                *s = true;
            }
        }
        let mut out = vec![0u32; opts.max_tokens];
        let mut g = self.generator(&mut arena, &mut work)?;
        g.encode_image(pixels).map_err(gen_err)?;
        g.prefill(&ids, opts.max_tokens).map_err(gen_err)?;
        let n = greedy(&mut g, opts, &mut seen, &mut out, on_token).map_err(gen_err)?;
        out.truncate(n);
        let text = self.decode(&out)?;
        Ok(Caption { tokens: out, text })
    }
}
