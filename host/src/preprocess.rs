//! Image preprocessing as the Hugging Face SigLIP image processor does it: convert to
//! RGB (alpha dropped, as PIL's `convert("RGB")`), resize straight to the model's size
//! with the checkpoint's filter (no aspect-preserving crop), rescale by 1/255,
//! normalise by mean and std, planar CHW.

use std::path::Path;

use image::{DynamicImage, ImageError, ImageFormat, ImageReader, Limits, RgbImage};
use vlm_models::siglip::PreprocessConfig;
use vlm_runtime::preprocess::Normalize;

use crate::{Error, Result};

/// Largest accepted side. A decoder asked for a bigger frame is refused before it
/// allocates: a 100k × 100k PNG header would otherwise ask for 30 GB.
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// Largest decoder allocation accepted, in bytes.
pub const MAX_IMAGE_BYTES: u64 = 1 << 30;

/// Largest accepted image file, in bytes.
pub const MAX_FILE_BYTES: u64 = 1 << 30;

/// What a decoder may be asked for before it allocates.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Largest width or height, in pixels.
    pub max_side: u32,
    /// Largest decoder allocation, in bytes.
    pub max_bytes: u64,
}

impl DecodeLimits {
    pub const DEFAULT: DecodeLimits = DecodeLimits {
        max_side: MAX_IMAGE_SIDE,
        max_bytes: MAX_IMAGE_BYTES,
    };
}

/// Decodes an image file into 8-bit RGB, with bounded memory. The format comes from
/// the file's content, not its name: a text file called `x.png` is "not an image".
pub fn load_rgb8(path: &Path) -> Result<RgbImage> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::ImageTooLarge {
            path: path.to_owned(),
            msg: format!("{} bytes (limit {MAX_FILE_BYTES})", meta.len()),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_rgb8(&bytes, path, DecodeLimits::DEFAULT)
}

/// Decodes an encoded image (`path` names it in errors) into 8-bit RGB as Pillow's
/// `Image.open(…).convert("RGB")` does, which the Hugging Face processor calls — with
/// one deliberate exception: 16-bit greyscale keeps its high byte, as Pillow does for
/// 16-bit colour, where Pillow clips it to 0–255 (almost every pixel white).
pub fn decode_rgb8(bytes: &[u8], path: &Path, limits: DecodeLimits) -> Result<RgbImage> {
    let format = image::guess_format(bytes).map_err(|_| Error::NotImage {
        path: path.to_owned(),
    })?;
    let img = if format == ImageFormat::Jpeg {
        decode_jpeg(path, bytes, limits)?
    } else {
        if format == ImageFormat::Png {
            if let Some(msg) = png_palette_fault(bytes) {
                return Err(Error::CorruptImage {
                    path: path.to_owned(),
                    msg,
                });
            }
        }
        decode_other(path, bytes, format, limits)?
    };
    if img.width() == 0 || img.height() == 0 {
        return Err(Error::CorruptImage {
            path: path.to_owned(),
            msg: "image has no pixels".into(),
        });
    }
    Ok(img)
}

/// A PNG palette (`PLTE`) that is not whole RGB entries — a length that is not a multiple
/// of 3, or more than 256 entries — which the PNG specification calls an error. The
/// `png` crate (0.18) does not check it and its palette expansion indexes past such a
/// palette and panics, so it is refused here, before the decoder sees it. Walks the
/// chunks up to the first `IDAT` (a palette must come before it); CRCs are the
/// decoder's to check.
fn png_palette_fault(bytes: &[u8]) -> Option<String> {
    let mut at = 8usize;
    while let Some(head) = bytes.get(at..at.checked_add(8)?) {
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        match &head[4..8] {
            b"PLTE" if len == 0 || !len.is_multiple_of(3) || len > 3 * 256 => {
                return Some(format!(
                    "PNG palette (PLTE chunk) of {len} bytes is not 1 to 256 whole RGB entries"
                ));
            }
            b"IDAT" => return None,
            _ => {}
        }
        at = at.checked_add(12)?.checked_add(len)?;
    }
    None
}

/// Every format but JPEG, through the `image` crate's decoders with bounded memory.
fn decode_other(
    path: &Path,
    bytes: &[u8],
    format: ImageFormat,
    limits: DecodeLimits,
) -> Result<RgbImage> {
    let mut reader = ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut l = Limits::default();
    l.max_image_width = Some(limits.max_side);
    l.max_image_height = Some(limits.max_side);
    l.max_alloc = Some(limits.max_bytes);
    reader.limits(l);
    let img = reader.decode().map_err(|e| match e {
        ImageError::Limits(l) => Error::ImageTooLarge {
            path: path.to_owned(),
            msg: format!("{l} (limit {} px a side)", limits.max_side),
        },
        ImageError::Unsupported(u) => Error::UnsupportedImage {
            path: path.to_owned(),
            msg: u.to_string(),
        },
        other => Error::CorruptImage {
            path: path.to_owned(),
            msg: other.to_string(),
        },
    })?;
    Ok(match img {
        // Pillow reads 16-bit colour (and grey with alpha) as its high byte; the `image`
        // crate would round (v/257), a level off now and then.
        DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => {
            let wide = img.to_rgb16();
            let (w, h) = wide.dimensions();
            let raw = wide
                .into_raw()
                .into_iter()
                .map(|v| (v >> 8) as u8)
                .collect();
            RgbImage::from_raw(w, h, raw).expect("as many values as the 16-bit image")
        }
        other => other.to_rgb8(),
    })
}

/// JPEG through libjpeg-turbo's own decoder (islow IDCT, fancy upsampling: its
/// defaults, which Pillow keeps), so the pixels equal Pillow's exactly. CMYK and YCCK
/// files come out as Pillow makes them: libjpeg's CMYK, inverted (Pillow assumes
/// Adobe's convention, as Photoshop writes them), then Pillow's CMYK → RGB.
fn decode_jpeg(path: &Path, bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage> {
    if !jpeg_reaches_eoi(bytes) {
        // libjpeg pads a cut-off file with grey and calls it a warning; Pillow refuses
        // it ("image file is truncated"), and so do we.
        return Err(Error::CorruptImage {
            path: path.to_owned(),
            msg: "truncated JPEG (no end-of-image marker after the last scan)".into(),
        });
    }
    // The mozjpeg crate reports libjpeg's fatal errors by unwinding (its documented
    // contract: callers catch it); the message is the payload.
    std::panic::catch_unwind(|| decode_jpeg_unwinding(path, bytes, limits)).unwrap_or_else(
        |payload| {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("the JPEG decoder failed");
            Err(Error::CorruptImage {
                path: path.to_owned(),
                msg: msg.to_string(),
            })
        },
    )
}

fn decode_jpeg_unwinding(path: &Path, bytes: &[u8], limits: DecodeLimits) -> Result<RgbImage> {
    use mozjpeg::ColorSpace;
    let corrupt = |e: std::io::Error| Error::CorruptImage {
        path: path.to_owned(),
        msg: e.to_string(),
    };
    let header = mozjpeg::Decompress::new_mem(bytes).map_err(corrupt)?;
    let (w, h) = (header.width(), header.height());
    let side = limits.max_side as usize;
    if w > side || h > side || (w as u64) * (h as u64) * 4 > limits.max_bytes {
        return Err(Error::ImageTooLarge {
            path: path.to_owned(),
            msg: format!("{w}x{h} (limit {} px a side)", limits.max_side),
        });
    }
    let raw: Vec<u8> = match header.color_space() {
        ColorSpace::JCS_CMYK | ColorSpace::JCS_YCCK => {
            let mut started = header
                .to_colorspace(ColorSpace::JCS_CMYK)
                .map_err(corrupt)?;
            let pixels: Vec<[u8; 4]> = started.read_scanlines().map_err(corrupt)?;
            started.finish().map_err(corrupt)?;
            pixels.into_iter().flat_map(inverted_cmyk_to_rgb).collect()
        }
        _ => {
            let mut started = header.rgb().map_err(corrupt)?;
            let pixels: Vec<[u8; 3]> = started.read_scanlines().map_err(corrupt)?;
            started.finish().map_err(corrupt)?;
            pixels.into_iter().flatten().collect()
        }
    };
    RgbImage::from_raw(w as u32, h as u32, raw).ok_or_else(|| Error::CorruptImage {
        path: path.to_owned(),
        msg: "decoder returned fewer pixels than the header announced".into(),
    })
}

/// One pixel of libjpeg's CMYK as Pillow turns it into RGB: each byte inverted (its
/// `CMYK;I` raw mode), then `k' = 255 − k`, `channel = k' − round(c·k'/255)` with
/// Pillow's rounded division by 255.
#[inline]
pub fn inverted_cmyk_to_rgb(px: [u8; 4]) -> [u8; 3] {
    let [c, m, y, k] = px.map(|v| 255 - u32::from(v));
    let nk = 255 - k;
    let mul_div_255 = |a: u32| {
        let t = a * nk + 128;
        ((t >> 8) + t) >> 8
    };
    // nk ≥ mul_div_255(a) for every a ≤ 255, so no clamp is needed.
    [c, m, y].map(|a| (nk - mul_div_255(a)) as u8)
}

/// Walks the JPEG's marker segments (skipping each scan's entropy-coded data) and says
/// whether an end-of-image marker is reached before the bytes run out. Segments carry
/// their length, so an embedded EXIF thumbnail's own end marker is not mistaken for it.
fn jpeg_reaches_eoi(bytes: &[u8]) -> bool {
    const SOI: u8 = 0xD8;
    const EOI: u8 = 0xD9;
    const SOS: u8 = 0xDA;
    if bytes.len() < 4 || bytes[0] != 0xFF || bytes[1] != SOI {
        return false;
    }
    let mut i = 2;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        while i < bytes.len() && bytes[i] == 0xFF {
            i += 1;
        }
        let Some(&marker) = bytes.get(i) else {
            return false;
        };
        i += 1;
        match marker {
            EOI => return true,
            // Standalone markers: TEM and RSTn carry no length.
            0x01 | 0xD0..=0xD7 => continue,
            _ => {}
        }
        let Some(len) = bytes
            .get(i..i + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return false;
        };
        if len < 2 {
            return false;
        }
        i += len;
        if marker == SOS {
            // Entropy-coded data runs to the next marker that is not a stuffed 0xFF00
            // or a restart marker.
            loop {
                match bytes.get(i..i + 2) {
                    None => return false,
                    Some([0xFF, next]) if *next != 0x00 && !(0xD0..=0xD7).contains(next) => break,
                    Some(_) => i += 1,
                }
            }
        }
    }
}

/// The image resized to the model's input size with the checkpoint's filter, in 8 bits
/// and rounded as Pillow (which the Hugging Face processor calls) does.
pub fn resize_rgb8(img: &RgbImage, cfg: &PreprocessConfig) -> RgbImage {
    let [h, w] = cfg.size;
    crate::resample::resize(img, w as u32, h as u32, cfg.resample)
}

/// RGB8 image -> the vision tower's `[3, H, W]` input.
pub fn pixel_values(img: &RgbImage, cfg: &PreprocessConfig) -> Result<Vec<f32>> {
    let [h, w] = cfg.size;
    let img = resize_rgb8(img, cfg);
    let norm = Normalize {
        rescale: cfg.rescale_factor,
        mean: cfg.image_mean,
        std: cfg.image_std,
    };
    let mut out = vec![0.0f32; 3 * w * h];
    norm.rgb8_to_chw(img.as_raw(), w, h, &mut out)
        .map_err(|error| Error::Runtime {
            what: "normalising pixels",
            error,
        })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vlm_models::siglip::Resample;

    fn cfg(size: usize) -> PreprocessConfig {
        PreprocessConfig {
            size: [size, size],
            resample: Resample::Bicubic,
            rescale_factor: 1.0 / 255.0,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            convert_rgb: true,
        }
    }

    #[test]
    fn same_size_is_not_resampled() {
        let img = RgbImage::from_fn(4, 4, |x, y| image::Rgb([(x * 60) as u8, (y * 60) as u8, 7]));
        let px = pixel_values(&img, &cfg(4)).unwrap();
        assert_eq!(px.len(), 48);
        let want = |v: f64| ((v * (1.0 / 255.0)) as f32 - 0.5) / 0.5;
        assert_eq!(px[1], want(60.0));
        assert_eq!(px[32], want(7.0));
    }

    #[test]
    fn flat_image_stays_flat_when_resized() {
        let img = RgbImage::from_pixel(37, 23, image::Rgb([10, 128, 250]));
        let px = pixel_values(&img, &cfg(8)).unwrap();
        for c in 0..3 {
            let want = (([10.0, 128.0, 250.0][c] / 255.0) as f32 - 0.5) / 0.5;
            assert!(px[c * 64..(c + 1) * 64]
                .iter()
                .all(|v| (v - want).abs() < 1e-6));
        }
    }

    #[test]
    fn jpeg_end_marker_is_found_only_when_present() {
        let mut jpeg = Vec::new();
        RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 9) as u8, 200])
        })
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        assert!(jpeg_reaches_eoi(&jpeg));
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"trailing bytes some cameras append");
        assert!(jpeg_reaches_eoi(&trailing));
        for cut in [3, jpeg.len() / 2, jpeg.len() - 2] {
            assert!(!jpeg_reaches_eoi(&jpeg[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn refuses_non_images_and_missing_files() {
        let dir = std::env::temp_dir().join(format!("vlm-pre-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = dir.join("notes.png");
        std::fs::write(&text, b"this is not an image at all").unwrap();
        assert!(matches!(load_rgb8(&text), Err(Error::NotImage { .. })));
        let truncated = dir.join("cut.png");
        let mut png = Vec::new();
        RgbImage::from_pixel(32, 32, image::Rgb([1, 2, 3]))
            .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
            .unwrap();
        std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
        let err = load_rgb8(&truncated).unwrap_err();
        assert!(err.to_string().contains("cut.png"), "{err}");
        assert!(matches!(
            load_rgb8(&dir.join("absent.png")),
            Err(Error::NotFound { .. })
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
