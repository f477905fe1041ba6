//! vlm-edge's host side (std): everything that reads ONNX, images and tokenizers.
//!
//! Making artifacts: a SigLIP model folder (two ONNX towers, config.json, tokenizer.json)
//! imported to the runtime's ops (`import/`), the fp32 reference on tract-onnx (the truth
//! everything is measured against), calibration on the runtime's own executor, int8
//! conversion, the artifact writer, accuracy reports and the zero-shot evaluation.
//! Running an artifact needs none of this: that is `vlm-host`.

pub mod calibrate;
pub mod caption_pipeline;
pub mod error;
pub mod eval;
pub mod graph;
pub mod hf;
pub mod import;
pub mod int8;
pub mod kv_cache;
pub mod pipeline;
pub mod reference;
pub mod report;
pub mod runner;
pub mod writer;

// Running artifacts (loading, preprocessing, tokenization, classification) lives in the
// host crate, which has no tract; re-exported under their old paths.
pub use error::Error;
pub use reference::Fp32Siglip;
pub use runner::{Artifact, Embedder};
pub use vlm_host::{classify, tokenize};
pub use vlm_host::{preprocess, resample};
pub use vlm_host::{rank_labels, RankedLabel};

pub type Result<T, E = Error> = std::result::Result<T, E>;
