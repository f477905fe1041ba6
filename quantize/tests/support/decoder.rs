//! A decoder-shaped plan built by hand: token embedding with a position table, a fused
//! q/k/v projection, keys and values appended to caches held in state buffers, causal
//! attention over the cache, a vocabulary head, and the position advanced — one token
//! per run. What the captioning decoder's plan will be made of.
// Each test binary that includes this uses its own subset.
#![allow(dead_code)]

use vlm_quantize::graph::{Graph, Role, TowerInput};
use vlm_runtime::model::DType;
use vlm_runtime::ops::{
    Activation, Advance, Attention, CacheAppend, Embedding, Linear, Mask, Mat, Op, Precision,
    Query, Weights,
};

pub const DIM: usize = 8;
pub const HEADS: usize = 2;
pub const HEAD_DIM: usize = 4;
/// Positions the caches hold.
pub const CAPACITY: usize = 6;
/// Rows of the position table: more than the caches hold, so a full cache is what stops
/// a step.
pub const POSITIONS: usize = CAPACITY + 2;
pub const VOCAB: usize = 16;
pub const SCALE: f32 = 0.5;

/// The decoder's constants, to recompute its steps by hand.
pub struct Weightset {
    pub table: Vec<f32>,
    pub positions: Vec<f32>,
    pub qkv: Vec<f32>,
    pub qkv_bias: Vec<f32>,
    pub head: Vec<f32>,
}

fn values(seed: u64, n: usize) -> Vec<f32> {
    vlm_runtime::harness::Rng(seed).f32s(n, 0.5)
}

pub fn weights(seed: u64) -> Weightset {
    Weightset {
        table: values(seed, VOCAB * DIM),
        positions: values(seed + 1, POSITIONS * DIM),
        qkv: values(seed + 2, 3 * DIM * DIM),
        qkv_bias: values(seed + 3, 3 * DIM),
        head: values(seed + 4, VOCAB * DIM),
    }
}

pub fn decoder(w: &Weightset) -> Graph {
    let mut g = Graph::new(Role::Decoder, TowerInput::Tokens { len: 1 });
    let pos = g.add_state("position", 1, DType::U32);
    let kcache = g.add_state("keys", CAPACITY * DIM, DType::F32);
    let vcache = g.add_state("values", CAPACITY * DIM, DType::F32);
    let dense = |b, r: usize, c: usize| Mat::dense(b, r as u32, c as u32);
    let table = g.add_f32("embed.table", vec![VOCAB, DIM], w.table.clone());
    let add = g.add_f32("embed.positions", vec![POSITIONS, DIM], w.positions.clone());
    let x = g.add_buffer(DIM);
    g.push(
        "embed",
        Op::Embedding(Embedding {
            ids: g.input_buf,
            table,
            table_scale: None,
            add,
            position: Some(pos),
            out: dense(x, 1, DIM),
        }),
    );
    let qkv = g.add_buffer(3 * DIM);
    let wq = g.add_f32("qkv.w", vec![3 * DIM, DIM], w.qkv.clone());
    let bq = g.add_f32("qkv.b", vec![3 * DIM], w.qkv_bias.clone());
    g.push(
        "qkv",
        Op::Linear(Linear {
            x: dense(x, 1, DIM),
            weights: Weights::F32 { w: wq },
            bias: Some(bq),
            act: Activation::None,
            out: dense(qkv, 1, 3 * DIM),
        }),
    );
    let part = |i: usize| Mat {
        buf: qkv,
        offset: (i * DIM) as u32,
        rows: 1,
        cols: DIM as u32,
        stride: (3 * DIM) as u32,
    };
    for (name, i, cache) in [("keys.append", 1, kcache), ("values.append", 2, vcache)] {
        g.push(
            name,
            Op::CacheAppend(CacheAppend {
                x: part(i),
                position: pos,
                cache: dense(cache, CAPACITY, DIM),
            }),
        );
    }
    let attn = g.add_buffer(DIM);
    g.push(
        "attn",
        Op::Attention(Attention {
            q: Query::Mat(part(0)),
            k: dense(kcache, CAPACITY, DIM),
            v: dense(vcache, CAPACITY, DIM),
            heads: HEADS as u32,
            head_dim: HEAD_DIM as u32,
            scale: SCALE,
            precision: Precision::F32,
            mask: Mask::Causal,
            past: Some(pos),
            out: dense(attn, 1, DIM),
        }),
    );
    let logits = g.add_buffer(VOCAB);
    let wh = g.add_f32("head.w", vec![VOCAB, DIM], w.head.clone());
    g.push(
        "head",
        Op::Linear(Linear {
            x: dense(attn, 1, DIM),
            weights: Weights::F32 { w: wh },
            bias: None,
            act: Activation::None,
            out: dense(logits, 1, VOCAB),
        }),
    );
    g.push(
        "advance",
        Op::Advance(Advance {
            position: pos,
            by: 1,
        }),
    );
    g.output = dense(logits, 1, VOCAB);
    g
}

/// The logits of every step, recomputed from the definitions (f64), for `tokens`.
pub fn reference(w: &Weightset, tokens: &[u32]) -> Vec<Vec<f32>> {
    let matvec = |m: &[f32], x: &[f64], rows: usize| -> Vec<f64> {
        (0..rows)
            .map(|r| (0..x.len()).map(|c| m[r * x.len() + c] as f64 * x[c]).sum())
            .collect()
    };
    let (mut keys, mut vals): (Vec<Vec<f64>>, Vec<Vec<f64>>) = (vec![], vec![]);
    let mut out = Vec::new();
    for (t, &id) in tokens.iter().enumerate() {
        let x: Vec<f64> = (0..DIM)
            .map(|c| (w.table[id as usize * DIM + c] + w.positions[t * DIM + c]) as f64)
            .collect();
        let mut qkv = matvec(&w.qkv, &x, 3 * DIM);
        qkv.iter_mut()
            .zip(&w.qkv_bias)
            .for_each(|(v, b)| *v += *b as f64);
        keys.push(qkv[DIM..2 * DIM].to_vec());
        vals.push(qkv[2 * DIM..].to_vec());
        let mut attn = vec![0.0f64; DIM];
        for h in 0..HEADS {
            let cols = h * HEAD_DIM..(h + 1) * HEAD_DIM;
            let s: Vec<f64> = keys
                .iter()
                .map(|k| cols.clone().map(|c| qkv[c] * k[c]).sum::<f64>() * SCALE as f64)
                .collect();
            let max = s.iter().cloned().fold(f64::MIN, f64::max);
            let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
            let z: f64 = e.iter().sum();
            for c in cols {
                attn[c] = e.iter().zip(&vals).map(|(e, v)| e * v[c]).sum::<f64>() / z;
            }
        }
        out.push(
            matvec(&w.head, &attn, VOCAB)
                .iter()
                .map(|&v| v as f32)
                .collect(),
        );
    }
    out
}
