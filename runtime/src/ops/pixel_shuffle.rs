//! Pixel shuffle (space to depth) of a grid of vision tokens: Idefics3's connector.

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::kernels::scalar as k;
use crate::names::opcode;
use crate::Error;

/// `x` is a `grid_h × grid_w` grid of tokens in raster order (`grid_h·grid_w` rows of
/// `d`); output token `(i, j)` of the `grid_h/s × grid_w/s` grid is the `s × s` block at
/// grid rows `i·s ..` and columns `j·s ..`, its tokens concatenated in raster order
/// (`s²·d` columns): fewer, wider tokens for the projector.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PixelShuffle {
    pub x: Mat,
    pub grid_h: u32,
    pub grid_w: u32,
    pub scale: u32,
    pub out: Mat,
}

impl core::fmt::Display for PixelShuffle {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "pixel shuffle {}×{}×{} by {}",
            self.grid_h, self.grid_w, self.x.cols, self.scale
        )
    }
}

impl OpSpec for PixelShuffle {
    const OPCODE: u32 = opcode::PIXEL_SHUFFLE;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            grid_h: r.next()?,
            grid_w: r.next()?,
            scale: r.next()?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        for w in [self.grid_h, self.grid_w, self.scale] {
            o.push(w);
        }
        self.out.encode(o);
    }

    fn output(&self) -> Mat {
        self.out
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.x);
        f(&mut self.out);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[self.x.buf])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let (x, out) = (self.x, self.out);
        let (h, w, s) = (self.grid_h as u64, self.grid_w as u64, self.scale as u64);
        if s == 0 || h % s != 0 || w % s != 0 || h * w != x.rows as u64 {
            return Err("pixel shuffle grid does not divide by its scale");
        }
        if !c.fits(x)
            || out.rows as u64 != h * w / (s * s)
            || out.cols as u64 != x.cols as u64 * s * s
        {
            return Err("pixel shuffle output shape is wrong");
        }
        c.disjoint(&[x.buf], out)
    }

    fn run_cpu(&self, cx: &mut OpContext, _cpu: CpuKernels) -> Result<(), Error> {
        let x = cx.read(self.x)?;
        let (w, s) = (self.grid_w as usize, self.scale as usize);
        k::pixel_shuffle(x, w, s, cx.out(self.out)?);
        Ok(())
    }
}
