//! The runtime's operations: one file per op, each holding the op's fields, its encoding,
//! its validation, the buffers it reads and writes, its scratch size, its cost and its
//! CPU execution ([`OpSpec`]). Everything else — the reader, the executor, the writer, the
//! importer, the profiler and the reports — asks the op through [`Op`] instead of
//! matching on it.
//!
//! An op names its operands by index: activations live in *buffers* (4-byte elements in
//! the caller's arena, placed by the memory plan), constants in *tensors* (in the
//! artifact). A [`Mat`] is a row-major 2-D window of a buffer, so an attention head or a
//! single token is addressed without a copy.
//!
//! A new op: a file here implementing [`OpSpec`], a line in `ops!` below, an opcode in
//! `names`, a row in FORMAT.md.

mod activate;
mod add;
mod advance;
mod attention;
mod cache_append;
mod cache_append_i8;
mod check;
mod constant;
mod context;
mod embedding;
mod encoding;
mod glu;
mod last_row;
mod layer_norm;
mod linear;
mod operands;
mod patch_embed;
mod pixel_shuffle;
mod rms_norm;
mod rope;

pub use activate::Activate;
pub use add::Add;
pub use advance::Advance;
pub use attention::Attention;
pub use cache_append::CacheAppend;
pub use cache_append_i8::CacheAppendI8;
pub use check::Check;
pub use constant::Constant;
pub(crate) use context::{carve as carve_op, cast, mat_ref as mat_view};
pub use context::{CpuKernels, OpContext};
pub use embedding::Embedding;
pub use encoding::{Reader, Words, MAX_OP_WORDS};
pub use glu::Glu;
pub use last_row::LastRow;
pub use layer_norm::LayerNorm;
pub use linear::Linear;
pub use operands::{Activation, Mask, Mat, Precision, Query, Weights};
pub use patch_embed::PatchEmbed;
pub use pixel_shuffle::PixelShuffle;
pub use rms_norm::RmsNorm;
pub use rope::Rope;

use crate::format::FormatError;
use crate::Error;

/// The buffers an op reads (at most four).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Buffers {
    bufs: [u32; 4],
    len: usize,
}

impl Buffers {
    pub fn of(bufs: &[u32]) -> Self {
        let mut b = Self::default();
        for &x in bufs {
            b.bufs[b.len] = x;
            b.len += 1;
        }
        b
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.bufs[..self.len]
    }
}

/// What each op knows of itself. `Display` says what the op is, its shape and precision,
/// for profiles and reports ("linear 197×768→3072 int8 + GELU-tanh").
pub trait OpSpec: Sized + core::fmt::Display {
    /// The op's code (`names::opcode`).
    const OPCODE: u32;
    /// Its fields, in the order of its words (after the opcode).
    fn decode(r: &mut Reader) -> Result<Self, FormatError>;
    fn encode(&self, o: &mut Words);
    /// The window the op writes.
    fn output(&self) -> Mat;
    /// The buffers it reads (its output's buffer excepted, unless it updates in place).
    fn reads(&self) -> Buffers;
    /// Checks every operand against the graph and the tensors; run once, at load.
    fn validate(&self, c: &Check) -> Result<(), &'static str>;
    /// Scratch bytes the CPU kernels need on `threads` threads.
    ///
    /// Saturating: ops come from untrusted files, and even a valid one can need more
    /// than a 32-bit usize holds; an overflow must come out as "too large for the
    /// arena", never wrap to a small size (nor panic).
    fn scratch_bytes(&self, threads: usize) -> usize {
        let _ = threads;
        0
    }
    /// Multiply-accumulates of one run (benchmarks, reports). Saturating.
    fn macs(&self) -> u64 {
        0
    }
    /// The weights of a linear map, if the op has one (reports, int8 labels).
    fn weights(&self) -> Option<Weights> {
        None
    }
    /// `(rows, inputs, outputs)` of the matrix product, for ops that are one.
    fn gemm_shape(&self) -> Option<(usize, usize, usize)> {
        None
    }
    /// What the op computes in, for reports: "int8", "fp32", "bf16", or "-".
    fn precision(&self) -> &'static str {
        "-"
    }
    /// Shows every tensor index the op holds to `f`, which may change it (the writer
    /// moves a graph's tensors into the artifact's one table).
    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        let _ = f;
    }
    /// Shows every window the op reads or writes to `f`, which may change it (a prefill
    /// run on fewer rows than its graph holds: `Op::with_rows`).
    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        let _ = f;
    }
    /// Shows the op's row counts that are not windows (an advance's amount).
    fn visit_counts(&mut self, f: &mut dyn FnMut(&mut u32)) {
        let _ = f;
    }
    /// Runs the op on the CPU.
    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error>;
}

macro_rules! ops {
    ($($variant:ident),* $(,)?) => {
        /// One operation of a graph's plan.
        #[derive(Debug, Clone, Copy, PartialEq)]
        pub enum Op {
            $($variant($variant)),*
        }

        $(impl From<$variant> for Op {
            fn from(op: $variant) -> Op {
                Op::$variant(op)
            }
        })*

        macro_rules! each {
            ($self:expr, $o:ident => $e:expr) => {
                match $self {
                    $(Op::$variant($o) => $e),*
                }
            };
        }

        impl Op {
            /// Decodes one op from the front of `words`; returns it and the words it used.
            pub fn decode(words: &[u32]) -> Result<(Op, usize), FormatError> {
                let mut r = Reader::new(words);
                let op = match r.next()? {
                    $(<$variant as OpSpec>::OPCODE => Op::$variant($variant::decode(&mut r)?),)*
                    _ => return Err(FormatError::BadField { field: "opcode" }),
                };
                Ok((op, r.pos))
            }
        }
    };
}

ops!(
    PatchEmbed,
    Embedding,
    LayerNorm,
    Linear,
    Attention,
    Add,
    Activate,
    CacheAppend,
    Advance,
    RmsNorm,
    Rope,
    Glu,
    PixelShuffle,
    Constant,
    LastRow,
    CacheAppendI8,
);

impl Op {
    /// The op's words: opcode, then its fields.
    pub fn encode(&self) -> Words {
        let mut o = Words::new();
        o.push(self.opcode());
        each!(self, op => op.encode(&mut o));
        o
    }

    pub fn opcode(&self) -> u32 {
        fn code<T: OpSpec>(_: &T) -> u32 {
            T::OPCODE
        }
        each!(self, op => code(op))
    }

    /// A short name for messages and reports (`names::OPCODES`).
    pub fn kind(&self) -> &'static str {
        crate::names::name_of(crate::names::OPCODES, self.opcode())
    }

    /// The matrix this op writes.
    pub fn output(&self) -> Mat {
        each!(self, op => op.output())
    }

    /// The buffers this op reads.
    pub fn reads(&self) -> Buffers {
        each!(self, op => op.reads())
    }

    pub fn validate(&self, c: &Check) -> Result<(), &'static str> {
        each!(self, op => op.validate(c))
    }

    /// Scratch bytes on one thread.
    pub fn scratch_bytes(&self) -> usize {
        self.scratch_bytes_for_threads(1)
    }

    /// Scratch bytes when the op's work is split across `threads` threads.
    pub fn scratch_bytes_for_threads(&self, threads: usize) -> usize {
        each!(self, op => op.scratch_bytes(threads.max(1)))
    }

    pub fn macs(&self) -> u64 {
        each!(self, op => op.macs())
    }

    pub fn weights(&self) -> Option<Weights> {
        each!(self, op => op.weights())
    }

    pub fn gemm_shape(&self) -> Option<(usize, usize, usize)> {
        each!(self, op => op.gemm_shape())
    }

    pub fn precision(&self) -> &'static str {
        each!(self, op => op.precision())
    }

    /// Every tensor index the op holds.
    pub fn tensors(&self) -> impl Iterator<Item = u32> {
        let mut op = *self;
        let mut found = [0u32; 8];
        let mut n = 0;
        op.visit_tensors(&mut |t| {
            found[n] = *t;
            n += 1;
        });
        found.into_iter().take(n)
    }

    pub fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        each!(self, op => op.visit_tensors(f))
    }

    /// The op as it runs in a graph of `capacity` rows run on `rows` of them (a
    /// prefill): every window of `capacity` rows outside the state buffers, and every
    /// row count of `capacity`, becomes `rows`. Fewer rows of a window that was
    /// validated stay inside it.
    pub fn with_rows(&self, capacity: u32, rows: u32, is_state: impl Fn(u32) -> bool) -> Op {
        let mut op = *self;
        if rows >= capacity {
            return op;
        }
        each!(&mut op, o => {
            o.visit_mats(&mut |m: &mut Mat| {
                if m.rows == capacity && !is_state(m.buf) {
                    m.rows = rows;
                }
            });
            o.visit_counts(&mut |c: &mut u32| {
                if *c == capacity {
                    *c = rows;
                }
            });
        });
        op
    }

    pub fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        each!(self, op => op.run_cpu(cx, cpu))
    }

    /// The input window, scale bits, zero point and width an int8 linear layer quantizes: the
    /// CPU backend reuses the quantization when the next op quantizes the same.
    pub fn quantized_input(&self) -> Option<(Mat, u32, i32, bool)> {
        match *self {
            Op::Linear(Linear {
                x,
                weights:
                    Weights::I8 {
                        x_scale,
                        x_zero,
                        narrow_x,
                        ..
                    },
                ..
            }) => Some((x, x_scale.to_bits(), x_zero, narrow_x)),
            _ => None,
        }
    }
}

impl core::fmt::Display for Op {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        each!(self, op => op.fmt(f))
    }
}

/// Rounds a byte count up to the arena's alignment (saturating).
pub(crate) fn align(n: usize) -> usize {
    n.checked_next_multiple_of(crate::format::ALIGN)
        .unwrap_or(usize::MAX)
}

/// The product of some dimensions, saturating (an untrusted file can ask for more than
/// u64 holds).
pub(crate) fn product(xs: &[u32]) -> u64 {
    xs.iter().fold(1u64, |p, &x| p.saturating_mul(x as u64))
}
