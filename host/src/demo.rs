//! The demo artifact, compiled into the binary: `vlm classify` works from any directory
//! with no model at hand (an installed `vlm` has no source tree to find it in).
//!
//! `models/demo.vlmq` is what `scripts/demo.sh` writes from the shipped demo model;
//! `cli/tests/quantize.rs` requires a fresh quantization to give exactly these bytes, so
//! the compiled-in model cannot drift from the code that makes it.

use std::path::Path;

use crate::bytes::ModelBytes;
use crate::{Model, Result};

/// How errors and reports name the built-in model.
pub const NAME: &str = "(built-in demo model)";

/// The runtime reads the artifact in place, and wants it 64-byte aligned.
#[repr(C, align(64))]
struct Aligned<T: ?Sized>(T);

static DEMO: &Aligned<[u8]> = &Aligned(*include_bytes!("../../models/demo.vlmq"));

/// The demo artifact's bytes.
pub fn bytes() -> &'static [u8] {
    &DEMO.0
}

/// The demo artifact, loaded.
pub fn model() -> Result<Model> {
    Model::from_bytes(ModelBytes::Static(bytes()), Path::new(NAME))
}
