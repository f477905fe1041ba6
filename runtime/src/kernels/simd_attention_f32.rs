//! Multi-head attention in f32 registers, generic over the ISA ([`F32Simd`]): the
//! AVX-512 kernel's plan for the ISAs without a bf16 dot product and with fewer lanes
//! (AArch64 NEON, x86 AVX2). Per head, keys are transposed once into scratch so a block
//! of score rows is FMAs of broadcast query elements against `NB` registers of keys (no
//! horizontal sums); the softmax uses the vector exponential; P·V runs 4 query rows ×
//! `NB` registers of columns at a time.
//!
//! `BF16 = true` computes `Precision::Bf16` (Arm's bf16 dot products round differently
//! from `vdpbf16ps`, and AVX2 has none, so it is emulated): operands rounded to bf16 as
//! they are staged, exact products in f32 FMAs, every sum in the order
//! `Precision::Bf16` fixes, weights left unnormalised and the output divided by their
//! total: the same bits as the scalar reference. `BF16 = false` is within the float
//! tolerance of `scalar::attention`. Keys and columns past the last full register go
//! through scalar code doing the same operations.

use super::scalar::{
    bf16_round, bf16_score_scale, bf16_weight_sum, check_attention_bounds, exp2_clamped,
    pair_order, MatMut, MatRef,
};
use super::simd::F32Simd;

/// Query rows per block.
const QB: usize = super::ATTENTION_ROWS;

/// The bounds check of either precision's kernel: `BF16` needs room for rounded values
/// and queries too.
#[allow(clippy::too_many_arguments)]
pub(super) fn check<const BF16: bool>(
    q: &MatRef,
    k: &MatRef,
    v: &MatRef,
    heads: usize,
    head_dim: usize,
    out: &MatMut,
    scratch: usize,
) {
    let need = if BF16 {
        super::attention_bf16_emulated_scratch(head_dim, k.rows)
    } else {
        super::attention_f32_scratch(head_dim, k.rows)
    };
    check_attention_bounds(q, k, v, heads, head_dim, out, scratch, need);
}

/// # Safety
/// `S`'s features are enabled; [`check`] passed for these arguments.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attention<S: F32Simd, const NB: usize, const BF16: bool>(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    dh: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    let lanes = S::LANES;
    let wide = NB * lanes;
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
    // bf16 scores are logits in base 2, as `scalar::attention` makes them.
    let score_scale = if BF16 { bf16_score_scale(scale) } else { scale };
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
                let dst = vr.as_mut_ptr().add(j * dh);
                let mut d = 0;
                while d + lanes <= dh {
                    S::load(row.add(d)).bf16_round().store(dst.add(d));
                    d += lanes;
                }
                for d in d..dh {
                    *dst.add(d) = bf16_round(*row.add(d));
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
            let (qb, qs) = if BF16 {
                (qr.as_ptr(), dh)
            } else {
                (q.data.as_ptr().add(i0 * q.stride + c0), q.stride)
            };
            let block = Block {
                q: qb,
                qs,
                rows: rb,
                nk,
                dh,
            };
            let sp = scores.as_mut_ptr();
            let kp = kt.as_ptr();
            let mut j = 0;
            while j + wide <= nk {
                block.scores::<S, NB, BF16>(kp, j, score_scale, sp);
                j += wide;
            }
            while j + lanes <= nk {
                block.scores::<S, 1, BF16>(kp, j, score_scale, sp);
                j += lanes;
            }
            for j in j..nk {
                for r in 0..rb {
                    let mut acc = 0.0f32;
                    for d in pair_order(dh, BF16) {
                        acc += *qb.add(r * qs + d) * *kp.add(d * nk + j);
                    }
                    *sp.add(r * nk + j) = acc * score_scale;
                }
            }

            let mut inv_rows = [1.0f32; QB];
            for (r, inv) in inv_rows.iter_mut().enumerate().take(rb) {
                let row = core::slice::from_raw_parts_mut(sp.add(r * nk), nk);
                *inv = softmax_row::<S, BF16>(row);
            }

            // bf16: the rounded values; f32: the values themselves.
            let (vb, vs) = if BF16 {
                (vr.as_ptr(), dh)
            } else {
                (v.data.as_ptr().add(c0), v.stride)
            };
            let (ob, os) = (
                out.data.as_ptr().add(i0 * out.stride + c0) as *mut f32,
                out.stride,
            );
            let mut c = 0;
            while c + wide <= dh {
                block.weighted_values::<S, NB, BF16>(sp, vb.add(c), vs, &inv_rows, ob.add(c), os);
                c += wide;
            }
            while c + lanes <= dh {
                block.weighted_values::<S, 1, BF16>(sp, vb.add(c), vs, &inv_rows, ob.add(c), os);
                c += lanes;
            }
            for c in c..dh {
                for (r, inv) in inv_rows.iter().enumerate().take(rb) {
                    let mut acc = 0.0f32;
                    for j in pair_order(nk, BF16) {
                        acc += *sp.add(r * nk + j) * *vb.add(j * vs + c);
                    }
                    *ob.add(r * os + c) = if BF16 { acc * inv } else { acc };
                }
            }
            i0 += rb;
        }
    }
}

/// A block of up to [`QB`] query rows of one head.
struct Block {
    /// Row 0's first element of this head; rows `qs` apart.
    q: *const f32,
    qs: usize,
    rows: usize,
    nk: usize,
    dh: usize,
}

impl Block {
    /// Scores of keys `j..j + NB·LANES` for every row: `s[r][j] = scale · q[r]·k[j]`,
    /// each broadcast query element feeding NB FMAs.
    #[inline(always)]
    unsafe fn scores<S: F32Simd, const NB: usize, const BF16: bool>(
        &self,
        kt: *const f32,
        j: usize,
        scale: f32,
        s: *mut f32,
    ) {
        let mut acc = [[S::splat(0.0); NB]; QB];
        // bf16 sums in `Precision::Bf16`'s order: with exact products, the same bits.
        for d in pair_order(self.dh, BF16) {
            let base = kt.add(d * self.nk + j);
            let kv: [S; NB] = core::array::from_fn(|b| S::load(base.add(b * S::LANES)));
            for (r, a) in acc.iter_mut().enumerate().take(self.rows) {
                let qv = S::splat(*self.q.add(r * self.qs + d));
                for b in 0..NB {
                    a[b] = a[b].mul_add(qv, kv[b]);
                }
            }
        }
        let vs = S::splat(scale);
        for (r, a) in acc.iter().enumerate().take(self.rows) {
            for (b, &a) in a.iter().enumerate() {
                a.mul(vs).store(s.add(r * self.nk + j + b * S::LANES));
            }
        }
    }

    /// `out[r][c..c + NB·LANES] = Σ_j p[r][j] · v[j][c..]` (bf16: times the row's 1/Σp),
    /// each broadcast weight feeding NB FMAs; `vb` is value row 0 at column c.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    unsafe fn weighted_values<S: F32Simd, const NB: usize, const BF16: bool>(
        &self,
        p: *const f32,
        vb: *const f32,
        vs: usize,
        inv: &[f32; QB],
        out: *mut f32,
        os: usize,
    ) {
        let mut acc = [[S::splat(0.0); NB]; QB];
        for j in pair_order(self.nk, BF16) {
            let base = vb.add(j * vs);
            let vv: [S; NB] = core::array::from_fn(|b| S::load(base.add(b * S::LANES)));
            for (r, a) in acc.iter_mut().enumerate().take(self.rows) {
                let pv = S::splat(*p.add(r * self.nk + j));
                for b in 0..NB {
                    a[b] = a[b].mul_add(pv, vv[b]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate().take(self.rows) {
            let vinv = S::splat(inv[r]);
            for (b, &a) in a.iter().enumerate() {
                let y = if BF16 { a.mul(vinv) } else { a };
                y.store(out.add(r * os + b * S::LANES));
            }
        }
    }
}

/// One score row to softmax weights in place. f32: normalised, returns 1. bf16: the
/// rounded, unnormalised `exp2(s − max)`, returning 1 / their total in the order
/// `Precision::Bf16` fixes.
#[inline(always)]
unsafe fn softmax_row<S: F32Simd, const BF16: bool>(s: &mut [f32]) -> f32 {
    let (n, lanes) = (s.len(), S::LANES);
    let p = s.as_mut_ptr();
    // NaN skipped as `f32::max` skips it; the maximum itself is exact in any order.
    let mut vmax = S::splat(f32::NEG_INFINITY);
    let mut j = 0;
    while j + lanes <= n {
        vmax = vmax.max_skip_nan(S::load(p.add(j)));
        j += lanes;
    }
    let mut mx = vmax.reduce_max();
    for &x in &s[j..] {
        mx = mx.max(x);
    }
    let log2e = core::f32::consts::LOG2_E;
    let (vm, vl) = (S::splat(mx), S::splat(log2e));
    let mut vsum = S::splat(0.0);
    let mut j = 0;
    while j + lanes <= n {
        let d = S::load(p.add(j)).sub(vm);
        let e = if BF16 { d } else { d.mul(vl) }.exp2_clamped_below();
        let e = if BF16 { e.bf16_round() } else { e };
        e.store(p.add(j));
        vsum = vsum.add(e);
        j += lanes;
    }
    let mut sum = vsum.reduce_add();
    for x in &mut s[j..] {
        let d = *x - mx;
        *x = if BF16 {
            bf16_round(exp2_clamped(d))
        } else {
            exp2_clamped(d * log2e)
        };
        sum += *x;
    }
    if BF16 {
        return 1.0 / bf16_weight_sum(s);
    }
    let inv = 1.0 / sum;
    for x in s.iter_mut() {
        *x *= inv;
    }
    1.0
}
