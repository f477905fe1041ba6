//! Appends rows to a cache held in a state buffer (a decoder's keys or values).

use super::{Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Words};
use crate::model::DType;
use crate::names::opcode;
use crate::Error;

/// Copies the rows of `x` into rows `pos .. pos + x.rows` of `cache`, `pos` being the
/// value of the one-element u32 state buffer `position`. `cache` is a window of a state
/// buffer whose `rows` is its capacity; running past it is an error, not a wrap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CacheAppend {
    pub x: Mat,
    pub position: u32,
    pub cache: Mat,
}

impl core::fmt::Display for CacheAppend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "cache append {}×{}", self.x.rows, self.x.cols)
    }
}

impl OpSpec for CacheAppend {
    const OPCODE: u32 = opcode::CACHE_APPEND;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            position: r.next()?,
            cache: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        o.push(self.position);
        self.cache.encode(o);
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
        if !c.fits(self.x) || self.x.cols != self.cache.cols || self.x.rows > self.cache.rows {
            return Err("appended rows do not match the cache's width");
        }
        if c.state(self.cache.buf, DType::F32).is_none() {
            return Err("cache is not an f32 state buffer");
        }
        if c.state(self.position, DType::U32) != Some(1) {
            return Err("cache position is not a one-element u32 state");
        }
        c.disjoint(&[self.x.buf, self.position], self.cache)
    }

    fn run_cpu(&self, cx: &mut OpContext, _cpu: CpuKernels) -> Result<(), Error> {
        let x = cx.read(self.x)?;
        let pos = self.start(cx)?;
        let mut cache = cx.out(self.cache)?;
        for r in 0..x.rows {
            cache.row_mut(pos + r).copy_from_slice(x.row(r));
        }
        Ok(())
    }
}

impl CacheAppend {
    /// The cache row this run's rows start at, or `CacheFull` (every backend's check).
    pub fn start(&self, cx: &OpContext) -> Result<usize, Error> {
        append_at(cx, self.position, self.x.rows as usize, self.cache)
    }
}

/// The cache row `rows` new rows start at: the position buffer's value, if they fit the
/// cache's capacity (its rows), else `CacheFull`.
pub(super) fn append_at(
    cx: &OpContext,
    position: u32,
    rows: usize,
    cache: Mat,
) -> Result<usize, Error> {
    let pos = cx.position(Some(position))?;
    let (need, capacity) = (pos.saturating_add(rows), cache.rows as usize);
    if need > capacity {
        return Err(Error::CacheFull { need, capacity });
    }
    Ok(pos)
}
