//! vlm-edge on a host (std) without tract: everything running an artifact needs around
//! the runtime — loading it (memory-mapped), image decoding as Pillow does it, the Hugging
//! Face processor's exact preprocessing, tokenization, zero-shot classification — and a
//! [`Model`] that many threads share, each run with its own arena. The demo artifact is
//! compiled in ([`demo`]), so an installed `vlm` works anywhere.
//!
//! The fuzz target `host/fuzz` drives [`preprocess::decode_rgb8`] and
//! [`preprocess::pixel_values`] over every supported format.

pub mod bytes;
#[cfg(feature = "model")]
pub mod caption;
pub mod caption_eval;
pub mod caption_metrics;
pub mod classify;
pub mod data_folder;
#[cfg(feature = "model")]
pub mod demo;
#[cfg(feature = "model")]
pub mod detokenize;
pub mod error;
#[cfg(feature = "model")]
pub mod model;
pub mod preprocess;
pub mod resample;
#[cfg(feature = "model")]
pub mod tokenize;

pub use classify::{rank_labels, RankedLabel};
pub use error::Error;
#[cfg(feature = "model")]
pub use model::{Model, RunOptions};

pub type Result<T, E = Error> = std::result::Result<T, E>;
