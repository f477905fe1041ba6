//! The CUDA backend's errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CudaError {
    /// No driver library (libcuda) could be loaded: no NVIDIA driver on this machine.
    #[error("no CUDA driver on this machine (libcuda could not be loaded)")]
    NoDriver,
    /// The driver loaded but has no such device.
    #[error("no CUDA device {ordinal}: this machine has {count}")]
    NoDevice { ordinal: usize, count: usize },
    /// NVRTC (libnvrtc) could not be loaded: the kernels cannot be compiled.
    #[error("NVRTC (libnvrtc.so or libnvrtc.so.12) could not be loaded: install the CUDA runtime compiler, or put its directory on LD_LIBRARY_PATH")]
    NoNvrtc,
    /// The NVRTC found is too new for the device (CUDA 13's drops Volta and Xavier).
    #[error("CUDA device {ordinal} ({name}) is compute capability {major}.{minor}, which NVRTC {nvrtc} no longer compiles for: put CUDA 12's NVRTC (libnvrtc.so.12, the nvidia-cuda-nvrtc-cu12 wheel) first on LD_LIBRARY_PATH")]
    NvrtcTooNew {
        ordinal: usize,
        name: String,
        major: i32,
        minor: i32,
        nvrtc: String,
    },
    /// The device is older than the kernels need (dp4a: compute capability 6.1).
    #[error("CUDA device {ordinal} ({name}) is compute capability {major}.{minor}; vlm needs 6.1 or newer")]
    TooOld {
        ordinal: usize,
        name: String,
        major: i32,
        minor: i32,
    },
    /// NVRTC refused the kernels (a bug of this crate's sources): its log.
    #[error("NVRTC could not compile the kernels for {arch}: {log}")]
    Compile { arch: String, log: String },
    /// A driver call failed.
    #[error("CUDA driver: {what}: {error}")]
    Driver { what: &'static str, error: String },
}

impl CudaError {
    pub(crate) fn driver(what: &'static str) -> impl FnOnce(cudarc::driver::DriverError) -> Self {
        move |e| CudaError::Driver {
            what,
            error: e.to_string(),
        }
    }
}
