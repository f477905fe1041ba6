//! Image resizing that reproduces Pillow's `Image.resize` to the bit.
//!
//! Written by hand because no crate does this: the Hugging Face SigLIP processor resizes
//! with Pillow, which resamples in two 8-bit passes (horizontal, then vertical) with
//! fixed-point coefficients and rounds between them. The `image` crate's filters have
//! the same shapes but round differently (up to a grey level off on ~15 % of pixels),
//! and the fp32 reference path exists to match the checkpoint's own preprocessing.
//!
//! The algorithm (a separable convolution whose kernel widens by the scale factor when
//! downsampling, coefficients normalised per output pixel, then quantised to 22
//! fractional bits) follows Pillow's published behaviour; tests compare against
//! Pillow's output captured by the recipe.

use image::RgbImage;
use vlm_models::siglip::Resample;

/// Fractional bits of the fixed-point coefficients (32 − 8 bits of pixel − 2 of headroom).
const PRECISION_BITS: u32 = 22;

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

fn bicubic(x: f64) -> f64 {
    // Keys' cubic with a = -0.5 (Catmull-Rom), as Pillow.
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let px = x * std::f64::consts::PI;
        // `libm`, not the platform's `sin`: the same coefficients on every CPU, since
        // the pixels feed calibration and so an artifact's numbers.
        libm::sin(px) / px
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// One output pixel's window in the input and its fixed-point weights.
struct Taps {
    start: usize,
    weights: Vec<i32>,
}

fn taps(in_size: usize, out_size: usize, filter: fn(f64) -> f64, support: f64) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // `as` truncates toward zero, as C's (int) cast does: the rounding matches.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let raw: Vec<f64> = (xmin..xmax)
                .map(|x| filter((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = raw.iter().sum();
            let one = f64::from(1u32 << PRECISION_BITS);
            let weights = raw
                .iter()
                .map(|w| {
                    let w = if total != 0.0 { w / total } else { *w };
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            Taps {
                start: xmin,
                weights,
            }
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass over `rows` rows of interleaved RGB; `along_x` picks the axis.
fn convolve(
    src: &[u8],
    (w, h): (usize, usize),
    taps: &[Taps],
    along_x: bool,
) -> (Vec<u8>, usize, usize) {
    let (ow, oh) = if along_x {
        (taps.len(), h)
    } else {
        (w, taps.len())
    };
    let mut out = vec![0u8; ow * oh * 3];
    for y in 0..oh {
        for x in 0..ow {
            let t = if along_x { &taps[x] } else { &taps[y] };
            let mut acc = [1i64 << (PRECISION_BITS - 1); 3];
            for (i, wgt) in t.weights.iter().enumerate() {
                let (sx, sy) = if along_x {
                    (t.start + i, y)
                } else {
                    (x, t.start + i)
                };
                let p = &src[(sy * w + sx) * 3..][..3];
                for c in 0..3 {
                    acc[c] += i64::from(p[c]) * i64::from(*wgt);
                }
            }
            let o = &mut out[(y * ow + x) * 3..][..3];
            for c in 0..3 {
                o[c] = clip8(acc[c]);
            }
        }
    }
    (out, ow, oh)
}

/// Resizes `img` to `width` × `height` as Pillow's `Image.resize(size, resample)`.
pub fn resize(img: &RgbImage, width: u32, height: u32, resample: Resample) -> RgbImage {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (ow, oh) = (width as usize, height as usize);
    if (w, h) == (ow, oh) {
        return img.clone();
    }
    if resample == Resample::Nearest {
        // Pillow's nearest picks the source pixel under each output pixel's centre.
        return RgbImage::from_fn(width, height, |x, y| {
            let sx = ((f64::from(x) + 0.5) * w as f64 / ow as f64) as u32;
            let sy = ((f64::from(y) + 0.5) * h as f64 / oh as f64) as u32;
            *img.get_pixel(sx.min(img.width() - 1), sy.min(img.height() - 1))
        });
    }
    let (filter, support): (fn(f64) -> f64, f64) = match resample {
        Resample::Bilinear => (bilinear, 1.0),
        Resample::Bicubic => (bicubic, 2.0),
        Resample::Lanczos => (lanczos, 3.0),
        Resample::Nearest => unreachable!("handled above"),
    };
    let mut buf = img.as_raw().clone();
    let (mut cw, mut ch) = (w, h);
    if ow != w {
        let t = taps(w, ow, filter, support);
        (buf, cw, ch) = convolve(&buf, (cw, ch), &t, true);
    }
    if oh != h {
        let t = taps(h, oh, filter, support);
        (buf, cw, ch) = convolve(&buf, (cw, ch), &t, false);
    }
    RgbImage::from_raw(cw as u32, ch as u32, buf).expect("buffer sized for the image")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_stays_flat_and_sizes_are_right() {
        let img = RgbImage::from_pixel(97, 31, image::Rgb([3, 130, 254]));
        for r in [
            Resample::Nearest,
            Resample::Bilinear,
            Resample::Bicubic,
            Resample::Lanczos,
        ] {
            let out = resize(&img, 16, 40, r);
            assert_eq!(out.dimensions(), (16, 40));
            assert!(out.pixels().all(|p| p.0 == [3, 130, 254]), "{r:?}");
        }
    }

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(451, 64), (64, 224), (300, 64), (7, 3)] {
            for t in taps(i, o, bicubic, 2.0) {
                let s: i32 = t.weights.iter().sum();
                assert!(
                    (s - (1 << PRECISION_BITS)).abs() <= t.weights.len() as i32,
                    "{s}"
                );
            }
        }
    }
}
