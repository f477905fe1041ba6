//! vlm-edge's CUDA backend: [`CudaBackend`] runs an artifact's ops on an NVIDIA GPU
//! behind the runtime's `Backend` interface, bit for bit with the CPU's scalar reference
//! on every op (each kernel is the reference's operations in its order, its `erff` and
//! `expf` included), with the weights uploaded once and the activations kept on the
//! device between ops.
//!
//! Nothing here needs CUDA at build time: the driver (libcuda) and NVRTC are loaded on
//! first use ([`device_count`] says whether a driver is there), and the kernels — CUDA
//! C in `kernels/`, one program — are compiled for the device when it is opened.

mod backend;
mod device;
mod error;
pub mod kernels;
mod ops;
mod residency;

pub use backend::{CudaBackend, CudaModel};
pub use device::{device_count, Gpu};
pub use error::CudaError;
