//! A GPU: its context, one stream, and the compiled kernels.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{sys, CudaContext, CudaFunction};
use cudarc::nvrtc::Ptx;

use crate::{kernels, CudaError};

/// How many CUDA devices this machine has (0 where a driver is present but no GPU).
pub fn device_count() -> Result<usize, CudaError> {
    // SAFETY: only tries to open the library (dlopen), calling nothing in it.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    CudaContext::device_count()
        .map(|n| n.max(0) as usize)
        .map_err(CudaError::driver("counting devices"))
}

/// An open device with the kernels loaded.
pub struct Gpu {
    pub(crate) ctx: Arc<CudaContext>,
    functions: HashMap<&'static str, CudaFunction>,
    name: String,
    capability: (i32, i32),
    ordinal: usize,
}

impl Gpu {
    /// Opens device `ordinal` and compiles the kernels for it.
    pub fn open(ordinal: usize) -> Result<Self, CudaError> {
        let count = device_count()?;
        if ordinal >= count {
            return Err(CudaError::NoDevice { ordinal, count });
        }
        let ctx = CudaContext::new(ordinal).map_err(CudaError::driver("creating a context"))?;
        let name = ctx
            .name()
            .map_err(CudaError::driver("reading the device name"))?;
        let (major, minor) = ctx
            .compute_capability()
            .map_err(CudaError::driver("reading the compute capability"))?;
        if (major, minor) < (6, 1) {
            return Err(CudaError::TooOld {
                ordinal,
                name,
                major,
                minor,
            });
        }
        let nvrtc = kernels::nvrtc_version()?;
        if !kernels::nvrtc_targets(nvrtc.0, (major * 10 + minor) as u32) {
            return Err(CudaError::NvrtcTooNew {
                ordinal,
                name,
                major,
                minor,
                nvrtc: format!("{}.{}", nvrtc.0, nvrtc.1),
            });
        }
        // Machine code for this very device: nothing left for the driver to JIT.
        let image = machine_code(&format!("sm_{major}{minor}"), nvrtc)?;
        let module = ctx
            .load_module(Ptx::from_binary(image))
            .map_err(CudaError::driver("loading the kernels"))?;
        let mut functions = HashMap::new();
        for &f in kernels::ENTRY_POINTS {
            let func = module
                .load_function(f)
                .map_err(CudaError::driver("finding a kernel"))?;
            functions.insert(f, func);
        }
        Ok(Self {
            ctx,
            functions,
            name,
            capability: (major, minor),
            ordinal,
        })
    }

    /// The device's name ("NVIDIA H200", "Orin").
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn capability(&self) -> (i32, i32) {
        self.capability
    }

    pub fn ordinal(&self) -> usize {
        self.ordinal
    }

    pub(crate) fn function(&self, name: &'static str) -> &CudaFunction {
        // Every entry point was loaded at open (a test checks the list against the source).
        &self.functions[name]
    }
}

/// The kernels' machine code for `arch` by NVRTC of version `(major, minor)`, from the cache where an earlier run left it
/// (compiling takes seconds; a CLI run should not pay them each time), else compiled now
/// and cached. The cache key is the source, the architecture and NVRTC's version, so a
/// changed kernel or compiler never loads stale code; a cache that cannot be read or
/// written only costs the compile.
fn machine_code(arch: &str, (major, minor): (i32, i32)) -> Result<Vec<u8>, CudaError> {
    let mut key = 0xcbf2_9ce4_8422_2325u64;
    let tag = format!("{arch} nvrtc {major}.{minor}");
    for b in kernels::SOURCE.bytes().chain(tag.bytes()) {
        key = (key ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    let file = cache_dir().map(|d| d.join(format!("{key:016x}-{arch}.cubin")));
    if let Some(bytes) = file.as_ref().and_then(|f| std::fs::read(f).ok()) {
        if bytes.starts_with(b"\x7fELF") {
            return Ok(bytes);
        }
    }
    let compiled = kernels::compile(arch)?;
    let image = compiled
        .cubin
        .expect("a real architecture gives machine code");
    if let Some(f) = file {
        // Written whole under another name, then renamed: a concurrent run reads the
        // old file or the new one, never half of one.
        let tmp = f.with_extension(format!("{}.tmp", std::process::id()));
        let written = f.parent().map(std::fs::create_dir_all).transpose().is_ok()
            && std::fs::write(&tmp, &image).is_ok()
            && std::fs::rename(&tmp, &f).is_ok();
        if !written {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok(image)
}

/// `$VLM_CUDA_CACHE`, else `$XDG_CACHE_HOME/vlm-edge/cuda`, else `~/.cache/vlm-edge/cuda`.
fn cache_dir() -> Option<std::path::PathBuf> {
    use std::path::PathBuf;
    if let Some(d) = std::env::var_os("VLM_CUDA_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("vlm-edge").join("cuda"))
}
