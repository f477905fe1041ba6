//! A constant written into the arena: learned values a later op updates (a perceiver's
//! latents) or reads beside computed rows (keys and values over context and latents).

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::names::opcode;
use crate::Error;

/// `out = tensor`, an f32 tensor of `out.rows × out.cols` values, row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Constant {
    pub tensor: u32,
    pub out: Mat,
}

impl core::fmt::Display for Constant {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "constant {}×{}", self.out.rows, self.out.cols)
    }
}

impl OpSpec for Constant {
    const OPCODE: u32 = opcode::CONSTANT;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            tensor: r.next()?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        o.push(self.tensor);
        self.out.encode(o);
    }

    fn output(&self) -> Mat {
        self.out
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.out);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let n = self.out.rows as usize * self.out.cols as usize;
        if !c.f32_len(self.tensor, n) {
            return Err("constant does not match its window");
        }
        Ok(())
    }

    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        f(&mut self.tensor);
    }

    fn run_cpu(&self, cx: &mut OpContext, _cpu: CpuKernels) -> Result<(), Error> {
        let t = cx.f32s(self.tensor)?;
        let mut out = cx.out(self.out)?;
        let cols = out.cols;
        for r in 0..out.rows {
            out.row_mut(r).copy_from_slice(&t[r * cols..(r + 1) * cols]);
        }
        Ok(())
    }
}
