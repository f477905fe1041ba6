//! The vector operations the ISA-generic kernels (`simd_*`) are written in. Each ISA's
//! math file implements [`F32Simd`] for its register; its kernel files instantiate the
//! generic code inside a function that enables the ISA's features, so everything here
//! is `#[inline(always)]` and compiles to that ISA's instructions in place.
//!
//! Each operation is the IEEE one of its name (no approximations), so a generic kernel
//! gives the bits the scalar reference gives wherever it performs the same operations
//! in the same order.

/// An f32 register of `LANES` lanes.
///
/// # Safety
/// Implementations are only called where their ISA's features are enabled.
pub trait F32Simd: Copy {
    const LANES: usize;
    unsafe fn splat(x: f32) -> Self;
    unsafe fn load(p: *const f32) -> Self;
    unsafe fn store(self, p: *mut f32);
    unsafe fn add(self, o: Self) -> Self;
    unsafe fn sub(self, o: Self) -> Self;
    unsafe fn mul(self, o: Self) -> Self;
    /// `self + a·b`, fused (one rounding).
    unsafe fn mul_add(self, a: Self, b: Self) -> Self;
    /// The lane-wise maximum, taking `self` where `x` is NaN (as `f32::max` skips NaN).
    unsafe fn max_skip_nan(self, x: Self) -> Self;
    /// The largest lane (lanes are not NaN).
    unsafe fn reduce_max(self) -> f32;
    /// The lanes' sum, in any order (float-tolerance uses only).
    unsafe fn reduce_add(self) -> f32;
    /// `self / o`, correctly rounded.
    unsafe fn div(self, o: Self) -> Self;
    /// `scalar::exp2_clamped`, bit for bit.
    unsafe fn exp2_clamped(self) -> Self;
    /// `scalar::softmax_weight` of arguments at most 126 or a quiet NaN, bit for bit.
    unsafe fn softmax_weight(self) -> Self;
    /// `scalar::activate(_, GeluTanh)`, bit for bit.
    unsafe fn gelu_tanh(self) -> Self;
    /// `scalar::bf16_round`, bit for bit.
    unsafe fn bf16_round(self) -> Self;
    /// `2·LANES` floats from `p`, split into (odd-indexed, even-indexed), each in order.
    unsafe fn load_odd_even(p: *const f32) -> (Self, Self);
    /// The first `n < LANES` floats from `p`, zeros in the other lanes; reads nothing
    /// past them.
    unsafe fn load_first(p: *const f32, n: usize) -> Self;
    /// The first `n < LANES` lanes to `p`; writes nothing past them.
    unsafe fn store_first(self, p: *mut f32, n: usize);
    /// Asks for the cache line holding `p` (a hint: never faults, changes no value).
    unsafe fn prefetch(p: *const f32);
}
