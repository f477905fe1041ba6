//! vlm-edge's inference runtime.
//!
//! `#![no_std]` and allocation-free on the inference path, from day one, so the same code
//! runs on a Linux board and on a Cortex-M microcontroller. It knows nothing of ONNX,
//! files, Python or terminals: callers hand it slices and buffers they own.
//!
//! Today it holds what every path shares: turning embeddings into SigLIP's independent
//! per-label probabilities and ranking them, and the normalisation step of image
//! preprocessing. The artifact reader, memory plan, executor and kernels grow here.
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

pub mod error;
pub mod preprocess;
pub mod score;

pub use error::Error;
pub use score::{logits_into, rank_into, score_into, sigmoid, Scorer};
