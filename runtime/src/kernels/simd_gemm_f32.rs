//! fp32 GEMM, `out = act(x · Wᵀ + bias)` with `W` row-major `[out, in]`, computing the
//! scalar reference's bits ([`super::scalar::dot_f32`]'s order: element `c` of a dot
//! product into lane `c mod 16`, each lane a multiply then an add, in order, then
//! `sum16`), written once over the ISA ([`F32Simd`]) and instantiated for AVX-512 (one
//! register per 16-lane group), AVX2 (two) and NEON (four). Tiles of `M` rows × `N`
//! outputs keep `M·N` groups of accumulators in registers; the last `k mod 16` elements go
//! through partial registers (zeros past the end add nothing). Sixteen lanes of sums per
//! output make the tiles small, so the caches do the rest: outputs in column blocks whose
//! weights stay in L2, long rows a chunk of `k` at a time with the sums carried between
//! chunks, neither of which changes any lane's order.
//!
//! One order on every ISA is what makes calibration, which runs the fp32 graph whose
//! ranges become an artifact's scales, give the same numbers on every CPU; a multiply
//! and an add instead of a fused multiply-add is its price (the FMA would round once
//! where the scalar reference, on CPUs without FMA, rounds twice).

use super::scalar::{activate, rows_fit, sum16, MatMut, MatRef, DOT_LANES};
use super::simd::F32Simd;
use crate::ops::Activation;
use core::mem::MaybeUninit;

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

/// Running sums of an `M × N` tile: per row and output, one 16-lane group.
type Acc<S, const M: usize, const N: usize> = [[[S; MAX_GROUP]; N]; M];

/// Elements of `k` one pass of a tile covers. Rows longer than this are taken a chunk at a
/// time across a whole column block, so the chunk of the tile's rows (16 KiB at 4 rows)
/// stays in L1 while the block's weights stream past it; the tile's sums wait in a carry
/// between chunks. A multiple of [`DOT_LANES`]: each lane keeps its order.
const CHUNK: usize = 1024;

/// Floats of running sums kept between chunks: `M · 16` per output of a column block.
/// 16 KiB of stack, not the arena: the fp32 kernels run on std hosts (the microcontroller
/// path is the scalar reference), and the plan's scratch sizes stay as they are.
const CARRY_FLOATS: usize = 4096;

/// Bytes of weights one column block may hold: what a core's L2 keeps beside the rows it
/// streams, on the smallest L2 these kernels run with (512 KiB on a Zen 3 or a Cortex-A76).
const BLOCK_BYTES: usize = 256 * 1024;

/// Adds `x[r+i] · w[o+j]` over elements `c0..c1` (`c0` a multiple of 16; `c1` one too,
/// or `k`) to `acc`, lane `c mod 16` for element `c`, in order.
///
/// # Safety
/// `S`'s features are enabled; `check` passed; rows `r..r+M` and weight rows `o..o+N`
/// exist.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn accumulate_range<S: F32Simd, const M: usize, const N: usize>(
    x: &MatRef,
    r: usize,
    w: &[f32],
    o: usize,
    c0: usize,
    c1: usize,
    acc: &mut Acc<S, M, N>,
) {
    let k = x.cols;
    let g = DOT_LANES / S::LANES;
    let xp: [*const f32; M] = core::array::from_fn(|i| x.data.as_ptr().add((r + i) * x.stride));
    let wp: [*const f32; N] = core::array::from_fn(|j| w.as_ptr().add((o + j) * k));
    let full = c1 - (c1 - c0) % DOT_LANES;
    let mut c = c0;
    while c < full {
        for l in 0..g {
            let at = c + l * S::LANES;
            let xv: [S; M] = core::array::from_fn(|i| S::load(xp[i].add(at)));
            let wv: [S; N] = core::array::from_fn(|j| S::load(wp[j].add(at)));
            accumulate(acc, l, xv, wv);
        }
        c += DOT_LANES;
    }
    let rem = c1 - full;
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
        accumulate(acc, l, xv, wv);
    }
}

/// Adds `x[i]·w[j]` (a multiply, then an add) to register `l` of each accumulator group.
#[inline(always)]
unsafe fn accumulate<S: F32Simd, const M: usize, const N: usize>(
    acc: &mut Acc<S, M, N>,
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

/// Sums each group's 16 lanes ([`sum16`]), adds the bias, activates, and writes rows
/// `r..r+M`, outputs `o..o+N`.
///
/// # Safety
/// `S`'s features are enabled; `check` passed and the tile is inside `out`.
#[inline(always)]
unsafe fn finish<S: F32Simd, const M: usize, const N: usize>(
    acc: &Acc<S, M, N>,
    r: usize,
    o: usize,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut MatMut,
) {
    let g = DOT_LANES / S::LANES;
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

/// One tile's share of a chunk: its sums from `carry` (zeros on the first chunk), the
/// chunk added, then back to `carry` or, on the last chunk, finished into `out`. The tile
/// of output `o` keeps its `M · N · 16` floats at `(o − start) · M · 16`.
///
/// # Safety
/// As [`accumulate_range`] and [`finish`]; `carry` points to `(o − start + N) · M · 16`
/// writable floats, the tile's written by its previous chunk when `c0 > 0`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_chunk<S: F32Simd, const M: usize, const N: usize>(
    x: &MatRef,
    r: usize,
    w: &[f32],
    (o, start): (usize, usize),
    (c0, c1): (usize, usize),
    carry: *mut f32,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut MatMut,
) {
    let g = DOT_LANES / S::LANES;
    let at =
        |i: usize, j: usize, l: usize| ((o - start) * M + i * N + j) * DOT_LANES + l * S::LANES;
    let mut acc: Acc<S, M, N> = [[[S::splat(0.0); MAX_GROUP]; N]; M];
    if c0 > 0 {
        for (i, acc_i) in acc.iter_mut().enumerate() {
            for (j, regs) in acc_i.iter_mut().enumerate() {
                for (l, reg) in regs.iter_mut().enumerate().take(g) {
                    *reg = S::load(carry.add(at(i, j, l)));
                }
            }
        }
    }
    accumulate_range(x, r, w, o, c0, c1, &mut acc);
    if c1 == x.cols {
        finish(&acc, r, o, bias, act, out);
    } else {
        for (i, acc_i) in acc.iter().enumerate() {
            for (j, regs) in acc_i.iter().enumerate() {
                for (l, reg) in regs.iter().enumerate().take(g) {
                    reg.store(carry.add(at(i, j, l)));
                }
            }
        }
    }
}

/// Outputs per column block, a multiple of the tile's `n`: every row sweeps one block
/// before the next, so the block's weights are read from L2 by each row tile instead of
/// from memory (a 3072-wide layer's 768 weight rows are 9 MiB); with chunks, no more
/// outputs than the carry ([`CARRY_FLOATS`]) holds sums for.
fn block_cols(k: usize, m: usize, n: usize) -> usize {
    let mut fit = BLOCK_BYTES / (k.max(1) * core::mem::size_of::<f32>());
    if k > CHUNK {
        fit = fit.min(CARRY_FLOATS / (m * DOT_LANES));
    }
    (fit / n).max(1) * n
}

/// The whole GEMM: column blocks, each swept by `M`-row tiles (the last rows one by one),
/// each row tile a chunk of `k` at a time across the block, in `N`-output tiles (the
/// block's last outputs one by one).
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
    // `block_cols` rounds up to one tile: the carry must hold at least that.
    const { assert!(M * N * DOT_LANES <= CARRY_FLOATS) };
    let rows = out.rows;
    let block = block_cols(x.cols, M, N);
    // Uninitialised: a tile's sums are read only after its previous chunk wrote them,
    // and a GEMM with one chunk (a decoder step's) never touches them.
    let mut carry = MaybeUninit::<[f32; CARRY_FLOATS]>::uninit();
    let carry = carry.as_mut_ptr().cast::<f32>();
    let mut start = 0;
    while start < out.cols {
        let end = (start + block).min(out.cols);
        let mut r = 0;
        while r + M <= rows {
            row_tiles::<S, M, N>(&x, r, w, (start, end), carry, bias, act, &mut out);
            r += M;
        }
        while r < rows {
            row_tiles::<S, 1, N>(&x, r, w, (start, end), carry, bias, act, &mut out);
            r += 1;
        }
        start = end;
    }
}

/// Rows `r..r+M` against outputs `start..end`, a chunk of `k` at a time.
///
/// # Safety
/// As [`tile_chunk`], for every output in `start..end`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn row_tiles<S: F32Simd, const M: usize, const N: usize>(
    x: &MatRef,
    r: usize,
    w: &[f32],
    (start, end): (usize, usize),
    carry: *mut f32,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut MatMut,
) {
    let k = x.cols;
    let mut c0 = 0;
    loop {
        let c1 = if k - c0 > CHUNK { c0 + CHUNK } else { k };
        let mut o = start;
        while o + N <= end {
            tile_chunk::<S, M, N>(x, r, w, (o, start), (c0, c1), carry, bias, act, out);
            o += N;
        }
        while o < end {
            tile_chunk::<S, M, 1>(x, r, w, (o, start), (c0, c1), carry, bias, act, out);
            o += 1;
        }
        if c1 == k {
            break;
        }
        c0 = c1;
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
