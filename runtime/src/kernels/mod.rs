//! Kernels. `scalar` is the reference every other implementation is tested against.

pub mod scalar;
