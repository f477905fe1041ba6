//! Resizing to the vision tower's input size with the artifact's filter.
//!
//! Not Pillow-exact, unlike the host path (`quantize/src/resample.rs`, which the
//! Hugging Face processor's pixels are matched against to the bit): the filter shapes,
//! the kernel widening when downsampling and the per-pixel weight normalisation are
//! Pillow's, but the arithmetic is f32 with one rounding at the end, where Pillow uses
//! 22-bit fixed point and rounds to 8 bits between the horizontal and vertical passes.
//! Pixels can differ from the host's by a grey level, which moves an embedding far less
//! than the int8 towers do; exactness would mean carrying the host's integer resampler
//! here twice. An image already at the model's size is passed through untouched, so then
//! the host and this binary see identical pixels.

use vlm_models::siglip::Resample;

fn bilinear(x: f64) -> f64 {
    (1.0 - x.abs()).max(0.0)
}

fn bicubic(x: f64) -> f64 {
    // Keys' cubic with a = -0.5, as Pillow.
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
        px.sin() / px
    }
}

fn lanczos(x: f64) -> f64 {
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// One output coordinate's window in the input and its normalised weights.
struct Taps {
    start: usize,
    weights: Vec<f32>,
}

fn taps(in_size: usize, out_size: usize, filter: fn(f64) -> f64, support: f64) -> Vec<Taps> {
    let scale = in_size as f64 / out_size as f64;
    // Downsampling widens the kernel by the scale factor: every input pixel contributes
    // (anti-aliasing), as in Pillow.
    let filterscale = scale.max(1.0);
    let support = support * filterscale;
    (0..out_size)
        .map(|o| {
            let center = (o as f64 + 0.5) * scale;
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let hi = hi.max(lo + 1);
            let raw: Vec<f64> = (lo..hi)
                .map(|i| filter((i as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = raw.iter().sum();
            let weights = raw
                .iter()
                .map(|w| if total != 0.0 { w / total } else { *w } as f32)
                .collect();
            Taps { start: lo, weights }
        })
        .collect()
}

/// Resizes interleaved RGB8 `src` (`w × h`) to `ow × oh`. Sides are non-zero.
pub fn resize(
    src: &[u8],
    (w, h): (usize, usize),
    (ow, oh): (usize, usize),
    resample: Resample,
) -> Vec<u8> {
    if (w, h) == (ow, oh) {
        return src.to_vec();
    }
    let (filter, support): (fn(f64) -> f64, f64) = match resample {
        Resample::Nearest => return nearest(src, (w, h), (ow, oh)),
        Resample::Bilinear => (bilinear, 1.0),
        Resample::Bicubic => (bicubic, 2.0),
        Resample::Lanczos => (lanczos, 3.0),
    };
    // A pass is skipped when its side already matches, as Pillow does: convolving at
    // scale 1 would blur nothing for these filters but cost a pass.
    let mut cur: Vec<f32> = src.iter().map(|&v| f32::from(v)).collect();
    let mut cw = w;
    if ow != w {
        let t = taps(w, ow, filter, support);
        let mut next = vec![0.0f32; ow * h * 3];
        for y in 0..h {
            let row = &cur[y * w * 3..(y + 1) * w * 3];
            for (x, t) in t.iter().enumerate() {
                let mut acc = [0.0f32; 3];
                for (i, wgt) in t.weights.iter().enumerate() {
                    let p = &row[(t.start + i) * 3..][..3];
                    for c in 0..3 {
                        acc[c] += p[c] * wgt;
                    }
                }
                next[(y * ow + x) * 3..][..3].copy_from_slice(&acc);
            }
        }
        cur = next;
        cw = ow;
    }
    if oh != h {
        let t = taps(h, oh, filter, support);
        let mut next = vec![0.0f32; cw * oh * 3];
        for (y, t) in t.iter().enumerate() {
            let out = &mut next[y * cw * 3..(y + 1) * cw * 3];
            for (i, wgt) in t.weights.iter().enumerate() {
                let row = &cur[(t.start + i) * cw * 3..][..cw * 3];
                for (o, v) in out.iter_mut().zip(row) {
                    *o += v * wgt;
                }
            }
        }
        cur = next;
    }
    cur.iter()
        .map(|v| v.round().clamp(0.0, 255.0) as u8)
        .collect()
}

/// Pillow's nearest: the source pixel under each output pixel's centre.
fn nearest(src: &[u8], (w, h): (usize, usize), (ow, oh): (usize, usize)) -> Vec<u8> {
    let mut out = Vec::with_capacity(ow * oh * 3);
    for y in 0..oh {
        let sy = (((y as f64 + 0.5) * h as f64 / oh as f64) as usize).min(h - 1);
        for x in 0..ow {
            let sx = (((x as f64 + 0.5) * w as f64 / ow as f64) as usize).min(w - 1);
            out.extend_from_slice(&src[(sy * w + sx) * 3..][..3]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Resample; 4] = [
        Resample::Nearest,
        Resample::Bilinear,
        Resample::Bicubic,
        Resample::Lanczos,
    ];

    #[test]
    fn flat_stays_flat_at_any_size() {
        let (w, h) = (97, 31);
        let src: Vec<u8> = [3u8, 130, 254].repeat(w * h);
        for r in ALL {
            for (ow, oh) in [(16, 40), (64, 64), (1, 1), (200, 7), (97, 5)] {
                let out = resize(&src, (w, h), (ow, oh), r);
                assert_eq!(out.len(), ow * oh * 3);
                assert!(out.chunks(3).all(|p| p == [3, 130, 254]), "{r:?}");
            }
        }
    }

    #[test]
    fn same_size_is_untouched() {
        let src: Vec<u8> = (0..=255).cycle().take(5 * 4 * 3).collect();
        for r in ALL {
            assert_eq!(resize(&src, (5, 4), (5, 4), r), src);
        }
    }

    #[test]
    fn halving_averages_neighbours() {
        // A 4×1 ramp halved with bilinear: the kernel widens to two source pixels each
        // side, so each output pixel is a weighted mean of three source pixels.
        let src = [0u8, 0, 0, 100, 100, 100, 200, 200, 200, 250, 250, 250];
        let out = resize(&src, (4, 1), (2, 1), Resample::Bilinear);
        assert!(out[0] > 0 && out[0] < 100, "{out:?}");
        assert!(out[3] > 200 && out[3] < 250, "{out:?}");
    }
}
