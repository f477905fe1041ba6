//! Rotary position embedding, applied in place to the query and key heads.

use super::{operands, Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::model::DType;
use crate::names::opcode;
use crate::Error;

/// Rotates each `head_dim`-wide head of `x` (its columns hold `heads` heads: a decoder's
/// queries and keys side by side) by its row's position, "rotate half" pairing. Row `r`
/// is at position `p + r`, `p` the value of the one-element u32 state `position` (0
/// without one). `table` is `[positions, head_dim]`: for each position the `head_dim / 2`
/// cosines, then the sines, computed when the model was made, so the runtime needs no
/// trigonometry and every CPU rotates by the same numbers. A position past the table is
/// an error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    pub x: Mat,
    pub heads: u32,
    pub head_dim: u32,
    pub table: u32,
    pub position: Option<u32>,
}

impl core::fmt::Display for Rope {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "rope {}×{} heads of {}",
            self.x.rows, self.heads, self.head_dim
        )
    }
}

impl Rope {
    /// The position of this run's first row, or `PositionOutOfRange` where its rows
    /// overrun the table (every backend's check).
    pub fn first_position(&self, cx: &OpContext) -> Result<usize, Error> {
        let first = cx.position(self.position)?;
        let positions = cx.tensor(self.table)?.dims[0];
        let need = first.saturating_add(self.x.rows as usize);
        if need > positions {
            return Err(Error::PositionOutOfRange {
                position: need - 1,
                positions,
            });
        }
        Ok(first)
    }
}

impl OpSpec for Rope {
    const OPCODE: u32 = opcode::ROPE;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            heads: r.next()?,
            head_dim: r.next()?,
            table: r.next()?,
            position: operands::decode_opt(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        o.push(self.heads);
        o.push(self.head_dim);
        o.push(self.table);
        operands::encode_opt(o, self.position);
    }

    fn output(&self) -> Mat {
        self.x
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.x);
    }

    fn reads(&self) -> Buffers {
        match self.position {
            Some(p) => Buffers::of(&[self.x.buf, p]),
            None => Buffers::of(&[self.x.buf]),
        }
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let d = self.head_dim as usize;
        let width = (self.heads as usize).checked_mul(d);
        if d == 0 || !d.is_multiple_of(2) || width != Some(self.x.cols as usize) {
            return Err("rope heads × head size does not match the window's width");
        }
        let table = c
            .tensor(self.table)
            .filter(|t| t.dtype == DType::F32 && t.rank == 2 && t.dims[1] == d && t.dims[0] > 0);
        if table.is_none() {
            return Err("rope table is not [positions, head size] f32");
        }
        if let Some(p) = self.position {
            if c.state(p, DType::U32) != Some(1) {
                return Err("rope position is not a one-element u32 state");
            }
            if p == self.x.buf {
                return Err("rope rotates its own position");
            }
        }
        Ok(())
    }

    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        f(&mut self.table);
    }

    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        let first = self.first_position(cx)?;
        let table = cx.tensor(self.table)?.f32s();
        let (heads, d) = (self.heads as usize, self.head_dim as usize);
        cpu.isa.rope(cx.out(self.x)?, heads, d, table, first);
        Ok(())
    }
}
