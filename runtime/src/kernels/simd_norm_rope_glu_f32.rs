//! A decoder's vector ops in f32 registers — RMS norm, rotary position embedding and the
//! gated linear unit's gate — written once over the ISA ([`F32Simd`]) and instantiated
//! for AArch64 NEON, x86 AVX2 and AVX-512. Each is memory-bound one-pass work on a
//! decoder step's row, and each performs the scalar reference's operations in its order,
//! so all three give its bits:
//! - RMS norm sums squares with element `c` in lane `c mod 16` (16 / `LANES` registers),
//!   reduced by `scalar::sum16`'s tree, then multiplies by the inverse and by gamma in
//!   two steps;
//! - RoPE forms `x1·cos − x2·sin` and `x2·cos + x1·sin` from separate products;
//! - the gate is `x / (1 + 2^t)` with the shared exponential (SiLU, GELU-tanh) or the
//!   identity, times the up half. GELU-erf (`libm::erff`, no vector form) stays scalar.
//!
//! Rows shorter than a register, and the tail of each, go through `load_first` /
//! `store_first` (the same operations on fewer lanes).

use super::simd::F32Simd;

/// The lanes a reduction spreads over (`scalar::sum16`'s width).
const SUM_LANES: usize = 16;

/// RMS norm of one row: `scalar::rms_norm`'s bits.
///
/// # Safety
/// `S`'s ISA is enabled; `x` and `y` hold `n` floats, `gamma` at least `n`.
#[inline(always)]
pub unsafe fn rms_norm_row<S: F32Simd>(
    x: *const f32,
    gamma: *const f32,
    eps: f32,
    n: usize,
    y: *mut f32,
) {
    let regs = SUM_LANES / S::LANES;
    let mut acc = [S::splat(0.0); SUM_LANES];
    let full = n - n % SUM_LANES;
    let mut c = 0;
    while c < full {
        for (j, a) in acc[..regs].iter_mut().enumerate() {
            let v = S::load(x.add(c + j * S::LANES));
            *a = a.add(v.mul(v));
        }
        c += SUM_LANES;
    }
    // The tail lands in the lanes it would in a longer row; the lanes it does not
    // reach gain 0 · 0 = +0 (the sums of squares are never −0, so they keep their bits).
    for (j, a) in acc[..regs].iter_mut().enumerate() {
        let at = full + j * S::LANES;
        if at < n {
            let v = S::load_first(x.add(at), (n - at).min(S::LANES));
            *a = a.add(v.mul(v));
        }
    }
    let mut lanes = [0.0f32; SUM_LANES];
    for (j, a) in acc[..regs].iter().enumerate() {
        a.store(lanes.as_mut_ptr().add(j * S::LANES));
    }
    let ms = super::scalar::sum16(lanes) / n as f32;
    let inv = S::splat(1.0 / libm::sqrtf(ms + eps));
    let mut c = 0;
    while c + S::LANES <= n {
        S::load(x.add(c))
            .mul(inv)
            .mul(S::load(gamma.add(c)))
            .store(y.add(c));
        c += S::LANES;
    }
    if c < n {
        S::load_first(x.add(c), n - c)
            .mul(inv)
            .mul(S::load_first(gamma.add(c), n - c))
            .store_first(y.add(c), n - c);
    }
}

/// RoPE of one head's halves in place, `half` pairs: `scalar::rope`'s bits.
///
/// # Safety
/// `S`'s ISA is enabled; `a`, `b`, `cos`, `sin` hold `half` floats each.
#[inline(always)]
pub unsafe fn rope_head<S: F32Simd>(
    a: *mut f32,
    b: *mut f32,
    cos: *const f32,
    sin: *const f32,
    half: usize,
) {
    let mut i = 0;
    while i + S::LANES <= half {
        let (x1, x2) = (S::load(a.add(i)), S::load(b.add(i)));
        let (c, s) = (S::load(cos.add(i)), S::load(sin.add(i)));
        x1.mul(c).sub(x2.mul(s)).store(a.add(i));
        x2.mul(c).add(x1.mul(s)).store(b.add(i));
        i += S::LANES;
    }
    if i < half {
        let m = half - i;
        let (x1, x2) = (S::load_first(a.add(i), m), S::load_first(b.add(i), m));
        let (c, s) = (S::load_first(cos.add(i), m), S::load_first(sin.add(i), m));
        x1.mul(c).sub(x2.mul(s)).store_first(a.add(i), m);
        x2.mul(c).add(x1.mul(s)).store_first(b.add(i), m);
    }
}

/// Which gate [`glu_row`] applies (those with a vector form).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Identity,
    Silu,
    GeluTanh,
}

/// The gate of one row: `out[c] = act(x[c]) · x[n + c]`, `scalar::glu`'s bits.
///
/// # Safety
/// `S`'s ISA is enabled; `x` holds `2n` floats, `y` `n`.
#[inline(always)]
pub unsafe fn glu_row<S: F32Simd>(x: *const f32, gate: Gate, n: usize, y: *mut f32) {
    #[inline(always)]
    unsafe fn act<S: F32Simd>(v: S, gate: Gate) -> S {
        match gate {
            Gate::Identity => v,
            Gate::Silu => {
                v.div(S::splat(1.0).add(v.mul(S::splat(super::scalar::SILU_EXP2)).exp2_clamped()))
            }
            Gate::GeluTanh => v.gelu_tanh(),
        }
    }
    let up = x.add(n);
    let mut c = 0;
    while c + S::LANES <= n {
        act(S::load(x.add(c)), gate)
            .mul(S::load(up.add(c)))
            .store(y.add(c));
        c += S::LANES;
    }
    if c < n {
        let m = n - c;
        act(S::load_first(x.add(c), m), gate)
            .mul(S::load_first(up.add(c), m))
            .store_first(y.add(c), m);
    }
}

/// The public entry points of one ISA's instantiation: `$simd` its register type,
/// `$features` what its `#[target_feature]` enables.
macro_rules! entry_points {
    ($simd:ty, $features:literal) => {
        use $crate::kernels::scalar::{
            check_glu_bounds, check_rms_norm_bounds, check_rope_bounds, MatMut, MatRef,
        };
        use $crate::kernels::simd_norm_rope_glu_f32::{glu_row, rms_norm_row, rope_head, Gate};
        use $crate::ops::Activation;

        /// Row-wise RMS norm: `scalar::rms_norm`'s bits.
        pub fn rms_norm(x: MatRef, gamma: &[f32], eps: f32, out: MatMut) {
            check_rms_norm_bounds(&x, gamma, &out);
            // SAFETY: the dispatcher calls this only on CPUs with `$features`; bounds
            // checked above.
            unsafe { rms_norm_impl(x, gamma, eps, out) }
        }

        #[target_feature(enable = $features)]
        unsafe fn rms_norm_impl(x: MatRef, gamma: &[f32], eps: f32, out: MatMut) {
            for r in 0..x.rows {
                rms_norm_row::<$simd>(
                    x.data.as_ptr().add(r * x.stride),
                    gamma.as_ptr(),
                    eps,
                    x.cols,
                    out.data.as_mut_ptr().add(r * out.stride),
                );
            }
        }

        /// Rotary position embedding in place: `scalar::rope`'s bits.
        pub fn rope(x: MatMut, heads: usize, head_dim: usize, table: &[f32], first: usize) {
            check_rope_bounds(&x, heads, head_dim, table, first);
            // SAFETY: as `rms_norm`.
            unsafe { rope_impl(x, heads, head_dim, table, first) }
        }

        #[target_feature(enable = $features)]
        unsafe fn rope_impl(x: MatMut, heads: usize, d: usize, table: &[f32], first: usize) {
            let half = d / 2;
            for r in 0..x.rows {
                let cos = table.as_ptr().add((first + r) * d);
                let row = x.data.as_mut_ptr().add(r * x.stride);
                for h in 0..heads {
                    let a = row.add(h * d);
                    rope_head::<$simd>(a, a.add(half), cos, cos.add(half), half);
                }
            }
        }

        /// The gate of a gated linear unit: `scalar::glu`'s bits; GELU-erf through the
        /// scalar reference.
        pub fn glu(x: MatRef, act: Activation, out: MatMut) {
            let gate = match act {
                Activation::None => Gate::Identity,
                Activation::Silu => Gate::Silu,
                Activation::GeluTanh => Gate::GeluTanh,
                Activation::GeluErf => return $crate::kernels::scalar::glu(x, act, out),
            };
            check_glu_bounds(&x, &out);
            // SAFETY: as `rms_norm`.
            unsafe { glu_impl(x, gate, out) }
        }

        #[target_feature(enable = $features)]
        unsafe fn glu_impl(x: MatRef, gate: Gate, out: MatMut) {
            for r in 0..x.rows {
                glu_row::<$simd>(
                    x.data.as_ptr().add(r * x.stride),
                    gate,
                    out.cols,
                    out.data.as_mut_ptr().add(r * out.stride),
                );
            }
        }
    };
}
pub(crate) use entry_points;
