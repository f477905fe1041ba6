//! ONNX import: the shipped demo towers, the base-size architecture and a differently
//! shaped SigLIP lower to the runtime's ops with the structure their configs imply, and
//! run on the runtime's executor to what tract computes from the ONNX files.
//!
//! The exports need the recipe's Python environment: `VLM_PYTHON` names its interpreter
//! (default: the venv `scripts/setup-python.sh` makes). Without one those tests say so and
//! pass, unless `VLM_REQUIRE_PYTHON` is set (CI sets it), where they fail.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
mod common;
use common::{python_or_skip, recipe};
use std::time::Instant;

use vlm_models::siglip::ModelConfig;
use vlm_quantize::graph::{Graph, Role, TowerInput};
use vlm_quantize::import::import_tower;
use vlm_quantize::runner::run_f32;
use vlm_quantize::{Error, Fp32Siglip};
use vlm_runtime::ops::{Activation, Attention, Embedding, Linear, Op, PatchEmbed, Query, Weights};
use vlm_runtime::score::cosine;

/// The same fp32 arithmetic in another summation order.
const MIN_COSINE: f32 = 0.99999;

fn demo_model() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo")
}

fn vision_input(cfg: &ModelConfig) -> TowerInput {
    let [height, width] = cfg.preprocess.size;
    TowerInput::Pixels {
        channels: cfg.vision.num_channels,
        height,
        width,
    }
}

fn import(dir: &Path, cfg: &ModelConfig, kind: Role) -> Graph {
    let (file, input) = match kind {
        Role::ImageEncoder => (&cfg.vision.onnx, vision_input(cfg)),
        _ => (
            &cfg.text.onnx,
            TowerInput::Tokens {
                len: cfg.text.max_length,
            },
        ),
    };
    import_tower(&dir.join(file), kind, input).unwrap_or_else(|e| panic!("{e}"))
}

fn counts(g: &Graph) -> HashMap<&'static str, usize> {
    let mut c = HashMap::new();
    for n in &g.nodes {
        *c.entry(n.op.kind()).or_default() += 1;
    }
    c
}

fn tensor_dims(g: &Graph, t: u32) -> Vec<usize> {
    g.tensor(t).dims.clone()
}

fn linear_shapes(g: &Graph) -> Vec<Vec<usize>> {
    g.nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Linear(Linear {
                weights: Weights::F32 { w },
                ..
            }) => Some(tensor_dims(g, w)),
            _ => None,
        })
        .collect()
}

/// The vision tower's structure, from its config: a patch embedding, per layer
/// LN → q,k,v → attention → out → residual, LN → fc1(GELU fused) → fc2 → residual, the
/// final LN, then the MAP head (packed k/v projection, one constant-query attention,
/// out projection, LN, MLP, residual).
fn check_vision(g: &Graph, cfg: &ModelConfig) {
    let v = &cfg.vision;
    let (l, d, i, h) = (
        v.num_hidden_layers,
        v.hidden_size,
        v.intermediate_size,
        v.num_attention_heads,
    );
    let c = counts(g);
    let want = HashMap::from([
        ("patch_embed", 1),
        ("layer_norm", 2 * l + 2),
        ("linear", 6 * l + 4),
        ("attention", l + 1),
        ("add", 2 * l + 1),
    ]);
    assert_eq!(c, want, "{:#?}", g.nodes);
    let patches = (cfg.preprocess.size[0] / v.patch_size) * (cfg.preprocess.size[1] / v.patch_size);
    let Op::PatchEmbed(PatchEmbed {
        patch,
        weights: Weights::F32 { w },
        add,
        out,
        ..
    }) = g.nodes[0].op
    else {
        panic!("first op: {:?}", g.nodes[0]);
    };
    assert_eq!(patch as usize, v.patch_size);
    assert_eq!(
        tensor_dims(g, w),
        [d, v.num_channels * v.patch_size * v.patch_size]
    );
    assert_eq!(tensor_dims(g, add), [patches, d]);
    assert_eq!((out.rows as usize, out.cols as usize), (patches, d));

    let mut want_linears = Vec::new();
    for _ in 0..l {
        want_linears.extend(std::iter::repeat_n(vec![d, d], 4));
        want_linears.extend([vec![i, d], vec![d, i]]);
    }
    want_linears.extend([vec![2 * d, d], vec![d, d], vec![i, d], vec![d, i]]);
    assert_eq!(linear_shapes(g), want_linears);
    let want_act = match v.hidden_act.as_str() {
        "gelu_pytorch_tanh" => Activation::GeluTanh,
        _ => Activation::GeluErf,
    };
    for n in &g.nodes {
        if let Op::Linear(Linear {
            act,
            bias,
            weights: Weights::F32 { w },
            ..
        }) = n.op
        {
            let fc1 = tensor_dims(g, w)[0] == i;
            assert_eq!(
                act,
                if fc1 { want_act } else { Activation::None },
                "{}",
                n.name
            );
            assert!(bias.is_some(), "{} has no bias", n.name);
        }
    }
    let attn: Vec<_> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Attention(Attention {
                q,
                heads,
                head_dim,
                scale,
                k,
                ..
            }) => Some((q, heads, head_dim, scale, k)),
            _ => None,
        })
        .collect();
    let dh = d / h;
    for (j, &(q, heads, head_dim, scale, k)) in attn.iter().enumerate() {
        assert_eq!((heads as usize, head_dim as usize), (h, dh));
        if j < l {
            assert!(
                matches!(q, Query::Mat(m) if m.rows as usize == patches && m.cols as usize == d)
            );
            assert!(
                (scale - (dh as f32).powf(-0.5)).abs() < 1e-6,
                "scale {scale}"
            );
        } else {
            // The pooling head's probe is projected and scaled at import.
            let Query::Const { tensor, rows: 1 } = q else {
                panic!("head query {q:?}")
            };
            assert_eq!(tensor_dims(g, tensor), [1, d]);
            assert_eq!(scale, 1.0);
            // k is the first half of the packed [patches, 2·d] projection.
            assert_eq!(
                (k.rows as usize, k.cols as usize, k.stride as usize),
                (patches, d, 2 * d)
            );
        }
    }
    assert_eq!((g.output.rows, g.output.cols as usize), (1, d));
}

/// The text tower: token embedding (+ positions), layers as in vision, the final LN, the
/// head over the last position.
fn check_text(g: &Graph, cfg: &ModelConfig) {
    let t = &cfg.text;
    let (l, d, i) = (t.num_hidden_layers, t.hidden_size, t.intermediate_size);
    let c = counts(g);
    let want = HashMap::from([
        ("embedding", 1),
        ("layer_norm", 2 * l + 1),
        ("linear", 6 * l + 1),
        ("attention", l),
        ("add", 2 * l),
    ]);
    assert_eq!(c, want, "{:#?}", g.nodes);
    let Op::Embedding(Embedding {
        table, add, out, ..
    }) = g.nodes[0].op
    else {
        panic!("first op: {:?}", g.nodes[0]);
    };
    assert_eq!(tensor_dims(g, table), [t.vocab_size, d]);
    assert_eq!(tensor_dims(g, add), [t.max_length, d]);
    assert_eq!(out.rows as usize, t.max_length);
    let shapes = linear_shapes(g);
    assert_eq!(shapes.last().unwrap(), &vec![t.projection_size, d]);
    assert_eq!(shapes.iter().filter(|s| s[0] == i).count(), l);
    // The head reads only the last position.
    let Some(Op::Linear(Linear { x, .. })) = g.nodes.last().map(|n| n.op) else {
        panic!("last op: {:?}", g.nodes.last());
    };
    assert_eq!((x.rows, x.offset as usize), (1, (t.max_length - 1) * d));
    assert_eq!(
        (g.output.rows, g.output.cols as usize),
        (1, t.projection_size)
    );
}

fn check_numerics(dir: &Path, vision: &Graph, text: &Graph, pixels: &[Vec<f32>], ids: &[Vec<i64>]) {
    let reference = Fp32Siglip::load(dir).unwrap();
    let mut worst = (1.0f32, 1.0f32);
    for p in pixels {
        let want = reference.embed_pixels(p.clone()).unwrap();
        let got = run_f32(vision, p).unwrap();
        let cos = cosine(&got, &want);
        assert!(cos >= MIN_COSINE, "vision cosine {cos}");
        worst.0 = worst.0.min(cos);
    }
    for i in ids {
        let want = reference.embed_ids(i).unwrap();
        let as_f: Vec<f32> = i.iter().map(|&v| v as f32).collect();
        let got = run_f32(text, &as_f).unwrap();
        let cos = cosine(&got, &want);
        assert!(cos >= MIN_COSINE, "text cosine {cos} for {i:?}");
        worst.1 = worst.1.min(cos);
    }
    eprintln!(
        "{}: worst cosine to tract: vision {}, text {}",
        dir.display(),
        worst.0,
        worst.1
    );
}

/// Deterministic pseudo-random values.
fn lcg(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s >> 33
    }
}

#[test]
fn demo_towers_lower_to_the_expected_ops() {
    let dir = demo_model();
    let cfg = ModelConfig::load(&dir).unwrap();
    check_vision(&import(&dir, &cfg, Role::ImageEncoder), &cfg);
    check_text(&import(&dir, &cfg, Role::TextEncoder), &cfg);
}

#[test]
fn demo_towers_match_tract() {
    let dir = demo_model();
    let cfg = ModelConfig::load(&dir).unwrap();
    let vision = import(&dir, &cfg, Role::ImageEncoder);
    let text = import(&dir, &cfg, Role::TextEncoder);
    let reference = Fp32Siglip::load(&dir).unwrap();
    let mut pixels = Vec::new();
    for e in std::fs::read_dir(dir.join("examples")).unwrap() {
        pixels.push(reference.pixels_for(&e.unwrap().path()).unwrap());
    }
    let texts = ["a photo of a cat", "two blue stars", "a red circle", ""];
    let ids: Vec<Vec<i64>> = texts
        .iter()
        .map(|t| reference.token_ids(t).unwrap())
        .collect();
    check_numerics(&dir, &vision, &text, &pixels, &ids);
}

#[test]
fn import_refuses_what_it_cannot_read() {
    let dir = demo_model();
    let vision = dir.join("vision.onnx");
    let px = TowerInput::Pixels {
        channels: 3,
        height: 64,
        width: 64,
    };
    let missing = import_tower(&dir.join("nope.onnx"), Role::ImageEncoder, px);
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );

    let tmp = std::env::temp_dir().join(format!("vlm-import-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let garbage = tmp.join("garbage.onnx");
    std::fs::write(&garbage, b"definitely not a protobuf \xff\xff\xff").unwrap();
    let e = import_tower(&garbage, Role::ImageEncoder, px);
    assert!(matches!(e, Err(Error::Onnx { .. })), "{e:?}");
    let bytes = std::fs::read(&vision).unwrap();
    let cut = tmp.join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    assert!(import_tower(&cut, Role::ImageEncoder, px).is_err());
    std::fs::remove_dir_all(&tmp).ok();

    // Another input size than the export's: the ONNX input declaration says so.
    let other = TowerInput::Pixels {
        channels: 3,
        height: 96,
        width: 96,
    };
    let e = import_tower(&vision, Role::ImageEncoder, other).unwrap_err();
    assert!(e.to_string().contains("pixel_values"), "{e}");
    // A tower imported as the other kind.
    let e = import_tower(&vision, Role::TextEncoder, TowerInput::Tokens { len: 16 }).unwrap_err();
    assert!(matches!(e, Error::Import { .. }), "{e}");
}

/// Runs the recipe's Python (in models/recipes) with `args`, then the output folder (a
/// fresh temp folder, returned); None (skipped) without a recipe Python.
fn recipe_export(tag: &str, args: &[&str]) -> Option<PathBuf> {
    let py = python_or_skip(tag)?;
    let dir = std::env::temp_dir().join(format!("vlm-import-{tag}-{}", std::process::id()));
    let args: Vec<&str> = args
        .iter()
        .copied()
        .chain([dir.to_str().unwrap()])
        .collect();
    recipe(&py, &args);
    Some(dir)
}

/// `--random arch` (with `--random-config overrides`), as the export recipe writes it.
fn export(tag: &str, arch: &str, overrides: Option<&str>) -> Option<PathBuf> {
    let mut args = vec!["-m", "vlm_recipes.export", "--random", arch];
    if let Some(o) = overrides {
        args.extend(["--random-config", o]);
    }
    args.push("--out");
    recipe_export(tag, &args)
}

/// Random numbers of the right kind for a tower's input.
fn inputs(cfg: &ModelConfig, seed: u64) -> (Vec<Vec<f32>>, Vec<Vec<i64>>) {
    let mut rnd = lcg(seed);
    let [h, w] = cfg.preprocess.size;
    let n = cfg.vision.num_channels * h * w;
    let pixels = (0..2)
        .map(|_| {
            (0..n)
                .map(|_| (rnd() % 2001) as f32 / 1000.0 - 1.0)
                .collect()
        })
        .collect();
    let vocab = cfg.text.vocab_size as u64;
    let ids = (0..2)
        .map(|_| {
            (0..cfg.text.max_length)
                .map(|_| (rnd() % vocab) as i64)
                .collect()
        })
        .collect();
    (pixels, ids)
}

/// A small SigLIP unlike the base and demo sizes: another width, head count, depth,
/// patch and image size, vocabulary, length and projection.
const ODD: &str = r#"{"vision": {"hidden_size": 96, "num_attention_heads": 6, "num_hidden_layers": 3,
    "intermediate_size": 200, "patch_size": 14, "image_size": 56, "hidden_act": "gelu"},
    "text": {"hidden_size": 80, "num_attention_heads": 5, "num_hidden_layers": 2,
    "intermediate_size": 160, "vocab_size": 300, "max_position_embeddings": 12,
    "projection_size": 96}}"#;

#[test]
fn base_size_export_imports() {
    let Some(dir) = export("base", "siglip-base-patch16-224", None) else {
        return;
    };
    let cfg = ModelConfig::load(&dir).unwrap();
    let t0 = Instant::now();
    let vision = import(&dir, &cfg, Role::ImageEncoder);
    let t1 = Instant::now();
    let text = import(&dir, &cfg, Role::TextEncoder);
    let t2 = Instant::now();
    eprintln!(
        "base-size import: vision {:.2?} ({} ops), text {:.2?} ({} ops)",
        t1 - t0,
        vision.nodes.len(),
        t2 - t1,
        text.nodes.len()
    );
    check_vision(&vision, &cfg);
    check_text(&text, &cfg);
    std::fs::remove_dir_all(&dir).ok();
}

/// Nothing assumes the base or demo sizes (and exact, erf GELU is recognised).
#[test]
fn differently_shaped_siglip_imports_and_matches_tract() {
    let Some(dir) = export("odd", "siglip-base-patch16-224", Some(ODD)) else {
        return;
    };
    let cfg = ModelConfig::load(&dir).unwrap();
    let vision = import(&dir, &cfg, Role::ImageEncoder);
    let text = import(&dir, &cfg, Role::TextEncoder);
    check_vision(&vision, &cfg);
    check_text(&text, &cfg);
    let (pixels, ids) = inputs(&cfg, 7);
    check_numerics(&dir, &vision, &text, &pixels, &ids);
    std::fs::remove_dir_all(&dir).ok();
}

/// torch's scaled-dot-product attention exports scale q and kᵀ by √scale each before
/// their MatMul (eager attention scales the scores): both become one attention op.
#[test]
fn sdpa_attention_export_imports_and_matches_tract() {
    let code = r#"
import json, sys
from vlm_recipes.export import export_siglip, random_model
model = random_model("siglip-base-patch16-224", 3, json.loads(sys.argv[1]))
for module in model.modules():
    config = getattr(module, "config", None)
    if hasattr(config, "_attn_implementation"):
        config._attn_implementation = "sdpa"
export_siglip(model, sys.argv[2])
"#;
    let Some(dir) = recipe_export("sdpa", &["-c", code, ODD]) else {
        return;
    };
    let cfg = ModelConfig::load(&dir).unwrap();
    let vision = import(&dir, &cfg, Role::ImageEncoder);
    let text = import(&dir, &cfg, Role::TextEncoder);
    check_vision(&vision, &cfg);
    check_text(&text, &cfg);
    let (pixels, ids) = inputs(&cfg, 11);
    check_numerics(&dir, &vision, &text, &pixels, &ids);
    std::fs::remove_dir_all(&dir).ok();
}
