//! vlm-edge's inference runtime.
//!
//! `#![no_std]` and allocation-free on the inference path, from day one, so the same code
//! runs on a Linux board and on a Cortex-M microcontroller. It knows nothing of ONNX,
//! files, Python or terminals: callers hand it slices and buffers they own.
//!
//! It holds the `.vlmq` artifact reader ([`Model::from_bytes`], zero-copy, validated
//! once) with its graphs ([`Graph`]: an image or text encoder, a projector, a decoder), the
//! ops (one file each under `ops/`), the executor ([`Session`], over a caller-provided
//! arena whose state region keeps a decoder's cache between runs), the [`Backend`]
//! interface and its CPU implementation, the kernels, sigmoid scoring and the
//! normalisation step of image preprocessing. Model families' settings are carried
//! ([`FamilyMeta`]) and read by `vlm-models`.
// Unit tests link std (proptest needs it); the library itself stays `no_std` without `std`.
#![cfg_attr(not(any(feature = "std", test)), no_std)]
// Only the SIMD kernels (each module opts in, with its bounds asserted up front) use
// `unsafe`: intrinsics and `#[target_feature]` functions require it.
#![deny(unsafe_code)]

pub mod backend;
#[cfg(feature = "std")]
pub mod encode;
pub mod error;
pub mod exec;
pub mod format;
pub mod graph;
#[cfg(feature = "std")]
pub mod harness;
pub mod kernels;
pub mod model;
pub mod names;
pub mod ops;
pub mod preprocess;
pub mod score;
#[cfg(feature = "std")]
mod team;

pub use backend::{Backend, Cpu};
pub use error::Error;
pub use exec::{Input, Observed, Observer, Session};
pub use format::FormatError;
pub use graph::{Graph, Port, PortKind, Role};
pub use model::{FamilyMeta, Model, Vocab};
pub use score::{logits_into, rank_into, score_into, sigmoid, Scorer};
