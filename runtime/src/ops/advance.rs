//! Moves a position counter on, at the end of a decoder step.

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::model::DType;
use crate::names::opcode;
use crate::Error;

/// `position += by`, `position` a one-element u32 state buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Advance {
    pub position: u32,
    pub by: u32,
}

impl core::fmt::Display for Advance {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "advance position by {}", self.by)
    }
}

impl OpSpec for Advance {
    const OPCODE: u32 = opcode::ADVANCE;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            position: r.next()?,
            by: r.next()?,
        })
    }

    fn encode(&self, o: &mut Words) {
        o.push(self.position);
        o.push(self.by);
    }

    fn output(&self) -> Mat {
        Mat::dense(self.position, 1, 1)
    }

    fn visit_counts(&mut self, f: &mut dyn FnMut(&mut u32)) {
        f(&mut self.by);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[self.position])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        if c.state(self.position, DType::U32) != Some(1) {
            return Err("advanced position is not a one-element u32 state");
        }
        Ok(())
    }

    fn run_cpu(&self, cx: &mut OpContext, _cpu: CpuKernels) -> Result<(), Error> {
        let bad = cx.bad();
        let p = cx.out_u32()?.first_mut().ok_or(bad)?;
        *p = p.checked_add(self.by).ok_or(Error::CacheFull {
            need: usize::MAX,
            capacity: u32::MAX as usize,
        })?;
        Ok(())
    }
}
