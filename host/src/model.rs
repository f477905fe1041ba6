//! A loaded artifact: validated once, shared by every thread; each run takes an arena
//! from a small pool, so concurrent runs never share one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vlm_models::siglip::{Meta, ModelConfig};
use vlm_runtime::kernels::Isa;
use vlm_runtime::{Backend, Cpu, Input, Observer, Role, Scorer};

use crate::bytes::{AlignedBytes, ModelBytes};
use crate::preprocess::{load_rgb8, pixel_values};
use crate::tokenize::TextEncoder;
use crate::{Error, Result};

self_cell::self_cell!(
    /// The artifact bytes and the validated runtime model that borrows them.
    struct Loaded {
        owner: ModelBytes,
        #[covariant]
        dependent: RuntimeModel,
    }
);

type RuntimeModel<'a> = vlm_runtime::Model<'a>;

/// How runs execute: the kernels' threads, and whether in the reference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunOptions {
    pub threads: usize,
    /// Computes the scalar reference's bits on any CPU (`Session::set_reproducible`):
    /// for every run whose numbers go into an artifact.
    pub reproducible: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            threads: 1,
            reproducible: false,
        }
    }
}

/// Makes the backend of one run on a device (the CUDA backend's sessions share the
/// weights it uploaded once); `Err` carries the device's own words.
pub type DeviceBackends =
    Arc<dyn Fn() -> std::result::Result<Box<dyn Backend>, String> + Send + Sync>;

/// A loaded, validated artifact. `Send + Sync`: share it (`Arc`, or a reference in
/// scoped threads) and run it from as many threads as you like; each run gets its own
/// arena from the pool.
pub struct Model {
    loaded: Loaded,
    source: PathBuf,
    config: Option<ModelConfig>,
    tokenizer: Option<TextEncoder>,
    /// SigLIP's settings, when the artifact is a SigLIP model.
    siglip: Option<Meta>,
    /// Arenas of finished runs, reused by the next ones.
    arenas: Mutex<Vec<Vec<u8>>>,
    /// How runs execute, and the arena bytes that needs (worked out when the options
    /// are set, not on every run: sizing for several threads walks every op).
    options: Mutex<(RunOptions, usize)>,
    /// Where runs execute: `None`, the CPU.
    device: Mutex<Option<Arc<(String, DeviceBackends)>>>,
}

impl Model {
    /// Memory-maps and validates an artifact file.
    pub fn load(path: &Path) -> Result<Self> {
        if !path.is_file() {
            return Err(Error::NotFound {
                path: path.to_owned(),
            });
        }
        Self::from_bytes(ModelBytes::open(path)?, path)
    }

    /// Validates artifact bytes in aligned memory; `source` names them in errors.
    pub fn from_aligned(bytes: AlignedBytes, source: &Path) -> Result<Self> {
        Self::from_bytes(ModelBytes::Aligned(bytes), source)
    }

    /// Validates artifact bytes; `source` names them in errors.
    pub fn from_bytes(bytes: ModelBytes, source: &Path) -> Result<Self> {
        let bad = |error| Error::BadArtifact {
            path: source.to_owned(),
            error,
        };
        let loaded = Loaded::try_new(bytes, |b| vlm_runtime::Model::from_bytes(b.as_bytes()))
            .map_err(bad)?;
        let model = loaded.borrow_dependent();
        // Other families' config.json is the Hugging Face one, read by their own code.
        let siglip_family = model.meta.family == vlm_runtime::names::family::SIGLIP;
        let config = match model.config_json().filter(|_| siglip_family) {
            Some(json) => {
                let text = std::str::from_utf8(json).map_err(|_| {
                    bad(vlm_runtime::FormatError::BadField {
                        field: "config json",
                    })
                })?;
                Some(ModelConfig::from_json(text, source)?)
            }
            None => None,
        };
        let tokenizer = match (model.tokenizer_json(), &config) {
            (Some(json), Some(cfg)) => Some(TextEncoder::from_bytes(json, &cfg.text, source)?),
            _ => None,
        };
        let siglip = match model.meta.family {
            vlm_runtime::names::family::SIGLIP => {
                Some(Meta::from_model(model).map_err(|error| Error::BadMeta {
                    path: source.to_owned(),
                    error,
                })?)
            }
            _ => None,
        };
        let arena = model.arena_size();
        Ok(Self {
            loaded,
            source: source.to_owned(),
            config,
            tokenizer,
            siglip,
            arenas: Mutex::new(Vec::new()),
            options: Mutex::new((RunOptions::default(), arena)),
            device: Mutex::new(None),
        })
    }

    pub fn runtime(&self) -> &vlm_runtime::Model<'_> {
        self.loaded.borrow_dependent()
    }

    pub fn bytes(&self) -> &[u8] {
        self.loaded.borrow_owner().as_bytes()
    }

    pub fn source(&self) -> &Path {
        &self.source
    }

    pub fn siglip(&self) -> Option<&Meta> {
        self.siglip.as_ref()
    }

    pub fn options(&self) -> RunOptions {
        self.options.lock().unwrap_or_else(|p| p.into_inner()).0
    }

    /// Sets how later runs execute (results do not change with the thread count: rows
    /// are split, each computed exactly as on one thread).
    pub fn set_options(&self, o: RunOptions) {
        let o = RunOptions {
            threads: o.threads.max(1),
            ..o
        };
        let arena = self.runtime().arena_size_for_threads(o.threads);
        *self.options.lock().unwrap_or_else(|p| p.into_inner()) = (o, arena);
    }

    pub fn set_threads(&self, n: usize) {
        self.set_options(RunOptions {
            threads: n,
            ..self.options()
        });
    }

    pub fn set_reproducible(&self, on: bool) {
        self.set_options(RunOptions {
            reproducible: on,
            ..self.options()
        });
    }

    /// Runs later inferences on a device: `make` gives each run its backend. `name` is
    /// for reports ("cuda:0 (NVIDIA H200)"). Runs whose numbers go into an artifact
    /// (`set_reproducible`) stay on the CPU, whose bits an artifact is defined by.
    pub fn set_device(&self, name: String, make: DeviceBackends) {
        *self.device.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new((name, make)));
    }

    /// The device runs execute on, if not the CPU.
    pub fn device(&self) -> Option<String> {
        let d = self.device.lock().unwrap_or_else(|p| p.into_inner());
        d.as_ref().map(|d| d.0.clone())
    }

    /// The backend of one run: the device's, or the CPU's with the model's options.
    pub fn backend(&self) -> Result<Box<dyn Backend>> {
        let o = self.options();
        let device = self
            .device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match device {
            Some(d) if !o.reproducible => (d.1)().map_err(Error::Device),
            _ => {
                let mut cpu = Cpu::new(Isa::detect());
                cpu.threads = o.threads;
                cpu.reproducible = o.reproducible;
                Ok(Box::new(cpu))
            }
        }
    }

    pub fn has_graph(&self, role: Role) -> bool {
        self.runtime().graph(role).is_some()
    }

    /// Runs the first graph with `role` (one input, one output), showing intermediate
    /// values to `observer`.
    pub fn run(
        &self,
        role: Role,
        input: Input<'_>,
        observer: Option<&mut dyn Observer>,
    ) -> Result<Vec<f32>> {
        let mut out = Vec::new();
        self.with_session(role, &mut out, |session, g, out| {
            session.run(g, &[input], &mut [out], observer)
        })?;
        Ok(out)
    }

    /// Runs a prefill graph (`role` with state, such as a decoder's) over a sequence of
    /// input rows from a fresh state, in `runs` (rows per run, each within the graph's
    /// capacity; together every row of `input`), as generation feeds a prompt and then
    /// its tokens: every row's output, in order.
    pub fn run_sequence(
        &self,
        role: Role,
        input: &[f32],
        runs: &[usize],
        mut observer: Option<&mut dyn Observer>,
    ) -> Result<Vec<f32>> {
        let rows: usize = runs.iter().sum();
        let mut all = Vec::new();
        self.with_session(role, &mut all, move |session, g, out| {
            let capacity = session.model().graph_at(g).map_or(0, |g| g.rows);
            let input_cols = input.len().checked_div(rows).unwrap_or(0);
            if capacity == 0 || rows * input_cols != input.len() {
                return Err(vlm_runtime::Error::BufferSize {
                    what: "sequence rows",
                    got: input.len(),
                    expected: rows * input_cols.max(1),
                });
            }
            let out_cols = out.len() / capacity;
            session.reset_state()?;
            let mut chunk = vec![0.0f32; out.len()];
            let (mut at, mut got) = (0, Vec::with_capacity(rows * out_cols));
            for &n in runs {
                session.run_rows(
                    g,
                    Some(n),
                    &[Input::F32(&input[at * input_cols..(at + n) * input_cols])],
                    &mut [&mut chunk],
                    observer.as_mut().map(|o| &mut **o as &mut dyn Observer),
                )?;
                got.extend_from_slice(&chunk[..n * out_cols]);
                at += n;
            }
            *out = got;
            Ok(())
        })?;
        Ok(all)
    }

    /// A session on a pooled arena over graph `role`, handed its index and an output
    /// buffer of the graph's output length.
    fn with_session(
        &self,
        role: Role,
        out: &mut Vec<f32>,
        f: impl FnOnce(
            &mut vlm_runtime::Session<'_, '_, Box<dyn Backend>>,
            usize,
            &mut Vec<f32>,
        ) -> std::result::Result<(), vlm_runtime::Error>,
    ) -> Result<()> {
        let model = self.runtime();
        let what = match role {
            Role::ImageEncoder => "running the image encoder",
            Role::TextEncoder => "running the text encoder",
            Role::Projector => "running the projector",
            Role::Decoder => "running the decoder",
            Role::TokenEmbedding => "embedding tokens",
            Role::Prefill => "running the prefill",
        };
        let err = |error| Error::Runtime { what, error };
        let g = model
            .graph_index(role)
            .ok_or(err(vlm_runtime::Error::NoGraph { what: role.name() }))?;
        let len = model
            .graph_at(g)
            .and_then(|g| g.outputs().next())
            .map_or(0, |p| p.len());
        *out = vec![0.0f32; len];
        let need = self.options.lock().unwrap_or_else(|p| p.into_inner()).1;
        let backend = self.backend()?;
        let mut arena = self.take_arena(need);
        let result = (|| {
            let mut session = vlm_runtime::Session::with_backend(model, &mut arena, backend)?;
            f(&mut session, g, out)
        })();
        self.arenas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(arena);
        result.map_err(err)
    }

    fn take_arena(&self, need: usize) -> Vec<u8> {
        let mut arena = self
            .arenas
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .unwrap_or_default();
        if arena.len() < need {
            arena.resize(need, 0);
        }
        arena
    }

    /// The image embedding of preprocessed `[C, H, W]` pixel values.
    pub fn embed_pixels(&self, pixels: &[f32]) -> Result<Vec<f32>> {
        self.run(Role::ImageEncoder, Input::F32(pixels), None)
    }

    /// The text embedding of the text encoder's token ids.
    pub fn embed_ids(&self, ids: &[u32]) -> Result<Vec<f32>> {
        self.run(Role::TextEncoder, Input::U32(ids), None)
    }

    fn host_config(&self) -> Result<&ModelConfig> {
        self.config.as_ref().ok_or_else(|| Error::BadArtifact {
            path: self.source.clone(),
            error: vlm_runtime::FormatError::MissingSection {
                what: "CONFIG_JSON (needed to preprocess images and text on the host)",
            },
        })
    }

    /// Whether this artifact can preprocess images and text on the host.
    pub fn check_host_usable(&self) -> Result<()> {
        self.host_config().map(|_| ())
    }

    /// The token ids a text becomes (the tokenizer stored in the artifact).
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        if self
            .runtime()
            .graph(vlm_runtime::Role::TextEncoder)
            .is_none()
        {
            return Err(Error::NoTextTower);
        }
        let ids = self
            .tokenizer
            .as_ref()
            .ok_or(Error::NoTokenizer)?
            .encode(text)?;
        Ok(ids.into_iter().map(|i| i as u32).collect())
    }
}

impl Model {
    /// SigLIP's sigmoid scoring with this model's scale and bias (1 and 0 when the
    /// artifact is not a SigLIP model).
    pub fn scorer(&self) -> Scorer {
        self.siglip.map(|m| m.scorer()).unwrap_or(Scorer {
            logit_scale: 1.0,
            logit_bias: 0.0,
        })
    }

    /// The image embedding of an image file, preprocessed as the model's processor does.
    pub fn embed_image(&self, path: &Path) -> Result<Vec<f32>> {
        let cfg = self.host_config()?;
        let pixels = pixel_values(&load_rgb8(path)?, &cfg.preprocess)?;
        self.embed_pixels(&pixels)
    }

    /// The text embedding of a text, tokenized with the artifact's tokenizer.
    pub fn embed_text(&self, text: &str) -> Result<Vec<f32>> {
        let ids = self.token_ids(text)?;
        self.embed_ids(&ids)
    }
}
