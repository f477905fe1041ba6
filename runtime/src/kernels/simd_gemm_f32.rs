//! fp32 GEMM, `out = act(x · Wᵀ + bias)` with `W` row-major `[out, in]`, computing the
//! scalar reference's bits ([`super::scalar::dot_f32`]'s order: element `c` of a dot
//! product into lane `c mod 16`, each lane a multiply then an add, in order, then
//! `sum16`), written once over the ISA ([`F32Simd`]) and instantiated for AVX-512 (one
//! register per 16-lane group), AVX2 (two) and NEON (four). Tiles of `M` rows × `N`
//! outputs keep `M·N` groups of accumulators in registers; the last `k mod 16` elements go
//! through partial registers (zeros past the end add nothing).
//!
//! One order on every ISA is what makes calibration, which runs the fp32 graph whose
//! ranges become an artifact's scales, give the same numbers on every CPU; a multiply
//! and an add instead of a fused multiply-add is its price (the FMA would round once
//! where the scalar reference, on CPUs without FMA, rounds twice).

use super::scalar::{activate, rows_fit, sum16, MatMut, MatRef, DOT_LANES};
use super::simd::F32Simd;
use crate::ops::Activation;

/// Registers per 16-lane group on the narrowest ISA (NEON's 4 lanes).
const MAX_GROUP: usize = 4;

/// The bounds every pointer below relies on (a wrong caller panics here).
pub(super) fn check(x: &MatRef, w: &[f32], bias: Option<&[f32]>, out: &MatMut) {
    let k = x.cols;
    assert!(x.rows == out.rows);
    assert!(out.cols.checked_mul(k).is_some_and(|n| w.len() >= n));
    assert!(bias.is_none_or(|b| b.len() >= out.cols));
    assert!(rows_fit(x.rows, x.stride, k, x.data.len()));
    assert!(rows_fit(out.rows, out.stride, out.cols, out.data.len()));
}

/// `M × N` dot products, rows `r..r+M` of `x` with weight rows `o..o+N`, into `out`
/// (after bias and activation).
///
/// # Safety
/// `S`'s features are enabled; `check` passed and the tile is inside `out`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<S: F32Simd, const M: usize, const N: usize>(
    x: &MatRef,
    r: usize,
    w: &[f32],
    o: usize,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut MatMut,
) {
    let k = x.cols;
    let g = DOT_LANES / S::LANES;
    let xp: [*const f32; M] = core::array::from_fn(|i| x.data.as_ptr().add((r + i) * x.stride));
    let wp: [*const f32; N] = core::array::from_fn(|j| w.as_ptr().add((o + j) * k));
    let mut acc = [[[S::splat(0.0); MAX_GROUP]; N]; M];
    let full = k - k % DOT_LANES;
    let mut c = 0;
    while c < full {
        for l in 0..g {
            let at = c + l * S::LANES;
            let xv: [S; M] = core::array::from_fn(|i| S::load(xp[i].add(at)));
            let wv: [S; N] = core::array::from_fn(|j| S::load(wp[j].add(at)));
            accumulate(&mut acc, l, xv, wv);
        }
        c += DOT_LANES;
    }
    let rem = k - full;
    for l in 0..g {
        let start = l * S::LANES;
        if start >= rem {
            break;
        }
        let n = (rem - start).min(S::LANES);
        let load = |p: *const f32| {
            if n == S::LANES {
                S::load(p)
            } else {
                S::load_first(p, n)
            }
        };
        let xv: [S; M] = core::array::from_fn(|i| load(xp[i].add(full + start)));
        let wv: [S; N] = core::array::from_fn(|j| load(wp[j].add(full + start)));
        accumulate(&mut acc, l, xv, wv);
    }
    for (i, acc_i) in acc.iter().enumerate() {
        let y = out.row_mut(r + i);
        for (j, regs) in acc_i.iter().enumerate() {
            let mut lanes = [0.0f32; DOT_LANES];
            for (l, reg) in regs.iter().enumerate().take(g) {
                reg.store(lanes.as_mut_ptr().add(l * S::LANES));
            }
            let b = bias.map_or(0.0, |b| b[o + j]);
            y[o + j] = activate(sum16(lanes) + b, act);
        }
    }
}

/// Adds `x[i]·w[j]` (a multiply, then an add) to register `l` of each accumulator group.
#[inline(always)]
unsafe fn accumulate<S: F32Simd, const M: usize, const N: usize>(
    acc: &mut [[[S; MAX_GROUP]; N]; M],
    l: usize,
    xv: [S; M],
    wv: [S; N],
) {
    for (acc_i, x) in acc.iter_mut().zip(xv) {
        for (regs, w) in acc_i.iter_mut().zip(wv) {
            regs[l] = regs[l].add(x.mul(w));
        }
    }
}

/// The whole GEMM in `M × N` tiles, the edges in narrower ones.
///
/// # Safety
/// `S`'s features are enabled and `check` passed.
#[inline(always)]
pub(super) unsafe fn gemm<S: F32Simd, const M: usize, const N: usize>(
    x: MatRef,
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    mut out: MatMut,
) {
    let (rows, cols) = (out.rows, out.cols);
    let mut r = 0;
    while r + M <= rows {
        let mut o = 0;
        while o + N <= cols {
            tile::<S, M, N>(&x, r, w, o, bias, act, &mut out);
            o += N;
        }
        while o < cols {
            tile::<S, M, 1>(&x, r, w, o, bias, act, &mut out);
            o += 1;
        }
        r += M;
    }
    while r < rows {
        let mut o = 0;
        while o + N <= cols {
            tile::<S, 1, N>(&x, r, w, o, bias, act, &mut out);
            o += N;
        }
        while o < cols {
            tile::<S, 1, 1>(&x, r, w, o, bias, act, &mut out);
            o += 1;
        }
        r += 1;
    }
}

/// An ISA's entry point to the plan: register type, tile and features. It checks the
/// bounds, then runs the plan inside a function that enables `$features`, so the plan's
/// `inline(always)` code compiles to that ISA's instructions.
macro_rules! entry_point {
    ($simd:ty, $m:literal x $n:literal, $features:literal) => {
        use $crate::kernels::scalar::{MatMut, MatRef};
        use $crate::ops::Activation;

        /// `out = act(x · Wᵀ + bias)`: the scalar reference's bits.
        pub fn gemm(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, out: MatMut) {
            $crate::kernels::simd_gemm_f32::check(&x, w, bias, &out);
            // SAFETY: the dispatcher calls this only on CPUs with `$features`; the
            // bounds were checked above.
            unsafe { with_features(x, w, bias, act, out) }
        }

        #[target_feature(enable = $features)]
        unsafe fn with_features(
            x: MatRef,
            w: &[f32],
            bias: Option<&[f32]>,
            act: Activation,
            out: MatMut,
        ) {
            $crate::kernels::simd_gemm_f32::gemm::<$simd, $m, $n>(x, w, bias, act, out)
        }
    };
}
pub(super) use entry_point;
