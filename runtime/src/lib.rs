//! vlm-edge's inference runtime.
//!
//! `#![no_std]` and allocation-free on the inference path, from day one, so the same code
//! runs on a Linux board and on a Cortex-M microcontroller. It knows nothing of ONNX,
//! files, Python or terminals: callers hand it slices and buffers they own.
//!
//! It holds the `.vlmq` artifact reader ([`Model::from_bytes`], zero-copy, validated
//! once), the executor ([`Session`], over a caller-provided arena), the kernels, SigLIP's
//! sigmoid scoring and the normalisation step of image preprocessing.
#![cfg_attr(not(feature = "std"), no_std)]
// Only the SIMD kernels (each module opts in, with its bounds asserted up front) use
// `unsafe`: intrinsics and `#[target_feature]` functions require it.
#![deny(unsafe_code)]

pub mod error;
pub mod exec;
pub mod format;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod preprocess;
pub mod score;

pub use error::Error;
pub use exec::{Input, Observed, Observer, Session};
pub use format::FormatError;
pub use model::{Model, TowerKind};
pub use score::{logits_into, rank_into, score_into, sigmoid, Scorer};
