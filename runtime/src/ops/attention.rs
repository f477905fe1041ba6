//! Multi-head scaled dot-product attention, with or without a causal mask, over keys
//! and values that may live in a state buffer (a KV cache).

use super::{align, operands, product, Buffers, Check, CpuKernels, Mask, Mat, OpContext};
use super::{OpSpec, Precision, Query, Reader, Words};
use crate::kernels::scalar::{attention_i8kv_scratch, i8_cache_cols, I8Rows, MatMut, MatRef};
use crate::kernels::Isa;
use crate::model::DType;
use crate::names::opcode;
use crate::Error;

/// Head `h` uses columns `h·head_dim .. (h+1)·head_dim` of `q` and `out`; `precision`
/// says what the two matrix products multiply (see [`Precision`]). `k` and `v` hold
/// `kv_heads = k.cols / head_dim` heads, which must divide `heads`: query head `h` reads
/// key and value head `h / (heads / kv_heads)` (grouped-query attention; `kv_heads =
/// heads` is plain multi-head attention).
///
/// With `past` (a one-element u32 state buffer: the position before this run), the keys
/// and values are the first `past + q.rows` rows of `k` and `v` — `k.rows` is then the
/// cache's capacity — else all of them. With [`Mask::Causal`], query `i` sees keys
/// `0 ..= past + i`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Attention {
    pub q: Query,
    pub k: Mat,
    pub v: Mat,
    pub heads: u32,
    pub head_dim: u32,
    pub scale: f32,
    pub precision: Precision,
    pub mask: Mask,
    pub past: Option<u32>,
    pub out: Mat,
}

impl core::fmt::Display for Attention {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "attention {} queries × {} keys, {}×{} {}{}",
            self.q.rows(),
            self.k.rows,
            self.heads,
            self.head_dim,
            self.precision.name(),
            match self.mask {
                Mask::None => "",
                Mask::Causal => " causal",
            }
        )
    }
}

impl Attention {
    /// This run's `(past, keys)`: the position before it, and how many keys it attends
    /// over, or `CacheFull` where they overrun the cache (every backend's check).
    pub fn keys(&self, cx: &OpContext) -> Result<(usize, usize), Error> {
        let past = cx.position(self.past)?;
        let capacity = self.k.rows as usize;
        let keys = match self.past {
            Some(_) => past.saturating_add(self.q.rows() as usize),
            None => capacity,
        };
        if keys > capacity {
            return Err(Error::CacheFull {
                need: keys,
                capacity,
            });
        }
        Ok((past, keys))
    }
}

impl OpSpec for Attention {
    const OPCODE: u32 = opcode::ATTENTION;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            q: Query::decode(r)?,
            k: Mat::decode(r)?,
            v: Mat::decode(r)?,
            heads: r.next()?,
            head_dim: r.next()?,
            scale: r.f32()?,
            precision: Precision::from_code(r.next()?)?,
            mask: Mask::from_code(r.next()?)?,
            past: operands::decode_opt(r)?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.q.encode(o);
        self.k.encode(o);
        self.v.encode(o);
        for w in [
            self.heads,
            self.head_dim,
            self.scale.to_bits(),
            self.precision.code(),
            self.mask.code(),
        ] {
            o.push(w);
        }
        operands::encode_opt(o, self.past);
        self.out.encode(o);
    }

    fn output(&self) -> Mat {
        self.out
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        if let Query::Mat(q) = &mut self.q {
            f(q);
        }
        f(&mut self.k);
        f(&mut self.v);
        f(&mut self.out);
    }

    fn reads(&self) -> Buffers {
        let mut b = [self.k.buf, self.v.buf, 0, 0];
        let mut n = 2;
        if let Query::Mat(q) = self.q {
            b[n] = q.buf;
            n += 1;
        }
        if let Some(p) = self.past {
            b[n] = p;
            n += 1;
        }
        Buffers::of(&b[..n])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let (k, v, out) = (self.k, self.v, self.out);
        let cols = out.cols as usize;
        let width = (self.heads as usize).checked_mul(self.head_dim as usize);
        if self.heads == 0 || self.head_dim == 0 || width != Some(cols) {
            return Err("heads × head size does not match the output width");
        }
        if !c.fits(k) || !c.fits(v) || k.cols != v.cols {
            return Err("key or value window is invalid");
        }
        let int8 = c.state(k.buf, DType::I8).is_some();
        if int8 != c.state(v.buf, DType::I8).is_some() {
            return Err("keys and values are held in different types");
        }
        // An int8 cache's row holds each head's values and its scale (FORMAT.md).
        let per_head = match int8 {
            true => i8_cache_cols(self.head_dim as usize, self.head_dim as usize),
            false => Some(self.head_dim as usize),
        };
        let Some(per_head) = per_head.and_then(|p| u32::try_from(p).ok()) else {
            return Err("int8 cache heads are not a multiple of 4 wide");
        };
        if !k.cols.is_multiple_of(per_head) {
            return Err("key or value window is invalid");
        }
        if int8 && self.precision != Precision::F32 {
            return Err("attention over an int8 cache is not fp32");
        }
        let kv_heads = k.cols / per_head;
        if kv_heads == 0 || !self.heads.is_multiple_of(kv_heads) {
            return Err("key and value heads do not divide the query heads");
        }
        if k.rows != v.rows || k.rows == 0 {
            return Err("keys and values differ in length");
        }
        if !self.scale.is_finite() {
            return Err("bad attention scale");
        }
        if let Some(p) = self.past {
            if c.state(p, DType::U32) != Some(1) {
                return Err("attention's past length is not a one-element u32 state");
            }
        }
        if (self.mask == Mask::Causal || self.past.is_some()) && self.q.rows() > k.rows {
            return Err("more queries than the keys can hold");
        }
        match self.q {
            Query::Mat(q) => {
                if !c.fits(q) || q.cols != out.cols || q.rows != out.rows {
                    return Err("query window is invalid");
                }
            }
            Query::Const { tensor, rows } => {
                if rows != out.rows || !c.f32_len(tensor, out.rows as usize * cols) {
                    return Err("constant query has the wrong size");
                }
            }
        }
        c.disjoint(self.reads().as_slice(), out)
    }

    fn scratch_bytes(&self, threads: usize) -> usize {
        align(self.scratch_floats().saturating_mul(4)).saturating_mul(threads)
    }

    fn macs(&self) -> u64 {
        product(&[2, self.q.rows(), self.k.rows, self.heads, self.head_dim])
    }

    fn precision(&self) -> &'static str {
        self.precision.name()
    }

    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        if let Query::Const { tensor, .. } = &mut self.q {
            f(tensor);
        }
    }

    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        let cols = self.out.cols as usize;
        let q = match self.q {
            Query::Mat(m) => cx.read(m)?,
            Query::Const { tensor, rows } => MatRef {
                data: cx.f32s(tensor)?,
                rows: rows as usize,
                cols,
                stride: cols,
            },
        };
        let (k, v) = (cx.read(self.k)?, cx.read(self.v)?);
        let (past, keys) = self.keys(cx)?;
        let int8 = cx.is_state_of(self.k.buf, DType::I8);
        let (out, scratch) = cx.out_and_scratch(self.out)?;
        let scores: &mut [f32] = super::context::cast_mut(scratch)?;
        let (heads, d) = (self.heads as usize, self.head_dim as usize);
        let one = self.scratch_floats().max(1);
        let threads = cpu.threads.min(scores.len() / one).max(1);
        if int8 {
            // One query head at a time over its key and value head's bytes.
            let (k, v) = (I8Rows::of(k, d), I8Rows::of(v, d));
            let group = heads / (k.width / d);
            let block = |r0: usize, h0: usize, _: usize, mut o: MatMut, s: &mut [f32]| {
                for i in 0..o.rows {
                    let keys = match self.mask {
                        Mask::None => keys,
                        Mask::Causal => past + r0 + i + 1,
                    };
                    let qi = q.row(r0 + i);
                    for (j, oh) in o.row_mut(i).chunks_mut(d).enumerate() {
                        let (h, scale) = (h0 + j, self.scale);
                        let qh = &qi[h * d..(h + 1) * d];
                        cpu.isa
                            .attention_i8kv_head(qh, k, v, h / group, keys, scale, oh, s);
                    }
                }
            };
            split(threads, heads, d, out, scores, one, &block);
            return Ok(());
        }
        let isa = match self.precision {
            Precision::F32 if cpu.reproducible => Isa::Scalar,
            _ => cpu.isa,
        };
        let group = heads / (self.k.cols as usize / d);
        // Query rows `r0..` (as many as `o` has) over heads `h0 .. h0 + nh`, into `o`
        // (those rows, those heads' columns).
        let block = |r0: usize, h0: usize, nh: usize, mut o: MatMut, s: &mut [f32]| {
            let q = q.rows_from(r0, o.rows);
            // One call of `n` heads from `h` (each with its key and value head) over the
            // first `keys` keys.
            let mut call = |q: MatRef, h: usize, n: usize, keys: usize, o: MatMut| {
                let kv = (h / group) * d;
                let k = first_rows(col_window(k, kv, n * d), keys);
                let v = first_rows(col_window(v, kv, n * d), keys);
                let q = col_window(q, h * d, n * d);
                isa.attention(q, k, v, n, d, self.scale, self.precision, o, s);
            };
            // Heads side by side when they share nothing (multi-head); one at a time
            // against its key and value head under grouped queries, so every kernel
            // (written for heads side by side) serves unchanged.
            let runs = if group == 1 { 1 } else { nh };
            let per = nh / runs;
            for run in 0..runs {
                let oh = cols_mut(&mut o, run * per * d, per * d);
                let h = h0 + run * per;
                match self.mask {
                    Mask::None => call(q, h, per, keys, oh),
                    // One query row at a time over the keys it may see: each call is an
                    // unmasked attention, so every kernel serves.
                    Mask::Causal => {
                        let mut oh = oh;
                        for i in 0..q.rows {
                            call(
                                q.rows_from(i, 1),
                                h,
                                per,
                                past + r0 + i + 1,
                                row_mut(&mut oh, i),
                            );
                        }
                    }
                }
            }
        };
        split(threads, heads, d, out, scores, one, &block);
        Ok(())
    }
}

impl Attention {
    /// Scratch floats on one thread: the attention kernels' for this precision, or
    /// (fp32, the precision over an int8 cache, which only the graph's types tell
    /// apart) the int8 kernel's if more.
    fn scratch_floats(&self) -> usize {
        let (d, rows) = (self.head_dim as usize, self.k.rows as usize);
        let float = Isa::attention_scratch_floats(d, rows, self.precision);
        match self.precision {
            Precision::F32 => float.max(attention_i8kv_scratch(d, rows)),
            Precision::Bf16 => float,
        }
    }
}

/// Threads: a decoder step (one query row) splits its heads, anything longer its rows;
/// each head and row is computed exactly as on one thread. `block(first_row,
/// first_head, heads, out, scratch)` computes those rows of those heads into `out`.
fn split(
    threads: usize,
    heads: usize,
    d: usize,
    out: MatMut,
    scratch: &mut [f32],
    one: usize,
    block: &(impl Fn(usize, usize, usize, MatMut, &mut [f32]) + Sync),
) {
    if out.rows == 1 && threads > 1 {
        let by_head = MatMut {
            data: out.data,
            rows: heads,
            cols: d,
            stride: d,
        };
        row_blocks(threads, 1, by_head, scratch, one, &|h0, hm, s| {
            let nh = hm.rows;
            let o = MatMut {
                data: hm.data,
                rows: 1,
                cols: nh * d,
                stride: nh * d,
            };
            block(0, h0, nh, o, s)
        });
    } else {
        row_blocks(threads, 4, out, scratch, one, &|r0, o, s| {
            block(r0, 0, heads, o, s)
        });
    }
}

/// `f(first_row, block, scratch)` over `out` in row blocks, one per thread (each its
/// own `one` floats of `scratch`); one block without threads.
fn row_blocks(
    threads: usize,
    min_rows: usize,
    out: MatMut,
    scratch: &mut [f32],
    one: usize,
    f: &(impl Fn(usize, MatMut, &mut [f32]) + Sync),
) {
    #[cfg(feature = "std")]
    crate::kernels::split_rows(threads, min_rows, out, scratch.chunks_mut(one), f);
    #[cfg(not(feature = "std"))]
    {
        let _ = (threads, min_rows);
        f(0, out, &mut scratch[..one]);
    }
}

/// Columns `at .. at + n` of `m`.
fn col_window(m: MatRef, at: usize, n: usize) -> MatRef {
    MatRef {
        data: &m.data[at..],
        cols: n,
        ..m
    }
}

fn cols_mut<'o>(m: &'o mut MatMut, at: usize, n: usize) -> MatMut<'o> {
    let (stride, rows) = (m.stride, m.rows);
    MatMut {
        data: &mut m.data[at..],
        rows,
        cols: n,
        stride,
    }
}

fn first_rows(m: MatRef, n: usize) -> MatRef {
    MatRef { rows: n, ..m }
}

fn row_mut<'o>(m: &'o mut MatMut, i: usize) -> MatMut<'o> {
    let (stride, cols) = (m.stride, m.cols);
    MatMut {
        data: &mut m.data[i * stride..],
        rows: 1,
        cols,
        stride,
    }
}
