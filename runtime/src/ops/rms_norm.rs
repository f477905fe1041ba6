//! RMS normalisation over each row (the Llama family's, Gemma's with `1 + w` folded in).

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::names::opcode;
use crate::Error;

/// `out = x / √(mean(x²) + eps) · gamma`, row by row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RmsNorm {
    pub x: Mat,
    pub gamma: u32,
    pub eps: f32,
    pub out: Mat,
}

impl core::fmt::Display for RmsNorm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "rms norm {}×{}", self.x.rows, self.x.cols)
    }
}

impl OpSpec for RmsNorm {
    const OPCODE: u32 = opcode::RMS_NORM;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            gamma: r.next()?,
            eps: r.f32()?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        o.push(self.gamma);
        o.push(self.eps.to_bits());
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
        if !c.fits(x) || x.rows != out.rows || x.cols != out.cols || out.cols == 0 {
            return Err("rms norm input and output shapes differ");
        }
        if !c.f32_len(self.gamma, out.cols as usize) {
            return Err("rms norm weight has the wrong size");
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err("bad rms norm epsilon");
        }
        c.disjoint(&[x.buf], out)
    }

    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        f(&mut self.gamma);
    }

    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        let x = cx.read(self.x)?;
        let gamma = cx.f32s(self.gamma)?;
        cpu.isa.rms_norm(x, gamma, self.eps, cx.out(self.out)?);
        Ok(())
    }
}
