//! What an op sees while it runs on the CPU: its operands in the arena, the tensors,
//! its scratch, an observer.

use core::ops::Range;

use super::Mat;
use crate::exec::{Observed, Observer};
use crate::format::FormatError;
use crate::graph::Graph;
use crate::kernels::scalar::{MatMut, MatRef};
use crate::kernels::Isa;
use crate::model::{TensorRef, Tensors};
use crate::Error;

/// How the CPU backend runs ops: which kernels, on how many threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuKernels {
    pub isa: Isa,
    pub threads: usize,
    /// fp32 attention through the scalar reference (`Session::set_reproducible`).
    pub reproducible: bool,
    /// The scratch already holds this op's u8-quantized input (the previous op
    /// quantized the same window with the same parameters).
    pub reuse_quantized: bool,
}

/// One op's view of the arena and the artifact while it runs.
pub struct OpContext<'r, 'o> {
    pub(crate) tensors: Tensors<'r>,
    pub(crate) graph: &'r Graph<'r>,
    pub(crate) reads: Reads<'r>,
    /// The whole buffer the op writes.
    pub(crate) out: &'r mut [u8],
    pub(crate) scratch: &'r mut [u8],
    pub(crate) observer: Option<&'r mut (dyn Observer + 'o)>,
    pub(crate) index: usize,
}

impl<'r> OpContext<'r, '_> {
    /// The error for an operand the plan's validation should have caught.
    pub fn bad(&self) -> Error {
        Error::Format(FormatError::BadOp {
            graph: self.graph.role.name(),
            index: self.index,
            why: "operand outside the arena",
        })
    }

    /// The graph the op belongs to (a device backend finds its buffers' arena offsets
    /// with [`Graph::buffer_range`]).
    pub fn graph(&self) -> &'r Graph<'r> {
        self.graph
    }

    /// The artifact's tensors.
    pub fn tensors(&self) -> Tensors<'r> {
        self.tensors
    }

    pub fn tensor(&self, i: u32) -> Result<TensorRef<'r>, Error> {
        self.tensors.get(i).ok_or_else(|| self.bad())
    }

    pub fn f32s(&self, i: u32) -> Result<&'r [f32], Error> {
        Ok(self.tensor(i)?.f32s())
    }

    fn buffer(&self, b: u32) -> Result<&'r [u8], Error> {
        self.reads
            .get(self.graph.buffer_range(b))
            .ok_or_else(|| self.bad())
    }

    /// A window of a buffer the op reads.
    pub fn read(&self, m: Mat) -> Result<MatRef<'r>, Error> {
        mat_ref(cast(self.buffer(m.buf)?)?, m).ok_or_else(|| self.bad())
    }

    /// A whole buffer of u32 (token ids, a position).
    pub fn read_u32(&self, b: u32) -> Result<&'r [u32], Error> {
        cast(self.buffer(b)?)
    }

    /// A position counter's value (a one-element u32 state buffer), 0 without one.
    pub fn position(&self, p: Option<u32>) -> Result<usize, Error> {
        match p {
            Some(p) => Ok(*self.read_u32(p)?.first().ok_or_else(|| self.bad())? as usize),
            None => Ok(0),
        }
    }

    /// A whole buffer of f32.
    pub fn read_f32(&self, b: u32) -> Result<&'r [f32], Error> {
        cast(self.buffer(b)?)
    }

    /// The output window, and the scratch beside it.
    pub fn out_and_scratch(&mut self, m: Mat) -> Result<(MatMut<'_>, &mut [u8]), Error> {
        let bad = self.bad();
        let out = mat_mut(cast_mut(self.out)?, m).ok_or(bad)?;
        Ok((out, &mut *self.scratch))
    }

    /// The output window.
    pub fn out(&mut self, m: Mat) -> Result<MatMut<'_>, Error> {
        Ok(self.out_and_scratch(m)?.0)
    }

    /// The whole output buffer as u32 (a position counter).
    pub fn out_u32(&mut self) -> Result<&mut [u32], Error> {
        cast_mut(self.out)
    }

    /// Whether `buf` is one of the graph's state buffers of element type `dtype`.
    pub fn is_state_of(&self, buf: u32, dtype: crate::model::DType) -> bool {
        self.graph
            .states()
            .any(|p| p.mat.buf == buf && p.dtype == dtype)
    }

    /// Shows `x` to the observer, if any.
    pub fn observe(&mut self, what: Observed, x: MatRef) {
        if let Some(o) = self.observer.as_deref_mut() {
            o.observe(self.index, what, x);
        }
    }
}

pub(crate) fn cast<T: bytemuck::Pod>(b: &[u8]) -> Result<&[T], Error> {
    bytemuck::try_cast_slice(b).map_err(|_| Error::Format(FormatError::Misaligned))
}

pub(crate) fn cast_mut<T: bytemuck::Pod>(b: &mut [u8]) -> Result<&mut [T], Error> {
    bytemuck::try_cast_slice_mut(b).map_err(|_| Error::Format(FormatError::Misaligned))
}

pub(crate) fn mat_ref(buf: &[f32], m: Mat) -> Option<MatRef<'_>> {
    let span = m.span()?;
    Some(MatRef {
        data: buf.get(m.offset as usize..span)?,
        rows: m.rows as usize,
        cols: m.cols as usize,
        stride: m.stride as usize,
    })
}

pub(crate) fn mat_mut(buf: &mut [f32], m: Mat) -> Option<MatMut<'_>> {
    let span = m.span()?;
    Some(MatMut {
        data: buf.get_mut(m.offset as usize..span)?,
        rows: m.rows as usize,
        cols: m.cols as usize,
        stride: m.stride as usize,
    })
}

/// The arena outside one op's output buffer and scratch: what the op may read.
#[derive(Clone, Copy)]
pub(crate) struct Reads<'a> {
    pub(crate) before: &'a [u8],
    pub(crate) between: &'a [u8],
    pub(crate) between_at: usize,
}

impl<'a> Reads<'a> {
    /// A buffer that lies wholly before or wholly after the output.
    fn get(&self, r: Range<usize>) -> Option<&'a [u8]> {
        if r.end <= self.before.len() {
            self.before.get(r)
        } else if r.start >= self.between_at {
            self.between
                .get(r.start - self.between_at..r.end - self.between_at)
        } else {
            None
        }
    }
}

/// Cuts the arena around one op's output buffer and scratch, so inputs can be read while
/// the output is written (safe Rust: disjoint borrows from `split_at_mut`).
pub(crate) fn carve(
    arena: &mut [u8],
    out: Range<usize>,
    scratch: Range<usize>,
) -> Option<(Reads<'_>, &mut [u8], &mut [u8])> {
    if out.end > scratch.start || scratch.end > arena.len() || out.start > out.end {
        return None;
    }
    let (head, tail) = arena.split_at_mut(scratch.start);
    let scratch = &mut tail[..scratch.end - scratch.start];
    let (before, rest) = head.split_at_mut(out.start);
    let (out_bytes, between) = rest.split_at_mut(out.end - out.start);
    Some((
        Reads {
            before,
            between,
            between_at: out.end,
        },
        out_bytes,
        scratch,
    ))
}
