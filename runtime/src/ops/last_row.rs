//! The last row of a window: where a prefill reads its next-token state, whatever
//! number of rows it ran on.

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::names::opcode;
use crate::Error;

/// `out = x[x.rows − 1]` (`out` one row of `x.cols`). In a prefill run on fewer rows
/// than its graph holds, `x.rows` is the rows it ran on (`Op::with_rows`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LastRow {
    pub x: Mat,
    pub out: Mat,
}

impl core::fmt::Display for LastRow {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "last row of {}×{}", self.x.rows, self.x.cols)
    }
}

impl OpSpec for LastRow {
    const OPCODE: u32 = opcode::LAST_ROW;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        self.out.encode(o);
    }

    fn output(&self) -> Mat {
        self.out
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.x);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[self.x.buf])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        if !c.fits(self.x) || self.out.rows != 1 || self.out.cols != self.x.cols {
            return Err("last row output is not one row of the input's width");
        }
        c.disjoint(&[self.x.buf], self.out)
    }

    fn run_cpu(&self, cx: &mut OpContext, _cpu: CpuKernels) -> Result<(), Error> {
        let x = cx.read(self.x)?;
        let last = x.rows.checked_sub(1).ok_or_else(|| cx.bad())?;
        let row = x.row(last);
        cx.out(self.out)?.row_mut(0).copy_from_slice(row);
        Ok(())
    }
}
