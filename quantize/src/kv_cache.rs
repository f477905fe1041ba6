//! The KV cache's storage: a decoder's f32 caches rewritten to int8 with a scale per
//! token and head (FORMAT.md, "int8 KV cache"), a quarter of the memory, read by
//! attention as exact integer products.

use std::collections::HashMap;

use serde::Serialize;
use vlm_runtime::kernels::scalar::i8_cache_cols;
use vlm_runtime::model::DType;
use vlm_runtime::ops::{CacheAppendI8, Mat, Op, Precision};

use crate::graph::Graph;

/// How a captioner's decoder keeps its keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvCache {
    /// f32 rows; attention multiplies them as the artifact's attention precision says
    /// (bf16 by default: the cache's values rounded to bf16 as they are read).
    F32,
    /// int8 rows with an f32 scale per token and head.
    Int8,
}

impl KvCache {
    pub fn name(self) -> &'static str {
        match self {
            KvCache::F32 => "f32",
            KvCache::Int8 => "int8",
        }
    }
}

/// Rewrites every f32 cache of `g` that attention reads as keys or values into an int8
/// one: the state buffer resized and typed i8, its appends quantizing
/// (`cache_append_i8`), its attentions fp32 over the integer products. A cache whose
/// heads are not a multiple of 4 wide, or that is read through a window other than the
/// whole buffer, stays f32. Returns the caches rewritten.
pub fn to_int8(g: &mut Graph) -> usize {
    // Cache buffer → (head size, rows, width), from the attentions that read it.
    let mut caches: HashMap<u32, (u32, u32, u32)> = HashMap::new();
    let whole = |g: &Graph, m: Mat| {
        m.offset == 0
            && m.stride == m.cols
            && g.buffers.get(m.buf as usize) == Some(&(m.rows as usize * m.cols as usize))
    };
    let f32_state =
        |g: &Graph, b: u32| g.states.iter().any(|s| s.buf == b && s.dtype == DType::F32);
    let mut refused = Vec::new();
    for n in &g.nodes {
        if let Op::Attention(a) = n.op {
            for m in [a.k, a.v] {
                let fits = i8_cache_cols(m.cols as usize, a.head_dim as usize).is_some();
                if f32_state(g, m.buf) && whole(g, m) && fits {
                    let seen = caches.insert(m.buf, (a.head_dim, m.rows, m.cols));
                    if seen.is_some_and(|s| s != (a.head_dim, m.rows, m.cols)) {
                        refused.push(m.buf);
                    }
                } else {
                    refused.push(m.buf);
                }
            }
        }
    }
    // A buffer read one way by one attention and refused by another stays f32 (and so
    // does its partner: one attention reads both in one type).
    for n in &g.nodes {
        if let Op::Attention(a) = n.op {
            if refused.contains(&a.k.buf) || refused.contains(&a.v.buf) {
                caches.remove(&a.k.buf);
                caches.remove(&a.v.buf);
            }
        }
    }
    let words = |&(d, rows, cols): &(u32, u32, u32)| {
        let per = i8_cache_cols(cols as usize, d as usize).unwrap_or(0) as u32;
        Mat::dense(0, rows, per)
    };
    for (&buf, shape) in &caches {
        let m = words(shape);
        g.buffers[buf as usize] = m.rows as usize * m.cols as usize;
        if let Some(s) = g.states.iter_mut().find(|s| s.buf == buf) {
            s.dtype = DType::I8;
        }
    }
    let mat = |buf: u32| caches.get(&buf).map(|s| Mat { buf, ..words(s) });
    for n in &mut g.nodes {
        match n.op {
            Op::CacheAppend(c) => {
                if let (Some(cache), Some(&(d, ..))) = (mat(c.cache.buf), caches.get(&c.cache.buf))
                {
                    n.op = Op::CacheAppendI8(CacheAppendI8 {
                        x: c.x,
                        position: c.position,
                        cache,
                        head_dim: d,
                    });
                }
            }
            Op::Attention(ref mut a) => {
                if let (Some(k), Some(v)) = (mat(a.k.buf), mat(a.v.buf)) {
                    a.k = k;
                    a.v = v;
                    a.precision = Precision::F32;
                }
            }
            _ => {}
        }
    }
    caches.len()
}
