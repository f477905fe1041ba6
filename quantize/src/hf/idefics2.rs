//! `Idefics2ForConditionalGeneration`: SigLIP → a gated MLP into the language model's
//! width → a perceiver resampler (learned latents attending to the projected features
//! and themselves) → Mistral. One image is one tile at the vision tower's size.

use vlm_runtime::ops::{Activation, Attention, Constant, Glu, Mask, Mat, Precision, Query};

use super::build::{cols, dense, Builder};
use super::checkpoint::Checkpoint;
use super::config::{ConfigFile, Json, TextConfig, VisionConfig};
use super::llama::{decoder, Names};
use super::siglip_vision::{vision_tower, Features};
use super::{Layout, Parts};
use crate::graph::{Graph, Role, TowerInput};
use crate::Result;

/// `down(act(gate(x)) · up(x))`, bias-free, as `Idefics2MLP`.
fn gated_mlp(
    b: &mut Builder,
    prefix: &str,
    x: Mat,
    inner: usize,
    out: usize,
    act: Activation,
) -> Result<Mat> {
    let d = x.cols as usize;
    let w = b.stacked(
        &[
            &format!("{prefix}gate_proj.weight"),
            &format!("{prefix}up_proj.weight"),
        ],
        &[inner, inner],
        d,
    )?;
    let gu = b.linear_with(
        &format!("{prefix}gate_up"),
        x,
        w,
        None,
        2 * inner,
        Activation::None,
    );
    let g = b.new_mat(x.rows as usize, inner);
    b.push(&format!("{prefix}act"), Glu { x: gu, act, out: g });
    b.linear(&format!("{prefix}down_proj"), g, out, Activation::None)
}

struct Perceiver {
    latents: usize,
    depth: usize,
    heads: usize,
    head_dim: usize,
    kv_heads: usize,
    eps: f32,
    act: Activation,
}

impl Perceiver {
    fn read(j: Json) -> Result<Self> {
        let p = Self {
            latents: j.usize_or("resampler_n_latents", 64)?,
            depth: j.usize_or("resampler_depth", 3)?,
            heads: j.usize_or("resampler_n_heads", 16)?,
            head_dim: j.usize_or("resampler_head_dim", 96)?,
            kv_heads: j.usize_or("num_key_value_heads", 4)?,
            eps: j.f64_or("rms_norm_eps", 1e-6)? as f32,
            act: j.activation("hidden_act", "silu")?,
        };
        if p.latents == 0
            || p.kv_heads == 0
            || p.head_dim == 0
            || !p.heads.is_multiple_of(p.kv_heads)
        {
            return Err(j.err("perceiver latents, heads and key/value heads do not fit together"));
        }
        Ok(p)
    }
}

pub(crate) fn load(cfg: &ConfigFile, ck: &Checkpoint, layout: Layout) -> Result<Parts> {
    let root = cfg.root();
    let vision = VisionConfig::read(root.obj("vision_config")?)?;
    let tied = root.bool_or("tie_word_embeddings", false)?;
    let text = TextConfig::read(root.obj("text_config")?, tied)?;
    let per = Perceiver::read(root.obj("perceiver_config")?)?;
    let image_token = root
        .usize("image_token_id")
        .map_err(|_| root.err("image_token_id is missing"))? as u32;
    let tower = vision_tower(
        ck,
        "model.vision_model.",
        &vision,
        Features {
            layers: vision.layers,
            post_norm: true,
        },
    )?;
    let side = vision.side();
    let (n, dv, d, l) = (side * side, vision.hidden, text.hidden, per.latents);
    let mut b = Builder {
        ck,
        g: Graph::new(
            Role::Projector,
            TowerInput::Values {
                rows: n,
                dim: dv,
                name: "image_features",
            },
        ),
    };
    let x = dense(b.g.input_buf, n, dv);
    let ctx = gated_mlp(
        &mut b,
        "model.connector.modality_projection.",
        x,
        text.intermediate,
        d,
        text.act,
    )?;
    let pr = "model.connector.perceiver_resampler.";
    let latents = b.tensor(&format!("{pr}latents"), &[l, d])?;
    let mut lat = b.new_mat(l, d);
    b.push(
        &format!("{pr}latents"),
        Constant {
            tensor: latents,
            out: lat,
        },
    );
    let (h, kv, hd) = (per.heads, per.kv_heads, per.head_dim);
    for i in 0..per.depth {
        let lp = format!("{pr}layers.{i}.");
        // Keys and values read the normalised context, then the normalised latents.
        let both = b.g.add_buffer((n + l) * d);
        let ctx_rows = dense(both, n, d);
        let lat_rows = Mat {
            offset: (n * d) as u32,
            ..dense(both, l, d)
        };
        for (norm, src, dst) in [
            ("input_context_norm", ctx, ctx_rows),
            ("input_latents_norm", lat, lat_rows),
        ] {
            let name = format!("{lp}{norm}.weight");
            let gamma = b.tensor(&name, &[d])?;
            b.push(
                &format!("{lp}{norm}"),
                vlm_runtime::ops::RmsNorm {
                    x: src,
                    gamma,
                    eps: per.eps,
                    out: dst,
                },
            );
        }
        let q = b.linear(
            &format!("{lp}self_attn.q_proj"),
            lat_rows,
            h * hd,
            Activation::None,
        )?;
        let wkv = b.stacked(
            &[
                &format!("{lp}self_attn.k_proj.weight"),
                &format!("{lp}self_attn.v_proj.weight"),
            ],
            &[kv * hd, kv * hd],
            d,
        )?;
        let kvm = b.linear_with(
            &format!("{lp}self_attn.kv"),
            dense(both, n + l, d),
            wkv,
            None,
            2 * kv * hd,
            Activation::None,
        );
        let a = b.new_mat(l, h * hd);
        b.push(
            &format!("{lp}self_attn"),
            Attention {
                q: Query::Mat(q),
                k: cols(kvm, 0, kv * hd),
                v: cols(kvm, kv * hd, kv * hd),
                heads: h as u32,
                head_dim: hd as u32,
                scale: (hd as f32).powf(-0.5),
                precision: Precision::F32,
                mask: Mask::None,
                past: None,
                out: a,
            },
        );
        let o = b.linear(&format!("{lp}self_attn.o_proj"), a, d, Activation::None)?;
        lat = b.add(&format!("{lp}residual1"), lat, o);
        let hn = b.rms_norm(
            &format!("{lp}post_attention_layernorm"),
            lat,
            per.eps,
            false,
        )?;
        let m = gated_mlp(&mut b, &format!("{lp}mlp."), hn, 4 * d, d, per.act)?;
        lat = b.add(&format!("{lp}residual2"), lat, m);
    }
    let out = b.rms_norm(&format!("{pr}norm"), lat, per.eps, false)?;
    b.g.output = out;
    let dec = decoder(
        ck,
        &Names::causal("model.text_model.", "lm_head.weight"),
        &text,
        layout.context,
        layout.prefill_rows,
    )?;
    Ok(Parts {
        vision,
        text,
        image_token,
        image_tokens: l,
        prefill_rows: layout.prefill_rows,
        graphs: vec![tower, b.g, dec.embedding, dec.prefill, dec.step],
        calibration: dec.calibration,
    })
}
