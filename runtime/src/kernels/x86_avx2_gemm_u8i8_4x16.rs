//! int8 GEMM for AVX2: tiles of 4 activation rows × 16 outputs (one weight panel).
//!
//! `vpmaddubsw` (u8 × i8, pairs summed in i16) is AVX2's one instruction that multiplies
//! bytes, and on u8 activations × i8 weights its pair sums saturate. So the activations
//! enter as `s = q − 128` (a sign-bit flip; each output gets `128·Σ_k w` back, computed
//! once per panel), and ggml's sign trick makes the product unsigned × signed: `|s|`
//! times `w` with `s`'s sign (`vpsignb`). Weights are symmetric (|w| ≤ 127, checked at
//! load), so a pair is at most 2·128·127 < 2¹⁵: exact. Then `vpmaddwd` against ones adds
//! each output's two pairs into an i32 lane, and a panel group's 16 outputs land in two
//! registers in output order: 4 instructions per 32 products where widening both sides
//! to i16 took 5 and a shuffle. 7-bit activations or 7-bit weights (onnxruntime's
//! `reduce_range`) would save the `vpsignb`; BENCHMARKS.md ("The int8 scheme") has what
//! each costs in accuracy.

use core::arch::x86_64::*;

use super::scalar::{check_gemm_bounds, Epilogue, MatMut};
use super::x86_avx2_math::gelu_tanh;
use crate::format::{PANEL_K, PANEL_N};
use crate::ops::Activation;

/// 8 accumulators, 2 weight registers, the activations and their magnitudes, ones and a
/// product: 14 of the 16 ymm registers.
const MR: usize = 4;
const PANEL_GROUP_BYTES: usize = PANEL_N * PANEL_K;

pub fn gemm(q: &[u8], k: usize, w: &[i8], ep: &Epilogue, out: MatMut) {
    let (qs, k4) = check_gemm_bounds(q, k, w, ep, &out);
    // SAFETY: AVX2 support was checked by the dispatcher; bounds asserted above.
    unsafe { gemm_impl(q, qs, k4, w, ep, out) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_impl(q: &[u8], qs: usize, k4: usize, w: &[i8], ep: &Epilogue, mut out: MatMut) {
    // Panel outer: a panel's flip share is computed once, and its k4·64 bytes stay in
    // cache while every row passes over them.
    for p in 0..out.cols.div_ceil(PANEL_N) {
        let fix = flip_fix(w.as_ptr().add(p * k4 * PANEL_GROUP_BYTES), k4);
        let mut m = 0;
        while m < out.rows {
            let mr = (out.rows - m).min(MR);
            match mr {
                4 => tile::<4>(q, qs, k4, w, m, p, &fix, ep, &mut out),
                3 => tile::<3>(q, qs, k4, w, m, p, &fix, ep, &mut out),
                2 => tile::<2>(q, qs, k4, w, m, p, &fix, ep, &mut out),
                _ => tile::<1>(q, qs, k4, w, m, p, &fix, ep, &mut out),
            }
            m += mr;
        }
    }
}

/// `128·Σ_k w[o][k]` for the panel at `wp`'s 16 outputs, in the accumulators' layout:
/// what the activations' flip (`q − 128`) takes from each sum.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn flip_fix(wp: *const i8, k4: usize) -> [__m256i; 2] {
    let (ones8, ones16) = (_mm256_set1_epi8(1), _mm256_set1_epi16(1));
    let mut fix = [_mm256_setzero_si256(); 2];
    for g in 0..k4 {
        for (h, f) in fix.iter_mut().enumerate() {
            let wv = _mm256_loadu_si256(wp.add(g * PANEL_GROUP_BYTES + 32 * h) as *const __m256i);
            let pairs = _mm256_maddubs_epi16(ones8, wv);
            *f = _mm256_add_epi32(*f, _mm256_madd_epi16(pairs, ones16));
        }
    }
    [
        _mm256_slli_epi32::<7>(fix[0]),
        _mm256_slli_epi32::<7>(fix[1]),
    ]
}

#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile<const R: usize>(
    q: &[u8],
    qs: usize,
    k4: usize,
    w: &[i8],
    m: usize,
    p: usize,
    fix: &[__m256i; 2],
    ep: &Epilogue,
    out: &mut MatMut,
) {
    // acc[r][h]: outputs 8h..8h+8 of the panel, one per lane.
    let mut acc = [*fix; R];
    let ones = _mm256_set1_epi16(1);
    let qp = q.as_ptr().add(m * qs);
    let wp = w.as_ptr().add(p * k4 * PANEL_GROUP_BYTES);
    for g in 0..k4 {
        let gp = wp.add(g * PANEL_GROUP_BYTES);
        let w0 = _mm256_loadu_si256(gp as *const __m256i);
        let w1 = _mm256_loadu_si256(gp.add(32) as *const __m256i);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x4 = (qp.add(r * qs + g * PANEL_K) as *const u32).read_unaligned();
            let s = _mm256_set1_epi32((x4 ^ 0x8080_8080) as i32);
            // |−128| is 128 again, which the unsigned side reads as 128: still exact.
            let mag = _mm256_abs_epi8(s);
            for (a, wv) in acc_r.iter_mut().zip([w0, w1]) {
                let pairs = _mm256_maddubs_epi16(mag, _mm256_sign_epi8(wv, s));
                *a = _mm256_add_epi32(*a, _mm256_madd_epi16(pairs, ones));
            }
        }
    }
    let o0 = p * PANEL_N;
    let valid = (out.cols - o0).min(PANEL_N);
    for (r, acc_r) in acc.iter().enumerate() {
        store_row(
            acc_r,
            ep,
            o0,
            valid,
            out.data.as_mut_ptr().add((m + r) * out.stride + o0),
        );
    }
}

/// Writes one row of a tile through the epilogue: `acc` holds the i32 sums of outputs
/// `o0..o0 + 16` in order, of which the first `valid` exist; `row` points at output
/// `o0`. Shared with the AVX-VNNI kernel, whose sums come out the same way.
///
/// # Safety
/// AVX2 and FMA; `w_scale`, `bias` and `row` hold outputs up to `o0 + valid`.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn store_row(
    acc: &[__m256i; 2],
    ep: &Epilogue,
    o0: usize,
    valid: usize,
    row: *mut f32,
) {
    if valid == PANEL_N && ep.act.has_simd_form() {
        // The scalar formula exactly: acc·(x_scale·w_scale) + bias, two roundings,
        // then GELU-tanh by the scalar operations.
        let xs = _mm256_set1_ps(ep.x_scale);
        for (h, &acc) in acc.iter().enumerate() {
            let o = o0 + 8 * h;
            let scale = _mm256_mul_ps(xs, _mm256_loadu_ps(ep.w_scale.as_ptr().add(o)));
            let bias = match ep.bias {
                Some(b) => _mm256_loadu_ps(b.as_ptr().add(o)),
                None => _mm256_setzero_ps(),
            };
            let mut y = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(acc), scale), bias);
            if ep.act == Activation::GeluTanh {
                y = gelu_tanh(y);
            }
            _mm256_storeu_ps(row.add(8 * h), y);
        }
        return;
    }
    // A panel's padded tail, or an activation with no SIMD form: element by element.
    let mut sums = [0i32; PANEL_N];
    _mm256_storeu_si256(sums.as_mut_ptr() as *mut __m256i, acc[0]);
    _mm256_storeu_si256(sums.as_mut_ptr().add(8) as *mut __m256i, acc[1]);
    for (j, &s) in sums.iter().enumerate().take(valid) {
        *row.add(j) = ep.apply(s, o0 + j);
    }
}
