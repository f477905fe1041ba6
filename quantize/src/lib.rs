//! vlm-edge's host side (std): everything that reads ONNX, images and tokenizers.
//!
//! Today it is the fp32 reference path: a SigLIP model folder (two ONNX towers,
//! config.json, tokenizer.json) loaded with tract-onnx, images preprocessed exactly as
//! the Hugging Face processor does, text tokenized as SigLIP was trained, labels scored
//! with the runtime's sigmoid scoring, and the zero-shot evaluation. It is the truth the
//! int8 pipeline (calibration, conversion, artifact writer) is measured against.

pub mod calibrate;
pub mod classify;
pub mod error;
pub mod eval;
pub mod graph;
pub mod import;
pub mod int8;
pub mod pipeline;
pub mod reference;
pub mod report;
pub mod runner;
pub mod tokenize;
pub mod writer;

pub use classify::{rank_labels, RankedLabel};
// Image decoding and preprocessing live in the host crate (no tract); re-exported under
// their old paths.
pub use error::Error;
pub use reference::Fp32Siglip;
pub use runner::{Artifact, Embedder};
pub use vlm_host::{preprocess, resample};

pub type Result<T, E = Error> = std::result::Result<T, E>;
