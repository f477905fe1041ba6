//! Multi-head attention in f32 registers, written once over the ISA ([`F32Simd`]) and
//! instantiated for AArch64 NEON, x86 AVX2 and AVX-512 (fp32 attention everywhere; bf16
//! where the CPU has no bf16 dot product matching `vdpbf16ps`). Per head, keys are
//! transposed once into scratch so a block of score rows is FMAs of broadcast query
//! elements against `NB` registers of keys (no horizontal sums); the softmax uses the
//! vector exponential; P·V runs up to `QB` query rows × `NB` registers of columns at a
//! time, the row count a constant so every accumulator stays in a register. Keys and
//! (bf16) values are staged in panels `NB` registers wide ([`PanelLayout`]), so each block
//! reads one contiguous run of memory.
//!
//! `BF16 = true` computes `Precision::Bf16` (Arm's bf16 dot products round differently
//! from `vdpbf16ps`, and AVX2 has none, so it is emulated): operands rounded to bf16 as
//! they are staged, exact products in f32 FMAs, every sum in the order
//! `Precision::Bf16` fixes, weights left unnormalised and the output divided by their
//! total: the same bits as the scalar reference. `BF16 = false` is within the float
//! tolerance of `scalar::attention`. The last keys and softmax weights go through a
//! partial register (the same operations), value columns past the last full register
//! through scalar code doing the same operations.

use super::scalar::{bf16_round, bf16_score_scale, check_attention_bounds, sum16, MatMut, MatRef};
use super::simd::F32Simd;

/// Query rows per block at most (scratch is sized for this many score rows).
const MAX_QB: usize = super::ATTENTION_ROWS;
/// The widest register an ISA may bring, in lanes (stack buffers are this long).
const MAX_LANES: usize = 16;

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

/// An ISA's two public entry points to the plan, the same for every ISA but for the
/// register type, the block width and the features: `attention` (fp32, within tolerance
/// of the reference) and `attention_bf16` (`Precision::Bf16`, the reference's bits).
/// Each checks its bounds, then runs the plan inside a function that enables
/// `$features`, so the plan's `inline(always)` code compiles to that ISA's instructions.
macro_rules! entry_points {
    ($simd:ty, $nb:expr, $qb:expr, $features:literal) => {
        use $crate::kernels::scalar::{MatMut, MatRef};

        /// fp32 attention, within the float tolerance of `scalar::attention`.
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
            run::<false>(q, k, v, heads, head_dim, scale, out, scratch)
        }

        /// `Precision::Bf16` attention, emulated in f32 FMAs: the reference's bits.
        #[allow(clippy::too_many_arguments)]
        pub fn attention_bf16(
            q: MatRef,
            k: MatRef,
            v: MatRef,
            heads: usize,
            head_dim: usize,
            scale: f32,
            out: MatMut,
            scratch: &mut [f32],
        ) {
            run::<true>(q, k, v, heads, head_dim, scale, out, scratch)
        }

        #[allow(clippy::too_many_arguments)]
        fn run<const BF16: bool>(
            q: MatRef,
            k: MatRef,
            v: MatRef,
            heads: usize,
            head_dim: usize,
            scale: f32,
            out: MatMut,
            scratch: &mut [f32],
        ) {
            $crate::kernels::simd_attention_f32::check::<BF16>(
                &q,
                &k,
                &v,
                heads,
                head_dim,
                &out,
                scratch.len(),
            );
            // SAFETY: the dispatcher calls these only on CPUs with `$features`; the
            // bounds were checked above.
            unsafe { run_with_features::<BF16>(q, k, v, heads, head_dim, scale, out, scratch) }
        }

        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn run_with_features<const BF16: bool>(
            q: MatRef,
            k: MatRef,
            v: MatRef,
            heads: usize,
            dh: usize,
            scale: f32,
            out: MatMut,
            scratch: &mut [f32],
        ) {
            $crate::kernels::simd_attention_f32::attention::<$simd, { $nb }, { $qb }, BF16>(
                q, k, v, heads, dh, scale, out, scratch,
            )
        }
    };
}
pub(super) use entry_points;

/// # Safety
/// `S`'s features are enabled; [`check`] passed for these arguments.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attention<S: F32Simd, const NB: usize, const QB: usize, const BF16: bool>(
    q: MatRef,
    k: MatRef,
    v: MatRef,
    heads: usize,
    dh: usize,
    scale: f32,
    out: MatMut,
    scratch: &mut [f32],
) {
    // The block dispatch below has arms for 1 to 6 rows.
    const { assert!(QB >= 1 && QB <= MAX_QB && QB <= 6) };
    let lanes = S::LANES;
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
    let wide = NB * lanes;
    let keys = PanelLayout::new(nk, wide, dh);
    let values = PanelLayout::new(dh, wide, nk);
    for h in 0..heads {
        let c0 = h * dh;
        for j in 0..nk {
            let row = k.data.as_ptr().add(j * k.stride + c0);
            let (dst, ds) = keys.at(kt.as_mut_ptr(), j);
            let dst = dst as *mut f32;
            let mut d = 0;
            if BF16 {
                // Rounded in registers, then scattered down the transposed column.
                let mut buf = [0.0f32; MAX_LANES];
                while d + lanes <= dh {
                    S::load(row.add(d)).bf16_round().store(buf.as_mut_ptr());
                    for (i, &x) in buf[..lanes].iter().enumerate() {
                        *dst.add((d + i) * ds) = x;
                    }
                    d += lanes;
                }
            }
            for d in d..dh {
                *dst.add(d * ds) = round(*row.add(d));
            }
        }
        if BF16 {
            for j in 0..nk {
                let row = v.data.as_ptr().add(j * v.stride + c0);
                let mut d = 0;
                while d + wide <= dh {
                    let (dst, ds) = values.at(vr.as_mut_ptr(), d);
                    let dst = dst as *mut f32;
                    for b in 0..NB {
                        let x = S::load(row.add(d + b * lanes)).bf16_round();
                        x.store(dst.add(j * ds + b * lanes));
                    }
                    d += wide;
                }
                let (dst, ds) = values.at(vr.as_mut_ptr(), d);
                let dst = dst as *mut f32;
                for (i, d) in (d..dh).enumerate() {
                    *dst.add(j * ds + i) = bf16_round(*row.add(d));
                }
            }
        }

        // The rows of q, k and v lie kilobytes apart, past what the hardware's stride
        // prefetchers follow, so a head's first pass over them waited on L2 or L3 for
        // every row (a quarter of AVX2's attention time): each row block asks for its
        // share of the next head's keys and values, and for the next block's queries.
        let blocks = q.rows.div_ceil(QB);
        let next = (h + 1 < heads).then_some(c0 + dh);
        let mut i0 = 0;
        while i0 < q.rows {
            let rb = (q.rows - i0).min(QB);
            if let Some(nc) = next {
                prefetch_next_head::<S>(&k, &v, i0 / QB, blocks, nc, dh);
            }
            let (next_q, next_c) = match next {
                _ if i0 + rb < q.rows => (i0 + rb, c0),
                Some(nc) => (0, nc),
                None => (q.rows, c0),
            };
            prefetch_rows::<S>(&q, next_q..(next_q + QB).min(q.rows), next_c, dh);
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
            // bf16: the rounded values in column panels; f32: the values themselves.
            let (vb, vs) = if BF16 {
                (vr.as_ptr(), None)
            } else {
                (v.data.as_ptr().add(c0), Some(v.stride))
            };
            let block = Block {
                q: qb,
                qs,
                kt: kt.as_ptr(),
                keys,
                nk,
                dh,
                scale: score_scale,
                s: scores.as_mut_ptr(),
                v: vb,
                values,
                vs,
                out: out.data.as_ptr().add(i0 * out.stride + c0) as *mut f32,
                os: out.stride,
            };
            // The row count as a constant: every accumulator stays in a register.
            match rb {
                6 if QB >= 6 => block.run::<S, NB, BF16, 6>(),
                5 if QB >= 5 => block.run::<S, NB, BF16, 5>(),
                4 => block.run::<S, NB, BF16, 4>(),
                3 => block.run::<S, NB, BF16, 3>(),
                2 => block.run::<S, NB, BF16, 2>(),
                _ => block.run::<S, NB, BF16, 1>(),
            }
            i0 += rb;
        }
    }
}

/// `$body` over `$i` in `0..$n` in `pair_order(n, $pairs)`, written as a loop over
/// whole pairs: the iterator's filter for an odd `n` left a compare and branch, an index
/// swap and a multiply in every step of the hot loops above, which then issued more
/// scalar instructions than FMAs (and LLVM re-loaded constants inside them). A macro,
/// not a function taking a closure: a closure is compiled without its caller's target
/// features, so whenever LLVM declines to inline one (as it did once a block had 12
/// accumulators) every intrinsic in it became a call, 40 times slower.
macro_rules! pair_loop {
    ($pairs:expr, $n:expr, |$i:ident| $body:block) => {{
        let n: usize = $n;
        if $pairs {
            let mut at = 0;
            while at + 2 <= n {
                {
                    let $i = at + 1;
                    $body
                }
                {
                    let $i = at;
                    $body
                }
                at += 2;
            }
            if at < n {
                let $i = at;
                $body
            }
        } else {
            for $i in 0..n {
                $body
            }
        }
    }};
}

/// A block of query rows of one head, and where its inputs and output live.
struct Block {
    /// Row 0's first element of this head; rows `qs` apart.
    q: *const f32,
    qs: usize,
    /// The head's keys transposed, in panels of `keys`.
    kt: *const f32,
    keys: PanelLayout,
    nk: usize,
    dh: usize,
    /// What dot products are multiplied by.
    scale: f32,
    /// Score rows, `nk` apart.
    s: *mut f32,
    /// Value row 0 at this head's column 0: rows `vs` apart, or (`vs` none) in the
    /// column panels of `values`.
    v: *const f32,
    values: PanelLayout,
    vs: Option<usize>,
    /// Output row 0 at this head's column 0; rows `os` apart.
    out: *mut f32,
    os: usize,
}

impl Block {
    /// Scores, softmax and weighted values of `R` query rows.
    #[inline(always)]
    unsafe fn run<S: F32Simd, const NB: usize, const BF16: bool, const R: usize>(&self) {
        let (lanes, wide) = (S::LANES, NB * S::LANES);
        let mut j = 0;
        while j + wide <= self.nk {
            self.scores::<S, NB, BF16, R>(j);
            j += wide;
        }
        while j + lanes <= self.nk {
            self.scores::<S, 1, BF16, R>(j);
            j += lanes;
        }
        if j < self.nk {
            self.scores_partial::<S, BF16, R>(j, self.nk - j);
        }

        let mut inv = [1.0f32; R];
        for (r, inv) in inv.iter_mut().enumerate() {
            let row = core::slice::from_raw_parts_mut(self.s.add(r * self.nk), self.nk);
            *inv = softmax_row::<S, BF16>(row);
        }

        let mut c = 0;
        while c + wide <= self.dh {
            self.weighted_values::<S, NB, BF16, R>(c, &inv);
            c += wide;
        }
        while c + lanes <= self.dh {
            self.weighted_values::<S, 1, BF16, R>(c, &inv);
            c += lanes;
        }
        for c in c..self.dh {
            let (vc, vs) = self.value_column(c);
            for (r, inv) in inv.iter().enumerate() {
                let mut acc = 0.0f32;
                pair_loop!(BF16, self.nk, |j| {
                    acc += *self.s.add(r * self.nk + j) * *vc.add(j * vs);
                });
                *self.out.add(r * self.os + c) = if BF16 { acc * inv } else { acc };
            }
        }
    }

    /// Where value column `c` starts (key 0), and the distance between its keys.
    #[inline(always)]
    unsafe fn value_column(&self, c: usize) -> (*const f32, usize) {
        match self.vs {
            Some(vs) => (self.v.add(c), vs),
            None => self.values.at(self.v, c),
        }
    }

    /// Scores of keys `j..j + NB·LANES` for every row: `s[r][j] = scale · q[r]·k[j]`,
    /// each broadcast query element feeding NB FMAs.
    #[inline(always)]
    unsafe fn scores<S: F32Simd, const NB: usize, const BF16: bool, const R: usize>(
        &self,
        j: usize,
    ) {
        let mut acc = [[S::splat(0.0); NB]; R];
        let (kj, ks) = self.keys.at(self.kt, j);
        // bf16 sums in `Precision::Bf16`'s order: with exact products, the same bits.
        pair_loop!(BF16, self.dh, |d| {
            let base = kj.add(d * ks);
            let kv: [S; NB] = core::array::from_fn(|b| S::load(base.add(b * S::LANES)));
            for (r, a) in acc.iter_mut().enumerate() {
                let qv = S::splat(*self.q.add(r * self.qs + d));
                for b in 0..NB {
                    a[b] = a[b].mul_add(qv, kv[b]);
                }
            }
        });
        let vs = S::splat(self.scale);
        for (r, a) in acc.iter().enumerate() {
            for (b, &a) in a.iter().enumerate() {
                a.mul(vs).store(self.s.add(r * self.nk + j + b * S::LANES));
            }
        }
    }

    /// [`Block::scores`] of the last `n < LANES` keys: each key row's `n` values in a
    /// zero-padded register, the same sums lane by lane, `n` lanes stored.
    #[inline(always)]
    unsafe fn scores_partial<S: F32Simd, const BF16: bool, const R: usize>(
        &self,
        j: usize,
        n: usize,
    ) {
        let mut acc = [S::splat(0.0); R];
        let (kj, ks) = self.keys.at(self.kt, j);
        pair_loop!(BF16, self.dh, |d| {
            let kv = S::load_first(kj.add(d * ks), n);
            for (r, a) in acc.iter_mut().enumerate() {
                *a = a.mul_add(S::splat(*self.q.add(r * self.qs + d)), kv);
            }
        });
        let vs = S::splat(self.scale);
        for (r, a) in acc.iter().enumerate() {
            a.mul(vs).store_first(self.s.add(r * self.nk + j), n);
        }
    }

    /// `out[r][c..c + NB·LANES] = Σ_j p[r][j] · v[j][c..]` (bf16: times the row's 1/Σp),
    /// each broadcast weight feeding NB FMAs.
    #[inline(always)]
    unsafe fn weighted_values<S: F32Simd, const NB: usize, const BF16: bool, const R: usize>(
        &self,
        c: usize,
        inv: &[f32; R],
    ) {
        let mut acc = [[S::splat(0.0); NB]; R];
        let (vc, vs) = self.value_column(c);
        pair_loop!(BF16, self.nk, |j| {
            let base = vc.add(j * vs);
            let vv: [S; NB] = core::array::from_fn(|b| S::load(base.add(b * S::LANES)));
            for (r, a) in acc.iter_mut().enumerate() {
                let pv = S::splat(*self.s.add(r * self.nk + j));
                for b in 0..NB {
                    a[b] = a[b].mul_add(pv, vv[b]);
                }
            }
        });
        for (r, a) in acc.iter().enumerate() {
            let vinv = S::splat(inv[r]);
            for (b, &a) in a.iter().enumerate() {
                let y = if BF16 { a.mul(vinv) } else { a };
                y.store(self.out.add(r * self.os + c + b * S::LANES));
            }
        }
    }
}

/// `n` items (keys, or value columns) of `depth` values each, staged in panels of `w`
/// items: a full panel is `depth` rows of `w`, the last `n mod w` items one row of
/// `n mod w` each after them. A block's loads then walk one contiguous panel: with
/// the transposed keys as `dh` rows of `nk` (4 KiB apart at 1,024 keys), each score
/// block's 64 loads per register column touched 64 pages, more streams than the
/// hardware prefetchers follow, and score blocks waited on L2 for their keys.
#[derive(Clone, Copy)]
pub(super) struct PanelLayout {
    w: usize,
    depth: usize,
    /// Items in full panels.
    full: usize,
    /// Items after them.
    tail: usize,
}

impl PanelLayout {
    pub(super) fn new(n: usize, w: usize, depth: usize) -> Self {
        let full = n - n % w;
        Self {
            w,
            depth,
            full,
            tail: n - full,
        }
    }

    /// Where item `i`'s first value lies, in elements from the panels' start, and the
    /// distance between its values.
    #[inline(always)]
    pub(super) fn offset(self, i: usize) -> (usize, usize) {
        if i < self.full {
            let panel = i - i % self.w;
            (panel * self.depth + i % self.w, self.w)
        } else {
            (self.full * self.depth + (i - self.full), self.tail)
        }
    }

    /// Item `i`'s first value in panels at `base`, and the distance between its values.
    /// (A pointer that came from a `*mut` may be cast back to write through it.)
    #[inline(always)]
    unsafe fn at(self, base: *const f32, i: usize) -> (*const f32, usize) {
        let (at, stride) = self.offset(i);
        (base.add(at), stride)
    }
}

/// Asks for columns `col .. col + width` of `rows` of `m` (hints: nothing is read).
#[inline(always)]
pub(super) unsafe fn prefetch_rows<S: F32Simd>(
    m: &MatRef,
    rows: core::ops::Range<usize>,
    col: usize,
    width: usize,
) {
    for row in rows {
        for l in 0..(width * 4).div_ceil(64) {
            S::prefetch(m.data.as_ptr().wrapping_add(row * m.stride + col + 16 * l));
        }
    }
}

/// Row block `block` of `blocks` asks for its share of the next head's keys and values
/// (columns `col .. col + dh` of every key row), so that head finds them in cache.
#[inline(always)]
pub(super) unsafe fn prefetch_next_head<S: F32Simd>(
    k: &MatRef,
    v: &MatRef,
    block: usize,
    blocks: usize,
    col: usize,
    dh: usize,
) {
    let share = block * k.rows / blocks..(block + 1) * k.rows / blocks;
    prefetch_rows::<S>(k, share.clone(), col, dh);
    prefetch_rows::<S>(v, share, col, dh);
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
        let e = if BF16 { d } else { d.mul(vl) }.softmax_weight();
        let e = if BF16 { e.bf16_round() } else { e };
        e.store(p.add(j));
        vsum = vsum.add(e);
        j += lanes;
    }
    if j < n {
        // The tail in a partial register: the same operations, `n − j` lanes kept.
        let d = S::load_first(p.add(j), n - j).sub(vm);
        let e = if BF16 { d } else { d.mul(vl) }.softmax_weight();
        let e = if BF16 { e.bf16_round() } else { e };
        e.store_first(p.add(j), n - j);
        vsum = vsum.add(S::load_first(p.add(j), n - j));
    }
    let sum = vsum.reduce_add();
    if BF16 {
        return 1.0 / weight_sum::<S>(s);
    }
    let inv = 1.0 / sum;
    for x in s.iter_mut() {
        *x *= inv;
    }
    1.0
}

/// `scalar::bf16_weight_sum` in registers, bit for bit: the 16 lanes of its order held in
/// `16 / LANES` registers, each chunk of 32 weights split into odd and even elements as
/// it loads, odd added first; the last chunk zero-padded (weights are ≥ +0, so padding
/// adds nothing); the lanes reduced by the scalar tree.
#[inline(always)]
unsafe fn weight_sum<S: F32Simd>(e: &[f32]) -> f32 {
    // The order's 16 lanes (`scalar::sum16`), LANES to a register.
    let regs = 16 / S::LANES;
    let mut acc = [S::splat(0.0); 16];
    let full = e.len() - e.len() % 32;
    let p = e.as_ptr();
    for c in (0..full).step_by(32) {
        add_pairs(&mut acc[..regs], p.add(c));
    }
    if full < e.len() {
        let mut tail = [0.0f32; 32];
        tail[..e.len() - full].copy_from_slice(&e[full..]);
        add_pairs(&mut acc[..regs], tail.as_ptr());
    }
    let mut lanes = [0.0f32; 16];
    for (m, a) in acc[..regs].iter().enumerate() {
        a.store(lanes.as_mut_ptr().add(m * S::LANES));
    }
    sum16(lanes)
}

/// One chunk of 32 weights into the lane sums: lane i takes weight 2i + 1, then 2i.
#[inline(always)]
unsafe fn add_pairs<S: F32Simd>(acc: &mut [S], chunk: *const f32) {
    for (m, a) in acc.iter_mut().enumerate() {
        let (odd, even) = S::load_odd_even(chunk.add(2 * m * S::LANES));
        *a = a.add(odd).add(even);
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::scalar::pair_order;

    #[test]
    fn the_pair_loop_visits_in_the_reference_order() {
        for n in 0..12 {
            for pairs in [false, true] {
                let mut got = Vec::new();
                pair_loop!(pairs, n, |i| {
                    got.push(i);
                });
                let want: Vec<usize> = pair_order(n, pairs).collect();
                assert_eq!(got, want, "n = {n}, pairs = {pairs}");
            }
        }
    }
}
