//! Image decoding against Pillow (what the Hugging Face processor decodes with): every
//! variant a user may bring decodes to Pillow's exact pixels, CMYK and YCCK JPEG
//! included, 16-bit greyscale to its high byte (README: Pillow clips it), and nothing a
//! fuzzer has found, or any committed seed, makes the decoder panic.

use std::path::{Path, PathBuf};

use vlm_host::preprocess::{decode_rgb8, load_rgb8, pixel_values, DecodeLimits};
use vlm_host::Error;
use vlm_models::siglip::{PreprocessConfig, Resample};

#[path = "../../quantize/tests/common/mod.rs"]
mod common;
use common::{python_or_skip, recipe};

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vlm-host-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A JPEG of four-channel samples (`color_space` CMYK or YCCK as stored), written by
/// libjpeg with the Adobe marker, as Photoshop and print tools write them.
fn four_channel_jpeg(w: usize, h: usize, samples: &[u8], stored: mozjpeg::ColorSpace) -> Vec<u8> {
    let mut c = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
    c.set_size(w, h);
    c.set_color_space(stored);
    c.set_quality(98.0);
    let mut s = c.start_compress(Vec::new()).unwrap();
    s.write_scanlines(samples).unwrap();
    s.finish().unwrap()
}

/// A smooth test pattern, `[r, g, b]` per pixel.
fn pattern(w: usize, h: usize) -> Vec<[u8; 3]> {
    (0..w * h)
        .map(|i| {
            let (x, y) = (i % w, i / w);
            [
                (x * 255 / w) as u8,
                (y * 255 / h) as u8,
                ((x + y) * 4) as u8,
            ]
        })
        .collect()
}

/// Adobe CMYK stores inverted ink: samples `[r, g, b, 255]` are "no black, ink
/// 255 − channel", which Pillow (and so vlm) turns back into `[r, g, b]`.
#[test]
fn cmyk_and_ycck_jpegs_decode_to_their_colours() {
    let (w, h) = (40, 24);
    let rgb = pattern(w, h);
    let samples: Vec<u8> = rgb.iter().flat_map(|p| [p[0], p[1], p[2], 255]).collect();
    for stored in [mozjpeg::ColorSpace::JCS_CMYK, mozjpeg::ColorSpace::JCS_YCCK] {
        let jpeg = four_channel_jpeg(w, h, &samples, stored);
        let img = decode_rgb8(&jpeg, Path::new("x.jpg"), DecodeLimits::DEFAULT)
            .unwrap_or_else(|e| panic!("{stored:?}: {e}"));
        assert_eq!(img.dimensions(), (w as u32, h as u32));
        let worst = img
            .pixels()
            .zip(&rgb)
            .flat_map(|(a, b)| (0..3).map(move |c| (i32::from(a[c]) - i32::from(b[c])).abs()))
            .max()
            .unwrap();
        // JPEG at quality 98 moves a smooth pattern by a few levels at most; an
        // inversion or a dropped black channel moves it by ~255.
        assert!(worst <= 8, "{stored:?}: off by up to {worst} levels");
    }
}

#[test]
fn pillows_cmyk_conversion_is_reproduced_exactly() {
    use vlm_host::preprocess::inverted_cmyk_to_rgb;
    // Pillow's cmyk2rgb on its inverted samples, in integers.
    for c in 0..=255u32 {
        for k in (0..=255u32).step_by(5) {
            let (ic, ik) = (255 - c, 255 - k);
            let nk = 255 - ik;
            let t = ic * nk + 128;
            let want = nk - (((t >> 8) + t) >> 8);
            let got = inverted_cmyk_to_rgb([c as u8, 0, 255, k as u8]);
            assert_eq!(u32::from(got[0]), want, "c {c} k {k}");
            assert_eq!(u32::from(got[2]), nk, "white ink, k {k}");
        }
    }
}

/// Every variant, Pillow's decode beside it (the recipe's `image_variants`).
#[test]
fn every_variant_decodes_to_pillows_pixels() {
    let Some(py) = python_or_skip("image variants against Pillow") else {
        return;
    };
    let dir = scratch("variants");
    let (w, h) = (33, 17);
    let samples: Vec<u8> = pattern(w, h)
        .iter()
        .flat_map(|p| [p[0], p[1], p[2], 200])
        .collect();
    let ycck = dir.join("extra-ycck.jpg");
    std::fs::write(
        &ycck,
        four_channel_jpeg(w, h, &samples, mozjpeg::ColorSpace::JCS_YCCK),
    )
    .unwrap();
    let source = here().join("../models/demo/examples/red-circle.png");
    recipe(
        &py,
        &[
            "-m",
            "vlm_recipes.image_variants",
            "--source",
            source.to_str().unwrap(),
            "--out",
            dir.to_str().unwrap(),
            "--extra",
            ycck.to_str().unwrap(),
        ],
    );
    let listing: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap()).unwrap();
    assert!(listing.len() >= 20, "{} variants", listing.len());
    let mut failures = Vec::new();
    for v in &listing {
        let file = Path::new(v["file"].as_str().unwrap());
        let want = std::fs::read(v["rgb"].as_str().unwrap()).unwrap();
        let (w, h) = (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap());
        match load_rgb8(file) {
            Err(e) => failures.push(format!("{e}")),
            Ok(img) if u64::from(img.width()) != w || u64::from(img.height()) != h => failures
                .push(format!(
                    "{}: {}x{}, Pillow {w}x{h}",
                    file.display(),
                    img.width(),
                    img.height()
                )),
            Ok(img) => {
                let off = img
                    .as_raw()
                    .iter()
                    .zip(&want)
                    .filter(|(a, b)| a != b)
                    .count();
                if off > 0 {
                    failures.push(format!(
                        "{}: {off} of {} values differ from Pillow's",
                        file.display(),
                        want.len()
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    std::fs::remove_dir_all(&dir).ok();
}

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// The fuzzer's seeds (one of each format and variant) decode and preprocess with every
/// filter; what it found once (`fuzz/regressions`) is refused or decoded, never a panic.
#[test]
fn fuzz_seeds_decode_and_regressions_do_not_panic() {
    let seeds = files_in(&here().join("fuzz/seeds"));
    assert!(seeds.len() >= 15, "{} seeds", seeds.len());
    for f in &seeds {
        let img = load_rgb8(f).unwrap_or_else(|e| panic!("{e}"));
        for resample in [
            Resample::Nearest,
            Resample::Bilinear,
            Resample::Bicubic,
            Resample::Lanczos,
        ] {
            let cfg = PreprocessConfig {
                size: [9, 13],
                resample,
                rescale_factor: 1.0 / 255.0,
                image_mean: [0.5; 3],
                image_std: [0.5; 3],
                convert_rgb: true,
            };
            let px = pixel_values(&img, &cfg).unwrap();
            assert!(px.iter().all(|v| v.abs() <= 1.0 + 1e-6), "{}", f.display());
        }
    }
    let regressions = here().join("fuzz/regressions");
    if regressions.is_dir() {
        for f in files_in(&regressions) {
            let bytes = std::fs::read(&f).unwrap();
            let _ = decode_rgb8(&bytes, &f, DecodeLimits::DEFAULT);
        }
    }
}

/// A PNG whose palette is not whole RGB entries (193 bytes here, valid CRCs: what the
/// image fuzzer found) is refused by name; the `png` crate alone panics on it.
#[test]
fn a_png_palette_of_partial_entries_is_refused() {
    let f = here().join("fuzz/regressions/png-palette-not-whole-entries.png");
    let bytes = std::fs::read(&f).unwrap();
    let e = decode_rgb8(&bytes, &f, DecodeLimits::DEFAULT).unwrap_err();
    assert!(matches!(e, vlm_host::Error::CorruptImage { .. }), "{e}");
    assert!(e.to_string().contains("(PLTE chunk) of 193 bytes"), "{e}");
}

/// Damaged images are errors naming the file, of the right kind.
#[test]
fn damaged_images_are_named_errors() {
    let dir = scratch("damaged");
    let mut jpeg = Vec::new();
    image::RgbImage::from_fn(32, 16, |x, y| image::Rgb([x as u8 * 8, y as u8 * 16, 99]))
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    // A CMYK header whose scan is garbage, and a JPEG whose frame header is cut short.
    let mut cmyk = four_channel_jpeg(16, 16, &[128; 16 * 16 * 4], mozjpeg::ColorSpace::JCS_CMYK);
    let sos = cmyk.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    for b in &mut cmyk[sos + 20..sos + 60] {
        *b = 0xFF;
    }
    let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    let mut bad_sof = jpeg.clone();
    bad_sof[sof + 9] = 7; // seven components
    for (name, bytes) in [("garbage-cmyk.jpg", cmyk), ("bad-frame.jpg", bad_sof)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        match load_rgb8(&path) {
            Ok(_) => {}
            Err(e @ (Error::CorruptImage { .. } | Error::UnsupportedImage { .. })) => {
                assert!(e.to_string().contains(name), "{e}")
            }
            Err(e) => panic!("{name}: unexpected error kind: {e}"),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
