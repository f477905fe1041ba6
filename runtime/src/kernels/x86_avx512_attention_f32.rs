//! Multi-head attention for AVX-512 (fp32): per head, keys are transposed once into
//! scratch so score rows are 16-wide FMAs with broadcast queries (no horizontal sums),
//! softmax uses the vectorised exp, and P·V accumulates 4 query rows at a time.
//! Within a float tolerance of `scalar::attention`.
//!
//! [`attention_bf16_emulated`] is the same loops computing `Precision::Bf16` on AVX-512
//! CPUs without bf16 dot products (Skylake-SP to Ice Lake): operands rounded to bf16 as
//! they are staged in scratch, f32 FMAs (bf16 products are exact in f32), weights left
//! unnormalised and the output divided by their sum, every sum in the order
//! `Precision::Bf16` fixes. No faster than f32, but the same bits as every other CPU
//! running that artifact.

use core::arch::x86_64::*;

use super::scalar::{
    bf16_round, bf16_score_scale, bf16_weight_sum, check_attention_bounds, pair_order, MatMut,
    MatRef,
};
use super::x86_avx512_math::{bf16_round as bf16_round_v, exp2_clamped_below, lanes as mask};

/// Query rows per block.
const QB: usize = super::ATTENTION_ROWS;

#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    head_dim: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    let need = super::attention_f32_scratch(head_dim, k.rows);
    check_attention_bounds(&q, &k, &v, heads, head_dim, &out, scratch.len(), need);
    // SAFETY: AVX-512 support was checked by the dispatcher; bounds asserted above.
    unsafe { attention_impl::<false>(q, k, v, heads, head_dim, scale, out, scratch) }
}

/// `Precision::Bf16` attention on AVX-512F (see the module comment).
#[allow(clippy::too_many_arguments)]
pub fn attention_bf16_emulated(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    head_dim: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    let need = super::attention_bf16_emulated_scratch(head_dim, k.rows);
    check_attention_bounds(&q, &k, &v, heads, head_dim, &out, scratch.len(), need);
    // SAFETY: AVX-512 support was checked by the dispatcher; bounds asserted above.
    unsafe { attention_impl::<true>(q, k, v, heads, head_dim, scale, out, scratch) }
}

#[target_feature(enable = "avx512f,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_impl<const BF16: bool>(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    dh: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    let nk = k.rows;
    let (kt, rest) = scratch.split_at_mut(dh * nk);
    let (scores, rest) = rest.split_at_mut(QB * nk);
    // bf16 only: this head's rounded values and a block's rounded queries.
    let (vr, qr) = if BF16 {
        let (vr, rest) = rest.split_at_mut(nk * dh);
        (vr, &mut rest[..QB * dh])
    } else {
        (&mut [][..], &mut [][..])
    };
    let round = |x: f32| if BF16 { bf16_round(x) } else { x };
    let log2e = _mm512_set1_ps(core::f32::consts::LOG2_E);
    for h in 0..heads {
        let c0 = h * dh;
        for j in 0..nk {
            let row = k.data.as_ptr().add(j * k.stride + c0);
            for d in 0..dh {
                *kt.get_unchecked_mut(d * nk + j) = round(*row.add(d));
            }
        }
        if BF16 {
            for j in 0..nk {
                let row = v.data.as_ptr().add(j * v.stride + c0);
                let mut d = 0;
                while d < dh {
                    let m = mask(dh - d);
                    let x = bf16_round_v(_mm512_maskz_loadu_ps(m, row.add(d)));
                    _mm512_mask_storeu_ps(vr.as_mut_ptr().add(j * dh + d), m, x);
                    d += 16;
                }
            }
        }

        let mut i0 = 0;
        while i0 < q.rows {
            let rb = (q.rows - i0).min(QB);
            if BF16 {
                for r in 0..rb {
                    let row = q.data.as_ptr().add((i0 + r) * q.stride + c0);
                    for d in 0..dh {
                        *qr.get_unchecked_mut(r * dh + d) = bf16_round(*row.add(d));
                    }
                }
            }
            // Queries come from `qr` (rounded) in bf16, from `q` itself in f32.
            let (qsrc, qstride, qcol) = if BF16 {
                (qr.as_ptr(), dh, 0)
            } else {
                (q.data.as_ptr(), q.stride, c0)
            };
            let qrow = |r: usize| if BF16 { r } else { i0 + r };
            // Scores: s[r][j] = scale · q[i0+r] · k[j], 48 keys (3 registers) at a
            // time so each broadcast query element feeds 3 FMAs.
            let mut j = 0;
            while j < nk {
                let n = (nk - j).min(48);
                let masks: [__mmask16; 3] =
                    core::array::from_fn(|b| mask(n.saturating_sub(16 * b)));
                let mut acc = [[_mm512_setzero_ps(); 3]; QB];
                // bf16 sums in `Precision::Bf16`'s order: with exact products, the same bits.
                for d in pair_order(dh, BF16) {
                    let base = kt.as_ptr().add(d * nk + j);
                    let kv: [__m512; 3] =
                        core::array::from_fn(|b| _mm512_maskz_loadu_ps(masks[b], base.add(16 * b)));
                    for (r, a) in acc.iter_mut().enumerate().take(rb) {
                        let qv = _mm512_set1_ps(*qsrc.add(qrow(r) * qstride + qcol + d));
                        for b in 0..3 {
                            a[b] = _mm512_fmadd_ps(qv, kv[b], a[b]);
                        }
                    }
                }
                // bf16: logits in base 2, as `scalar::attention` makes them.
                let vs = _mm512_set1_ps(if BF16 { bf16_score_scale(scale) } else { scale });
                for (r, a) in acc.iter().enumerate().take(rb) {
                    for b in 0..3 {
                        if masks[b] != 0 {
                            _mm512_mask_storeu_ps(
                                scores.as_mut_ptr().add(r * nk + j + 16 * b),
                                masks[b],
                                _mm512_mul_ps(a[b], vs),
                            );
                        }
                    }
                }
                j += n;
            }
            // Softmax of each score row.
            let mut inv_rows = [1.0f32; QB];
            for (r, inv_row) in inv_rows.iter_mut().enumerate().take(rb) {
                let s = scores.as_mut_ptr().add(r * nk);
                let mut mx = f32::NEG_INFINITY;
                for j in 0..nk {
                    mx = mx.max(*s.add(j));
                }
                let vmax = _mm512_set1_ps(mx);
                let mut sum = _mm512_setzero_ps();
                let mut j = 0;
                while j < nk {
                    let n = (nk - j).min(16);
                    let m = mask(n);
                    let x = _mm512_maskz_loadu_ps(m, s.add(j));
                    let d = _mm512_sub_ps(x, vmax);
                    let e = exp2_clamped_below(if BF16 { d } else { _mm512_mul_ps(d, log2e) });
                    let e = if BF16 { bf16_round_v(e) } else { e };
                    let e = _mm512_maskz_mov_ps(m, e);
                    _mm512_mask_storeu_ps(s.add(j), m, e);
                    if !BF16 {
                        sum = _mm512_add_ps(sum, e);
                    }
                    j += n;
                }
                if BF16 {
                    // The weights' total in the order `vdpbf16ps` adds them, applied to
                    // the output below.
                    *inv_row = 1.0 / bf16_weight_sum(core::slice::from_raw_parts(s, nk));
                    continue;
                }
                let inv = 1.0 / _mm512_reduce_add_ps(sum);
                let inv = _mm512_set1_ps(inv);
                let mut j = 0;
                while j < nk {
                    let n = (nk - j).min(16);
                    let m = mask(n);
                    let x = _mm512_maskz_loadu_ps(m, s.add(j));
                    _mm512_mask_storeu_ps(s.add(j), m, _mm512_mul_ps(x, inv));
                    j += n;
                }
            }
            // out[i0+r][c0..c0+dh] = Σ_j p[r][j] · v[j][c0..c0+dh], 64 columns (4
            // registers) at a time so each broadcast probability feeds 4 FMAs.
            let mut c = 0;
            while c < dh {
                let n = (dh - c).min(64);
                let masks: [__mmask16; 4] =
                    core::array::from_fn(|b| mask(n.saturating_sub(16 * b)));
                let mut acc = [[_mm512_setzero_ps(); 4]; QB];
                for j in pair_order(nk, BF16) {
                    let base = if BF16 {
                        vr.as_ptr().add(j * dh + c)
                    } else {
                        v.data.as_ptr().add(j * v.stride + c0 + c)
                    };
                    let vv: [__m512; 4] =
                        core::array::from_fn(|b| _mm512_maskz_loadu_ps(masks[b], base.add(16 * b)));
                    for (r, a) in acc.iter_mut().enumerate().take(rb) {
                        let p = _mm512_set1_ps(*scores.as_ptr().add(r * nk + j));
                        for b in 0..4 {
                            a[b] = _mm512_fmadd_ps(p, vv[b], a[b]);
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate().take(rb) {
                    let dst = out.data.as_ptr().add((i0 + r) * out.stride + c0 + c) as *mut f32;
                    let inv = _mm512_set1_ps(inv_rows[r]);
                    for b in 0..4 {
                        if masks[b] != 0 {
                            let y = if BF16 { _mm512_mul_ps(a[b], inv) } else { a[b] };
                            _mm512_mask_storeu_ps(dst.add(16 * b), masks[b], y);
                        }
                    }
                }
                c += n;
            }
            i0 += rb;
        }
    }
}
