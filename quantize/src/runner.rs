//! The host's handle on a `.vlmq` artifact: the runtime's executor (the same code a
//! device runs) behind the std conveniences the CLI and the pipeline need — files,
//! image decoding, the tokenizer stored in the artifact.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use vlm_models::siglip::ModelConfig;
use vlm_runtime::model::{Meta, Resample as RtResample};
use vlm_runtime::{Input, Model, Observer, Scorer, Session, TowerKind};

use crate::graph::{Graph, TowerInput};
use crate::preprocess::{load_rgb8, pixel_values};
use crate::tokenize::TextEncoder;
use crate::writer::{write_artifact, AlignedBytes, ArtifactParts};
use crate::{Error, Result};

self_cell::self_cell!(
    /// The artifact bytes and the validated model that borrows them.
    struct Loaded {
        owner: AlignedBytes,
        #[covariant]
        dependent: Model,
    }
);

/// A loaded, validated artifact.
pub struct Artifact {
    loaded: Loaded,
    source: PathBuf,
    config: Option<ModelConfig>,
    tokenizer: Option<TextEncoder>,
    arena: RefCell<Vec<u8>>,
    threads: std::cell::Cell<usize>,
    reproducible: std::cell::Cell<bool>,
}

/// Anything that turns images and texts into SigLIP embeddings: the fp32 ONNX folder
/// (tract) or an artifact (the runtime).
pub trait Embedder {
    fn scorer(&self) -> Scorer;
    fn embed_image(&self, path: &Path) -> Result<Vec<f32>>;
    fn embed_text(&self, text: &str) -> Result<Vec<f32>>;
}

impl Artifact {
    /// Reads and validates an artifact file.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NotFound {
                path: path.to_owned(),
            });
        }
        Self::from_bytes(AlignedBytes::read(path)?, path)
    }

    /// Validates artifact bytes; `source` names them in errors.
    pub fn from_bytes(bytes: AlignedBytes, source: &Path) -> Result<Self> {
        let loaded = Loaded::try_new(bytes, |b| Model::from_bytes(b.as_bytes())).map_err(|e| {
            Error::BadArtifact {
                path: source.to_owned(),
                error: e,
            }
        })?;
        let model = loaded.borrow_dependent();
        let config = match model.config_json() {
            Some(json) => {
                let text = std::str::from_utf8(json).map_err(|_| Error::BadArtifact {
                    path: source.to_owned(),
                    error: vlm_runtime::FormatError::BadField {
                        field: "config json",
                    },
                })?;
                Some(ModelConfig::from_json(text, source)?)
            }
            None => None,
        };
        let tokenizer = match (model.tokenizer_json(), &config) {
            (Some(json), Some(cfg)) => Some(TextEncoder::from_bytes(json, &cfg.text, source)?),
            _ => None,
        };
        let arena = RefCell::new(vec![0u8; model.arena_size()]);
        Ok(Self {
            loaded,
            source: source.to_owned(),
            config,
            tokenizer,
            arena,
            threads: std::cell::Cell::new(1),
            reproducible: std::cell::Cell::new(false),
        })
    }

    pub fn model(&self) -> &Model<'_> {
        self.loaded.borrow_dependent()
    }

    pub fn bytes(&self) -> &[u8] {
        self.loaded.borrow_owner().as_bytes()
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    /// Splits the large GEMMs across `n` threads (results do not change: rows are split,
    /// each computed exactly as on one thread).
    pub fn set_threads(&self, n: usize) {
        self.threads.set(n.max(1));
        let need = self.model().arena_size_for_threads(n.max(1));
        let mut arena = self.arena.borrow_mut();
        if arena.len() < need {
            arena.resize(need, 0);
        }
    }

    /// Computes the scalar reference's bits on any CPU (`Session::set_reproducible`):
    /// for every run whose numbers go into an artifact.
    pub fn set_reproducible(&self, on: bool) {
        self.reproducible.set(on);
    }

    pub fn has_tower(&self, kind: TowerKind) -> bool {
        self.model().tower(kind).is_some()
    }

    /// Runs one tower on the runtime, showing intermediate values to `observer`.
    pub fn run(
        &self,
        kind: TowerKind,
        input: Input<'_>,
        observer: Option<&mut dyn Observer>,
    ) -> Result<Vec<f32>> {
        let model = self.model();
        let mut arena = self.arena.borrow_mut();
        let mut session = Session::new(model, &mut arena).map_err(|error| Error::Runtime {
            what: "starting a session",
            error,
        })?;
        session.set_threads(self.threads.get());
        session.set_reproducible(self.reproducible.get());
        let mut out = vec![0.0f32; model.meta.embed_dim];
        session
            .run(kind, input, &mut out, observer)
            .map_err(|error| Error::Runtime {
                what: match kind {
                    TowerKind::Vision => "running the vision tower",
                    TowerKind::Text => "running the text tower",
                },
                error,
            })?;
        Ok(out)
    }

    /// The image embedding of preprocessed `[C, H, W]` pixel values.
    pub fn embed_pixels(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        self.run(TowerKind::Vision, Input::Pixels(pixels), None)
    }

    /// The text embedding of `max_length` token ids.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.run(TowerKind::Text, Input::Tokens(ids), None)
    }

    fn host_config(&self) -> Result<&ModelConfig> {
        self.config.as_ref().ok_or_else(|| Error::BadArtifact {
            path: self.source.clone(),
            error: vlm_runtime::FormatError::MissingSection {
                what: "CONFIG_JSON (needed to preprocess images and text on the host)",
            },
        })
    }

    /// The token ids a text becomes (the tokenizer stored in the artifact).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let ids = self
            .tokenizer
            .as_ref()
            .ok_or(Error::NoTokenizer)?
            .encode(text)?;
        Ok(ids.into_iter().map(|i| i as u32).collect())
    }
}

impl Embedder for Artifact {
    fn scorer(&self) -> Scorer {
        self.model().scorer()
    }

    fn embed_image(&self, path: &Path) -> Result<Vec<f32>> {
        let cfg = self.host_config()?;
        let pixels = pixel_values(&load_rgb8(path)?, &cfg.preprocess)?;
        self.embed_pixels(&pixels)
    }

    fn embed_text(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.token_ids(text)?;
        self.embed_ids(&ids)
    }
}

impl Artifact {
    /// Whether this artifact can be used as an [`Embedder`] on the host.
    pub fn check_host_usable(&self) -> Result<()> {
        self.host_config().map(|_| ())
    }
}

/// The META section for a model folder's config.
pub fn meta_from_config(cfg: &ModelConfig) -> Meta {
    use vlm_models::siglip::Resample;
    let p = &cfg.preprocess;
    Meta {
        embed_dim: cfg.embed_dim,
        logit_scale: cfg.logit_scale,
        logit_bias: cfg.logit_bias,
        channels: cfg.vision.num_channels,
        height: p.size[0],
        width: p.size[1],
        resample: match p.resample {
            Resample::Nearest => RtResample::Nearest,
            Resample::Bilinear => RtResample::Bilinear,
            Resample::Bicubic => RtResample::Bicubic,
            Resample::Lanczos => RtResample::Lanczos,
        },
        rescale: p.rescale_factor,
        mean: p.image_mean,
        std: p.image_std,
        convert_rgb: p.convert_rgb,
        max_length: cfg.text.max_length,
        pad_id: cfg.text.pad_token_id,
        eos_id: cfg.text.eos_token_id.unwrap_or(u32::MAX),
        vocab_size: cfg.text.vocab_size,
    }
}

/// A META section describing just one graph (for running a lone tower).
fn meta_for_graph(g: &Graph) -> Meta {
    let (channels, height, width, max_length) = match g.input {
        TowerInput::Pixels {
            channels,
            height,
            width,
        } => (channels, height, width, 0),
        TowerInput::Tokens { len } => (0, 0, 0, len),
    };
    let vocab_size = g
        .nodes
        .iter()
        .find_map(|n| match n.op {
            vlm_runtime::ops::Op::Embedding { table, .. } => Some(g.tensor(table).dims[0]),
            _ => None,
        })
        .unwrap_or(0);
    Meta {
        embed_dim: g.output.cols as usize,
        logit_scale: 1.0,
        logit_bias: 0.0,
        channels,
        height,
        width,
        resample: RtResample::Bicubic,
        rescale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
        convert_rgb: true,
        max_length,
        pad_id: 0,
        eos_id: 0,
        vocab_size,
    }
}

/// Artifact bytes loaded to run as calibration runs: the reference's bits on any CPU
/// (what they compute decides an artifact's numbers), on every core (splitting rows
/// changes no bit).
pub fn reproducible(bytes: AlignedBytes, source: &Path) -> Result<Artifact> {
    let a = Artifact::from_bytes(bytes, source)?;
    a.set_reproducible(true);
    a.set_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(a)
}

/// An artifact holding just `graph` (no config, no tokenizer), run [`reproducible`]:
/// for running one tower on the runtime during calibration and tests.
pub fn single_tower(graph: &Graph) -> Result<Artifact> {
    let bytes = write_artifact(&ArtifactParts {
        meta: meta_for_graph(graph),
        towers: vec![graph],
        tokenizer_json: None,
        config_json: None,
        labels: None,
    })?;
    reproducible(bytes, Path::new(graph.kind.name()))
}

/// Runs a graph once on the runtime. `input` is pixel values, or token ids as f32.
pub fn run_f32(graph: &Graph, input: &[f32]) -> Result<Vec<f32>> {
    let a = single_tower(graph)?;
    match graph.input {
        TowerInput::Pixels { .. } => a.embed_pixels(input),
        TowerInput::Tokens { .. } => {
            let ids: Vec<u32> = input.iter().map(|&x| x as u32).collect();
            a.embed_ids(&ids)
        }
    }
}
