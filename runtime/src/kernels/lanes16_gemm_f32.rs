//! fp32 GEMM, `out = act(x · Wᵀ + bias)` with `W` row-major `[out, in]`, computing the
//! scalar reference's bits ([`super::scalar::dot_f32`]'s order: element `c` of a dot product
//! into lane `c mod 16`, each lane a multiply then an add in order, then `sum16`).
//!
//! Written once in portable Rust over 16-float lane groups and compiled per ISA with its
//! vector width enabled (AVX-512: one register per group, AVX2: two, NEON: four), tiles
//! of `M` rows × `N` outputs sized to each register file. Rust neither fuses nor
//! reassociates float operations, so every build performs the reference's operations in
//! its order: the same bits on every CPU. That is what makes calibration (this GEMM runs
//! the fp32 graph whose ranges become an artifact's scales) reproducible, where a 16-lane
//! FMA kernel on one CPU and a 4-lane one on another would round differently.
//! Hand-written intrinsics would buy little here: the loop is already one load per
//! operand group and one multiply and add per product, what the compiler emits.

use super::scalar::{activate, sum16, MatMut, MatRef, DOT_LANES};
use crate::ops::Activation;

const L: usize = DOT_LANES;

/// The bounds every index below relies on (a wrong caller panics here).
fn check(x: &MatRef, w: &[f32], bias: Option<&[f32]>, out: &MatMut) {
    let k = x.cols;
    assert!(x.rows == out.rows);
    assert!(out.cols.checked_mul(k).is_some_and(|n| w.len() >= n));
    assert!(bias.is_none_or(|b| b.len() >= out.cols));
    let fits = |rows: usize, stride: usize, cols: usize, len: usize| {
        rows == 0
            || (rows - 1)
                .checked_mul(stride)
                .and_then(|n| n.checked_add(cols))
                .is_some_and(|n| len >= n)
    };
    assert!(fits(x.rows, x.stride, k, x.data.len()));
    assert!(fits(out.rows, out.stride, out.cols, out.data.len()));
}

/// `M × N` dot products of rows `r..r+M` of `x` with weight rows `o..o+N`, each in the
/// reference's lane order.
#[inline(always)]
fn tile<const M: usize, const N: usize>(
    x: &MatRef,
    r: usize,
    w: &[f32],
    o: usize,
) -> [[f32; N]; M] {
    let k = x.cols;
    let xs: [&[f32]; M] = core::array::from_fn(|i| x.row(r + i));
    let ws: [&[f32]; N] = core::array::from_fn(|j| &w[(o + j) * k..(o + j + 1) * k]);
    let mut acc = [[[0.0f32; L]; N]; M];
    let full = k - k % L;
    let mut c = 0;
    while c < full {
        let xg: [&[f32; L]; M] =
            core::array::from_fn(|i| xs[i][c..c + L].try_into().expect("a full group"));
        let wg: [&[f32; L]; N] =
            core::array::from_fn(|j| ws[j][c..c + L].try_into().expect("a full group"));
        for i in 0..M {
            for j in 0..N {
                for l in 0..L {
                    acc[i][j][l] += xg[i][l] * wg[j][l];
                }
            }
        }
        c += L;
    }
    for i in 0..M {
        for j in 0..N {
            for l in 0..k - full {
                acc[i][j][l] += xs[i][full + l] * ws[j][full + l];
            }
        }
    }
    core::array::from_fn(|i| core::array::from_fn(|j| sum16(acc[i][j])))
}

#[inline(always)]
fn store<const M: usize, const N: usize>(
    d: [[f32; N]; M],
    (r, o): (usize, usize),
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut MatMut,
) {
    for (i, row) in d.iter().enumerate() {
        let y = out.row_mut(r + i);
        for (j, &v) in row.iter().enumerate() {
            y[o + j] = activate(v + bias.map_or(0.0, |b| b[o + j]), act);
        }
    }
}

/// The whole GEMM in `M × N` tiles, the edges in narrower ones.
#[inline(always)]
fn gemm_tiled<const M: usize, const N: usize>(
    x: MatRef,
    w: &[f32],
    bias: Option<&[f32]>,
    act: Activation,
    mut out: MatMut,
) {
    check(&x, w, bias, &out);
    let (rows, cols) = (out.rows, out.cols);
    let mut r = 0;
    while r + M <= rows {
        let mut o = 0;
        while o + N <= cols {
            store(tile::<M, N>(&x, r, w, o), (r, o), bias, act, &mut out);
            o += N;
        }
        while o < cols {
            store(tile::<M, 1>(&x, r, w, o), (r, o), bias, act, &mut out);
            o += 1;
        }
        r += M;
    }
    while r < rows {
        let mut o = 0;
        while o + N <= cols {
            store(tile::<1, N>(&x, r, w, o), (r, o), bias, act, &mut out);
            o += N;
        }
        while o < cols {
            store(tile::<1, 1>(&x, r, w, o), (r, o), bias, act, &mut out);
            o += 1;
        }
        r += 1;
    }
}

/// AVX-512: 4 × 4 tiles, sixteen 16-lane accumulators.
#[cfg(target_arch = "x86_64")]
pub fn gemm_avx512(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, out: MatMut) {
    #[target_feature(enable = "avx512f")]
    unsafe fn run(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, out: MatMut) {
        gemm_tiled::<4, 4>(x, w, bias, act, out)
    }
    assert!(super::Isa::X86Avx512Vnni.supported());
    // SAFETY: the CPU has AVX-512F (asserted); the body is safe code.
    unsafe { run(x, w, bias, act, out) }
}

/// AVX2: 2 × 2 tiles, eight 8-lane accumulators (two per lane group).
#[cfg(target_arch = "x86_64")]
pub fn gemm_avx2(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, out: MatMut) {
    #[target_feature(enable = "avx2")]
    unsafe fn run(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, out: MatMut) {
        gemm_tiled::<2, 2>(x, w, bias, act, out)
    }
    assert!(super::Isa::X86Avx2.supported());
    // SAFETY: the CPU has AVX2 (asserted); the body is safe code.
    unsafe { run(x, w, bias, act, out) }
}

/// NEON (every AArch64 application core): 2 × 2 tiles, sixteen 4-lane accumulators.
#[cfg(all(target_arch = "aarch64", target_feature = "neon"))]
pub fn gemm_neon(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, out: MatMut) {
    gemm_tiled::<2, 2>(x, w, bias, act, out)
}
