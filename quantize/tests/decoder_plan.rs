//! The format and executor hold a decoder: a plan built by hand (embedding → causal
//! attention that reads and appends a KV cache kept in state buffers → linear) runs
//! token by token, each step matching a recomputation from the definitions, on every
//! kernel set this CPU has; a full cache is refused and a reset starts over. The same
//! plan is a fuzz seed (`runtime/fuzz/seeds/decoder.vlmq`), which
//! `runtime/tests/no_alloc.rs` runs step by step with zero allocations (and under QEMU on
//! every Arm level). The captioning decoder builds on it.

use vlm_quantize::writer::{write_artifact, ArtifactParts};
use vlm_runtime::kernels::ALL;
use vlm_runtime::{Error, Input, Model, Session};

#[path = "support/decoder.rs"]
mod decoder;

fn artifact() -> (decoder::Weightset, Vec<u8>) {
    artifact_with(false)
}

/// With `int8_cache`, the keys and values kept int8 (`kv_cache::to_int8`).
fn artifact_with(int8_cache: bool) -> (decoder::Weightset, Vec<u8>) {
    let w = decoder::weights(0xdec0_de00);
    let mut g = decoder::decoder(&w);
    if int8_cache {
        assert_eq!(vlm_quantize::kv_cache::to_int8(&mut g), 2);
    }
    let meta = vlm_models::siglip::Meta {
        embed_dim: decoder::VOCAB,
        logit_scale: 1.0,
        logit_bias: 0.0,
        channels: 3,
        height: 2,
        width: 2,
        resample: vlm_models::siglip::Resample::Bicubic,
        rescale: 1.0,
        mean: [0.0; 3],
        std: [1.0; 3],
        convert_rgb: true,
        max_length: 1,
        pad_id: 0,
        eos_id: 1,
        vocab_size: decoder::VOCAB,
    };
    let bytes = write_artifact(&ArtifactParts {
        meta: meta.to_words().to_vec(),
        graphs: vec![&g],
        tokenizer_json: None,
        config_json: None,
        labels: None,
        vocab: None,
        prompt_ids: None,
    })
    .unwrap();
    (w, bytes.as_bytes().to_vec())
}

fn words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn a_decoder_keeps_its_cache_between_steps() {
    let (w, bytes) = artifact();
    let words = words(&bytes);
    let model = Model::from_bytes(bytemuck::cast_slice(&words)).unwrap();
    let tokens = [3u32, 7, 7, 0, 15, 2];
    assert_eq!(tokens.len(), decoder::CAPACITY);
    let want = decoder::reference(&w, &tokens);
    let graph = model
        .graph_index(vlm_runtime::Role::Decoder)
        .expect("a decoder graph");
    for isa in ALL.into_iter().filter(|i| i.supported()) {
        let mut arena = vec![0u8; model.arena_size()];
        let mut session = Session::with_isa(&model, &mut arena, isa).unwrap();
        let mut logits = vec![0.0f32; decoder::VOCAB];
        for round in 0..2 {
            for (step, &t) in tokens.iter().enumerate() {
                session
                    .run(graph, &[Input::U32(&[t])], &mut [&mut logits], None)
                    .unwrap();
                for (got, want) in logits.iter().zip(&want[step]) {
                    assert!(
                        (got - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{} step {step}: {got} vs {want}",
                        isa.name()
                    );
                }
            }
            // Full: the next step is refused, and leaves the cache as it was.
            let err = session
                .run(graph, &[Input::U32(&[1])], &mut [&mut logits], None)
                .unwrap_err();
            assert_eq!(
                err,
                Error::CacheFull {
                    need: decoder::CAPACITY + 1,
                    capacity: decoder::CAPACITY
                },
                "round {round}"
            );
            // A new sequence: the same steps give the same logits.
            session.reset_state().unwrap();
        }
    }
}

#[test]
fn the_decoder_graph_declares_its_state() {
    let (_, bytes) = artifact();
    let words = words(&bytes);
    let model = Model::from_bytes(bytemuck::cast_slice(&words)).unwrap();
    let g = model.graph(vlm_runtime::Role::Decoder).unwrap();
    let states: Vec<(&str, usize)> = g.states().map(|p| (p.name, p.len())).collect();
    assert_eq!(
        states,
        [
            ("position", 1),
            ("keys", decoder::CAPACITY * decoder::DIM),
            ("values", decoder::CAPACITY * decoder::DIM)
        ]
    );
    assert!(model.state_bytes() >= 4 * 2 * decoder::CAPACITY * decoder::DIM);
}

/// The same decoder over an int8 cache: a quarter of the state (and a word per head and
/// position), every kernel set the same bits as the reference, and each step's logits
/// within int8's error of the definitions.
#[test]
fn an_int8_cache_decodes_near_the_definitions_in_the_same_bits_everywhere() {
    let (w, bytes) = artifact_with(true);
    let words = words(&bytes);
    let model = Model::from_bytes(bytemuck::cast_slice(&words)).unwrap();
    let (_, f32_bytes) = artifact_with(false);
    let f32_words = self::words(&f32_bytes);
    let f32_model = Model::from_bytes(bytemuck::cast_slice(&f32_words)).unwrap();
    let graph = model
        .graph_index(vlm_runtime::Role::Decoder)
        .expect("a decoder graph");
    let state = |m: &Model| {
        let g = m.graph_at(graph).unwrap();
        g.states().map(|p| g.buffer_len(p.mat.buf)).sum::<usize>()
    };
    // Per position: 8 values and 2 scales a cache, against 8 floats; plus the position.
    let rows = decoder::CAPACITY;
    assert_eq!(state(&model), 2 * rows * (8 / 4 + 2) + 1);
    assert_eq!(state(&f32_model), 2 * rows * 8 + 1);
    let tokens = [3u32, 7, 7, 0, 15, 2];
    let want = decoder::reference(&w, &tokens);
    let run = |isa| {
        let mut arena = vec![0u8; model.arena_size()];
        let mut session = Session::with_isa(&model, &mut arena, isa).unwrap();
        let mut logits = vec![0.0f32; decoder::VOCAB];
        let mut all = Vec::new();
        for &t in &tokens {
            session
                .run(graph, &[Input::U32(&[t])], &mut [&mut logits], None)
                .unwrap();
            all.push(logits.clone());
        }
        all
    };
    let reference = run(vlm_runtime::kernels::Isa::Scalar);
    for (step, (got, want)) in reference.iter().zip(&want).enumerate() {
        let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (g, w) in got.iter().zip(want) {
            // Keys, values and query each within half an int8 step of their head's
            // largest value: 0.3% of the logits' range here, 2% allowed.
            assert!((g - w).abs() <= 0.02 * scale, "step {step}: {g} vs {w}");
        }
    }
    for isa in ALL.into_iter().filter(|i| i.supported()) {
        let got = run(isa);
        let same = got.iter().flatten().zip(reference.iter().flatten());
        assert!(
            same.clone().all(|(a, b)| a.to_bits() == b.to_bits()),
            "{}: other bits than the scalar reference",
            isa.name()
        );
    }
}

/// Heads that do not start on a word (a head size not a multiple of 4) keep their f32
/// cache: the rewrite leaves such a decoder as it was.
#[test]
fn heads_off_the_word_grid_keep_an_f32_cache() {
    let w = decoder::weights(0xdec0_de00);
    let mut g = decoder::decoder(&w);
    for n in &mut g.nodes {
        if let vlm_runtime::ops::Op::Attention(a) = &mut n.op {
            (a.heads, a.head_dim) = (4, 2);
        }
    }
    let before = g.clone();
    assert_eq!(vlm_quantize::kv_cache::to_int8(&mut g), 0);
    assert!(g.nodes == before.nodes, "the decoder changed");
    assert!(g
        .states
        .iter()
        .all(|s| s.dtype != vlm_runtime::model::DType::I8));
}
