//! A SigLIP vision tower from a checkpoint's tensors (`SiglipVisionModel` and the
//! Idefics2 / Idefics3 copies of it): patch embedding, pre-norm encoder layers, and the
//! post-layernorm, giving one feature row per patch — what every captioner family feeds
//! its projector.

use vlm_runtime::ops::{Activation, Attention, Mask, PatchEmbed, Precision, Query, Weights};

use super::build::{cols, dense, Builder};
use super::checkpoint::Checkpoint;
use super::config::VisionConfig;
use crate::graph::{Graph, Role, TowerInput};
use crate::Result;

/// Which hidden state the projector reads.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    /// Encoder layers to run (all of them, or fewer for LLaVA's `vision_feature_layer`).
    pub layers: usize,
    /// Whether `post_layernorm` follows (its `last_hidden_state`), or the raw output of
    /// the last layer run (LLaVA's `hidden_states[i]`).
    pub post_norm: bool,
}

/// The image encoder graph: `[C, H, W]` pixels → `[patches, hidden]` features.
/// `prefix` is the vision model's tensor prefix (`model.vision_model.`).
pub fn vision_tower(
    ck: &Checkpoint,
    prefix: &str,
    c: &VisionConfig,
    features: Features,
) -> Result<Graph> {
    let (d, p, side) = (c.hidden, c.patch, c.side());
    let n = side * side;
    let mut b = Builder {
        ck,
        g: Graph::new(
            Role::ImageEncoder,
            TowerInput::Pixels {
                channels: c.channels,
                height: c.image_size,
                width: c.image_size,
            },
        ),
    };
    let emb = format!("{prefix}embeddings.");
    let w = ck.get(
        &format!("{emb}patch_embedding.weight"),
        &[d, c.channels, p, p],
    )?;
    let w = b.g.add_f32(
        format!("{emb}patch_embedding.weight"),
        vec![d, c.channels * p * p],
        w,
    );
    let bias = ck.get(&format!("{emb}patch_embedding.bias"), &[d])?;
    let pos_rows = ck
        .shape(&format!("{emb}position_embedding.weight"))
        .map_or(n, |s| s[0]);
    // Every family here embeds a full-size image at positions 0 .. patches (Idefics2/3's
    // bucketed position ids are the identity when the whole grid is valid).
    let pos = ck.get(&format!("{emb}position_embedding.weight"), &[pos_rows, d])?;
    if pos_rows < n {
        return Err(crate::Error::Checkpoint {
            path: "config.json".into(),
            msg: format!("{pos_rows} vision positions for {n} patches"),
        });
    }
    let add: Vec<f32> = (0..n * d).map(|i| pos[i] + bias[i % d]).collect();
    let add =
        b.g.add_f32(format!("{emb}position_embedding+bias"), vec![n, d], add);
    let mut x = b.new_mat(n, d);
    let input = b.g.input_buf;
    b.push(
        &format!("{emb}patch_embedding"),
        PatchEmbed {
            input,
            channels: c.channels as u32,
            height: c.image_size as u32,
            width: c.image_size as u32,
            patch: p as u32,
            weights: Weights::F32 { w },
            add,
            out: x,
        },
    );
    let hd = d / c.heads;
    for l in 0..features.layers {
        let lp = format!("{prefix}encoder.layers.{l}.");
        let h = b.layer_norm(&format!("{lp}layer_norm1"), x, c.eps)?;
        let names = ["q_proj", "k_proj", "v_proj"].map(|s| format!("{lp}self_attn.{s}"));
        let w: Vec<String> = names.iter().map(|s| format!("{s}.weight")).collect();
        let bs: Vec<String> = names.iter().map(|s| format!("{s}.bias")).collect();
        let wr: Vec<&str> = w.iter().map(|s| s.as_str()).collect();
        let br: Vec<&str> = bs.iter().map(|s| s.as_str()).collect();
        let wqkv = b.stacked(&wr, &[d, d, d], d)?;
        let bqkv = b.stacked_bias(&br, &[d, d, d])?;
        let qkv = b.linear_with(
            &format!("{lp}self_attn.qkv"),
            h,
            wqkv,
            bqkv,
            3 * d,
            Activation::None,
        );
        let attn = b.new_mat(n, d);
        b.push(
            &format!("{lp}self_attn"),
            Attention {
                q: Query::Mat(cols(qkv, 0, d)),
                k: cols(qkv, d, d),
                v: cols(qkv, 2 * d, d),
                heads: c.heads as u32,
                head_dim: hd as u32,
                scale: (hd as f32).powf(-0.5),
                precision: Precision::F32,
                mask: Mask::None,
                past: None,
                out: attn,
            },
        );
        let o = b.linear(
            &format!("{lp}self_attn.out_proj"),
            attn,
            d,
            Activation::None,
        )?;
        x = b.add(&format!("{lp}residual1"), x, o);
        let h = b.layer_norm(&format!("{lp}layer_norm2"), x, c.eps)?;
        let h = b.linear(&format!("{lp}mlp.fc1"), h, c.intermediate, c.act)?;
        let m = b.linear(&format!("{lp}mlp.fc2"), h, d, Activation::None)?;
        x = b.add(&format!("{lp}residual2"), x, m);
    }
    if features.post_norm {
        x = b.layer_norm(&format!("{prefix}post_layernorm"), x, c.eps)?;
    }
    b.g.output = dense(x.buf, n, d);
    Ok(b.g)
}
