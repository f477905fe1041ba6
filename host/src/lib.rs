//! vlm-edge on a host (std) without tract: what running a model needs around the
//! runtime — image decoding as Pillow does it, and the Hugging Face processor's exact
//! preprocessing. The fuzz target `host/fuzz` drives [`preprocess::decode_rgb8`] and
//! [`preprocess::pixel_values`] over every supported format.

pub mod error;
pub mod preprocess;
pub mod resample;

pub use error::Error;

pub type Result<T> = std::result::Result<T, Error>;
