//! `Idefics3ForConditionalGeneration` (SmolVLM): SigLIP → pixel shuffle by
//! `scale_factor` → bias-free linear → Llama. One image is one tile at the vision
//! tower's size (no image splitting).

use vlm_runtime::ops::{Activation, PixelShuffle};

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
    let tied = root.bool_or("tie_word_embeddings", false)?;
    let text = TextConfig::read(root.obj("text_config")?, tied)?;
    let s = root.usize_or("scale_factor", 2)?;
    let side = vision.side();
    if s == 0 || side % s != 0 {
        return Err(root.err(format!("scale_factor {s} does not divide {side} patches")));
    }
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
    let (n, dv) = (side * side, vision.hidden);
    let tokens = n / (s * s);
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
    let shuffled = b.new_mat(tokens, dv * s * s);
    b.push(
        "model.connector.pixel_shuffle",
        PixelShuffle {
            x,
            grid_h: side as u32,
            grid_w: side as u32,
            scale: s as u32,
            out: shuffled,
        },
    );
    let y = b.linear(
        "model.connector.modality_projection.proj",
        shuffled,
        text.hidden,
        Activation::None,
    )?;
    b.g.output = y;
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
        image_tokens: tokens,
        prefill_rows: layout.prefill_rows,
        graphs: vec![tower, b.g, dec.embedding, dec.prefill, dec.step],
        calibration: dec.calibration,
    })
}
