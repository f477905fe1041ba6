//! The executor: runs a validated graph's plan over a caller-provided arena.
//!
//! No allocation: every activation lives at the arena offset the plan gave it, state in
//! the region at the arena's start (kept from one run to the next), scratch after the
//! last buffer. The model was validated at load, so the lookups here cannot fail on a
//! loaded model; they still return errors rather than panic. Which hardware runs each op
//! is the [`Backend`]'s business.

use crate::backend::{Backend, Cpu};
use crate::format::{FormatError, ALIGN};
use crate::graph::{Graph, Role};
use crate::kernels::scalar::MatRef;
use crate::kernels::Isa;
use crate::model::{DType, Model};
use crate::ops::{carve_op, OpContext};
use crate::Error;

/// What an [`Observer`] is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The fp32 matrix a linear layer (or patch embedding, after gathering its tiles) is
    /// about to quantize or multiply: what calibration measures.
    LinearInput,
    /// An op's result.
    Output,
}

/// Sees intermediate values as the plan runs (calibration, per-layer error reports).
pub trait Observer {
    fn observe(&mut self, node: usize, what: Observed, x: MatRef<'_>);
}

/// One input of a graph run, in its port's element type.
#[derive(Debug, Clone, Copy)]
pub enum Input<'i> {
    /// f32 values: `[channels, height, width]` normalised pixels, embeddings…
    F32(&'i [f32]),
    /// u32 values: token ids.
    U32(&'i [u32]),
}

impl Input<'_> {
    fn dtype(&self) -> DType {
        match self {
            Input::F32(_) => DType::F32,
            Input::U32(_) => DType::U32,
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Input::F32(x) => bytemuck::cast_slice(x),
            Input::U32(x) => bytemuck::cast_slice(x),
        }
    }

    fn len(&self) -> usize {
        match self {
            Input::F32(x) => x.len(),
            Input::U32(x) => x.len(),
        }
    }
}

/// A session: one model, one arena, one backend. Runs one graph at a time; state
/// buffers (a decoder's KV cache) persist in the arena between runs.
pub struct Session<'m, 'a, B: Backend = Cpu> {
    model: Model<'m>,
    arena: &'a mut [u8],
    backend: B,
}

impl<'m, 'a> Session<'m, 'a, Cpu> {
    /// `arena` must hold at least `model.arena_size()` bytes; it need not be aligned.
    pub fn new(model: &Model<'m>, arena: &'a mut [u8]) -> Result<Self, Error> {
        Self::with_isa(model, arena, Isa::detect())
    }

    /// A session on chosen kernels (an unsupported ISA falls back to scalar).
    pub fn with_isa(model: &Model<'m>, arena: &'a mut [u8], isa: Isa) -> Result<Self, Error> {
        Session::with_backend(model, arena, Cpu::new(isa))
    }

    /// Splits the large GEMMs and attention across `n` threads (std only; 1, the
    /// default, spawns none and allocates nothing).
    #[cfg(feature = "std")]
    pub fn set_threads(&mut self, n: usize) {
        self.backend.threads = n.max(1);
    }

    /// With `true`, every op computes the scalar reference's bits on any CPU: fp32
    /// attention (the one float kernel whose SIMD versions are only within a tolerance of
    /// the reference: their exponential and sum order differ) runs the reference. Every
    /// other op already does (int8 GEMMs are exact; fp32 GEMM, layer norm, bf16
    /// attention and activation quantization fix their operations and order). What
    /// calibration and label embeddings run on, so an artifact is the same file whichever
    /// CPU wrote it.
    pub fn set_reproducible(&mut self, on: bool) {
        self.backend.reproducible = on;
    }

    /// The kernels this session runs.
    pub fn isa(&self) -> Isa {
        self.backend.isa
    }
}

impl<'m, 'a, B: Backend> Session<'m, 'a, B> {
    /// A session on any backend. The state region starts zeroed.
    pub fn with_backend(model: &Model<'m>, arena: &'a mut [u8], backend: B) -> Result<Self, Error> {
        let need = model.arena_size();
        if arena.len() < need {
            return Err(Error::ArenaTooSmall {
                need,
                got: arena.len(),
            });
        }
        let skip = arena.as_ptr().align_offset(ALIGN).min(ALIGN);
        let mut s = Self {
            model: *model,
            arena: &mut arena[skip..],
            backend,
        };
        s.reset_state()?;
        Ok(s)
    }

    pub fn model(&self) -> &Model<'m> {
        &self.model
    }

    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Zeroes every state buffer (a decoder's cache and position): a new sequence.
    /// Fails only where a backend with memory of its own cannot take the change.
    pub fn reset_state(&mut self) -> Result<(), Error> {
        let n = self.model.state_bytes().min(self.arena.len());
        self.arena[..n].fill(0);
        self.backend.sync(0..n, self.arena, false)
    }

    /// The state region (every graph's KV caches and positions): what a beam search
    /// copies from one hypothesis to another. `&mut`: a backend with memory of its own
    /// first brings it into the arena.
    pub fn state(&mut self) -> Result<&[u8], Error> {
        let n = self.model.state_bytes().min(self.arena.len());
        self.backend.sync(0..n, self.arena, true)?;
        Ok(&self.arena[..n])
    }

    /// Overwrites the state region with `state` (of [`Session::state`]'s length, from a
    /// session of the same model).
    pub fn set_state(&mut self, state: &[u8]) -> Result<(), Error> {
        let n = self.model.state_bytes().min(self.arena.len());
        if state.len() != n {
            return Err(Error::BufferSize {
                what: "state",
                got: state.len(),
                expected: n,
            });
        }
        self.arena[..n].copy_from_slice(state);
        self.backend.sync(0..n, self.arena, false)
    }

    /// The image embedding (not normalised) of `[C, H, W]` pixel values.
    pub fn encode_image(&mut self, pixels: &[f32], out: &mut [f32]) -> Result<(), Error> {
        self.encode(Role::ImageEncoder, Input::F32(pixels), out)
    }

    /// The text embedding (not normalised) of the text encoder's token ids.
    pub fn encode_text(&mut self, ids: &[u32], out: &mut [f32]) -> Result<(), Error> {
        self.encode(Role::TextEncoder, Input::U32(ids), out)
    }

    /// Runs the first graph with `role`, one input and one output.
    pub fn encode(&mut self, role: Role, input: Input<'_>, out: &mut [f32]) -> Result<(), Error> {
        let g = self
            .model
            .graph_index(role)
            .ok_or(Error::NoGraph { what: role.name() })?;
        self.run(g, &[input], &mut [out], None)
    }

    /// Runs graph `graph` (file order): copies `inputs` into its input ports, runs its
    /// ops, copies its output ports into `outputs`, showing intermediate values to
    /// `observer`.
    pub fn run(
        &mut self,
        graph: usize,
        inputs: &[Input<'_>],
        outputs: &mut [&mut [f32]],
        observer: Option<&mut dyn Observer>,
    ) -> Result<(), Error> {
        self.run_rows(graph, None, inputs, outputs, observer)
    }

    /// Runs a prefill graph on `rows` of its rows (`None`: all of them; other graphs
    /// take `None` only): its inputs hold that many rows.
    pub fn run_rows(
        &mut self,
        graph: usize,
        rows: Option<usize>,
        inputs: &[Input<'_>],
        outputs: &mut [&mut [f32]],
        mut observer: Option<&mut dyn Observer>,
    ) -> Result<(), Error> {
        // An observer (calibration's) stays on the caller's thread: it need not be Send.
        #[cfg(feature = "std")]
        let threads = self.backend.on_pool();
        #[cfg(feature = "std")]
        if observer.is_none() && threads > 1 && rayon::current_thread_index().is_none() {
            let me = &mut *self;
            return rayon::scope(move |_| {
                crate::team::lead(threads, move || {
                    me.run_rows(graph, rows, inputs, outputs, None)
                })
            });
        }
        let model = self.model;
        let g = *model
            .graph_at(graph)
            .ok_or(Error::NoGraph { what: "such" })?;
        let n = match rows {
            None => g.rows,
            Some(n) if g.rows > 0 && (1..=g.rows).contains(&n) => n,
            Some(n) => {
                return Err(Error::BufferSize {
                    what: "prefill rows",
                    got: n,
                    expected: g.rows,
                })
            }
        };
        self.write_inputs(&g, inputs, n)?;
        let is_state = |b: u32| g.states().any(|p| p.mat.buf == b);
        let count = g.outputs().count();
        if outputs.len() != count {
            return Err(port_count(&g, "outputs", outputs.len(), count));
        }
        for (p, out) in g.outputs().zip(outputs.iter()) {
            if out.len() != p.len() {
                return Err(Error::BufferSize {
                    what: "graph output",
                    got: out.len(),
                    expected: p.len(),
                });
            }
        }
        self.backend.enter(&g, self.arena)?;
        self.backend.begin();
        let tensors = model.tensors();
        for (index, (_, op)) in g.ops().enumerate() {
            let op = match n < g.rows {
                true => op.with_rows(g.rows as u32, n as u32, is_state),
                false => op,
            };
            let bad = || bad_op(&g, index);
            self.backend.stage(&op, &g, self.arena)?;
            let out_range = g.buffer_range(op.output().buf);
            let (reads, out, scratch) = carve_op(
                self.arena,
                out_range.clone(),
                g.scratch_at..self.arena.len(),
            )
            .ok_or_else(bad)?;
            let mut cx = OpContext {
                tensors,
                graph: &g,
                reads,
                out,
                scratch,
                observer: observer.as_deref_mut(),
                index,
            };
            self.backend.execute(&op, &mut cx)?;
            if let Some(o) = observer.as_deref_mut() {
                self.backend.sync(out_range.clone(), self.arena, true)?;
                let all = crate::ops::cast::<f32>(&self.arena[out_range])?;
                let m = crate::ops::mat_view(all, op.output()).ok_or_else(bad)?;
                o.observe(index, Observed::Output, m);
            }
        }
        self.backend.leave(&g, self.arena)?;
        for (p, out) in g.outputs().zip(outputs.iter_mut()) {
            let all = crate::ops::cast::<f32>(&self.arena[g.buffer_range(p.mat.buf)])?;
            let m = crate::ops::mat_view(all, p.mat).ok_or_else(|| bad_op(&g, 0))?;
            for r in 0..m.rows {
                out[r * m.cols..(r + 1) * m.cols].copy_from_slice(m.row(r));
            }
        }
        Ok(())
    }

    /// Copies the inputs in; a prefill's hold `rows` of its rows (the rest of the
    /// buffer is left as it is: nothing reads it).
    fn write_inputs(
        &mut self,
        g: &Graph<'m>,
        inputs: &[Input<'_>],
        rows: usize,
    ) -> Result<(), Error> {
        let count = g.inputs().count();
        if inputs.len() != count {
            return Err(port_count(g, "inputs", inputs.len(), count));
        }
        for (p, input) in g.inputs().zip(inputs) {
            if input.dtype() != p.dtype {
                return Err(Error::InputType {
                    name: port_what(p.dtype),
                    got: input.dtype().name(),
                    expected: p.dtype.name(),
                });
            }
            let expected = match g.rows {
                0 => p.len(),
                capacity => p.len() / capacity * rows,
            };
            if input.len() != expected {
                return Err(Error::BufferSize {
                    what: port_what(p.dtype),
                    got: input.len(),
                    expected,
                });
            }
            let range = g.buffer_range(p.mat.buf);
            let bytes = input.bytes();
            self.arena[range.start..range.start + bytes.len()].copy_from_slice(bytes);
        }
        Ok(())
    }
}

/// How an error names an input port (its name is in the artifact, and errors carry only
/// static strings: the runtime has no allocator).
fn port_what(d: DType) -> &'static str {
    match d {
        DType::U32 => "token ids",
        _ => "input values",
    }
}

fn port_count(g: &Graph, what: &'static str, got: usize, expected: usize) -> Error {
    Error::PortCount {
        graph: g.role.name(),
        what,
        got,
        expected,
    }
}

fn bad_op(g: &Graph, index: usize) -> Error {
    Error::Format(FormatError::BadOp {
        graph: g.role.name(),
        index,
        why: "operand outside the arena",
    })
}
