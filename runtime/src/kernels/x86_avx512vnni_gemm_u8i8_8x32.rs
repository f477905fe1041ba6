//! int8 GEMM for AVX-512 VNNI: tiles of 8 activation rows × 32 outputs (two weight
//! panels), 16 `vpdpbusd` per group of 4 inputs into 16 zmm accumulators. u8 × i8 is
//! what `vpdpbusd` multiplies, so no zero-point or sign fix-up is needed in the loop
//! (see `scalar::gemm_u8i8`).

use core::arch::x86_64::*;

use super::scalar::{activate, check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx512_math::{gelu_tanh, lanes};
use crate::format::{PANEL_K, PANEL_N};
use crate::ops::Activation;

const MR: usize = 8;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: AVX-512 VNNI support was checked by the dispatcher; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, mut out: MatMut) {
    let panels = out.cols.div_ceil(PANEL_N);
    let panel_bytes = k4 * PANEL_GROUP_BYTES;
    let tiles = out.rows.div_ceil(MR);
    // Weights outside, rows inside: each pair of panels (32 outputs × k) is read from
    // memory once and stays in L1/L2 while every row tile passes over it; the
    // activations (rows × k bytes) are small and stay in L2. A tower's weights are read
    // once per run, not once per row tile — and they are too large to stay in any cache
    // between runs, so each row tile also prefetches its share of the next pair's
    // lines into L2: the first tile of a pair would otherwise wait on DRAM.
    let mut p = 0;
    while p < panels {
        let nb = (panels - p).min(2);
        let next = p + nb;
        let next_lines = (panels - next).min(2) * panel_bytes / 64;
        let mut m = 0;
        while m < out.rows {
            let mr = (out.rows - m).min(MR);
            let t = m / MR;
            let first = t * next_lines / tiles;
            let pf = (
                w.as_ptr().add(next * panel_bytes + first * 64),
                (t + 1) * next_lines / tiles - first,
            );
            macro_rules! go {
                ($($r:literal),*) => {
                    match (mr, nb) {
                        $(($r, 2) => tile::<$r, 2>(q, qs, k4, w, m, p, ep, &mut out, pf),
                          ($r, _) => tile::<$r, 1>(q, qs, k4, w, m, p, ep, &mut out, pf),)*
                        _ => unreachable!(),
                    }
                };
            }
            go!(1, 2, 3, 4, 5, 6, 7, 8);
            m += mr;
        }
        p += nb;
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize, const NB: usize>(
    q: &[u8],
    qs: usize,
    k4: usize,
    w: &[i8],
    m: usize,
    p: usize,
    ep: &Epilogue,
    out: &mut MatMut,
    (pf, pf_lines): (*const i8, usize),
) {
    let mut acc = [[_mm512_setzero_si512(); NB]; R];
    let qp = q.as_ptr().add(m * qs);
    let panel_bytes = k4 * PANEL_GROUP_BYTES;
    let wp = w.as_ptr().add(p * panel_bytes);
    // One prefetch every `every` groups: a burst of them would fill the miss queue the
    // loop's own loads need.
    let every = (k4 / (pf_lines + 1)).max(1);
    for g in 0..k4 {
        if g % every == 0 && g / every < pf_lines {
            _mm_prefetch::<_MM_HINT_T1>(pf.add(g / every * 64));
        }
        let mut wv = [_mm512_setzero_si512(); NB];
        for (b, v) in wv.iter_mut().enumerate() {
            *v = _mm512_loadu_si512(wp.add(b * panel_bytes + g * PANEL_GROUP_BYTES) as *const _);
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x =
                _mm512_set1_epi32((qp.add(r * qs + g * PANEL_K) as *const i32).read_unaligned());
            for b in 0..NB {
                acc_r[b] = _mm512_dpbusd_epi32(acc_r[b], x, wv[b]);
            }
        }
    }
    // Column block outside, rows inside: each block's scale and bias are loaded once
    // (the compiler cannot hoist them past the stores, which might alias).
    for b in 0..NB {
        let block = Columns::new(ep, (p + b) * PANEL_N, out.cols);
        for (r, acc_r) in acc.iter().enumerate() {
            block.store(
                acc_r[b],
                ep,
                out.data.as_mut_ptr().add((m + r) * out.stride),
            );
        }
    }
}

/// One panel's 16 outputs of the epilogue: their mask, scale and bias, loaded once.
pub(super) struct Columns {
    o0: usize,
    valid: usize,
    mask: __mmask16,
    scale: __m512,
    bias: __m512,
}

impl Columns {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
    pub(super) unsafe fn new(ep: &Epilogue, o0: usize, cols: usize) -> Self {
        let valid = (cols - o0).min(PANEL_N);
        let mask = lanes(valid);
        let xs = _mm512_set1_ps(ep.x_scale);
        Self {
            o0,
            valid,
            mask,
            scale: _mm512_mul_ps(xs, _mm512_maskz_loadu_ps(mask, ep.w_scale.as_ptr().add(o0))),
            bias: match ep.bias {
                Some(bv) => _mm512_maskz_loadu_ps(mask, bv.as_ptr().add(o0)),
                None => _mm512_setzero_ps(),
            },
        }
    }

    /// The scalar formula exactly — acc·(x_scale·w_scale) + bias, two roundings, then the
    /// activation — into `row`'s columns.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,fma")]
    pub(super) unsafe fn store(&self, acc: __m512i, ep: &Epilogue, row: *mut f32) {
        let mut y = _mm512_add_ps(
            _mm512_mul_ps(_mm512_cvtepi32_ps(acc), self.scale),
            self.bias,
        );
        if ep.act == Activation::GeluTanh {
            y = gelu_tanh(y);
        }
        _mm512_mask_storeu_ps(row.add(self.o0), self.mask, y);
        if !ep.act.has_simd_form() {
            for o in self.o0..self.o0 + self.valid {
                *row.add(o) = activate(*row.add(o), ep.act);
            }
        }
    }
}
