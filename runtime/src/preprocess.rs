//! The arithmetic end of image preprocessing: 8-bit RGB already resized to the model's
//! size becomes the normalised planar tensor the vision tower takes. Decoding and
//! resizing happen where files and decoders live (host side, or a camera driver).

use crate::Error;

/// Rescale and per-channel normalisation, as Hugging Face image processors apply them:
/// `((pixel * rescale) - mean[c]) / std[c]`, the rescale in f64 then rounded to f32 and
/// the rest in f32, so the result equals theirs to the bit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normalize {
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalize {
    /// Interleaved RGB8 `[height × width × 3]` into planar `[3 × height × width]`.
    pub fn rgb8_to_chw(
        &self,
        rgb: &[u8],
        width: usize,
        height: usize,
        out: &mut [f32],
    ) -> Result<(), Error> {
        if width == 0 || height == 0 {
            return Err(Error::EmptyImage { width, height });
        }
        let plane = width * height;
        if rgb.len() != plane * 3 {
            return Err(Error::BufferSize {
                what: "rgb",
                got: rgb.len(),
                expected: plane * 3,
            });
        }
        if out.len() != plane * 3 {
            return Err(Error::BufferSize {
                what: "out",
                got: out.len(),
                expected: plane * 3,
            });
        }
        for c in 0..3 {
            // 256 possible inputs: a table keeps the exact arithmetic out of the loop.
            let mut table = [0.0f32; 256];
            for (v, t) in table.iter_mut().enumerate() {
                // Multiplying by 1/std would differ from the processor's division in
                // the last bit; divide as it does.
                *t = ((v as f64 * self.rescale) as f32 - self.mean[c]) / self.std[c];
            }
            for (dst, px) in out[c * plane..(c + 1) * plane]
                .iter_mut()
                .zip(rgb.chunks_exact(3))
            {
                *dst = table[usize::from(px[c])];
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planar_and_normalised() {
        let n = Normalize {
            rescale: 1.0 / 255.0,
            mean: [0.5; 3],
            std: [0.5; 3],
        };
        // 2x1 image: a red then a white pixel.
        let rgb = [255, 0, 0, 255, 255, 255];
        let mut out = [0.0; 6];
        n.rgb8_to_chw(&rgb, 2, 1, &mut out).unwrap();
        assert_eq!(out, [1.0, 1.0, -1.0, 1.0, -1.0, 1.0]);
        assert!(n.rgb8_to_chw(&rgb, 3, 1, &mut out).is_err());
        assert!(n.rgb8_to_chw(&[], 0, 1, &mut []).is_err());
    }
}
