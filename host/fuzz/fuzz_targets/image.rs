//! Arbitrary bytes through image decoding (every format: the content decides, as for a
//! user's file) and, when they decode, the Hugging Face preprocessing with each resampling
//! filter. Errors are fine; a panic, an abort or an out-of-bounds access is a bug: a
//! user's image must never crash `vlm`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use vlm_host::preprocess::{decode_rgb8, pixel_values, DecodeLimits};
use vlm_models::siglip::{PreprocessConfig, Resample};

/// Small enough that one input decodes in milliseconds and the sanitizer's memory limit
/// holds; the bounds themselves are what is being fuzzed, not their size.
const LIMITS: DecodeLimits = DecodeLimits {
    max_side: 2048,
    max_bytes: 32 << 20,
};

fuzz_target!(|data: &[u8]| {
    let Ok(img) = decode_rgb8(data, Path::new("fuzz input"), LIMITS) else {
        return;
    };
    // The last byte picks the filter and the output size, so every filter meets every
    // kind of image, upsampled and downsampled.
    let pick = data.last().copied().unwrap_or(0);
    let resample = [
        Resample::Nearest,
        Resample::Bilinear,
        Resample::Bicubic,
        Resample::Lanczos,
    ][usize::from(pick % 4)];
    let side = [1, 7, 32][usize::from(pick / 4 % 3)];
    let cfg = PreprocessConfig {
        size: [side, side + 1],
        resample,
        rescale_factor: 1.0 / 255.0,
        image_mean: [0.5; 3],
        image_std: [0.5; 3],
        convert_rgb: true,
    };
    let px = pixel_values(&img, &cfg).expect("a decoded image always preprocesses");
    assert_eq!(px.len(), 3 * side * (side + 1));
    assert!(px.iter().all(|v| v.is_finite() && v.abs() <= 1.0 + 1e-6));
});
