//! The scalar reference kernels: the definition every SIMD kernel must reproduce (bit for
//! bit for the integer ones).

use crate::format::{PANEL_K, PANEL_N};
use crate::ops::Activation;

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

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Eight partial sums: the same association a vectorised loop uses, and lets the
    // compiler vectorise this reference without fast-math.
    let mut acc = [0.0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        for l in 0..8 {
            acc[l] += a[8 * i + l] * b[8 * i + l];
        }
    }
    let mut s = 0.0;
    for i in chunks * 8..a.len() {
        s += a[i] * b[i];
    }
    acc.iter().sum::<f32>() + s
}

/// `out = act(x · Wᵀ + bias)`, `W` `[out.cols, x.cols]` row-major.
pub fn linear_f32(x: MatRef, w: &[f32], bias: Option<&[f32]>, act: Activation, mut out: MatMut) {
    let k = x.cols;
    for r in 0..x.rows {
        let xr = x.row(r);
        let yr = out.row_mut(r);
        for (o, y) in yr.iter_mut().enumerate() {
            let b = bias.map_or(0.0, |b| b[o]);
            *y = activate(dot(xr, &w[o * k..(o + 1) * k]) + b, act);
        }
    }
}

/// `q = clamp(round_half_even(x · (1/scale)) + zero, 0, 255)`, rows of
/// [`q_stride`]`(cols)` bytes (the padding is never read against a non-zero weight).
/// Round-half-to-even is what SIMD conversion instructions do by default, so every ISA
/// can match this bit for bit.
pub fn quantize_u8(x: MatRef, scale: f32, zero: i32, q: &mut [u8]) {
    let inv = 1.0 / scale;
    let stride = q_stride(x.cols);
    for r in 0..x.rows {
        let qr = &mut q[r * stride..r * stride + x.cols];
        for (d, &v) in qr.iter_mut().zip(x.row(r)) {
            *d = quantize_one(v, inv, zero);
        }
    }
}

/// Bytes per row of quantized activations: `k` rounded up to the kernels' group of 4.
/// Saturating, as `exec::scratch_bytes` (which sizes scratch with it) must be.
#[inline]
pub const fn q_stride(k: usize) -> usize {
    k.div_ceil(crate::format::PANEL_K)
        .saturating_mul(crate::format::PANEL_K)
}

#[inline]
pub fn quantize_one(v: f32, inv_scale: f32, zero: i32) -> u8 {
    let t = libm::rintf(v * inv_scale) + zero as f32;
    // NaN fails both comparisons and lands on 0.
    if t >= 255.0 {
        255
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
    assert!(
        out.rows == 0
            || (out.rows - 1)
                .checked_mul(out.stride)
                .and_then(|n| n.checked_add(out.cols))
                .is_some_and(|n| out.data.len() >= n)
    );
    (qs, k4)
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
        Activation::GeluTanh => {
            const C: f32 = 0.797_884_6; // √(2/π)
            0.5 * x * (1.0 + libm::tanhf(C * (x + 0.044715 * x * x * x)))
        }
        Activation::GeluErf => 0.5 * x * (1.0 + libm::erff(x * core::f32::consts::FRAC_1_SQRT_2)),
    }
}

pub fn activate_in_place(mut x: MatMut, act: Activation) {
    for r in 0..x.rows {
        for v in x.row_mut(r) {
            *v = activate(*v, act);
        }
    }
}

/// Row-wise layer norm (biased variance, as ONNX LayerNormalization and PyTorch).
pub fn layer_norm(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, mut out: MatMut) {
    let n = x.cols as f32;
    for r in 0..x.rows {
        let xr = x.row(r);
        let mean = xr.iter().sum::<f32>() / n;
        let var = xr.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
        let inv = 1.0 / libm::sqrtf(var + eps);
        for (c, y) in out.row_mut(r).iter_mut().enumerate() {
            *y = (xr[c] - mean) * inv * gamma[c] + beta[c];
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

/// Multi-head attention, no mask; `scores` holds one row of `k.rows` floats.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    head_dim: usize,
    scale: f32,
    mut out: MatMut,
    scores: &mut [f32],
) {
    let nk = k.rows;
    let scores = &mut scores[..nk];
    for h in 0..heads {
        let cols = h * head_dim..(h + 1) * head_dim;
        for i in 0..q.rows {
            let qi = &q.row(i)[cols.clone()];
            let mut max = f32::NEG_INFINITY;
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(qi, &k.row(j)[cols.clone()]) * scale;
                max = max.max(*s);
            }
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = libm::expf(*s - max);
                sum += *s;
            }
            let inv = 1.0 / sum;
            let oi = &mut out.row_mut(i)[cols.clone()];
            oi.iter_mut().for_each(|o| *o = 0.0);
            for (j, &p) in scores.iter().enumerate() {
                let p = p * inv;
                for (o, &vv) in oi.iter_mut().zip(&v.row(j)[cols.clone()]) {
                    *o += p * vv;
                }
            }
        }
    }
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
