//! A Llama-style language model (Llama, Qwen2, Mistral, Gemma) from a checkpoint's
//! tensors, as three graphs that share one KV cache: the token embedding, a prefill of a
//! fixed number of input embeddings, and a one-token decoder step. The decoders take
//! input embeddings rather than token ids because a VLM's prompt mixes the two: image
//! embeddings stand where the image tokens are.

use std::sync::Arc;

use vlm_runtime::model::DType;
use vlm_runtime::ops::{
    Activation, Advance, Attention, CacheAppend, Embedding, Glu, LastRow, Mask, Mat, Precision,
    Query, Rope,
};

use super::build::{cols, dense, Builder};
use super::checkpoint::Checkpoint;
use super::config::TextConfig;
use crate::graph::{Graph, Role, TowerInput};
use crate::Result;

/// Where a family keeps its language model's tensors, and how its prompt runs.
pub struct Names<'a> {
    /// `model.text_model.`, `model.language_model.`, …
    pub prefix: &'a str,
    /// The untied LM head's weight (`lm_head.weight`).
    pub head: &'a str,
    /// The first token's position (PaliGemma counts from 1).
    pub first_position: usize,
    /// The prompt attends to itself both ways (PaliGemma's prefix): the prefill graph
    /// has no causal mask, and the prompt is one prefill run.
    pub prefix_both_ways: bool,
}

impl<'a> Names<'a> {
    /// A causal language model counting positions from 0.
    pub fn causal(prefix: &'a str, head: &'a str) -> Self {
        Self {
            prefix,
            head,
            first_position: 0,
            prefix_both_ways: false,
        }
    }
}

pub struct Decoder {
    pub embedding: Graph,
    pub prefill: Graph,
    pub step: Graph,
    /// The prefill with every row's logits (no `last_row`): what int8 calibration runs
    /// whole sequences through, prompt and caption, so the ranges of the LM head's input
    /// come from every position, as decoding feeds it. Never written to an artifact.
    pub calibration: Graph,
}

/// Which rows' logits a decoder graph computes.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Logits {
    Last,
    Every,
}

/// The RoPE table `[positions, head_dim]`: cosines then sines, computed as Hugging
/// Face's default rotary embedding does in f32 (`inv_freq = 1 / θ^(2i/d)`, angle =
/// position · inv_freq, one rounding each), with the trigonometry in f64 rounded once.
pub fn rope_table(positions: usize, head_dim: usize, theta: f64, first: usize) -> Vec<f32> {
    let half = head_dim / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0f32 / (theta as f32).powf((2 * i) as f32 / head_dim as f32))
        .collect();
    let mut t = vec![0.0f32; positions * head_dim];
    for p in 0..positions {
        for i in 0..half {
            let a = ((p + first) as f32 * inv[i]) as f64;
            t[p * head_dim + i] = a.cos() as f32;
            t[p * head_dim + half + i] = a.sin() as f32;
        }
    }
    t
}

/// The three graphs, for a cache of `context` positions and prefill chunks of `chunk`
/// embeddings.
pub fn decoder(
    ck: &Checkpoint,
    names: &Names,
    c: &TextConfig,
    context: usize,
    chunk: usize,
) -> Result<Decoder> {
    let table_name = format!("{}embed_tokens.weight", names.prefix);
    let table = ck.shared(&table_name, &[c.vocab, c.hidden])?;
    let head = if c.tied {
        table.clone()
    } else {
        ck.shared(names.head, &[c.vocab, c.hidden])?
    };
    let mut e = Graph::new(Role::TokenEmbedding, TowerInput::Tokens { len: 1 });
    // Gemma scales every input embedding by √hidden (rounded to the model's dtype, f32
    // here); the image embeddings reach the decoder already divided by it (PaliGemma's
    // projector), so the scale belongs to the token lookup. As a per-row scale it is the
    // same one f32 product, and a tied head keeps sharing the unscaled table.
    let table_scale = c.gemma.then(|| {
        let s = (c.hidden as f64).sqrt() as f32;
        e.add_f32("embed_scale", vec![c.vocab], vec![s; c.vocab])
    });
    let t = e.add_f32(&table_name, vec![c.vocab, c.hidden], table);
    let zero = e.add_f32("zero", vec![1, c.hidden], vec![0.0; c.hidden]);
    let out = dense(e.add_buffer(c.hidden), 1, c.hidden);
    e.push(
        "embed_tokens",
        vlm_runtime::ops::Op::Embedding(Embedding {
            ids: e.input_buf,
            table: t,
            table_scale,
            add: zero,
            position: None,
            out,
        }),
    );
    e.output = out;
    let rope = Arc::new(rope_table(
        context,
        c.head_dim,
        c.rope_theta,
        names.first_position,
    ));
    let graph =
        |rows, role, logits| stack(ck, names, c, (context, rows), role, logits, &head, &rope);
    Ok(Decoder {
        embedding: e,
        prefill: graph(chunk, Role::Prefill, Logits::Last)?,
        step: graph(1, Role::Decoder, Logits::Last)?,
        calibration: graph(chunk, Role::Prefill, Logits::Every)?,
    })
}

#[allow(clippy::too_many_arguments)]
fn stack(
    ck: &Checkpoint,
    names: &Names,
    c: &TextConfig,
    (context, rows): (usize, usize),
    role: Role,
    logits: Logits,
    head: &Arc<Vec<f32>>,
    rope: &Arc<Vec<f32>>,
) -> Result<Graph> {
    let (d, hd, h, kv) = (c.hidden, c.head_dim, c.heads, c.kv_heads);
    let mut b = Builder {
        ck,
        g: Graph::new(
            role,
            TowerInput::Values {
                rows,
                dim: d,
                name: "inputs_embeds",
            },
        ),
    };
    let pos = b.g.add_state("position", 1, DType::U32);
    let table = b.g.add_f32("rope", vec![context, hd], rope.clone());
    let mut x = dense(b.g.input_buf, rows, d);
    let p = names.prefix;
    for l in 0..c.layers {
        let lp = format!("{p}layers.{l}.");
        let keys =
            b.g.add_state(format!("layers.{l}.keys"), context * kv * hd, DType::F32);
        let values =
            b.g.add_state(format!("layers.{l}.values"), context * kv * hd, DType::F32);
        let hn = b.rms_norm(&format!("{lp}input_layernorm"), x, c.eps, c.gemma)?;
        let proj = ["q_proj", "k_proj", "v_proj"].map(|s| format!("{lp}self_attn.{s}"));
        let w: Vec<String> = proj.iter().map(|s| format!("{s}.weight")).collect();
        let bs: Vec<String> = proj.iter().map(|s| format!("{s}.bias")).collect();
        let wr: Vec<&str> = w.iter().map(|s| s.as_str()).collect();
        let br: Vec<&str> = bs.iter().map(|s| s.as_str()).collect();
        let outs = [h * hd, kv * hd, kv * hd];
        let wqkv = b.stacked(&wr, &outs, d)?;
        let bqkv = b.stacked_bias(&br, &outs)?;
        let width = (h + 2 * kv) * hd;
        let qkv = b.linear_with(
            &format!("{lp}self_attn.qkv"),
            hn,
            wqkv,
            bqkv,
            width,
            Activation::None,
        );
        b.push(
            &format!("{lp}self_attn.rope"),
            Rope {
                x: cols(qkv, 0, (h + kv) * hd),
                heads: (h + kv) as u32,
                head_dim: hd as u32,
                table,
                position: Some(pos),
            },
        );
        let cache = |buf| Mat::dense(buf, context as u32, (kv * hd) as u32);
        for (name, at, buf) in [("keys", h * hd, keys), ("values", (h + kv) * hd, values)] {
            b.push(
                &format!("{lp}self_attn.{name}"),
                CacheAppend {
                    x: cols(qkv, at, kv * hd),
                    position: pos,
                    cache: cache(buf),
                },
            );
        }
        let attn = b.new_mat(rows, h * hd);
        b.push(
            &format!("{lp}self_attn"),
            Attention {
                q: Query::Mat(cols(qkv, 0, h * hd)),
                k: cache(keys),
                v: cache(values),
                heads: h as u32,
                head_dim: hd as u32,
                scale: (hd as f32).powf(-0.5),
                precision: Precision::F32,
                mask: match names.prefix_both_ways && role == Role::Prefill {
                    true => Mask::None,
                    false => Mask::Causal,
                },
                past: Some(pos),
                out: attn,
            },
        );
        let o = b.linear(&format!("{lp}self_attn.o_proj"), attn, d, Activation::None)?;
        x = b.add(&format!("{lp}residual1"), x, o);
        let hn = b.rms_norm(&format!("{lp}post_attention_layernorm"), x, c.eps, c.gemma)?;
        let mlp = format!("{lp}mlp.");
        let i = c.intermediate;
        let wgu = b.stacked(
            &[
                &format!("{mlp}gate_proj.weight"),
                &format!("{mlp}up_proj.weight"),
            ],
            &[i, i],
            d,
        )?;
        let gu = b.linear_with(
            &format!("{mlp}gate_up"),
            hn,
            wgu,
            None,
            2 * i,
            Activation::None,
        );
        let g = b.new_mat(rows, i);
        b.push(
            &format!("{mlp}act"),
            Glu {
                x: gu,
                act: c.act,
                out: g,
            },
        );
        let m = b.linear(&format!("{mlp}down_proj"), g, d, Activation::None)?;
        x = b.add(&format!("{lp}residual2"), x, m);
    }
    // Only the last position's logits are needed: the next token. A prefill runs on
    // however many rows the prompt has left, so the last one is found at run time.
    let last = match logits {
        Logits::Last => {
            let last = b.new_mat(1, d);
            b.push("last_row", LastRow { x, out: last });
            last
        }
        Logits::Every => x,
    };
    let n = b.rms_norm(&format!("{p}norm"), last, c.eps, c.gemma)?;
    // A tied head keeps the table's name, so the writer stores one copy.
    let head_name = match c.tied {
        true => format!("{p}embed_tokens.weight"),
        false => names.head.to_string(),
    };
    let w = b.g.add_f32(head_name, vec![c.vocab, d], head.clone());
    let logits = b.linear_with("lm_head", n, w, None, c.vocab, Activation::None);
    b.push(
        "advance",
        Advance {
            position: pos,
            by: rows as u32,
        },
    );
    b.g.output = logits;
    if role == Role::Prefill {
        b.g.rows = rows;
    }
    Ok(b.g)
}
