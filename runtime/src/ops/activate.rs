//! An activation applied in place, where it could not be fused into a linear layer.

use super::{Activation, Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::kernels::scalar as k;
use crate::names::opcode;
use crate::Error;

/// `x = act(x)`, in place.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Activate {
    pub x: Mat,
    pub act: Activation,
}

impl core::fmt::Display for Activate {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "activation {}×{}", self.x.rows, self.x.cols)
    }
}

impl OpSpec for Activate {
    const OPCODE: u32 = opcode::ACTIVATE;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            act: Activation::from_code(r.next()?)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        o.push(self.act.code());
    }

    fn output(&self) -> Mat {
        self.x
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.x);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[self.x.buf])
    }

    fn validate(&self, _c: &Check) -> Result<(), &'static str> {
        // The output window is checked for every op; it is the only operand.
        Ok(())
    }

    fn run_cpu(&self, cx: &mut OpContext, _cpu: CpuKernels) -> Result<(), Error> {
        k::activate_in_place(cx.out(self.x)?, self.act);
        Ok(())
    }
}
