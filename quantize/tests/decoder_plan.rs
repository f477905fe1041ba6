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
    let w = decoder::weights(0xdec0_de00);
    let g = decoder::decoder(&w);
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
            session.reset_state();
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
