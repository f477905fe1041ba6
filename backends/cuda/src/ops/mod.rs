//! Each op the GPU runs: where its operands are on the device, and its launch. One file
//! per op family; an op not listed in [`runs_on_device`] runs on the CPU's code (the
//! backend copies its operands across), so every artifact runs, and an op gains speed
//! here without anything else changing.

mod attention;
mod cache;
mod elementwise;
mod gather;
mod linear;
mod norm;
mod patch_embed;

use cudarc::driver::{sys, CudaFunction, LaunchConfig, PushKernelArg};
use vlm_runtime::model::TensorRef;
use vlm_runtime::ops::{Buffers, Mat, Op, OpContext};
use vlm_runtime::{Error, Graph};

use crate::{CudaError, Gpu};

/// What a launch sees: device addresses of the arena and the tensors.
pub(crate) struct Dev<'a> {
    pub gpu: &'a Gpu,
    /// The session's stream: its ops run in order on it.
    pub stream: &'a std::sync::Arc<cudarc::driver::CudaStream>,
    pub arena: sys::CUdeviceptr,
    pub tensors: sys::CUdeviceptr,
    pub tensors_host: usize,
    pub graph: &'a Graph<'a>,
}

pub(crate) enum Launch {
    /// The op's own error, as the CPU would give it (a position past the table).
    Runtime(Error),
    Driver(CudaError),
}

impl From<Error> for Launch {
    fn from(e: Error) -> Self {
        Launch::Runtime(e)
    }
}

impl Dev<'_> {
    /// The device address of a window's first element.
    pub fn mat(&self, m: Mat) -> u64 {
        self.arena + self.graph.buffer_range(m.buf).start as u64 + 4 * m.offset as u64
    }

    /// The device address of the graph's scratch.
    pub fn scratch(&self) -> u64 {
        self.arena + self.graph.scratch_at as u64
    }

    /// The device address of a tensor (uploaded with the rest of the artifact's).
    pub fn tensor(&self, t: TensorRef) -> u64 {
        self.tensors + (t.bytes.as_ptr() as usize - self.tensors_host) as u64
    }

    pub fn function(&self, name: &'static str) -> &CudaFunction {
        self.gpu.function(name)
    }
}

/// One kernel launch: `args` pushes the arguments in order.
pub(crate) fn run(
    d: &Dev,
    kernel: &'static str,
    grid: (u32, u32, u32),
    block: u32,
    args: &[&dyn Arg],
) -> Result<(), Launch> {
    run_shared(d, kernel, grid, block, 0, args)
}

/// [`run`] with `shared` bytes of dynamic shared memory a block (at most 48 KiB: no
/// kernel opts in to more).
pub(crate) fn run_shared(
    d: &Dev,
    kernel: &'static str,
    grid: (u32, u32, u32),
    block: u32,
    shared: u32,
    args: &[&dyn Arg],
) -> Result<(), Launch> {
    let f = d.function(kernel);
    let mut b = d.stream.launch_builder(f);
    for a in args {
        a.push(&mut b);
    }
    let cfg = LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: shared,
    };
    // SAFETY: each kernel's arguments are pushed in its signature's order and types
    // (u64 device addresses, i32, f32), and every address lies in the arena or the
    // tensors, validated with the model at load.
    unsafe { b.launch(cfg) }
        .map(|_| ())
        .map_err(|e| Launch::Driver(CudaError::driver("a kernel launch")(e)))
}

/// A kernel argument: a device address (u64), an i32 or an f32.
pub(crate) trait Arg {
    fn push<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>);
}

macro_rules! arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            fn push<'a>(&'a self, b: &mut cudarc::driver::LaunchArgs<'a>) {
                b.arg(self);
            }
        }
    )*};
}
arg!(u64, i32, f32);

/// A grid of `n` threads in blocks of `block`, by `rows`.
pub(crate) fn grid(n: usize, block: u32, rows: u32) -> (u32, u32, u32) {
    (n.div_ceil(block as usize).max(1) as u32, rows.max(1), 1)
}

/// Whether the GPU runs `op`. (Every tensor starts `format::ALIGN`-aligned in the
/// artifact, checked at load, so the kernels may read weights as 32-bit words.)
pub(crate) fn runs_on_device(op: &Op) -> bool {
    match op {
        Op::Linear(_) | Op::LayerNorm(_) | Op::RmsNorm(_) => true,
        Op::Add(_) | Op::Activate(_) | Op::Glu(_) => true,
        Op::Rope(_) => true,
        Op::PatchEmbed(p) => patch_embed::fits(p),
        Op::Embedding(_) | Op::LastRow(_) | Op::PixelShuffle(_) | Op::Constant(_) => true,
        Op::Attention(_) | Op::CacheAppend(_) | Op::CacheAppendI8(_) => true,
        _ => false,
    }
}

/// The buffers a device op's launch also reads on the host (a position counter, token
/// ids): grids, bounds and the op's own errors depend on their values.
pub(crate) fn host_reads(op: &Op) -> Buffers {
    let some = |b: Option<u32>| Buffers::of(b.as_slice());
    match op {
        Op::Rope(r) => some(r.position),
        Op::Embedding(e) => match e.position {
            Some(p) => Buffers::of(&[p, e.ids]),
            None => Buffers::of(&[e.ids]),
        },
        Op::Attention(a) => some(a.past),
        Op::CacheAppend(c) => Buffers::of(&[c.position]),
        Op::CacheAppendI8(c) => Buffers::of(&[c.position]),
        _ => Buffers::default(),
    }
}

pub(crate) fn launch(op: &Op, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    match op {
        Op::Linear(l) => linear::launch(l, d, cx),
        Op::LayerNorm(n) => norm::layer_norm(n, d, cx),
        Op::RmsNorm(n) => norm::rms_norm(n, d, cx),
        Op::Add(a) => elementwise::add(a, d),
        Op::Activate(a) => elementwise::activate(a, d),
        Op::Glu(g) => elementwise::glu(g, d),
        Op::Rope(r) => elementwise::rope(r, d, cx),
        Op::PatchEmbed(p) => patch_embed::launch(p, d, cx),
        Op::Embedding(e) => gather::embedding(e, d, cx),
        Op::LastRow(l) => gather::last_row(l, d, cx),
        Op::PixelShuffle(p) => gather::pixel_shuffle(p, d),
        Op::Constant(c) => gather::constant(c, d, cx),
        Op::Attention(a) => attention::launch(a, d, cx),
        Op::CacheAppend(c) => cache::append(c, d, cx),
        Op::CacheAppendI8(c) => cache::append_i8(c, d, cx),
        // `runs_on_device` said no: the backend never launches these.
        _ => Err(Launch::Runtime(cx.bad())),
    }
}
