//! The backend: activations stay in a device copy of the arena from op to op; the host's
//! arena is brought up to date only where the host reads it (output ports, an op left to
//! the CPU, an observer, `Session::state`).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use cudarc::driver::{result, sys, CudaStream};
use vlm_runtime::kernels::Isa;
use vlm_runtime::ops::{Op, OpContext};
use vlm_runtime::{Backend, Cpu, Error, Graph, Model};

use crate::ops::{self, Dev};
use crate::residency::{Copy, Residency};
use crate::{CudaError, Gpu};

/// Device memory from `cuMemAlloc`, freed on drop.
pub(crate) struct DeviceBytes {
    ptr: sys::CUdeviceptr,
    len: usize,
}

/// A model on a GPU: the kernels, and the artifact's tensors uploaded once. Shared
/// (`Arc`) by every session of the model; each makes its own [`CudaBackend`].
pub struct CudaModel {
    gpu: Arc<Gpu>,
    tensors: DeviceBytes,
    /// Where the artifact's tensor bytes start on the host: a tensor's device address is
    /// its offset from here.
    tensors_host: usize,
    tensors_len: usize,
    /// Device arenas of finished sessions, for the next ones.
    arenas: Mutex<Vec<DeviceBytes>>,
}

impl CudaModel {
    /// Uploads `model`'s tensors to `gpu`. The model's bytes must outlive every backend
    /// made from this (its tensors are found by their host address).
    pub fn new(gpu: Arc<Gpu>, model: &Model) -> Result<Arc<Self>, CudaError> {
        let data = model.tensors().data();
        gpu.ctx
            .bind_to_thread()
            .map_err(CudaError::driver("binding the context"))?;
        let tensors = DeviceBytes::alloc(data.len())?;
        // SAFETY: `tensors` holds `data.len()` bytes; the copy is synchronous.
        unsafe { result::memcpy_htod_sync(tensors.ptr, data) }
            .map_err(CudaError::driver("uploading the weights"))?;
        Ok(Arc::new(Self {
            gpu,
            tensors,
            tensors_host: data.as_ptr() as usize,
            tensors_len: data.len(),
            arenas: Mutex::new(Vec::new()),
        }))
    }

    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    /// A backend for one session, on a stream of its own.
    pub fn backend(self: &Arc<Self>) -> Result<CudaBackend, CudaError> {
        self.gpu
            .ctx
            .bind_to_thread()
            .map_err(CudaError::driver("binding the context"))?;
        let stream = self
            .gpu
            .ctx
            .new_stream()
            .map_err(CudaError::driver("creating a stream"))?;
        Ok(CudaBackend {
            model: Arc::clone(self),
            stream,
            arena: None,
            residency: Residency::default(),
            copies: Vec::new(),
            cpu: Cpu::new(Isa::detect()),
            on_device: false,
            last_error: None,
            counts: (0, 0),
            on_cpu: Vec::new(),
        })
    }
}

/// Runs a model's ops on a GPU for one session; ops without a kernel here run on the
/// CPU's code, their operands copied across.
pub struct CudaBackend {
    model: Arc<CudaModel>,
    stream: Arc<CudaStream>,
    arena: Option<DeviceBytes>,
    residency: Residency,
    /// The copies `residency` asks for, made before anything runs on their bytes.
    copies: Vec<Copy>,
    cpu: Cpu,
    /// Where the op `stage` saw last runs.
    on_device: bool,
    last_error: Option<CudaError>,
    /// Ops run on the device and on the CPU since the backend was made.
    counts: (u64, u64),
    /// The kinds of op run on the CPU, each once.
    on_cpu: Vec<&'static str>,
}

impl Drop for CudaModel {
    fn drop(&mut self) {
        // cuMemFree needs the context current on whichever thread drops the model.
        let _ = self.gpu.ctx.bind_to_thread();
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        // The next session may take this arena: nothing of this one's may still run on it.
        let _ = self.stream.synchronize();
        if let Some(a) = self.arena.take() {
            if let Ok(mut pool) = self.model.arenas.lock() {
                pool.push(a);
            }
        }
    }
}

impl CudaBackend {
    pub fn gpu(&self) -> &Gpu {
        &self.model.gpu
    }

    /// The driver's own words for the last failure (the runtime's error carries only
    /// what failed).
    pub fn last_error(&self) -> Option<&CudaError> {
        self.last_error.as_ref()
    }

    /// Ops run on the GPU and on the CPU so far.
    pub fn op_counts(&self) -> (u64, u64) {
        self.counts
    }

    /// The kinds of op that ran on the CPU so far ("advance": positions stay readable on
    /// the host), each once.
    pub fn cpu_op_kinds(&self) -> &[&'static str] {
        &self.on_cpu
    }

    fn fail(&mut self, what: &'static str, e: CudaError) -> Error {
        self.last_error = Some(e);
        Error::Device {
            backend: "cuda",
            what,
        }
    }

    fn arena_ptr(&self) -> sys::CUdeviceptr {
        self.arena.as_ref().map_or(0, |a| a.ptr)
    }

    fn upload(&mut self, r: Range<usize>, arena: &[u8]) -> Result<(), Error> {
        let dst = self.arena_ptr() + r.start as u64;
        // SAFETY: the device arena is at least as long as the host's (enter).
        unsafe { result::memcpy_htod_async(dst, &arena[r], self.stream.cu_stream()) }
            .map_err(|e| self.fail("an upload", CudaError::driver("upload")(e)))
    }

    fn download(&mut self, r: Range<usize>, arena: &mut [u8]) -> Result<(), Error> {
        let src = self.arena_ptr() + r.start as u64;
        // SAFETY: as above; the stream is synchronized before the host reads the bytes.
        unsafe { result::memcpy_dtoh_async(&mut arena[r], src, self.stream.cu_stream()) }
            .map_err(|e| self.fail("a download", CudaError::driver("download")(e)))
    }

    fn synchronize(&mut self) -> Result<(), Error> {
        let r = self.stream.synchronize();
        r.map_err(|e| self.fail("a kernel", CudaError::driver("running the kernels")(e)))
    }

    /// Makes the copies `residency` asked for; waits for them where the host will read.
    fn copy(&mut self, arena: &mut [u8]) -> Result<(), Error> {
        let copies = std::mem::take(&mut self.copies);
        let mut down = false;
        for c in &copies {
            match c {
                Copy::Up(r) => self.upload(r.clone(), arena)?,
                Copy::Down(r) => {
                    self.download(r.clone(), arena)?;
                    down = true;
                }
            }
        }
        self.copies = copies;
        self.copies.clear();
        if down {
            self.synchronize()?;
        }
        Ok(())
    }
}

impl DeviceBytes {
    fn alloc(len: usize) -> Result<Self, CudaError> {
        // SAFETY: the caller bound the context; a zero-byte request is made one byte.
        let ptr = unsafe { result::malloc_sync(len.max(1)) }
            .map_err(CudaError::driver("allocating device memory"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for DeviceBytes {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from cuMemAlloc and is freed once.
        let _ = unsafe { result::free_sync(self.ptr) };
    }
}

// SAFETY: the device pointers are plain addresses in the context the backend binds to
// whichever thread runs it.
unsafe impl Send for DeviceBytes {}

impl Backend for CudaBackend {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn begin(&mut self) {
        self.cpu.begin();
    }

    fn scratch_bytes(&self, op: &Op) -> usize {
        // The device's scratch is the same size as one CPU thread's (the quantized
        // input rows), so an op left to the CPU fits too.
        op.scratch_bytes_for_threads(1)
    }

    fn enter(&mut self, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
        if let Err(e) = self.model.gpu.ctx.bind_to_thread() {
            return Err(self.fail("binding the context", CudaError::driver("bind")(e)));
        }
        if self.arena.as_ref().is_none_or(|a| a.len < arena.len()) {
            self.arena = None;
            let pooled = {
                let mut pool = self.model.arenas.lock().unwrap_or_else(|p| p.into_inner());
                let at = pool.iter().position(|a| a.len >= arena.len());
                at.map(|i| pool.swap_remove(i))
            };
            let fresh = match pooled {
                Some(a) => a,
                None => DeviceBytes::alloc(arena.len()).map_err(|e| self.fail("the arena", e))?,
            };
            self.arena = Some(fresh);
            self.residency.device_arena_replaced();
        }
        let ports = |ps: &mut dyn Iterator<Item = vlm_runtime::Port>| -> Vec<usize> {
            ps.map(|p| p.mat.buf as usize).collect()
        };
        let states = ports(&mut graph.states());
        let inputs = ports(&mut graph.inputs());
        let ranges = (0..graph.buffer_count() as u32).map(|b| graph.buffer_range(b));
        self.residency.enter(ranges, &states, &inputs);
        Ok(())
    }

    fn stage(&mut self, op: &Op, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
        let _ = graph;
        self.on_device = ops::runs_on_device(op);
        let out = op.output().buf;
        let on_device = self.on_device;
        let host_too = match on_device {
            true => ops::host_reads(op),
            false => Default::default(),
        };
        let reads = op.reads();
        self.residency.stage(
            reads.as_slice(),
            out,
            on_device,
            host_too.as_slice(),
            &mut self.copies,
        );
        self.copy(arena)
    }

    fn execute(&mut self, op: &Op, cx: &mut OpContext) -> Result<(), Error> {
        let out = op.output().buf;
        if !self.on_device {
            self.counts.1 += 1;
            if !self.on_cpu.contains(&op.kind()) {
                self.on_cpu.push(op.kind());
            }
            self.cpu.execute(op, cx)?;
            self.residency.executed(out, false);
            return Ok(());
        }
        self.counts.0 += 1;
        // The CPU's memory of what its scratch holds is stale once the device writes.
        self.cpu.begin();
        let m = &self.model;
        let data = cx.tensors().data();
        if data.as_ptr() as usize != m.tensors_host || data.len() != m.tensors_len {
            return Err(Error::Device {
                backend: "cuda",
                what: "a backend made for another model",
            });
        }
        let dev = Dev {
            gpu: &m.gpu,
            stream: &self.stream,
            arena: self.arena_ptr(),
            tensors: m.tensors.ptr,
            tensors_host: m.tensors_host,
            graph: cx.graph(),
        };
        let launched = ops::launch(op, &dev, cx);
        match launched {
            Ok(()) => {
                self.residency.executed(out, true);
                Ok(())
            }
            Err(ops::Launch::Runtime(e)) => Err(e),
            Err(ops::Launch::Driver(e)) => Err(self.fail("a kernel launch", e)),
        }
    }

    fn leave(&mut self, graph: &Graph, arena: &mut [u8]) -> Result<(), Error> {
        let outputs: Vec<usize> = graph.outputs().map(|p| p.mat.buf as usize).collect();
        let states: Vec<usize> = graph.states().map(|p| p.mat.buf as usize).collect();
        self.residency.leave(&outputs, &states, &mut self.copies);
        self.copy(arena)?;
        // Reports any kernel's failure here, at the latest.
        self.synchronize()
    }

    fn sync(&mut self, range: Range<usize>, arena: &mut [u8], to_host: bool) -> Result<(), Error> {
        self.residency.sync(range, to_host, &mut self.copies);
        self.copy(arena)
    }
}
