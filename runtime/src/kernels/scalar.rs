//! The scalar reference kernels: the definition every SIMD kernel must reproduce (bit for
//! bit for the integer ones).

use crate::format::{PANEL_K, PANEL_N};
use crate::ops::{Activation, Precision};

/// A read-only row-major window: element `(r, c)` is `data[r * stride + c]`.
#[derive(Clone, Copy)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl<'a> MatRef<'a> {
    #[inline]
    pub fn row(&self, r: usize) -> &'a [f32] {
        &self.data[r * self.stride..r * self.stride + self.cols]
    }

    /// Rows `first .. first + rows` of this window.
    #[inline]
    pub fn rows_from(&self, first: usize, rows: usize) -> MatRef<'a> {
        MatRef {
            data: &self.data[first * self.stride..],
            rows,
            ..*self
        }
    }
}

/// A writable row-major window.
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rows: usize,
    pub cols: usize,
    pub stride: usize,
}

impl MatMut<'_> {
    #[inline]
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.stride..r * self.stride + self.cols]
    }

    /// A shorter-lived view of the same window.
    pub fn reborrow(&mut self) -> MatMut<'_> {
        MatMut {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
        }
    }

    pub fn as_ref(&self) -> MatRef<'_> {
        MatRef {
            data: self.data,
            rows: self.rows,
            cols: self.cols,
            stride: self.stride,
        }
    }
}

/// Lanes of the fp32 dot product's fixed order ([`dot_f32`]).
pub const DOT_LANES: usize = 16;

/// The fp32 dot product every kernel computes bit for bit: element `c` into lane
/// `c mod 16`, each lane a multiply then an add in order (no fused multiply-add), then
/// [`sum16`]. One fixed order makes fp32 results — calibration's, and so an artifact's
/// scales — the same on every CPU; 16 lanes are one AVX-512 register, two AVX2, four NEON.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut l = [0.0f32; DOT_LANES];
    // Whole groups as fixed-size arrays, so the compiler keeps the lanes in registers.
    let (ga, gb) = (a.chunks_exact(DOT_LANES), b.chunks_exact(DOT_LANES));
    let (ra, rb) = (ga.remainder(), gb.remainder());
    for (xa, xb) in ga.zip(gb) {
        for c in 0..DOT_LANES {
            l[c] += xa[c] * xb[c];
        }
    }
    for (c, (&x, &y)) in ra.iter().zip(rb).enumerate() {
        l[c] += x * y;
    }
    sum16(l)
}

/// `out = act(x · Wᵀ + bias)`, `W` `[out.cols, x.cols]` row-major, each output a
/// [`dot_f32`].
pub fn linear_f32(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, mut out: MatMut) {
    let k = x.cols;
    for r in 0..x.rows {
        let xr = x.row(r);
        let yr = out.row_mut(r);
        for (o, y) in yr.iter_mut().enumerate() {
            let b = bias.map_or(0.0, |b| b[o]);
            *y = activate(dot_f32(xr, &w[o * k..(o + 1) * k]) + b, act);
        }
    }
}

/// `q = clamp(round_half_even(x · (1/scale)) + zero, 0, top)`, rows of
/// [`q_stride`]`(cols)` bytes (the padding is never read against a non-zero weight);
/// `top` is 255, or 127 for 7-bit activations (`format::activation_limit`).
/// Round-half-to-even is what SIMD conversion instructions do by default, so every ISA
/// can match this bit for bit.
pub fn quantize_u8(x: MatRef, scale: f32, zero: i32, top: u8, q: &mut [u8]) {
    let inv = 1.0 / scale;
    let stride = q_stride(x.cols);
    for r in 0..x.rows {
        let qr = &mut q[r * stride..r * stride + x.cols];
        for (d, &v) in qr.iter_mut().zip(x.row(r)) {
            *d = quantize_one(v, inv, zero, top);
        }
    }
}

/// How a layer quantizes its input ([`quantize_u8`]): scale, zero point and the largest
/// value (255, or 127 for 7-bit activations).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct XQuant {
    pub scale: f32,
    pub zero: i32,
    pub top: u8,
}

/// Bytes per row of quantized activations: `k` rounded up to the kernels' group of 4.
/// Saturating, as `exec::scratch_bytes` (which sizes scratch with it) must be.
#[inline]
pub const fn q_stride(k: usize) -> usize {
    k.div_ceil(crate::format::PANEL_K)
        .saturating_mul(crate::format::PANEL_K)
}

#[inline]
pub fn quantize_one(v: f32, inv_scale: f32, zero: i32, top: u8) -> u8 {
    let t = libm::rintf(v * inv_scale) + zero as f32;
    // NaN fails both comparisons and lands on 0.
    if t >= f32::from(top) {
        top
    } else if t > 0.0 {
        t as u8
    } else {
        0
    }
}

/// The int8 GEMM with requantisation to f32:
/// `out[r][o] = act(x_scale·w_scale[o]·Σ_k q[r][k]·w[o][k] + bias[o])`, `q` rows of
/// [`q_stride`]`(k)` bytes, `w` in GEMM panels (`format::packed_index`). The activations'
/// zero point is folded into `bias` at quantize time, so every ISA computes the same
/// exact integer sum of u8 × i8 products (what x86's `vpdpbusd` and Arm's
/// `usdot`/`usmmla` do natively).
pub fn gemm_u8i8(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, mut out: MatMut) {
    let qs = q_stride(k);
    let k4 = qs / PANEL_K;
    for r in 0..out.rows {
        let qr = &q[r * qs..(r + 1) * qs];
        let yr = out.row_mut(r);
        for (o, y) in yr.iter_mut().enumerate() {
            let panel = &w[(o / PANEL_N) * k4 * PANEL_N * PANEL_K..];
            let lane = (o % PANEL_N) * PANEL_K;
            let mut acc = 0i32;
            for g in 0..k4 {
                let wg = &panel[g * PANEL_N * PANEL_K + lane..][..PANEL_K];
                let qg = &qr[g * PANEL_K..][..PANEL_K];
                for j in 0..PANEL_K {
                    acc += qg[j] as i32 * wg[j] as i32;
                }
            }
            *y = ep.apply(acc, o);
        }
    }
}

/// The bounds every pointer of the SIMD attention kernels relies on (validated at load
/// already; a wrong caller panics here rather than reading out of bounds): `heads`
/// heads of `head_dim` columns in q, k, v and out, as many values as keys, one output
/// row per query, and `need` floats of scratch.
#[allow(clippy::too_many_arguments)]
pub fn check_attention_bounds(
    q: &MatRef,
    k: &MatRef,
    v: &MatRef,
    heads: usize,
    head_dim: usize,
    out: &MatMut,
    scratch: usize,
    need: usize,
) {
    let width = heads
        .checked_mul(head_dim)
        .expect("attention width overflows");
    assert!(scratch >= need);
    assert!(q.cols >= width && k.cols >= width && v.cols >= width && out.cols >= width);
    assert!(v.rows == k.rows && out.rows == q.rows);
    for m in [q, k, v] {
        assert!(rows_fit(m.rows, m.stride, m.cols, m.data.len()));
    }
    assert!(rows_fit(out.rows, out.stride, out.cols, out.data.len()));
}

/// The bounds every pointer of the SIMD layer norm kernels relies on (a wrong caller
/// panics here rather than reading out of bounds): `gamma` and `beta` as long as a row,
/// `out` the shape of `x`, both matrices' rows inside their slices, overflow included.
pub fn check_layer_norm_bounds(x: &MatRef, gamma: &[f32], beta: &[f32], out: &MatMut) {
    check_rms_norm_bounds(x, gamma, out);
    assert!(beta.len() >= x.cols);
}

/// The bounds every RMS norm kernel checks before touching memory.
pub fn check_rms_norm_bounds(x: &MatRef, gamma: &[f32], out: &MatMut) {
    let n = x.cols;
    assert!(gamma.len() >= n && out.cols == n && out.rows == x.rows);
    assert!(
        rows_fit(x.rows, x.stride, n, x.data.len())
            && rows_fit(out.rows, out.stride, n, out.data.len())
    );
}

/// The bounds every RoPE kernel checks: heads fit the row, and the table has the
/// positions' rows.
pub fn check_rope_bounds(x: &MatMut, heads: usize, head_dim: usize, table: &[f32], first: usize) {
    assert!(head_dim.is_multiple_of(2));
    assert!(heads.checked_mul(head_dim).is_some_and(|w| w <= x.cols));
    assert!(rows_fit(x.rows, x.stride, x.cols, x.data.len()));
    let rows_end = first
        .checked_add(x.rows)
        .and_then(|n| n.checked_mul(head_dim));
    assert!(x.rows == 0 || rows_end.is_some_and(|n| n <= table.len()));
}

/// The bounds every GLU kernel checks: the input is the gate then the up half.
pub fn check_glu_bounds(x: &MatRef, out: &MatMut) {
    let n = out.cols;
    assert!(x.rows == out.rows && n.checked_mul(2) == Some(x.cols));
    assert!(
        rows_fit(x.rows, x.stride, x.cols, x.data.len())
            && rows_fit(out.rows, out.stride, n, out.data.len())
    );
}

/// Whether `rows` rows of `cols` values, `stride` apart, lie within `len` values
/// (overflow counted as not fitting): the bounds check every SIMD kernel's pointers need.
pub fn rows_fit(rows: usize, stride: usize, cols: usize, len: usize) -> bool {
    rows == 0
        || (rows - 1)
            .checked_mul(stride)
            .and_then(|n| n.checked_add(cols))
            .is_some_and(|n| len >= n)
}

/// The bounds every pointer of the SIMD GEMM kernels relies on, overflow included (the
/// model validated them already; a wrong caller panics here rather than reading out of
/// bounds). Returns the activation row stride and the number of 4-input groups.
pub fn check_gemm_bounds(
    q: &[u8],
    k: usize,
    w: &[i8],
    ep: &Epilogue,
    out: &MatMut,
) -> (usize, usize) {
    let qs = q_stride(k);
    let k4 = qs / PANEL_K;
    let panels = out.cols.div_ceil(PANEL_N);
    assert!(out.rows.checked_mul(qs).is_some_and(|n| q.len() >= n));
    assert!(panels
        .checked_mul(k4)
        .and_then(|n| n.checked_mul(PANEL_N * PANEL_K))
        .is_some_and(|n| w.len() >= n));
    assert!(ep.w_scale.len() >= out.cols && ep.bias.is_none_or(|b| b.len() >= out.cols));
    assert!(rows_fit(out.rows, out.stride, out.cols, out.data.len()));
    (qs, k4)
}

/// Panel-packed int8 weights `[out, k]` (`format::packed_index`) and the range they keep
/// to. Every GEMM computes the same exact sums on any of them; the range only lets a
/// kernel multiply with fewer instructions.
#[derive(Clone, Copy)]
pub struct Panels<'a> {
    pub w: &'a [i8],
    /// Every weight is within −63..=63 (7 bits; the model checks it at load): AVX2's
    /// `vpmaddubsw` then takes the u8 activations as they are.
    pub narrow: bool,
    /// With `narrow`: every activation is within 0..=127 too (the layer quantized them
    /// so), and AVX2 adds two `vpmaddubsw` pair sums in 16 bits before widening.
    pub narrow_x: bool,
}

impl<'a> Panels<'a> {
    /// 8-bit weights (−127..=127), the general case.
    pub fn full(w: &'a [i8]) -> Self {
        Self {
            w,
            narrow: false,
            narrow_x: false,
        }
    }

    /// The first `bytes` of the panels and the rest, each of the same width.
    pub fn split_at(self, bytes: usize) -> (Self, Self) {
        let (head, tail) = self.w.split_at(bytes);
        let part = |w| Self { w, ..self };
        (part(head), part(tail))
    }
}

/// What happens to a GEMM's i32 accumulators: scale, bias, activation.
#[derive(Clone, Copy)]
pub struct Epilogue<'a> {
    pub x_scale: f32,
    pub w_scale: &'a [f32],
    pub bias: Option<&'a [f32]>,
    pub act: Activation,
}

impl Epilogue<'_> {
    #[inline]
    pub fn apply(&self, acc: i32, o: usize) -> f32 {
        requantize(
            acc,
            self.x_scale * self.w_scale[o],
            self.bias.map_or(0.0, |b| b[o]),
            self.act,
        )
    }
}

/// One accumulator to its f32 output; the single definition all GEMM kernels share.
#[inline]
pub fn requantize(acc: i32, scale: f32, bias: f32, act: Activation) -> f32 {
    activate(acc as f32 * scale + bias, act)
}

#[inline]
pub fn activate(x: f32, act: Activation) -> f32 {
    match act {
        Activation::None => x,
        // 0.5·x·(1 + tanh(u)) = x·σ(2u) = x / (1 + 2^t), t = −2·log2(e)·u =
        // x·(a + b·x²), with the shared exponential and a true divide: the same bits from
        // every kernel, in three operations before the exponential.
        Activation::GeluTanh => {
            let t = x * libm::fmaf(x * x, GELU_TANH_EXP2_CUBE, GELU_TANH_EXP2);
            x / (1.0 + exp2_clamped(t))
        }
        Activation::GeluErf => 0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2)),
        // x·σ(x) = x / (1 + 2^t), t = −log2(e)·x: the shared exponential (not `expf`),
        // so the vector kernels give these bits.
        Activation::Silu => x / (1.0 + exp2_clamped(x * SILU_EXP2)),
    }
}

pub fn activate_in_place(mut x: MatMut, act: Activation) {
    for r in 0..x.rows {
        for v in x.row_mut(r) {
            *v = activate(*v, act);
        }
    }
}

/// The sum of 16 lane partial sums by one fixed tree (lane i + lane i+8, then +4, +2,
/// +1): how every SIMD kernel reduces a register, so reductions have one result.
#[inline]
pub fn sum16(mut l: [f32; 16]) -> f32 {
    for h in [8, 4, 2, 1] {
        for i in 0..h {
            l[i] += l[i + h];
        }
    }
    l[0]
}

/// Σ f(x[c]) with element c in lane c mod 16, each lane summed in order, then [`sum16`]:
/// the order a 16-lane SIMD loop adds in.
#[inline]
fn sum_lanes(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut l = [0.0f32; 16];
    for (c, &x) in xs.iter().enumerate() {
        l[c % 16] += f(x);
    }
    sum16(l)
}

/// Row-wise layer norm (biased variance, as ONNX LayerNormalization and PyTorch): mean,
/// then the biased variance of the deviations, each summed in
/// [`sum_lanes`] order, and `(x − mean)·inv·gamma + beta` with no fused multiply-add, so
/// every ISA computes the same bits.
pub fn layer_norm(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, mut out: MatMut) {
    let n = x.cols as f32;
    for r in 0..x.rows {
        let xr = x.row(r);
        let mean = sum_lanes(xr, |v| v) / n;
        let var = sum_lanes(xr, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / libm::sqrtf(var + eps);
        for (c, y) in out.row_mut(r).iter_mut().enumerate() {
            *y = (xr[c] - mean) * inv * gamma[c] + beta[c];
        }
    }
}

/// Row-wise RMS norm, as Llama's, Qwen2's, Mistral's and Gemma's `RMSNorm` (Gemma's
/// `1 + w` is folded into `gamma` when the weights are read): the mean square summed in
/// [`sum_lanes`] order, then `x·inv·gamma`, no fused multiply-add, so every ISA
/// computes the same bits.
pub fn rms_norm(x: MatRef, gamma: &[f32], eps: f32, mut out: MatMut) {
    let n = x.cols as f32;
    for r in 0..x.rows {
        let xr = x.row(r);
        let ms = sum_lanes(xr, |v| v * v) / n;
        let inv = 1.0 / libm::sqrtf(ms + eps);
        for (c, y) in out.row_mut(r).iter_mut().enumerate() {
            *y = xr[c] * inv * gamma[c];
        }
    }
}

/// Rotary position embedding in place, "rotate half" pairing (element `i` with
/// `i + d/2` of each head, as Hugging Face's Llama family): row `r` of `x` is at
/// position `first + r`, whose row of `table` holds `cos` for the `d/2` frequencies, then
/// `sin`.
pub fn rope(mut x: MatMut, heads: usize, head_dim: usize, table: &[f32], first: usize) {
    let half = head_dim / 2;
    for r in 0..x.rows {
        let t = &table[(first + r) * head_dim..(first + r + 1) * head_dim];
        let (cos, sin) = t.split_at(half);
        let row = x.row_mut(r);
        for h in 0..heads {
            let (a, b) = row[h * head_dim..(h + 1) * head_dim].split_at_mut(half);
            for i in 0..half {
                let (x1, x2) = (a[i], b[i]);
                a[i] = x1 * cos[i] - x2 * sin[i];
                b[i] = x2 * cos[i] + x1 * sin[i];
            }
        }
    }
}

/// A gated linear unit's gate: `out[r][c] = act(x[r][c]) · x[r][n + c]`, `n = out.cols`
/// (the gate and up projections computed by one linear layer, gate first).
pub fn glu(x: MatRef, act: Activation, mut out: MatMut) {
    let n = out.cols;
    for r in 0..x.rows {
        let xr = x.row(r);
        for (c, y) in out.row_mut(r).iter_mut().enumerate() {
            *y = activate(xr[c], act) * xr[n + c];
        }
    }
}

/// Pixel shuffle (space to depth) of a `[grid_h·grid_w, d]` grid of tokens by `s`:
/// output token `(i, j)` is the `s × s` block at rows `i·s ..`, columns `j·s ..`, its
/// tokens concatenated in raster order (Idefics3's connector).
pub fn pixel_shuffle(x: MatRef, grid_w: usize, s: usize, mut out: MatMut) {
    let d = x.cols;
    let ow = grid_w / s;
    for o in 0..out.rows {
        let (i, j) = (o / ow, o % ow);
        let y = out.row_mut(o);
        for a in 0..s {
            for b in 0..s {
                let src = x.row((i * s + a) * grid_w + j * s + b);
                y[(a * s + b) * d..(a * s + b + 1) * d].copy_from_slice(src);
            }
        }
    }
}

pub fn add(a: MatRef, b: MatRef, mut out: MatMut) {
    for r in 0..out.rows {
        let (ar, br) = (a.row(r), b.row(r));
        for (c, y) in out.row_mut(r).iter_mut().enumerate() {
            *y = ar[c] + br[c];
        }
    }
}

/// `x` rounded to the nearest bfloat16 (ties to even), kept as an f32: what the bf16
/// conversion instructions (`vcvtne2ps2bf16`, Arm's `bfcvt`) produce. Denormals become
/// zero of the same sign, as those instructions flush them; NaN stays NaN.
#[inline]
pub fn bf16_round(x: f32) -> f32 {
    let b = x.to_bits();
    if x.is_nan() {
        return f32::from_bits(b | 0x0040_0000);
    }
    if b & 0x7F80_0000 == 0 {
        return f32::from_bits(b & 0x8000_0000);
    }
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1));
    f32::from_bits(rounded & 0xFFFF_0000)
}

/// SiLU's exponent per unit of x: `−log2(e)`.
pub const SILU_EXP2: f32 = -core::f32::consts::LOG2_E;

/// −2·√(2/π)·log2(e): GELU-tanh's exponent per unit of `x + 0.044715·x³`.
pub const GELU_TANH_EXP2: f32 = -2.0 * 0.797_884_6 * core::f32::consts::LOG2_E;
/// GELU-tanh's exponent per unit of x³: `GELU_TANH_EXP2 · 0.044715`.
pub const GELU_TANH_EXP2_CUBE: f32 = GELU_TANH_EXP2 * 0.044715;

/// 2^t's polynomial on [−0.5, 0.5], shared with the SIMD kernels: a degree-4 fit of
/// relative error, exact at 0, < 3e-6 evaluated in f32 with fused multiply-adds. Its
/// two users round the result far coarser (softmax weights to bf16, whose half-step is
/// 2e-3; GELU's output to the next layer's u8 step), so each extra degree would buy
/// nothing for one more multiply-add per value.
// The linear coefficient is fitted, close to ln 2 but not it.
#[allow(clippy::approx_constant)]
pub const EXP2_POLY: [f32; 5] = [1.0, 0.693_124_2, 0.240_240_99, 0.055_906_415, 0.009_582_836];

/// The base-2 logit, relative to its row's maximum, below which a softmax weight is
/// exactly 0. Such a weight (below 2^−64 of the largest, itself 1) cannot move an f32
/// sum of them or an output; as 2^t it would be tiny, and a head whose weights sit
/// on the clamp's 2^−126 for most keys made a denormal of nearly every product of the
/// weighted sum of values, each an FP assist of a hundred cycles or more on x86: a
/// peaked softmax ran its attention 15 times slower.
pub const SOFTMAX_FLOOR: f32 = -64.0;

/// A softmax weight from its base-2 logit `t ≤ 0` relative to the row's maximum:
/// [`exp2_clamped`] at or above [`SOFTMAX_FLOOR`], else (NaN too) 0. Every ISA's
/// softmax computes these bits.
#[inline]
pub fn softmax_weight(t: f32) -> f32 {
    if t >= SOFTMAX_FLOOR {
        exp2_clamped(t)
    } else {
        0.0
    }
}

/// 2^t with t clamped to [−126, 126], by the operations the SIMD kernels use (round to
/// nearest even, a fused polynomial in the fraction, the integer into the exponent), so
/// bf16 attention's weights come out bit for bit the same on every ISA.
#[inline]
pub fn exp2_clamped(t: f32) -> f32 {
    // Not `clamp`: NaN must become −126, as `vmaxps(t, −126)` makes it on x86.
    #[allow(clippy::manual_clamp)]
    let t = t.max(-126.0).min(126.0);
    let n = libm::rintf(t);
    let f = t - n;
    let [rest @ .., last] = EXP2_POLY;
    let mut p = last;
    for &c in rest.iter().rev() {
        p = libm::fmaf(p, f, c);
    }
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// Indices `0..n` in the order `Precision::Bf16` adds them (with `pairs`): pair by pair,
/// the odd index first (1, 0, 3, 2, …), as `vdpbf16ps` adds; without, in order. Every
/// kernel that computes bf16 attention with f32 instructions walks its sums this way.
#[inline]
pub fn pair_order(n: usize, pairs: bool) -> impl Iterator<Item = usize> {
    let end = if pairs { n.next_multiple_of(2) } else { n };
    (0..end)
        .map(move |i| if pairs { i ^ 1 } else { i })
        .filter(move |&j| j < n)
}

/// Σ bf16(a)·bf16(b) in the order `vdpbf16ps` adds (the order `Precision::Bf16` fixes):
/// pair by pair, the odd element's product first, then the even one's, each product
/// exact and each sum rounded to f32. With the operands rounded the same everywhere,
/// every ISA gets the same bits.
#[inline]
pub fn dot_bf16_pairs(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = 0.0f32;
    for (pa, pb) in a.chunks(2).zip(b.chunks(2)) {
        if pa.len() == 2 {
            acc += pa[1] * pb[1];
        }
        acc += pa[0] * pb[0];
    }
    acc
}

/// The total of bf16 softmax weights in the order a `vdpbf16ps` with ones adds them:
/// 32 weights at a time, lane `i` taking weight `2i + 1` then `2i`, then [`sum16`].
pub fn bf16_weight_sum(e: &[f32]) -> f32 {
    let mut l = [0.0f32; 16];
    for chunk in e.chunks(32) {
        for (i, lane) in l.iter_mut().enumerate() {
            if let Some(&odd) = chunk.get(2 * i + 1) {
                *lane += odd;
            }
            if let Some(&even) = chunk.get(2 * i) {
                *lane += even;
            }
        }
    }
    sum16(l)
}

/// Scratch floats [`attention`] needs: one score row, and for bf16 one head's keys and
/// values and one query, rounded once rather than at every product.
pub const fn attention_scratch(head_dim: usize, nk: usize, precision: Precision) -> usize {
    match precision {
        Precision::F32 => nk,
        Precision::Bf16 => nk
            .saturating_add(nk.saturating_mul(head_dim).saturating_mul(2))
            .saturating_add(head_dim),
    }
}

/// What bf16 attention multiplies its dot products by: the op's scale times log2(e), so
/// the scores are logits in base 2 and each softmax weight is `exp2(s − max s)`.
#[inline]
pub fn bf16_score_scale(scale: f32) -> f32 {
    scale * core::f32::consts::LOG2_E
}

/// Multi-head attention, no mask, in `precision` (see [`Precision`]); `scratch` holds
/// [`attention_scratch`] floats.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    head_dim: usize,
    scale: f32,
    precision: Precision,
    mut out: MatMut,
    scratch: &mut [f32],
) {
    let nk = k.rows;
    let dh = head_dim;
    // bf16 scores are in base 2 (`bf16_score_scale`), so the softmax needs no multiply.
    let scale = match precision {
        Precision::F32 => scale,
        Precision::Bf16 => bf16_score_scale(scale),
    };
    let (scores, rest) = scratch.split_at_mut(nk);
    for h in 0..heads {
        let cols = h * dh..(h + 1) * dh;
        // bf16: this head's keys, values (and below each query) rounded once.
        let (kr, vr, qr) = match precision {
            Precision::F32 => (&mut [][..], &mut [][..], &mut [][..]),
            Precision::Bf16 => {
                let (kr, rest) = rest.split_at_mut(nk * dh);
                let (vr, rest) = rest.split_at_mut(nk * dh);
                for j in 0..nk {
                    for (d, c) in cols.clone().enumerate() {
                        kr[j * dh + d] = bf16_round(k.row(j)[c]);
                        vr[j * dh + d] = bf16_round(v.row(j)[c]);
                    }
                }
                (kr, vr, &mut rest[..dh])
            }
        };
        for i in 0..q.rows {
            let qi = &q.row(i)[cols.clone()];
            let mut max = f32::NEG_INFINITY;
            if precision == Precision::Bf16 {
                qr.iter_mut().zip(qi).for_each(|(r, &x)| *r = bf16_round(x));
            }
            for (j, s) in scores.iter_mut().enumerate() {
                *s = match precision {
                    Precision::F32 => dot_f32(qi, &k.row(j)[cols.clone()]),
                    Precision::Bf16 => dot_bf16_pairs(qr, &kr[j * dh..(j + 1) * dh]),
                } * scale;
                max = max.max(*s);
            }
            let sum = match precision {
                Precision::F32 => {
                    let mut sum = 0.0;
                    for s in scores.iter_mut() {
                        // The same floor as every other softmax (a natural logit here).
                        let d = *s - max;
                        *s = if d * core::f32::consts::LOG2_E >= SOFTMAX_FLOOR {
                            libm::expf(d)
                        } else {
                            0.0
                        };
                        sum += *s;
                    }
                    sum
                }
                Precision::Bf16 => {
                    for s in scores.iter_mut() {
                        *s = bf16_round(softmax_weight(*s - max));
                    }
                    bf16_weight_sum(scores)
                }
            };
            let inv = 1.0 / sum;
            let oi = &mut out.row_mut(i)[cols.clone()];
            oi.iter_mut().for_each(|o| *o = 0.0);
            match precision {
                Precision::F32 => {
                    for (j, &p) in scores.iter().enumerate() {
                        let p = p * inv;
                        for (o, &vv) in oi.iter_mut().zip(&v.row(j)[cols.clone()]) {
                            *o += p * vv;
                        }
                    }
                }
                Precision::Bf16 => {
                    for j in pair_order(nk, true) {
                        let p = scores[j];
                        for (o, &vv) in oi.iter_mut().zip(&vr[j * dh..(j + 1) * dh]) {
                            *o += p * vv;
                        }
                    }
                    oi.iter_mut().for_each(|o| *o *= inv);
                }
            }
        }
    }
}

/// Rows of an int8 KV cache as its state buffer holds them (FORMAT.md, "int8 KV
/// cache"): row `t` is `width` i8 values, heads side by side, then one f32 scale per
/// head; rows `stride` bytes apart.
#[derive(Debug, Clone, Copy)]
pub struct I8Rows<'a> {
    pub data: &'a [u8],
    pub rows: usize,
    pub width: usize,
    pub head_dim: usize,
    pub stride: usize,
}

impl<'a> I8Rows<'a> {
    /// A cache window seen as f32 words, [`i8_cache_cols`] of them a row.
    pub fn of(m: MatRef<'a>, head_dim: usize) -> Self {
        Self {
            data: bytemuck::cast_slice(m.data),
            rows: m.rows,
            width: m.cols / (head_dim / 4 + 1) * head_dim,
            head_dim,
            stride: 4 * m.stride,
        }
    }

    /// Head `head`'s values in row `t`.
    #[inline]
    pub fn values(&self, t: usize, head: usize) -> &'a [i8] {
        let at = t * self.stride + head * self.head_dim;
        bytemuck::cast_slice(&self.data[at..at + self.head_dim])
    }

    /// Head `head`'s scale in row `t`.
    #[inline]
    pub fn scale(&self, t: usize, head: usize) -> f32 {
        let at = t * self.stride + self.width + 4 * head;
        let b = &self.data[at..at + 4];
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// The f32 words of one int8 cache row of `width` values in heads of `head_dim`: the
/// values packed four to a word, then a scale per head. `None` unless `head_dim` is a
/// multiple of 4 dividing `width` (so every head and the scales start on a word).
pub const fn i8_cache_cols(width: usize, head_dim: usize) -> Option<usize> {
    if head_dim == 0 || !head_dim.is_multiple_of(4) || !width.is_multiple_of(head_dim) {
        return None;
    }
    Some(width / 4 + width / head_dim)
}

/// One head's values as int8 with a symmetric scale, `max |x| / 127` (returned): what
/// an int8 cache row stores per head, and what a query becomes before q·k. All zeros
/// (and NaN) give scale 0 and zero values.
#[inline]
pub fn quantize_head_i8(x: &[f32], q: &mut [i8]) -> f32 {
    let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    if !(amax > 0.0) {
        q.iter_mut().for_each(|q| *q = 0);
        return 0.0;
    }
    let inv = 127.0 / amax;
    // |x·inv| ≤ 127 up to one rounding, which `rintf` takes back to 127; the cast
    // saturates (and takes NaN to 0) either way.
    for (q, &v) in q.iter_mut().zip(x) {
        *q = libm::rintf(v * inv) as i8;
    }
    amax / 127.0
}

/// Scratch floats [`attention_i8kv_head`] needs over `keys` keys: the weights and the
/// quantized query.
pub const fn attention_i8kv_scratch(head_dim: usize, keys: usize) -> usize {
    keys.saturating_add(head_dim.div_ceil(4))
}

/// One query head (`q`, `head_dim` floats) over the first `keys` rows of an int8 KV
/// cache's head `head`, into `out`:
/// - q·k as an exact integer product, the query quantized per head like the cache
///   ([`quantize_head_i8`]), scaled to base-2 logits `(dot·s_k)·(s_q·scale·log2 e)`;
/// - weights `exp2(s − max s)` (`exp2` applies [`softmax_weight`] to each, any ISA's
///   form of it: they agree bit for bit), totalled in key order;
/// - `Σ_t (w_t·s_v[t])·v[t]` in key order, a product then a sum per element, divided by
///   the total.
///
/// No float sum depends on anything but the key order, which every ISA keeps, so a
/// SIMD build of this body (the integer sums vectorise freely; the value loop is
/// element-wise) gives these bits on every CPU.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn attention_i8kv_head(
    q: &[f32],
    k: I8Rows,
    v: I8Rows,
    head: usize,
    keys: usize,
    scale: f32,
    out: &mut [f32],
    scratch: &mut [f32],
    exp2: impl FnOnce(&mut [f32]),
) {
    let d = q.len();
    assert!(
        keys <= k.rows.min(v.rows)
            && out.len() == d
            && k.head_dim == d
            && v.head_dim == d
            && scratch.len() >= attention_i8kv_scratch(d, keys),
        "int8 attention operands out of bounds"
    );
    let (w, rest) = scratch.split_at_mut(keys);
    let qq: &mut [i8] = bytemuck::cast_slice_mut(&mut rest[..d.div_ceil(4)]);
    let qq = &mut qq[..d];
    let c = quantize_head_i8(q, qq) * scale * core::f32::consts::LOG2_E;
    let mut max = f32::NEG_INFINITY;
    for (t, s) in w.iter_mut().enumerate() {
        let dot: i32 = qq
            .iter()
            .zip(k.values(t, head))
            .map(|(&a, &b)| i32::from(a) * i32::from(b))
            .sum();
        *s = dot as f32 * k.scale(t, head) * c;
        max = max.max(*s);
    }
    w.iter_mut().for_each(|s| *s -= max);
    exp2(w);
    let mut total = 0.0f32;
    for &x in w.iter() {
        total += x;
    }
    out.fill(0.0);
    for (t, &x) in w.iter().enumerate() {
        let p = x * v.scale(t, head);
        for (o, &b) in out.iter_mut().zip(v.values(t, head)) {
            *o += p * f32::from(b);
        }
    }
    out.iter_mut().for_each(|o| *o /= total);
}

/// Gathers non-overlapping `p × p` tiles of a `[c, h, w]` image into rows of
/// `c·p·p` values in (channel, row, col) order, tiles in row-major grid order.
pub fn im2col(image: &[f32], c: usize, h: usize, w: usize, p: usize, out: &mut [f32]) {
    let (gh, gw) = (h / p, w / p);
    let k = c * p * p;
    for gy in 0..gh {
        for gx in 0..gw {
            let row = &mut out[(gy * gw + gx) * k..(gy * gw + gx + 1) * k];
            let mut i = 0;
            for ch in 0..c {
                for y in 0..p {
                    let src = ch * h * w + (gy * p + y) * w + gx * p;
                    row[i..i + p].copy_from_slice(&image[src..src + p]);
                    i += p;
                }
            }
        }
    }
}
