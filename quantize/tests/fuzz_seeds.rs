//! The fuzzer's seed corpus (`runtime/fuzz/seeds/`): tiny artifacts written by the real
//! writer that between them use every op kind and variant, every optional section, every
//! port kind (state included: a decoder with its KV cache), and several graphs, so
//! mutations start from files that reach the executor.
//!
//! `cargo test --workspace --test fuzz_seeds -- --ignored` rewrites the seeds; the
//! generator is deterministic, so they change only when the format or the writer does.

use std::path::{Path, PathBuf};

use vlm_models::siglip::{Meta, Resample};
use vlm_quantize::graph::{Graph, Role, TowerInput};
use vlm_quantize::writer::{write_artifact, ArtifactParts, LabelSet};
use vlm_runtime::ops::{
    Activate, Activation, Add, Attention, Embedding, LayerNorm, Linear, Mask, Mat, Op, PatchEmbed,
    Precision, Query, Weights,
};
use vlm_runtime::{Input, Model, Session};

#[path = "support/decoder.rs"]
mod decoder;

const DIM: usize = 8;
const HEADS: u32 = 2;
const HEAD_DIM: u32 = 4;
const CHANNELS: usize = 3;
const SIDE: usize = 4;
const PATCH: usize = 2;
const PATCHES: usize = (SIDE / PATCH) * (SIDE / PATCH);
const TEXT_LEN: usize = 4;
const VOCAB: usize = 16;

/// Deterministic weights without a dependency.
struct Rng(vlm_runtime::harness::Rng);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| (self.next() % 1000) as f32 / 1000.0 - 0.5)
            .collect()
    }

    fn i8s(&mut self, n: usize) -> Vec<i8> {
        (0..n)
            .map(|_| (self.next() % 255) as i32 - 127)
            .map(|v| v as i8)
            .collect()
    }

    /// Positive scales, so int8 layers give finite, non-zero outputs.
    fn scales(&mut self, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| 0.001 + (self.next() % 100) as f32 / 10_000.0)
            .collect()
    }
}

fn f32_weights(g: &mut Graph, rng: &mut Rng, name: &str, out: usize, inp: usize) -> Weights {
    Weights::F32 {
        w: g.add_f32(name, vec![out, inp], rng.f32s(out * inp)),
    }
}

fn i8_weights(g: &mut Graph, rng: &mut Rng, name: &str, out: usize, inp: usize) -> Weights {
    Weights::I8 {
        w: g.add_i8_panels(name, out, inp, &rng.i8s(out * inp)),
        w_scale: g.add_f32(format!("{name}.scale"), vec![out], rng.scales(out)),
        x_scale: 0.02,
        x_zero: 128,
        narrow: false,
        narrow_x: false,
    }
}

fn dense(buf: u32, rows: usize, cols: usize) -> Mat {
    Mat::dense(buf, rows as u32, cols as u32)
}

/// The middle of a block shared by both towers: layer norm, fused QKV (f32, with bias),
/// self-attention over strided views of the QKV buffer, residual add. Returns the
/// residual's buffer.
fn block(g: &mut Graph, rng: &mut Rng, x: u32, rows: usize) -> u32 {
    let ln = g.add_buffer(rows * DIM);
    let gamma = g.add_f32("ln.gamma", vec![DIM], vec![1.0; DIM]);
    let beta = g.add_f32("ln.beta", vec![DIM], rng.f32s(DIM));
    g.push(
        "ln",
        Op::LayerNorm(LayerNorm {
            x: dense(x, rows, DIM),
            gamma,
            beta,
            eps: 1e-6,
            out: dense(ln, rows, DIM),
        }),
    );
    let qkv = g.add_buffer(rows * 3 * DIM);
    let weights = f32_weights(g, rng, "qkv.w", 3 * DIM, DIM);
    let bias = g.add_f32("qkv.b", vec![3 * DIM], rng.f32s(3 * DIM));
    g.push(
        "qkv",
        Op::Linear(Linear {
            x: dense(ln, rows, DIM),
            weights,
            bias: Some(bias),
            act: Activation::None,
            out: dense(qkv, rows, 3 * DIM),
        }),
    );
    let view = |part: usize| Mat {
        buf: qkv,
        offset: (part * DIM) as u32,
        rows: rows as u32,
        cols: DIM as u32,
        stride: (3 * DIM) as u32,
    };
    let attn = g.add_buffer(rows * DIM);
    g.push(
        "attn",
        Op::Attention(Attention {
            q: Query::Mat(view(0)),
            k: view(1),
            v: view(2),
            heads: HEADS,
            head_dim: HEAD_DIM,
            scale: 0.5,
            // Both precisions in every seed: this one bf16, the pooling one f32.
            precision: Precision::Bf16,
            out: dense(attn, rows, DIM),
            mask: Mask::None,
            past: None,
        }),
    );
    let res = g.add_buffer(rows * DIM);
    g.push(
        "residual",
        Op::Add(Add {
            a: dense(attn, rows, DIM),
            b: dense(x, rows, DIM),
            out: dense(res, rows, DIM),
        }),
    );
    res
}

/// Patch embedding (f32 or int8), a block, an int8 MLP with a separate activation, then a
/// pooling head: attention with a constant query, and an f32 linear without bias.
fn vision(patch_i8: bool, seed: u64) -> Graph {
    let mut rng = Rng(vlm_runtime::harness::Rng(seed));
    let mut g = Graph::new(
        Role::ImageEncoder,
        TowerInput::Pixels {
            channels: CHANNELS,
            height: SIDE,
            width: SIDE,
        },
    );
    let k = CHANNELS * PATCH * PATCH;
    let weights = if patch_i8 {
        i8_weights(&mut g, &mut rng, "patch.w", DIM, k)
    } else {
        f32_weights(&mut g, &mut rng, "patch.w", DIM, k)
    };
    let add = g.add_f32("patch.add", vec![PATCHES, DIM], rng.f32s(PATCHES * DIM));
    let x = g.add_buffer(PATCHES * DIM);
    g.push(
        "patch",
        Op::PatchEmbed(PatchEmbed {
            input: g.input_buf,
            channels: CHANNELS as u32,
            height: SIDE as u32,
            width: SIDE as u32,
            patch: PATCH as u32,
            weights,
            add,
            out: dense(x, PATCHES, DIM),
        }),
    );
    let res = block(&mut g, &mut rng, x, PATCHES);
    let up = g.add_buffer(PATCHES * 2 * DIM);
    let weights = i8_weights(&mut g, &mut rng, "fc1.w", 2 * DIM, DIM);
    g.push(
        "fc1",
        Op::Linear(Linear {
            x: dense(res, PATCHES, DIM),
            weights,
            bias: None,
            act: Activation::GeluTanh,
            out: dense(up, PATCHES, 2 * DIM),
        }),
    );
    g.push(
        "act",
        Op::Activate(Activate {
            x: dense(up, PATCHES, 2 * DIM),
            act: Activation::GeluErf,
        }),
    );
    let down = g.add_buffer(PATCHES * DIM);
    let weights = i8_weights(&mut g, &mut rng, "fc2.w", DIM, 2 * DIM);
    let bias = g.add_f32("fc2.b", vec![DIM], rng.f32s(DIM));
    g.push(
        "fc2",
        Op::Linear(Linear {
            x: dense(up, PATCHES, 2 * DIM),
            weights,
            bias: Some(bias),
            act: Activation::GeluErf,
            out: dense(down, PATCHES, DIM),
        }),
    );
    let probe = g.add_f32("probe", vec![1, DIM], rng.f32s(DIM));
    let pooled = g.add_buffer(DIM);
    g.push(
        "pool",
        Op::Attention(Attention {
            q: Query::Const {
                tensor: probe,
                rows: 1,
            },
            k: dense(down, PATCHES, DIM),
            v: dense(res, PATCHES, DIM),
            heads: HEADS,
            head_dim: HEAD_DIM,
            scale: 0.5,
            precision: Precision::F32,
            out: dense(pooled, 1, DIM),
            mask: Mask::None,
            past: None,
        }),
    );
    let head = g.add_buffer(DIM);
    let weights = f32_weights(&mut g, &mut rng, "head.w", DIM, DIM);
    g.push(
        "head",
        Op::Linear(Linear {
            x: dense(pooled, 1, DIM),
            weights,
            bias: None,
            act: Activation::GeluTanh,
            out: dense(head, 1, DIM),
        }),
    );
    g.output = dense(head, 1, DIM);
    g
}

/// Token embedding (f32 table, or int8 with row scales), a block, an int8 head with bias;
/// the embedding is the last token's row (an offset window into the buffer).
fn text(table_i8: bool, seed: u64) -> Graph {
    let mut rng = Rng(vlm_runtime::harness::Rng(seed));
    let mut g = Graph::new(Role::TextEncoder, TowerInput::Tokens { len: TEXT_LEN });
    let (table, table_scale) = if table_i8 {
        let t = g.add_i8("embed.table", vec![VOCAB, DIM], rng.i8s(VOCAB * DIM));
        let s = g.add_f32("embed.scale", vec![VOCAB], rng.scales(VOCAB));
        (t, Some(s))
    } else {
        let t = g.add_f32("embed.table", vec![VOCAB, DIM], rng.f32s(VOCAB * DIM));
        (t, None)
    };
    let add = g.add_f32("embed.pos", vec![TEXT_LEN, DIM], rng.f32s(TEXT_LEN * DIM));
    let x = g.add_buffer(TEXT_LEN * DIM);
    g.push(
        "embed",
        Op::Embedding(Embedding {
            ids: g.input_buf,
            table,
            table_scale,
            add,
            out: dense(x, TEXT_LEN, DIM),
            position: None,
        }),
    );
    let res = block(&mut g, &mut rng, x, TEXT_LEN);
    let head = g.add_buffer(TEXT_LEN * DIM);
    let weights = i8_weights(&mut g, &mut rng, "head.w", DIM, DIM);
    let bias = g.add_f32("head.b", vec![DIM], rng.f32s(DIM));
    g.push(
        "head",
        Op::Linear(Linear {
            x: dense(res, TEXT_LEN, DIM),
            weights,
            bias: Some(bias),
            act: Activation::GeluTanh,
            out: dense(head, TEXT_LEN, DIM),
        }),
    );
    g.output = Mat {
        buf: head,
        offset: ((TEXT_LEN - 1) * DIM) as u32,
        rows: 1,
        cols: DIM as u32,
        stride: DIM as u32,
    };
    g
}

fn meta() -> Meta {
    Meta {
        embed_dim: DIM,
        logit_scale: 10.0,
        logit_bias: -10.0,
        channels: CHANNELS,
        height: SIDE,
        width: SIDE,
        resample: Resample::Bicubic,
        rescale: 1.0 / 255.0,
        mean: [0.5; 3],
        std: [0.5; 3],
        convert_rgb: true,
        max_length: TEXT_LEN,
        pad_id: 0,
        eos_id: 1,
        vocab_size: VOCAB,
    }
}

/// Every seed: (file name, artifact bytes).
fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let vision_f32 = vision(false, 0x5eed_0001);
    let vision_i8 = vision(true, 0x5eed_0002);
    let text_f32 = text(false, 0x5eed_0003);
    let text_i8 = text(true, 0x5eed_0004);
    let names = ["a cat".to_string(), "a dog".to_string()];
    let mut rows = Rng(vlm_runtime::harness::Rng(0x5eed_0005)).f32s(names.len() * DIM);
    for row in rows.chunks_mut(DIM) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        row.iter_mut().for_each(|v| *v /= norm);
    }
    let tokenizer = br#"{"version":"1.0","model":{"type":"WordLevel","vocab":{"<pad>":0,"</s>":1,"a":2,"cat":3,"dog":4},"unk_token":"<pad>"}}"#;
    let config = br#"{"model_type":"siglip","projection_dim":8}"#;
    let vocab = vlm_host::detokenize::TokenBytes {
        tokens: ["", "", "a", " cat", " dog"]
            .map(|t| t.as_bytes().to_vec())
            .to_vec(),
        strips_leading_space: true,
    };
    let prompt = [2u32, 3];
    let dec = decoder::decoder(&decoder::weights(0x5eed_0006));
    let dec_i8 = int8_linears(&dec, 0x5eed_0007);
    let mut dec_i8kv = dec_i8.clone();
    assert_eq!(vlm_quantize::kv_cache::to_int8(&mut dec_i8kv), 2);
    let write = |graphs: Vec<&Graph>, full: bool| {
        write_artifact(&ArtifactParts {
            meta: meta().to_words().to_vec(),
            graphs,
            tokenizer_json: full.then_some(&tokenizer[..]),
            config_json: full.then_some(&config[..]),
            labels: full.then_some(LabelSet {
                names: &names,
                embeddings: &rows,
            }),
            vocab: full.then_some(&vocab),
            prompt_ids: full.then_some(&prompt[..]),
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .as_bytes()
        .to_vec()
    };
    vec![
        ("vision_f32_patch.vlmq", write(vec![&vision_f32], false)),
        ("vision_i8_patch.vlmq", write(vec![&vision_i8], false)),
        ("text_f32_table.vlmq", write(vec![&text_f32], false)),
        ("text_i8_table.vlmq", write(vec![&text_i8], false)),
        ("full.vlmq", write(vec![&vision_f32, &text_i8], true)),
        ("decoder.vlmq", write(vec![&dec], false)),
        ("encoder_decoder.vlmq", write(vec![&vision_i8, &dec], false)),
        ("decoder_i8.vlmq", write(vec![&dec_i8], false)),
        ("decoder_i8kv.vlmq", write(vec![&dec_i8kv], false)),
    ]
}

/// `g` with every linear layer's weights int8 (random): an int8 caption decoder's step,
/// its projections and head reading the KV cache's inputs through u8 activations.
fn int8_linears(g: &Graph, seed: u64) -> Graph {
    let mut q = g.clone();
    let mut rng = Rng(vlm_runtime::harness::Rng(seed));
    for i in 0..q.nodes.len() {
        if let vlm_runtime::ops::Op::Linear(l) = q.nodes[i].op {
            let t = q.tensor(l.weights.tensor()).clone();
            let name = format!("{}.i8", t.name);
            let w = i8_weights(&mut q, &mut rng, &name, t.dims[0], t.dims[1]);
            if let vlm_runtime::ops::Op::Linear(l) = &mut q.nodes[i].op {
                l.weights = w;
            }
        }
    }
    q
}

fn seed_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../runtime/fuzz/seeds")
}

/// Every seed runs through every tower it has, to finite outputs: a seed that stops at
/// the reader would leave the executor unexplored.
#[test]
fn seeds_run_end_to_end() {
    for (name, bytes) in seeds() {
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        let model = Model::from_bytes(bytemuck::cast_slice(&words)).unwrap();
        let mut arena = vec![0u8; model.arena_size()];
        let mut session = Session::new(&model, &mut arena).unwrap();
        let mut ran = 0;
        for (g, graph) in model.graphs().enumerate() {
            let mut out = vec![0.0; graph.outputs().next().unwrap().len()];
            let input = graph.inputs().next().unwrap();
            let pixels: Vec<f32> = (0..input.len()).map(|i| i as f32 / 48.0).collect();
            let ids: Vec<u32> = (0..input.len() as u32).map(|i| (i + 2) % 5).collect();
            let input = match input.dtype {
                vlm_runtime::model::DType::U32 => Input::U32(&ids),
                _ => Input::F32(&pixels),
            };
            // Twice: a decoder's second step reads what the first left in its cache.
            for _ in 0..2 {
                session.run(g, &[input], &mut [&mut out], None).unwrap();
                assert!(out.iter().all(|v| v.is_finite()), "{name}: {out:?}");
            }
            ran += 1;
        }
        assert!(ran > 0, "{name} has no graph");
        assert!(
            bytes.len() < 16 << 10,
            "{name} is {} bytes: seeds stay small",
            bytes.len()
        );
    }
}

/// A vision "tower" that is one int8 linear layer over `depth` pixels, with every
/// product at its extreme: (255 − 0) · −128.
fn deepest_int8_layer(depth: usize) -> Graph {
    let mut g = Graph::new(
        Role::ImageEncoder,
        TowerInput::Pixels {
            channels: 1,
            height: 1,
            width: depth,
        },
    );
    // −127: the largest weight magnitude a file may hold (−128 is refused at load).
    let w = g.add_i8_panels("w", 1, depth, &vec![-127; depth]);
    let w_scale = g.add_f32("w.scale", vec![1], vec![1.0]);
    let out = g.add_buffer(1);
    g.push(
        "linear",
        Op::Linear(Linear {
            x: dense(0, 1, depth),
            weights: Weights::I8 {
                w,
                w_scale,
                x_scale: 1.0,
                x_zero: 0,
                narrow: false,
                narrow_x: false,
            },
            bias: None,
            act: Activation::None,
            out: dense(out, 1, 1),
        }),
    );
    g.output = dense(out, 1, 1);
    g
}

/// The int8 GEMM accumulates in i32 (as SIMD kernels do): the reader refuses a layer deep
/// enough to overflow it, which a debug build would panic on and a release build would
/// turn into garbage.
#[test]
fn int8_layers_deeper_than_the_accumulator_are_refused() {
    let depth = vlm_runtime::format::MAX_I8_DEPTH;
    let ok = vlm_quantize::runner::single_tower(&deepest_int8_layer(depth)).unwrap();
    let y = ok.embed_pixels(&vec![1000.0; depth]).unwrap();
    assert_eq!(y, [-(255.0 * 127.0 * depth as f32)]);
    let err = vlm_quantize::runner::single_tower(&deepest_int8_layer(depth + 1))
        .err()
        .expect("a layer one input deeper loaded");
    assert!(err.to_string().contains("32-bit accumulator"), "{err}");
}

/// The committed seeds are what the generator writes now: a format or writer change
/// that forgot to regenerate them would leave the fuzzer and the hostile-input tests on
/// stale files.
#[test]
fn committed_seeds_are_current() {
    for (name, bytes) in seeds() {
        let committed = std::fs::read(seed_dir().join(name)).unwrap_or_default();
        assert!(
            committed == bytes,
            "runtime/fuzz/seeds/{name} is stale: cargo test -p vlm-quantize --test fuzz_seeds -- --ignored"
        );
    }
}

#[test]
#[ignore = "rewrites runtime/fuzz/seeds/; run with --ignored after a format change"]
fn regenerate_fuzz_seeds() {
    let dir = seed_dir();
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}
