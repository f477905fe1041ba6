//! A captioner: an image encoder, a projector into a language model's embedding space,
//! and that language model's decoder — the families of Hugging Face's
//! `*ForConditionalGeneration` vision-language classes. What the host needs to run one,
//! beyond the graphs, travels in the artifact's META words ([`Meta`]): the family, the
//! image preprocessing, the image token and its count, the prefill chunk, the context
//! length and the stop tokens. The per-family prompt layout lives in [`Arch`].

use vlm_runtime::names::{family, NONE};
use vlm_runtime::{FamilyMeta, Model, Role};

use crate::siglip::Resample;

/// The layout version of the captioner's words.
pub const META_VERSION: u32 = 1;
const WORDS: usize = 32;
/// Stop tokens the metadata can name.
pub const MAX_STOPS: usize = 4;

/// Which Hugging Face class the model came from: it fixes the prompt layout around the
/// image tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `Idefics3ForConditionalGeneration` (SmolVLM): SigLIP → pixel shuffle → linear →
    /// Llama.
    Idefics3,
    /// `LlavaForConditionalGeneration`: SigLIP / CLIP → MLP → Llama / Qwen2 / Mistral.
    Llava,
    /// `PaliGemmaForConditionalGeneration`: SigLIP → linear → Gemma.
    PaliGemma,
    /// `Idefics2ForConditionalGeneration`: SigLIP → MLP + perceiver resampler → Mistral.
    Idefics2,
}

impl Arch {
    pub const ALL: [Arch; 4] = [Arch::Idefics3, Arch::Llava, Arch::PaliGemma, Arch::Idefics2];

    pub fn code(self) -> u32 {
        match self {
            Arch::Idefics3 => 1,
            Arch::Llava => 2,
            Arch::PaliGemma => 3,
            Arch::Idefics2 => 4,
        }
    }

    pub fn from_code(c: u32) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.code() == c)
    }

    /// The Hugging Face class name (config.json's `architectures`).
    pub fn class_name(self) -> &'static str {
        match self {
            Arch::Idefics3 => "Idefics3ForConditionalGeneration",
            Arch::Llava => "LlavaForConditionalGeneration",
            Arch::PaliGemma => "PaliGemmaForConditionalGeneration",
            Arch::Idefics2 => "Idefics2ForConditionalGeneration",
        }
    }

    /// Whether the prompt (image and text) attends to itself both ways, only generated
    /// tokens causally (PaliGemma's prefix-LM): the prompt must then be one prefill run.
    pub fn prefix_attends_both_ways(self) -> bool {
        self == Arch::PaliGemma
    }

    pub fn from_class_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.class_name() == name)
    }
}

/// A captioner's settings, as the artifact carries them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meta {
    pub arch: Arch,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub resample: Resample,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub convert_rgb: bool,
    /// The decoder's width (its input embeddings).
    pub hidden: usize,
    pub vocab_size: usize,
    /// The token the prompt repeats once per image embedding.
    pub image_token: u32,
    /// Image embeddings per image (the projector's rows).
    pub image_tokens: usize,
    /// Embeddings the prefill graph takes per run.
    pub prefill_rows: usize,
    /// Positions the KV cache holds: prompt and generated tokens together.
    pub context: usize,
    /// The beginning-of-sequence token, where the family's prompt layout places it
    /// itself (PaliGemma's, after the image tokens); the other families' tokenizers add
    /// their own.
    pub bos: Option<u32>,
    /// Tokens that end a caption (end of sequence, end of utterance…).
    pub stops: [Option<u32>; MAX_STOPS],
    /// Idefics3's processor first resizes the image so its longest edge is this, keeping
    /// the aspect ratio (and an even short side), then squashes it to the tower's size;
    /// 0: straight to the tower's size.
    pub longest_edge_first: usize,
}

/// Why an artifact's metadata is not a captioner's, or disagrees with its graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("the artifact is a {found} model, not a captioner")]
    Family { found: &'static str },
    #[error("captioner metadata version {found} is not supported (this build reads {supported})")]
    Version { found: u32, supported: u32 },
    #[error("captioner metadata: invalid {field}")]
    BadField { field: &'static str },
}

const RESAMPLES: [Resample; 4] = [
    Resample::Nearest,
    Resample::Bilinear,
    Resample::Bicubic,
    Resample::Lanczos,
];

fn opt(x: Option<u32>) -> u32 {
    x.unwrap_or(NONE)
}

fn from_opt(w: u32) -> Option<u32> {
    (w != NONE).then_some(w)
}

impl Meta {
    /// The vision processor's rescale and per-channel normalisation.
    pub fn normalize(&self) -> vlm_runtime::preprocess::Normalize {
        vlm_runtime::preprocess::Normalize {
            rescale: self.rescale,
            mean: self.mean,
            std: self.std,
        }
    }

    /// The META section: family, version, word count, 0, then the captioner's words.
    pub fn to_words(&self) -> [u32; 4 + WORDS] {
        let mut w = [0u32; 4 + WORDS];
        w[..4].copy_from_slice(&[family::CAPTIONER, META_VERSION, WORDS as u32, 0]);
        let f = &mut w[4..];
        let r = self.rescale.to_bits();
        f[0] = self.arch.code();
        f[1] = self.channels as u32;
        f[2] = self.height as u32;
        f[3] = self.width as u32;
        f[4] = RESAMPLES
            .iter()
            .position(|x| *x == self.resample)
            .unwrap_or(0) as u32;
        f[5] = r as u32;
        f[6] = (r >> 32) as u32;
        for i in 0..3 {
            f[7 + i] = self.mean[i].to_bits();
            f[10 + i] = self.std[i].to_bits();
        }
        f[13] = self.convert_rgb as u32;
        f[14] = self.hidden as u32;
        f[15] = self.vocab_size as u32;
        f[16] = self.image_token;
        f[17] = self.image_tokens as u32;
        f[18] = self.prefill_rows as u32;
        f[19] = self.context as u32;
        f[20] = opt(self.bos);
        for (i, s) in self.stops.iter().enumerate() {
            f[21 + i] = opt(*s);
        }
        f[25] = self.longest_edge_first as u32;
        w
    }

    /// Reads the captioner's words, without looking at the graphs.
    pub fn from_family(m: &FamilyMeta) -> Result<Self, MetaError> {
        if m.family != family::CAPTIONER {
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
            arch: Arch::from_code(w[0]).ok_or(bad("architecture"))?,
            channels: w[1] as usize,
            height: w[2] as usize,
            width: w[3] as usize,
            resample: *RESAMPLES.get(w[4] as usize).ok_or(bad("resample"))?,
            rescale: f64::from_bits(w[5] as u64 | ((w[6] as u64) << 32)),
            mean: [f(w[7]), f(w[8]), f(w[9])],
            std: [f(w[10]), f(w[11]), f(w[12])],
            convert_rgb: w[13] != 0,
            hidden: w[14] as usize,
            vocab_size: w[15] as usize,
            image_token: w[16],
            image_tokens: w[17] as usize,
            prefill_rows: w[18] as usize,
            context: w[19] as usize,
            bos: from_opt(w[20]),
            stops: [
                from_opt(w[21]),
                from_opt(w[22]),
                from_opt(w[23]),
                from_opt(w[24]),
            ],
            longest_edge_first: w[25] as usize,
        };
        if meta.std.iter().any(|s| !s.is_finite() || *s == 0.0)
            || meta.mean.iter().any(|m| !m.is_finite())
            || !meta.rescale.is_finite()
        {
            return Err(bad("image normalisation"));
        }
        if meta.hidden == 0 || meta.vocab_size == 0 || meta.prefill_rows == 0 {
            return Err(bad("decoder size"));
        }
        if meta.image_tokens == 0 || meta.image_tokens > meta.context {
            return Err(bad("image token count"));
        }
        Ok(meta)
    }

    /// Reads the metadata and checks it against the graphs: the image encoder takes
    /// `channels × height × width` pixels, the projector gives `image_tokens × hidden`,
    /// the token embedding one id to `hidden`, the prefill `prefill_rows × hidden`
    /// embeddings and the decoder one, both to `vocab_size` logits.
    pub fn from_model(model: &Model) -> Result<Self, MetaError> {
        let meta = Self::from_family(&model.meta)?;
        let bad = |field| MetaError::BadField { field };
        let pixels = meta
            .channels
            .checked_mul(meta.height)
            .and_then(|x| x.checked_mul(meta.width))
            .ok_or(bad("image size"))?;
        let prefill = meta
            .prefill_rows
            .checked_mul(meta.hidden)
            .ok_or(bad("prefill size"))?;
        let image = meta
            .image_tokens
            .checked_mul(meta.hidden)
            .ok_or(bad("image token count"))?;
        for (role, input, output) in [
            (Role::TokenEmbedding, Some(1), meta.hidden),
            (Role::Projector, None, image),
            (Role::Prefill, Some(prefill), meta.vocab_size),
            (Role::Decoder, Some(meta.hidden), meta.vocab_size),
            (Role::ImageEncoder, Some(pixels), 0),
        ] {
            let g = model.graph(role).ok_or(bad(role.name()))?;
            let (mut ins, mut outs) = (g.inputs(), g.outputs());
            let (Some(i), None, Some(o), None) = (ins.next(), ins.next(), outs.next(), outs.next())
            else {
                return Err(bad(role.name()));
            };
            if input.is_some_and(|n| i.len() != n) || (output != 0 && o.len() != output) {
                return Err(bad(role.name()));
            }
        }
        Ok(meta)
    }

    /// Whether `id` ends a caption.
    pub fn is_stop(&self, id: u32) -> bool {
        self.stops.contains(&Some(id))
    }
}

/// Idefics3's first resize ([`Meta::longest_edge_first`]): as the processor's
/// `_resize_output_size_rescale_to_max_len`, then its 4096 px cap, the longest edge to
/// `edge`, the other by the aspect ratio, truncated, and made even by rounding up.
/// Returns (height, width).
pub fn first_resize(height: usize, width: usize, edge: usize) -> (usize, usize) {
    let aspect = width as f64 / height as f64;
    let (mut h, mut w) = (height, width);
    if w >= h {
        w = edge;
        h = (w as f64 / aspect) as usize;
        if h % 2 != 0 {
            h += 1;
        }
    } else {
        h = edge;
        w = (h as f64 * aspect) as usize;
        if w % 2 != 0 {
            w += 1;
        }
    }
    let (mut h, mut w) = (h.max(1), w.max(1));
    const MAX: usize = 4096;
    let aspect = w as f64 / h as f64;
    if w >= h && w > MAX {
        w = MAX;
        h = (w as f64 / aspect) as usize;
    } else if h > w && h > MAX {
        h = MAX;
        w = (h as f64 * aspect) as usize;
    }
    (h.max(1), w.max(1))
}

#[cfg(test)]
mod resize_tests {
    #[test]
    fn idefics3_first_resize_keeps_aspect_with_an_even_side() {
        assert_eq!(super::first_resize(480, 640, 512), (384, 512));
        assert_eq!(super::first_resize(100, 301, 128), (42, 128));
        assert_eq!(super::first_resize(100, 250, 128), (52, 128));
        assert_eq!(super::first_resize(640, 480, 512), (512, 384));
        assert_eq!(super::first_resize(64, 64, 128), (128, 128));
    }
}
