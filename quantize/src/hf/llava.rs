//! `LlavaForConditionalGeneration`: a SigLIP vision tower's chosen hidden state →
//! Linear-act-Linear → a Llama-style language model.

use super::build::{dense, Builder};
use super::checkpoint::Checkpoint;
use super::config::{ConfigFile, TextConfig, VisionConfig};
use super::llama::{decoder, Names};
use super::siglip_vision::{vision_tower, Features};
use super::{Layout, Parts};
use crate::graph::{Graph, Role, TowerInput};
use crate::Result;

pub(crate) fn load(cfg: &ConfigFile, ck: &Checkpoint, layout: Layout) -> Result<Parts> {
    let root = cfg.root();
    let vj = root.obj("vision_config")?;
    let model_type = vj.str_or("model_type", "clip_vision_model")?;
    if model_type != "siglip_vision_model" {
        return Err(vj.err(format!(
            "vision tower {model_type:?} is not supported (siglip_vision_model is)"
        )));
    }
    let vision = VisionConfig::read(vj)?;
    let tied = root.bool_or("tie_word_embeddings", false)?;
    let text = TextConfig::read(root.obj("text_config")?, tied)?;
    // `hidden_states[k]`: the embeddings are entry 0, layer i's output entry i + 1.
    let layer = root
        .get("vision_feature_layer")
        .and_then(|v| v.as_i64())
        .unwrap_or(-2);
    let states = vision.layers as i64 + 1;
    let k = if layer < 0 { states + layer } else { layer };
    if !(1..states).contains(&k) {
        return Err(root.err(format!(
            "vision_feature_layer {layer} is not one of the tower's {} layers",
            vision.layers
        )));
    }
    let skip = match root.str_or("vision_feature_select_strategy", "default")? {
        "default" => 1,
        "full" => 0,
        other => return Err(root.err(format!("vision_feature_select_strategy {other:?}"))),
    };
    let image_token = root
        .usize("image_token_id")
        .or_else(|_| root.usize("image_token_index"))
        .map_err(|_| root.err("image_token_id is missing"))? as u32;
    let act = root.activation("projector_hidden_act", "gelu")?;
    // Checkpoints name the parts after the transformers version that saved them
    // (`model.vision_tower.…` in 5, `vision_tower.vision_model.…` before, `vision_tower.…`
    // from 5's own save_pretrained): take whichever the file has.
    let pick = |cands: &[&'static str], probe: &str| -> Result<&'static str> {
        ck.prefix_of(cands, probe).ok_or_else(|| {
            root.err(format!(
                "no tensor {}{probe} (or any known prefix)",
                cands[0]
            ))
        })
    };
    let vision_prefix = pick(
        &[
            "model.vision_tower.vision_model.",
            "model.vision_tower.",
            "vision_tower.vision_model.",
            "vision_tower.",
        ],
        "embeddings.patch_embedding.weight",
    )?;
    let projector = pick(
        &["model.multi_modal_projector.", "multi_modal_projector."],
        "linear_1.weight",
    )?;
    let text_prefix = pick(
        &["model.language_model.", "language_model.model."],
        "embed_tokens.weight",
    )?;
    let head = ["lm_head.weight", "language_model.lm_head.weight"]
        .into_iter()
        .find(|h| ck.has(h))
        .unwrap_or("lm_head.weight");
    let tower = vision_tower(
        ck,
        vision_prefix,
        &vision,
        Features {
            layers: k as usize,
            post_norm: false,
        },
    )?;
    let n = vision.side() * vision.side();
    let tokens = n - skip;
    let mut b = Builder {
        ck,
        g: Graph::new(
            Role::Projector,
            TowerInput::Values {
                rows: n,
                dim: vision.hidden,
                name: "image_features",
            },
        ),
    };
    let all = dense(b.g.input_buf, n, vision.hidden);
    let x = vlm_runtime::ops::Mat {
        offset: (skip * vision.hidden) as u32,
        rows: tokens as u32,
        ..all
    };
    let h = b.linear(&format!("{projector}linear_1"), x, text.hidden, act)?;
    let y = b.linear(
        &format!("{projector}linear_2"),
        h,
        text.hidden,
        vlm_runtime::ops::Activation::None,
    )?;
    b.g.output = y;
    let dec = decoder(
        ck,
        &Names::causal(text_prefix, head),
        &text,
        layout.context,
        layout.prefill_rows,
    )?;
    Ok(Parts {
        vision,
        text,
        image_token,
        image_tokens: tokens,
        prefill_rows: layout.prefill_rows,
        graphs: vec![tower, b.g, dec.embedding, dec.prefill, dec.step],
        calibration: dec.calibration,
    })
}
