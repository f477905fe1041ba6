//! Element-wise sum (residual connections).

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::kernels::scalar as k;
use crate::names::opcode;
use crate::Error;

/// `out = a + b`, element-wise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Add {
    pub a: Mat,
    pub b: Mat,
    pub out: Mat,
}

impl core::fmt::Display for Add {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "add {}×{}", self.out.rows, self.out.cols)
    }
}

impl OpSpec for Add {
    const OPCODE: u32 = opcode::ADD;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            a: Mat::decode(r)?,
            b: Mat::decode(r)?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.a.encode(o);
        self.b.encode(o);
        self.out.encode(o);
    }

    fn output(&self) -> Mat {
        self.out
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.a);
        f(&mut self.b);
        f(&mut self.out);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[self.a.buf, self.b.buf])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let (a, b, out) = (self.a, self.b, self.out);
        if !c.fits(a) || !c.fits(b) {
            return Err("add input window is invalid");
        }
        if a.rows != out.rows || b.rows != out.rows || a.cols != out.cols || b.cols != out.cols {
            return Err("add operands differ in shape");
        }
        c.disjoint(&[a.buf, b.buf], out)
    }

    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        let (a, b) = (cx.read(self.a)?, cx.read(self.b)?);
        crate::kernels::by_rows(cpu.threads, cx.out(self.out)?, |r0, o| {
            k::add(a.rows_from(r0, o.rows), b.rows_from(r0, o.rows), o)
        });
        Ok(())
    }
}
