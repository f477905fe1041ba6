//! The host's handle on a `.vlmq` artifact: the runtime's executor (the same code a
//! device runs) behind the std conveniences the CLI and the pipeline need — files,
//! image decoding, the tokenizer stored in the artifact.

use std::path::Path;

use vlm_models::siglip::{Meta, ModelConfig};
use vlm_runtime::Scorer;

use crate::graph::{Graph, TowerInput};
use crate::writer::{write_artifact, AlignedBytes, ArtifactParts};
use crate::Result;

/// A loaded, validated artifact: the host crate's model (shareable across threads).
pub type Artifact = vlm_host::Model;

/// Anything that turns images and texts into SigLIP embeddings: the fp32 ONNX folder
/// (tract) or an artifact (the runtime).
pub trait Embedder {
    fn scorer(&self) -> Scorer;
    fn embed_image(&self, path: &Path) -> Result<Vec<f32>>;
    fn embed_text(&self, text: &str) -> Result<Vec<f32>>;
}

impl Embedder for Artifact {
    fn scorer(&self) -> Scorer {
        vlm_host::Model::scorer(self)
    }

    fn embed_image(&self, path: &Path) -> Result<Vec<f32>> {
        Ok(vlm_host::Model::embed_image(self, path)?)
    }

    fn embed_text(&self, text: &str) -> Result<Vec<f32>> {
        Ok(vlm_host::Model::embed_text(self, text)?)
    }
}

/// Reads and validates an artifact file.
pub fn load(path: &Path) -> Result<Artifact> {
    Ok(Artifact::load(path)?)
}

/// The META section for a model folder's config.
pub fn meta_from_config(cfg: &ModelConfig) -> Meta {
    let p = &cfg.preprocess;
    Meta {
        embed_dim: cfg.embed_dim,
        logit_scale: cfg.logit_scale,
        logit_bias: cfg.logit_bias,
        channels: cfg.vision.num_channels,
        height: p.size[0],
        width: p.size[1],
        resample: p.resample,
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
        TowerInput::Values { rows, dim, .. } => (1, rows, dim, 0),
    };
    let vocab_size = g
        .nodes
        .iter()
        .find_map(|n| match n.op {
            vlm_runtime::ops::Op::Embedding(e) => Some(g.tensor(e.table).dims[0]),
            _ => None,
        })
        .unwrap_or(0);
    Meta {
        // The whole output (a captioner's image encoder gives a row per patch).
        embed_dim: g.output.rows as usize * g.output.cols as usize,
        logit_scale: 1.0,
        logit_bias: 0.0,
        channels,
        height,
        width,
        resample: vlm_models::siglip::Resample::Bicubic,
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
    let a = Artifact::from_aligned(bytes, source)?;
    a.set_reproducible(true);
    a.set_threads(std::thread::available_parallelism().map_or(1, |n| n.get()));
    Ok(a)
}

/// An artifact holding just `graph` (no config, no tokenizer), run [`reproducible`]:
/// for running one tower on the runtime during calibration and tests.
pub fn single_tower(graph: &Graph) -> Result<Artifact> {
    let bytes = write_artifact(&ArtifactParts {
        meta: meta_for_graph(graph).to_words().to_vec(),
        graphs: vec![graph],
        tokenizer_json: None,
        config_json: None,
        labels: None,
        vocab: None,
        prompt_ids: None,
    })?;
    reproducible(bytes, Path::new(graph.role.name()))
}

/// Runs a graph once on the runtime. `input` is pixel values, or token ids as f32.
pub fn run_f32(graph: &Graph, input: &[f32]) -> Result<Vec<f32>> {
    let a = single_tower(graph)?;
    match graph.input {
        TowerInput::Pixels { .. } => Ok(a.embed_pixels(input)?),
        TowerInput::Values { .. } => Ok(a.run(graph.role, vlm_runtime::Input::F32(input), None)?),
        TowerInput::Tokens { .. } => {
            let ids: Vec<u32> = input.iter().map(|&x| x as u32).collect();
            Ok(a.embed_ids(&ids)?)
        }
    }
}
