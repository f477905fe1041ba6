//! Multi-head attention with bf16 products (`Precision::Bf16`) for AVX-512 BF16:
//! `vdpbf16ps` multiplies 32 bf16 pairs into 16 f32 sums, twice the work per instruction
//! of an f32 FMA. Per head, keys are stored as bf16 pairs along the head dimension and
//! transposed (lane = key), values as bf16 pairs along the keys (lane = column), so both
//! products are broadcast-one-pair, multiply-16-lanes loops with no horizontal sums.
//! The softmax weights are rounded to bf16 before they are summed, and the output is
//! divided by that sum. `vdpbf16ps`'s order (pairs, odd element first) is the order
//! `Precision::Bf16` fixes, so this is `scalar::attention` bit for bit.

use core::arch::x86_64::*;
use core::mem::transmute;

use super::scalar::{bf16_score_scale, check_attention_bounds, MatMut, MatRef};
use super::simd_attention_f32::{prefetch_next_head, PanelLayout};
use super::x86_avx512_math::{lanes as mask, softmax_weight, sum16, F32x16};

/// Query rows per block: 6 rows × 4 registers of p·v sums (24) plus 4 of values and a
/// broadcast fit the 32 vector registers.
const QB: usize = super::ATTENTION_BF16_ROWS;

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
    let need = super::attention_bf16_scratch(head_dim, k.rows);
    check_attention_bounds(&q, &k, &v, heads, head_dim, &out, scratch.len(), need);
    // SAFETY: AVX-512 BF16 support was checked by the dispatcher; bounds asserted above.
    unsafe { attention_impl(q, k, v, heads, head_dim, scale, out, scratch) }
}

/// Up to 32 floats from `src` (`n` of them, the rest zero) as 16 bf16 pairs: lane `i`
/// holds elements `2i` (low half) and `2i + 1`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
unsafe fn pairs32(src: *const f32, n: usize) -> __m512i {
    let lo = _mm512_maskz_loadu_ps(mask(n), src);
    let hi = _mm512_maskz_loadu_ps(mask(n.saturating_sub(16)), src.add(16));
    transmute::<__m512bh, __m512i>(_mm512_cvtne2ps_pbh(hi, lo))
}

/// The 16 × 16 transpose of 32-bit lanes: `out[c]` lane `r` is `rows[r]` lane `c`.
/// Pairs of rows interleave by 32 then 64 bits (within each 128-bit block), then the
/// 128-bit blocks of four rows at a time are transposed as a 4 × 4 grid.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn transpose16(r: [__m512i; 16]) -> [__m512i; 16] {
    let t: [__m512i; 16] = core::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_epi32(a, b)
        } else {
            _mm512_unpackhi_epi32(a, b)
        }
    });
    // u[4g + m]: column 4ℓ + m of rows 4g..4g + 4, in each 128-bit block ℓ.
    let u: [__m512i; 16] = core::array::from_fn(|i| {
        let (g, m) = (i / 4, i % 4);
        let (a, b) = (t[4 * g + m / 2], t[4 * g + 2 + m / 2]);
        if m % 2 == 0 {
            _mm512_unpacklo_epi64(a, b)
        } else {
            _mm512_unpackhi_epi64(a, b)
        }
    });
    let mut out = [_mm512_setzero_si512(); 16];
    for m in 0..4 {
        let (a0, a1, a2, a3) = (u[m], u[4 + m], u[8 + m], u[12 + m]);
        let b0 = _mm512_shuffle_i32x4::<0x44>(a0, a1);
        let b1 = _mm512_shuffle_i32x4::<0xEE>(a0, a1);
        let b2 = _mm512_shuffle_i32x4::<0x44>(a2, a3);
        let b3 = _mm512_shuffle_i32x4::<0xEE>(a2, a3);
        out[m] = _mm512_shuffle_i32x4::<0x88>(b0, b2);
        out[4 + m] = _mm512_shuffle_i32x4::<0xDD>(b0, b2);
        out[8 + m] = _mm512_shuffle_i32x4::<0x88>(b1, b3);
        out[12 + m] = _mm512_shuffle_i32x4::<0xDD>(b1, b3);
    }
    out
}

#[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn attention_impl(
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
    let (dhp, nkp) = (dh.div_ceil(2), nk.div_ceil(2));
    let words: &mut [u32] = bytemuck::cast_slice_mut(scratch);
    let (kt, rest) = words.split_at_mut(dhp * nk);
    let (vp, rest) = rest.split_at_mut(nkp * dh);
    let (qp, rest) = rest.split_at_mut(QB * dhp);
    let (scores, rest) = rest.split_at_mut(QB * nk);
    let pp = &mut rest[..QB * nkp];
    let scores: &mut [f32] = bytemuck::cast_slice_mut(scores);
    let keys = PanelLayout::new(nk, KEY_PANEL, dhp);
    let vscale = _mm512_set1_ps(bf16_score_scale(scale));
    // bf16 1.0 in both halves: a dot product with it sums a vector's pairs.
    let ones: __m512bh = transmute(_mm512_set1_epi32(0x3F80_3F80));
    // Interleaves two rows' bf16 (a0..a15, b0..b15) into pairs (a0 b0, a1 b1, …).
    let zip: [u16; 32] = core::array::from_fn(|e| ((e / 2) + 16 * (e % 2)) as u16);
    let zip = _mm512_loadu_si512(zip.as_ptr() as *const _);
    for h in 0..heads {
        let c0 = h * dh;
        // Key pairs, transposed: (k[j][2p], k[j][2p+1]) in `keys`' panel of key j, row p,
        // 16 keys × 16 pairs at a time through registers (a group never straddles two
        // panels).
        let mut j0 = 0;
        while j0 < nk {
            let nj = (nk - j0).min(16);
            let mut p0 = 0;
            while p0 < dhp {
                let np = (dhp - p0).min(16);
                let rows: [__m512i; 16] = core::array::from_fn(|i| {
                    if i < nj {
                        let row = k.data.as_ptr().add((j0 + i) * k.stride + c0 + 2 * p0);
                        pairs32(row, (dh - 2 * p0).min(32))
                    } else {
                        _mm512_setzero_si512()
                    }
                });
                let cols = transpose16(rows);
                let (at, stride) = keys.offset(j0);
                for (p, col) in cols.iter().enumerate().take(np) {
                    _mm512_mask_storeu_epi32(
                        kt.as_mut_ptr().add(at + (p0 + p) * stride) as *mut _,
                        mask(nj),
                        *col,
                    );
                }
                p0 += np;
            }
            j0 += nj;
        }
        // Value pairs: vp[jp·dh + c] = (v[2jp][c], v[2jp+1][c]).
        for jp in 0..nkp {
            let r0 = v.data.as_ptr().add(2 * jp * v.stride + c0);
            let has_r1 = 2 * jp + 1 < nk;
            let mut c = 0;
            while c < dh {
                let n = (dh - c).min(16);
                let a = _mm512_maskz_loadu_ps(mask(n), r0.add(c));
                let b = if has_r1 {
                    _mm512_maskz_loadu_ps(mask(n), r0.add(v.stride + c))
                } else {
                    _mm512_setzero_ps()
                };
                let ab: __m512i = transmute(_mm512_cvtne2ps_pbh(b, a));
                _mm512_mask_storeu_epi32(
                    vp.as_mut_ptr().add(jp * dh + c) as *mut _,
                    mask(n),
                    _mm512_permutexvar_epi16(zip, ab),
                );
                c += n;
            }
        }
        // The next head's key and value columns come from L3 (the q, k and v buffers
        // together outgrow L2): each row block prefetches its share of their lines.
        let blocks = q.rows.div_ceil(QB);
        let next = (h + 1 < heads).then(|| c0 + dh);
        let mut i0 = 0;
        while i0 < q.rows {
            let rb = (q.rows - i0).min(QB);
            if let Some(nc) = next {
                prefetch_next_head::<F32x16>(&k, &v, i0 / QB, blocks, nc, dh);
            }
            for r in 0..rb {
                let row = q.data.as_ptr().add((i0 + r) * q.stride + c0);
                let mut d = 0;
                while d < dh {
                    let n = (dh - d).min(32);
                    _mm512_mask_storeu_epi32(
                        qp.as_mut_ptr().add(r * dhp + d / 2) as *mut _,
                        mask(n.div_ceil(2)),
                        pairs32(row.add(d), n),
                    );
                    d += n;
                }
            }
            // Scores: s[r][j] = scale·log2(e) · Σ_p q-pair[r][p] · k-pair[p][j], 48 keys (3
            // registers) at a time so each broadcast pair feeds 3 dot products; fewer
            // registers for the last keys, so a 196-key row wastes no work.
            // Each row's running maximum, lane by lane, kept as the scores are stored.
            let mut mx = [_mm512_set1_ps(f32::NEG_INFINITY); QB];
            let mut j = 0;
            while j < nk {
                let n = (nk - j).min(KEY_PANEL);
                let args = (kt as &[u32], keys, qp as &[u32], nk, dhp, j, n, vscale);
                debug_assert!(n == KEY_PANEL || j + n == nk);
                macro_rules! go {
                    ($($r:literal),*) => {
                        match (rb, n.div_ceil(16)) {
                            $(($r, 3) => scores_block::<$r, 3>(args, scores, &mut mx),
                              ($r, 2) => scores_block::<$r, 2>(args, scores, &mut mx),
                              ($r, _) => scores_block::<$r, 1>(args, scores, &mut mx),)*
                            _ => unreachable!(),
                        }
                    };
                }
                go!(1, 2, 3, 4, 5, 6);
                j += n;
            }
            // Softmax weights e = exp2(s − max) (the scores are in base 2), rounded to
            // bf16 pairs along the keys; their sum (of the rounded values) divides the
            // output.
            let mut inv = [0.0f32; QB];
            for (r, inv_r) in inv.iter_mut().enumerate().take(rb) {
                let s = scores.as_ptr().add(r * nk);
                let vmax = _mm512_set1_ps(_mm512_reduce_max_ps(mx[r]));
                let mut sum = _mm512_setzero_ps();
                let mut j = 0;
                while j < nk {
                    let n = (nk - j).min(32);
                    let (m0, m1) = (mask(n), mask(n.saturating_sub(16)));
                    let e = |m: __mmask16, at: usize| {
                        let x = _mm512_maskz_loadu_ps(m, s.add(at));
                        _mm512_maskz_mov_ps(m, softmax_weight(_mm512_sub_ps(x, vmax)))
                    };
                    let pair = _mm512_cvtne2ps_pbh(e(m1, j + 16), e(m0, j));
                    sum = _mm512_dpbf16_ps(sum, pair, ones);
                    _mm512_mask_storeu_epi32(
                        pp.as_mut_ptr().add(r * nkp + j / 2) as *mut _,
                        mask(n.div_ceil(2)),
                        transmute::<__m512bh, __m512i>(pair),
                    );
                    j += n;
                }
                *inv_r = 1.0 / sum16(sum);
            }
            // out[i0+r][c0..c0+dh] = inv[r] · Σ_jp e-pair[r][jp] · v-pair[jp][c], 64
            // columns (4 registers) at a time.
            let dst = out.data.as_ptr().add(i0 * out.stride + c0) as *mut f32;
            let mut c = 0;
            while c < dh {
                let n = (dh - c).min(64);
                let args = (vp as &[u32], pp as &[u32], nkp, dh, c, n);
                macro_rules! go {
                    ($($r:literal),*) => {
                        match rb {
                            $($r => pv_block::<$r>(args, &inv, dst, out.stride),)*
                            _ => unreachable!(),
                        }
                    };
                }
                go!(1, 2, 3, 4, 5, 6);
                c += n;
            }
            i0 += rb;
        }
    }
}

/// Keys per panel of the transposed key pairs (`PanelLayout`): a score block's 3
/// registers, so its loads walk one contiguous panel. As `dhp` rows of `nk`, its 32
/// loads per register touched 32 pages 4 KiB apart at 1,024 keys, more streams than the
/// hardware prefetchers follow.
const KEY_PANEL: usize = 48;

/// `NB` registers (up to 16·NB keys from `j`, `n` of them valid, the whole of their
/// panel) of score rows for `R` query rows.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
#[allow(clippy::type_complexity)]
unsafe fn scores_block<const R: usize, const NB: usize>(
    (kt, keys, qp, nk, dhp, j, n, vscale): (
        &[u32],
        PanelLayout,
        &[u32],
        usize,
        usize,
        usize,
        usize,
        __m512,
    ),
    scores: &mut [f32],
    mx: &mut [__m512; QB],
) {
    let masks: [__mmask16; NB] = core::array::from_fn(|b| mask(n.saturating_sub(16 * b)));
    let mut acc = [[_mm512_setzero_ps(); NB]; R];
    // This block's panel: `dhp` rows of its `n` keys.
    let (at, stride) = keys.offset(j);
    for p in 0..dhp {
        let base = kt.as_ptr().add(at + p * stride);
        let kv: [__m512bh; NB] = core::array::from_fn(|b| {
            transmute(_mm512_maskz_loadu_epi32(
                masks[b],
                base.add(16 * b) as *const _,
            ))
        });
        for (r, a) in acc.iter_mut().enumerate() {
            let qv: __m512bh = transmute(_mm512_set1_epi32(*qp.as_ptr().add(r * dhp + p) as i32));
            for b in 0..NB {
                a[b] = _mm512_dpbf16_ps(a[b], qv, kv[b]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        for b in 0..NB {
            let s = _mm512_mul_ps(a[b], vscale);
            _mm512_mask_storeu_ps(scores.as_mut_ptr().add(r * nk + j + 16 * b), masks[b], s);
            mx[r] = _mm512_mask_max_ps(mx[r], masks[b], mx[r], s);
        }
    }
}

/// `out` columns `c..c + n` (up to 64) of `R` query rows: `inv[r] · Σ_jp e-pair[r][jp] ·
/// v-pair[jp][c]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,fma")]
#[allow(clippy::type_complexity)]
unsafe fn pv_block<const R: usize>(
    (vp, pp, nkp, dh, c, n): (&[u32], &[u32], usize, usize, usize, usize),
    inv: &[f32; QB],
    dst: *mut f32,
    out_stride: usize,
) {
    let masks: [__mmask16; 4] = core::array::from_fn(|b| mask(n.saturating_sub(16 * b)));
    let mut acc = [[_mm512_setzero_ps(); 4]; R];
    for jp in 0..nkp {
        let base = vp.as_ptr().add(jp * dh + c);
        let vv: [__m512bh; 4] = core::array::from_fn(|b| {
            transmute(_mm512_maskz_loadu_epi32(
                masks[b],
                base.add(16 * b) as *const _,
            ))
        });
        for (r, a) in acc.iter_mut().enumerate() {
            let p: __m512bh = transmute(_mm512_set1_epi32(*pp.as_ptr().add(r * nkp + jp) as i32));
            for b in 0..4 {
                a[b] = _mm512_dpbf16_ps(a[b], p, vv[b]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        let row = dst.add(r * out_stride + c);
        let vinv = _mm512_set1_ps(inv[r]);
        for b in 0..4 {
            if masks[b] != 0 {
                _mm512_mask_storeu_ps(row.add(16 * b), masks[b], _mm512_mul_ps(a[b], vinv));
            }
        }
    }
}
