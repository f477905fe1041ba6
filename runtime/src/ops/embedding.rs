//! Token embedding: a table lookup plus an added (position) table.

use super::{operands, Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::model::DType;
use crate::names::opcode;
use crate::Error;

/// `out[i] = table[ids[i]] · scale[ids[i]] + add[p + i]`. `ids` is a u32 input port of at
/// least `out.rows` token ids; `table` is `[vocab, dim]`, int8 with a per-row scale
/// tensor `table_scale`, or f32 with or without one (Gemma multiplies every token
/// embedding by √dim: a scale lets a tied LM head share the unscaled table). Without
/// `position`, `p` is 0 and `add` is `[out.rows, dim]`; with it, `p` is that
/// one-element u32 state buffer's value (a decoder's position) and `add` is
/// `[positions, dim]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Embedding {
    pub ids: u32,
    pub table: u32,
    pub table_scale: Option<u32>,
    pub add: u32,
    pub position: Option<u32>,
    pub out: Mat,
}

impl core::fmt::Display for Embedding {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "embedding {}×{}", self.out.rows, self.out.cols)
    }
}

impl Embedding {
    /// The position of this run's first row, or `PositionOutOfRange` where its rows
    /// overrun the added table (every backend's check).
    pub fn first_position(&self, cx: &OpContext) -> Result<usize, Error> {
        let first = cx.position(self.position)?;
        let positions = cx.f32s(self.add)?.len() / (self.out.cols as usize).max(1);
        if first
            .checked_add(self.out.rows as usize)
            .is_none_or(|end| end > positions)
        {
            return Err(Error::PositionOutOfRange {
                position: first,
                positions,
            });
        }
        Ok(first)
    }
}

impl OpSpec for Embedding {
    const OPCODE: u32 = opcode::EMBEDDING;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            ids: r.next()?,
            table: r.next()?,
            table_scale: operands::decode_opt(r)?,
            add: r.next()?,
            position: operands::decode_opt(r)?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        o.push(self.ids);
        o.push(self.table);
        operands::encode_opt(o, self.table_scale);
        o.push(self.add);
        operands::encode_opt(o, self.position);
        self.out.encode(o);
    }

    fn output(&self) -> Mat {
        self.out
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.out);
    }

    fn reads(&self) -> Buffers {
        match self.position {
            Some(p) => Buffers::of(&[self.ids, p]),
            None => Buffers::of(&[self.ids]),
        }
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let (rows, cols) = (self.out.rows as usize, self.out.cols as usize);
        if c.input(self.ids, DType::U32).is_none_or(|n| n < rows) {
            return Err("embedding does not read a u32 token input");
        }
        let tab = c.tensor(self.table).ok_or("missing embedding table")?;
        if tab.rank != 2 || tab.dims[1] != cols || tab.dims[0] == 0 {
            return Err("embedding table does not match the output width");
        }
        match (tab.dtype, self.table_scale) {
            (DType::F32, None) => {}
            (DType::F32 | DType::I8, Some(s)) if c.f32_len(s, tab.dims[0]) => {}
            _ => return Err("embedding table type and scales disagree"),
        }
        let add = c.tensor(self.add).ok_or("missing embedding add table")?;
        let add_rows_ok = match self.position {
            None => add.len() == rows * cols,
            Some(p) => {
                if c.state(p, DType::U32) != Some(1) {
                    return Err("embedding position is not a one-element u32 state");
                }
                add.rank == 2 && add.dims[1] == cols && add.dims[0] >= rows
            }
        };
        if add.dtype != DType::F32 || !add_rows_ok {
            return Err("embedding's added table has the wrong size");
        }
        let mut reads = [self.ids; 2];
        if let Some(p) = self.position {
            reads[1] = p;
        }
        c.disjoint(&reads, self.out)
    }

    /// By the scales alone (the op holds no types): a host that knows the table is fp32
    /// with scales (Gemma's) says so itself.
    fn precision(&self) -> &'static str {
        match self.table_scale {
            Some(_) => "int8",
            None => "fp32",
        }
    }

    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        f(&mut self.table);
        if let Some(s) = &mut self.table_scale {
            f(s);
        }
        f(&mut self.add);
    }

    fn run_cpu(&self, cx: &mut OpContext, _cpu: CpuKernels) -> Result<(), Error> {
        let ids = cx.read_u32(self.ids)?;
        let tab = cx.tensor(self.table)?;
        let add = cx.f32s(self.add)?;
        let scales = match self.table_scale {
            Some(s) => Some(cx.f32s(s)?),
            None => None,
        };
        let d = self.out.cols as usize;
        let rows = self.out.rows as usize;
        let first = self.first_position(cx)?;
        let mut out = cx.out(self.out)?;
        for r in 0..rows {
            let id = ids[r] as usize;
            if id >= tab.dims[0] {
                return Err(Error::TokenId {
                    id: ids[r],
                    vocab: tab.dims[0],
                });
            }
            let a = &add[(first + r) * d..(first + r + 1) * d];
            let y = out.row_mut(r);
            // An fp32 row without scales is times 1.0: the same bits as no product.
            let s = scales.map_or(1.0, |s| s[id]);
            if tab.dtype == DType::F32 {
                let row = &tab.f32s()[id * d..(id + 1) * d];
                for c in 0..d {
                    y[c] = row[c] * s + a[c];
                }
            } else {
                let row = &tab.i8s()[id * d..(id + 1) * d];
                for c in 0..d {
                    y[c] = row[c] as f32 * s + a[c];
                }
            }
        }
        Ok(())
    }
}
