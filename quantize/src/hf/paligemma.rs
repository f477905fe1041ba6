//! `PaliGemmaForConditionalGeneration`: SigLIP → linear → Gemma, whose prompt (image
//! tokens, `<bos>`, the text, `\n`) attends to itself both ways and whose positions
//! count from 1; generated tokens are causal.

use vlm_runtime::ops::Activation;

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
    let vision = VisionConfig::read(root.obj("vision_config")?)?;
    let tied = root.bool_or("tie_word_embeddings", true)?;
    let text = TextConfig::read(root.obj("text_config")?, tied)?;
    if !text.gemma {
        return Err(root.err("PaliGemma's language model is not Gemma"));
    }
    let image_token = root
        .usize("image_token_id")
        .or_else(|_| root.usize("image_token_index"))
        .map_err(|_| root.err("image_token_id is missing"))? as u32;
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
        "linear.weight",
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
            layers: vision.layers,
            post_norm: true,
        },
    )?;
    let n = vision.side() * vision.side();
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
    let x = dense(b.g.input_buf, n, vision.hidden);
    // transformers 5 splices the projection in as it is (the √hidden scale is the
    // token embedding's alone); older releases divided it by √hidden and scaled every
    // input embedding, which comes to the same.
    let y = b.linear(
        &format!("{projector}linear"),
        x,
        text.hidden,
        Activation::None,
    )?;
    b.g.output = y;
    // The whole prompt is one prefill run: room for the image and 64 text tokens.
    let prefill_rows = layout.prefill_rows.max(n + 64).min(layout.context);
    let dec = decoder(
        ck,
        &Names {
            prefix: text_prefix,
            head,
            first_position: 1,
            prefix_both_ways: true,
        },
        &text,
        layout.context,
        prefill_rows,
    )?;
    Ok(Parts {
        vision,
        text,
        image_token,
        image_tokens: n,
        prefill_rows,
        graphs: vec![tower, b.g, dec.embedding, dec.prefill, dec.step],
        calibration: dec.calibration,
    })
}
