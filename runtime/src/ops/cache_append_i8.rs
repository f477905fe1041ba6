//! Appends rows to an int8 KV cache held in a state buffer, quantizing each head of
//! each row with its own scale (FORMAT.md, "int8 KV cache").

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::kernels::scalar::{i8_cache_cols, quantize_head_i8};
use crate::model::DType;
use crate::names::opcode;
use crate::Error;

/// Quantizes the rows of `x` (heads of `head_dim` values side by side) into rows
/// `pos .. pos + x.rows` of `cache`, `pos` being the value of the one-element u32 state
/// buffer `position`. `cache` is a window of an i8 state buffer, its `rows` the
/// capacity and its `cols` the f32 words of one stored row
/// ([`i8_cache_cols`]`(x.cols, head_dim)`): the values, four to a word, then one f32
/// scale per head. Running past the capacity is an error, not a wrap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheAppendI8 {
    pub x: Mat,
    pub position: u32,
    pub cache: Mat,
    pub head_dim: u32,
}

impl core::fmt::Display for CacheAppendI8 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "cache append int8 {}×{} (heads of {})",
            self.x.rows, self.x.cols, self.head_dim
        )
    }
}

impl CacheAppendI8 {
    /// The cache row this run's rows start at, or `CacheFull` (every backend's check).
    pub fn start(&self, cx: &OpContext) -> Result<usize, Error> {
        super::cache_append::append_at(cx, self.position, self.x.rows as usize, self.cache)
    }
}

impl OpSpec for CacheAppendI8 {
    const OPCODE: u32 = opcode::CACHE_APPEND_I8;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            position: r.next()?,
            cache: Mat::decode(r)?,
            head_dim: r.next()?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        o.push(self.position);
        self.cache.encode(o);
        o.push(self.head_dim);
    }

    fn output(&self) -> Mat {
        self.cache
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.x);
        f(&mut self.cache);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[self.x.buf, self.position])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let words = i8_cache_cols(self.x.cols as usize, self.head_dim as usize);
        if !c.fits(self.x) || words != Some(self.cache.cols as usize) {
            return Err("appended rows do not match the int8 cache's row");
        }
        if self.x.rows > self.cache.rows {
            return Err("appended rows do not fit the int8 cache");
        }
        if c.state(self.cache.buf, DType::I8).is_none() {
            return Err("int8 cache is not an i8 state buffer");
        }
        if c.state(self.position, DType::U32) != Some(1) {
            return Err("cache position is not a one-element u32 state");
        }
        c.disjoint(&[self.x.buf, self.position], self.cache)
    }

    fn run_cpu(&self, cx: &mut OpContext, _cpu: CpuKernels) -> Result<(), Error> {
        let x = cx.read(self.x)?;
        let pos = self.start(cx)?;
        let (d, width) = (self.head_dim as usize, x.cols);
        let mut cache = cx.out(self.cache)?;
        for r in 0..x.rows {
            // One stored row, as bytes: the values, then the scales.
            let row: &mut [u8] = bytemuck::cast_slice_mut(cache.row_mut(pos + r));
            let (values, scales) = row.split_at_mut(width);
            let values: &mut [i8] = bytemuck::cast_slice_mut(values);
            for (h, (xh, qh)) in x.row(r).chunks(d).zip(values.chunks_mut(d)).enumerate() {
                let s = quantize_head_i8(xh, qh);
                scales[4 * h..4 * h + 4].copy_from_slice(&s.to_le_bytes());
            }
        }
        Ok(())
    }
}
