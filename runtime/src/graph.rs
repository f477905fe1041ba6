//! One graph of an artifact: its role, its ports (inputs, outputs, state), its buffers
//! placed in the arena, and its ops — read from a GRAPH section and checked once.
// The arena's limit (the format's u32 sizes) is all of memory on a 32-bit target, where
// the checks against it cannot fail: they stay for 64-bit ones.
#![cfg_attr(target_pointer_width = "32", allow(clippy::absurd_extreme_comparisons))]

use crate::format::{
    string, FormatError, ALIGN, GRAPH_HEADER_WORDS, MAX_ARENA, MAX_BUFFERS, MAX_OPS, MAX_PORTS,
    PORT_WORDS,
};
use crate::model::{DType, Tensors};
use crate::names::{self, port, role};
use crate::ops::{Check, Mat, Op};

/// What a graph is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    ImageEncoder,
    TextEncoder,
    Projector,
    /// One step of a language model: one token's input embedding in, next-token logits
    /// out, its KV cache and position in state.
    Decoder,
    /// Token ids to a language model's input embeddings.
    TokenEmbedding,
    /// A fixed number of input embeddings through the decoder at once, sharing the
    /// decoder step's state: the prompt, chunk by chunk.
    Prefill,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::ImageEncoder,
        Role::TextEncoder,
        Role::Projector,
        Role::Decoder,
        Role::TokenEmbedding,
        Role::Prefill,
    ];

    pub fn code(self) -> u32 {
        match self {
            Role::ImageEncoder => role::IMAGE_ENCODER,
            Role::TextEncoder => role::TEXT_ENCODER,
            Role::Projector => role::PROJECTOR,
            Role::Decoder => role::DECODER,
            Role::TokenEmbedding => role::TOKEN_EMBEDDING,
            Role::Prefill => role::PREFILL,
        }
    }

    pub fn from_code(code: u32) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.code() == code)
    }

    /// "image encoder", "decoder", … (`names::ROLES`).
    pub fn name(self) -> &'static str {
        names::name_of(names::ROLES, self.code())
    }
}

/// What a port is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    Input,
    Output,
    State,
}

impl PortKind {
    pub fn code(self) -> u32 {
        match self {
            PortKind::Input => port::INPUT,
            PortKind::Output => port::OUTPUT,
            PortKind::State => port::STATE,
        }
    }

    fn from_code(code: u32) -> Option<PortKind> {
        [PortKind::Input, PortKind::Output, PortKind::State]
            .into_iter()
            .find(|k| k.code() == code)
    }
}

/// A graph's input, output or state: a window of one of its buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Port<'a> {
    pub kind: PortKind,
    /// f32 or u32 (a state also i8: an int8 KV cache).
    pub dtype: DType,
    pub mat: Mat,
    pub name: &'a str,
}

impl Port<'_> {
    /// Elements the caller passes or receives.
    pub fn len(&self) -> usize {
        self.mat.rows as usize * self.mat.cols as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One graph's plan.
#[derive(Debug, Clone, Copy)]
pub struct Graph<'a> {
    pub role: Role,
    pub name: &'a str,
    /// Bytes of arena the graph needs (state, buffers, then this runtime's scratch).
    pub arena_bytes: usize,
    /// Where scratch starts (after the last buffer).
    pub scratch_at: usize,
    /// The arena's state region, `0 .. state_bytes`, the same in every graph of a model.
    pub state_bytes: usize,
    /// A prefill's row capacity: it runs on 1 ..= `rows` rows of input
    /// (`Session::run_rows`); 0 for every other graph, which runs on what it was
    /// written for.
    pub rows: usize,
    ports: &'a [u32],
    port_count: usize,
    buffers: &'a [u32],
    names: &'a [u32],
    ops: &'a [u32],
    op_count: usize,
    strings: &'a [u8],
}

impl<'a> Graph<'a> {
    /// Reads a GRAPH section and checks every port, buffer and op against `tensors`.
    pub(crate) fn read(
        w: &'a [u32],
        strings: &'a [u8],
        tensors: &Tensors<'a>,
    ) -> Result<Self, FormatError> {
        if w.len() < GRAPH_HEADER_WORDS {
            return Err(FormatError::Truncated {
                what: "graph header",
            });
        }
        let role = Role::from_code(w[0]).ok_or(FormatError::BadField {
            field: "graph role",
        })?;
        let bad = |why| FormatError::BadGraph {
            graph: role.name(),
            why,
        };
        let port_count = (w[1] as usize)
            .checked_add(w[2] as usize)
            .and_then(|n| n.checked_add(w[3] as usize))
            .filter(|&n| n <= MAX_PORTS)
            .ok_or(FormatError::TooLarge {
                what: "graph ports",
                limit: MAX_PORTS,
            })?;
        let (buffer_count, op_count) = (w[4] as usize, w[5] as usize);
        let (arena_bytes, op_words, state_bytes) = (w[6] as usize, w[7] as usize, w[8] as usize);
        if buffer_count > MAX_BUFFERS || op_count > MAX_OPS {
            return Err(FormatError::TooLarge {
                what: "graph buffers or ops",
                limit: MAX_OPS,
            });
        }
        if arena_bytes > MAX_ARENA || state_bytes > arena_bytes || state_bytes % ALIGN != 0 {
            return Err(bad("arena or state region size is invalid"));
        }
        let name = string(strings, w[9], w[10]).map_err(|_| bad("bad name"))?;
        let rows = w[11] as usize;
        if (role == Role::Prefill) != (rows > 0) {
            return Err(bad("only a prefill has a row capacity, and it has one"));
        }
        let p0 = GRAPH_HEADER_WORDS;
        let b0 = p0 + PORT_WORDS * port_count;
        let n0 = b0 + 2 * buffer_count;
        let o0 = n0 + 2 * op_count;
        // Checked: on a 32-bit target a huge op-word count would wrap `end` below `o0`.
        let end = o0
            .checked_add(op_words)
            .filter(|&end| end <= w.len())
            .ok_or(FormatError::Truncated { what: "graph" })?;
        let mut g = Graph {
            role,
            name,
            arena_bytes,
            scratch_at: 0,
            state_bytes,
            rows,
            ports: &w[p0..b0],
            port_count,
            buffers: &w[b0..n0],
            names: &w[n0..o0],
            ops: &w[o0..end],
            op_count,
            strings,
        };
        g.check_buffers()?;
        g.check_ports(w[1] as usize, w[2] as usize)?;
        g.check_ops(tensors)?;
        if rows > 0 && g.inputs().any(|p| p.len() % rows != 0) {
            return Err(g.bad("a prefill input is not whole rows"));
        }
        Ok(g)
    }

    fn bad(&self, why: &'static str) -> FormatError {
        FormatError::BadGraph {
            graph: self.role.name(),
            why,
        }
    }

    fn check_buffers(&mut self) -> Result<(), FormatError> {
        let mut scratch_at = self.state_bytes;
        for b in 0..self.buffer_count() {
            let (off, len) = (
                self.buffers[2 * b] as usize,
                self.buffers[2 * b + 1] as usize,
            );
            let end = len
                .checked_mul(4)
                .and_then(|n| n.checked_add(off))
                .ok_or(self.bad("buffer size overflows"))?;
            if off % ALIGN != 0 || end > self.arena_bytes {
                return Err(self.bad("buffer placement is outside the arena"));
            }
            scratch_at = scratch_at.max(end.next_multiple_of(ALIGN));
        }
        self.scratch_at = scratch_at;
        Ok(())
    }

    /// Inputs, then outputs, then states, in that order; inputs and states whole dense
    /// buffers (f32 or u32; a state also i8), outputs f32 windows. State buffers lie in the state region,
    /// every other buffer after it, so no run's work overwrites state.
    fn check_ports(&self, inputs: usize, outputs: usize) -> Result<(), FormatError> {
        for i in 0..self.port_count {
            let kind = if i < inputs {
                PortKind::Input
            } else if i < inputs + outputs {
                PortKind::Output
            } else {
                PortKind::State
            };
            let p = self.read_port(i).ok_or(self.bad("bad port"))?;
            if p.kind != kind || !self.mat_fits(p.mat) {
                return Err(self.bad("port kind or window is invalid"));
            }
            let whole =
                p.mat.offset == 0 && p.mat.is_contiguous() && p.len() == self.buffer_len(p.mat.buf);
            let typed = match kind {
                PortKind::Output => p.dtype == DType::F32,
                PortKind::Input => whole && matches!(p.dtype, DType::F32 | DType::U32),
                // i8: an int8 KV cache (its ops check the layout).
                PortKind::State => whole && matches!(p.dtype, DType::F32 | DType::U32 | DType::I8),
            };
            if !typed {
                return Err(self.bad("port type or shape is invalid"));
            }
        }
        for b in 0..self.buffer_count() as u32 {
            let r = self.buffer_range(b);
            if r.is_empty() {
                continue;
            }
            let state = self
                .ports()
                .any(|p| p.kind == PortKind::State && p.mat.buf == b);
            if state != (r.end <= self.state_bytes) || (!state && r.start < self.state_bytes) {
                return Err(self.bad("a buffer is on the wrong side of the state region"));
            }
        }
        // A run writes its inputs first: one on a state buffer would overwrite what the
        // last run left there.
        for i in self.inputs() {
            if self.states().any(|s| s.mat.buf == i.mat.buf) {
                return Err(self.bad("an input port is a state buffer"));
            }
        }
        // Two states must not share bytes: each keeps its own value across runs.
        for (i, a) in self.ports().enumerate() {
            for b in self.ports().skip(i + 1) {
                if a.kind == PortKind::State && b.kind == PortKind::State {
                    let (ra, rb) = (self.buffer_range(a.mat.buf), self.buffer_range(b.mat.buf));
                    if ra.start < rb.end && rb.start < ra.end {
                        return Err(self.bad("two state buffers overlap"));
                    }
                }
            }
        }
        Ok(())
    }

    fn check_ops(&mut self, tensors: &Tensors<'a>) -> Result<(), FormatError> {
        let mut at = 0usize;
        let mut arena_need = self.arena_bytes.max(self.scratch_at);
        for index in 0..self.op_count {
            let bad = |why| FormatError::BadOp {
                graph: self.role.name(),
                index,
                why,
            };
            let (op, used) = Op::decode(&self.ops[at..])?;
            at += used;
            if !self.mat_fits(op.output()) {
                return Err(bad("output window lies outside its buffer"));
            }
            op.validate(&Check {
                tensors,
                graph: self,
            })
            .map_err(bad)?;
            // Scratch is what *this* runtime's kernels need, not what the writer's did:
            // an artifact stays valid when kernels change.
            let need = self
                .scratch_at
                .checked_add(op.scratch_bytes())
                .filter(|&n| n <= MAX_ARENA)
                .ok_or(bad("scratch overflows"))?;
            arena_need = arena_need.max(need);
            self.op_name(index).ok_or(bad("bad name"))?;
        }
        if at != self.ops.len() {
            return Err(self.bad("op words do not add up"));
        }
        self.arena_bytes = arena_need;
        Ok(())
    }

    fn read_port(&self, i: usize) -> Option<Port<'a>> {
        let w = self.ports.get(i * PORT_WORDS..(i + 1) * PORT_WORDS)?;
        Some(Port {
            kind: PortKind::from_code(w[0])?,
            dtype: DType::from_code(w[1])?,
            mat: Mat {
                buf: w[2],
                offset: w[3],
                rows: w[4],
                cols: w[5],
                stride: w[6],
            },
            name: string(self.strings, w[7], w[8]).ok()?,
        })
    }

    /// Every port: inputs, outputs, then states.
    pub fn ports(&self) -> impl Iterator<Item = Port<'a>> + '_ {
        (0..self.port_count).filter_map(|i| self.read_port(i))
    }

    pub fn inputs(&self) -> impl Iterator<Item = Port<'a>> + '_ {
        self.ports().filter(|p| p.kind == PortKind::Input)
    }

    pub fn outputs(&self) -> impl Iterator<Item = Port<'a>> + '_ {
        self.ports().filter(|p| p.kind == PortKind::Output)
    }

    pub fn states(&self) -> impl Iterator<Item = Port<'a>> + '_ {
        self.ports().filter(|p| p.kind == PortKind::State)
    }

    /// Whether `m` is a non-empty window inside its buffer.
    pub fn mat_fits(&self, m: Mat) -> bool {
        // An empty window spans nothing, so its rows would not be checked against the
        // buffer (kernels still index row r at r·stride), and with no columns its row
        // count would be unbounded work over no memory. No real layer has one.
        m.rows > 0
            && m.cols > 0
            && (m.buf as usize) < self.buffer_count()
            && (m.rows <= 1 || m.stride >= m.cols)
            && m.span().is_some_and(|s| s <= self.buffer_len(m.buf))
    }

    pub fn buffer_count(&self) -> usize {
        self.buffers.len() / 2
    }

    /// Elements of buffer `b` (0 when there is no such buffer).
    pub fn buffer_len(&self, b: u32) -> usize {
        self.buffers.get(2 * b as usize + 1).copied().unwrap_or(0) as usize
    }

    /// Byte range of buffer `b` in the arena.
    pub fn buffer_range(&self, b: u32) -> core::ops::Range<usize> {
        let off = self.buffers.get(2 * b as usize).copied().unwrap_or(0) as usize;
        off..off + 4 * self.buffer_len(b)
    }

    pub fn op_count(&self) -> usize {
        self.op_count
    }

    /// The source node op `i` was lowered from.
    pub fn op_name(&self, i: usize) -> Option<&'a str> {
        self.names
            .get(2 * i..2 * i + 2)
            .and_then(|w| string(self.strings, w[0], w[1]).ok())
    }

    /// The ops in order with their node names (all validated at load).
    pub fn ops(&self) -> OpIter<'a> {
        OpIter {
            words: self.ops,
            names: self.names,
            strings: self.strings,
            index: 0,
        }
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        // Saturating: a plan's ops can add up past u64 (the file is untrusted).
        self.ops()
            .map(|(_, op)| op.macs())
            .fold(0, u64::saturating_add)
    }

    /// Arena bytes for this graph's ops on `threads` threads (attention gives each
    /// thread its own scratch).
    pub fn arena_bytes_for_threads(&self, threads: usize) -> usize {
        // One thread's need was worked out at load (`check_ops`): no ops to decode.
        if threads <= 1 {
            return self.arena_bytes;
        }
        self.ops()
            .map(|(_, op)| {
                self.scratch_at
                    .saturating_add(op.scratch_bytes_for_threads(threads))
            })
            .fold(self.arena_bytes, usize::max)
    }
}

/// Iterates a validated graph's ops.
pub struct OpIter<'a> {
    words: &'a [u32],
    names: &'a [u32],
    strings: &'a [u8],
    index: usize,
}

impl<'a> Iterator for OpIter<'a> {
    type Item = (&'a str, Op);

    fn next(&mut self) -> Option<Self::Item> {
        if self.words.is_empty() {
            return None;
        }
        let (op, used) = Op::decode(self.words).ok()?;
        self.words = &self.words[used..];
        let name = self
            .names
            .get(2 * self.index..2 * self.index + 2)
            .and_then(|w| string(self.strings, w[0], w[1]).ok())
            .unwrap_or("");
        self.index += 1;
        Some((name, op))
    }
}
