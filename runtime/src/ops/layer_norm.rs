//! Layer normalisation over each row.

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::names::opcode;
use crate::Error;

/// Normalises each row over its columns, then `· gamma + beta`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LayerNorm {
    pub x: Mat,
    pub gamma: u32,
    pub beta: u32,
    pub eps: f32,
    pub out: Mat,
}

impl core::fmt::Display for LayerNorm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "layer norm {}×{}", self.x.rows, self.x.cols)
    }
}

impl OpSpec for LayerNorm {
    const OPCODE: u32 = opcode::LAYER_NORM;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            gamma: r.next()?,
            beta: r.next()?,
            eps: r.f32()?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        for w in [self.gamma, self.beta, self.eps.to_bits()] {
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
        if !c.fits(x) || x.rows != out.rows || x.cols != out.cols || out.cols == 0 {
            return Err("layer norm input and output shapes differ");
        }
        let cols = out.cols as usize;
        if !c.f32_len(self.gamma, cols) || !c.f32_len(self.beta, cols) {
            return Err("layer norm parameters have the wrong size");
        }
        if !(self.eps.is_finite() && self.eps >= 0.0) {
            return Err("bad layer norm epsilon");
        }
        c.disjoint(&[x.buf], out)
    }

    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        f(&mut self.gamma);
        f(&mut self.beta);
    }

    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        let x = cx.read(self.x)?;
        let (gamma, beta) = (cx.f32s(self.gamma)?, cx.f32s(self.beta)?);
        let out = cx.out(self.out)?;
        crate::kernels::by_rows(cpu.threads, out, |r0, o| {
            cpu.isa
                .layer_norm(x.rows_from(r0, o.rows), gamma, beta, self.eps, o)
        });
        Ok(())
    }
}
