//! A captioner folder's `preprocessor_config.json`: resampling filter, rescale, mean and
//! std, as the family's image processor applies them.

use std::path::Path;

use vlm_models::siglip::Resample;

use super::config::Json;
use crate::{Error, Result};

pub struct Preprocess {
    pub resample: Resample,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub convert_rgb: bool,
    /// `size.longest_edge`, where the processor resizes to it first (Idefics3).
    pub longest_edge: Option<usize>,
}

fn three(j: Json, key: &str, default: [f32; 3]) -> Result<[f32; 3]> {
    match j.get(key) {
        None => Ok(default),
        Some(v) => {
            let a = v
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| j.err(format!("{key} is not three numbers")))?;
            let mut o = [0.0f32; 3];
            for (x, v) in o.iter_mut().zip(a) {
                *x = v
                    .as_f64()
                    .ok_or_else(|| j.err(format!("{key} is not three numbers")))?
                    as f32;
            }
            Ok(o)
        }
    }
}

/// The image processor's settings: `preprocessor_config.json` (older folders), or the
/// `image_processor` object of `processor_config.json` (transformers 5).
pub fn read(dir: &Path) -> Result<Preprocess> {
    let old = dir.join("preprocessor_config.json");
    let path = if old.is_file() {
        old
    } else {
        dir.join("processor_config.json")
    };
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Checkpoint {
        path: path.clone(),
        msg: format!("not valid JSON: {e}"),
    })?;
    let v = match v.get("image_processor") {
        Some(inner) if inner.is_object() => inner.clone(),
        _ => v,
    };
    let j = Json {
        v: &v,
        file: &path,
        at: "",
    };
    // PIL's filter numbers, as the image processors store them.
    let resample = match j.usize_or("resample", 3)? {
        0 => Resample::Nearest,
        1 => Resample::Lanczos,
        2 => Resample::Bilinear,
        3 => Resample::Bicubic,
        n => return Err(j.err(format!("resample filter {n} is not supported"))),
    };
    Ok(Preprocess {
        resample,
        rescale: j.f64_or("rescale_factor", 1.0 / 255.0)?,
        mean: three(j, "image_mean", [0.5; 3])?,
        std: three(j, "image_std", [0.5; 3])?,
        convert_rgb: j.bool_or("do_convert_rgb", true)?,
        longest_edge: match j.get("size") {
            Some(size) => Json { v: size, ..j }.usize_opt("longest_edge")?,
            None => None,
        },
    })
}
