//! A gated linear unit's product: the activated gate times the up projection.

use super::{Activation, Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::names::opcode;
use crate::Error;

/// `out[r][c] = act(x[r][c]) · x[r][n + c]`, `n = out.cols`: `x` holds the gate and up
/// projections side by side, as one linear layer computes them (SwiGLU with SiLU,
/// GeGLU with GELU-tanh).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Glu {
    pub x: Mat,
    pub act: Activation,
    pub out: Mat,
}

impl core::fmt::Display for Glu {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "glu {}×{} {}",
            self.out.rows,
            self.out.cols,
            self.act.name()
        )
    }
}

impl OpSpec for Glu {
    const OPCODE: u32 = opcode::GLU;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            act: Activation::from_code(r.next()?)?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        o.push(self.act.code());
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
        if !c.fits(x) || x.rows != out.rows || x.cols as u64 != 2 * out.cols as u64 {
            return Err("glu input is not twice its output's width");
        }
        c.disjoint(&[x.buf], out)
    }

    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        let x = cx.read(self.x)?;
        cpu.isa.glu(x, self.act, cx.out(self.out)?);
        Ok(())
    }
}
