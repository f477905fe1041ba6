//! Hugging Face captioners read from their folders (`vlm_quantize::hf`) compute what
//! PyTorch computes: the recipe builds each family's real class with a small config and
//! random weights (`vlm_recipes.hf_captioners make`), saves it as `save_pretrained` does,
//! and records the processor's prompt ids and pixels, the vision features, the image
//! embeddings and the logits at the last prompt position and at 8 teacher-forced steps
//! (`… reference`); the runtime must give the same ids, and cosine ≥ 0.9999 for every
//! tensor. Random weights give near-tied logits, so greedy tokens are not compared here.
//! Also: no allocation per generated token, nor in prefill.
//!
//! int8 (`vlm_quantize::caption_pipeline`): each tiny family quantizes into an artifact
//! that captions, every graph int8 and close to fp32; the shipped demo captioner,
//! quantized on the demo calibration folder (training-distribution scenes, none of them
//! in the caption set), keeps its captions on the caption eval set — greedy tokens equal
//! to fp32's on ≥ 90 % of images, BLEU-4 and CIDEr-D within 3 % relative, seen
//! colour–shape pairs named within 2 points — with prefill and step sharing one copy of
//! the decoder's weights, and the same tokens on every kernel set this CPU has.
//!
//! Needs the recipe's Python (see `common`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use vlm_host::caption::Captioner;
use vlm_models::generate::{argmax, greedy, Generator, Options};
use vlm_quantize::caption_pipeline::{
    quantize_captioner, CaptionQuantReport, CaptionRequest, KvCache,
};
use vlm_quantize::hf;
use vlm_quantize::writer::AlignedBytes;
use vlm_runtime::kernels::Isa;

struct Counting;

thread_local! {
    // Per thread: the test harness runs other tests (and their allocations) alongside.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn allocs() -> usize {
    ALLOCS.with(|a| a.get())
}

fn count() {
    // `try_with`: an allocation while the thread is being torn down is not ours.
    let _ = ALLOCS.try_with(|a| a.set(a.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count();
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        count();
        System.realloc(p, l, n)
    }
}

#[global_allocator]
static A: Counting = Counting;

struct Reference {
    input_ids: Vec<u32>,
    continuation: Vec<u32>,
    pixels: Vec<f32>,
    features: Vec<f32>,
    image_embeds: Vec<f32>,
    logits: Vec<f32>,
    vocab: usize,
}

fn read_ref(path: &Path) -> Reference {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |n: &str| -> Vec<f32> {
        let t = st.tensor(n).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32, "{n}");
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    let ids = |n: &str| -> Vec<u32> {
        let t = st.tensor(n).unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::I32, "{n}");
        t.data()
            .chunks_exact(4)
            .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as u32)
            .collect()
    };
    let vocab = st.tensor("logits").unwrap().shape()[1];
    Reference {
        input_ids: ids("input_ids"),
        continuation: ids("continuation"),
        pixels: f32s("pixel_values"),
        features: f32s("vision_features"),
        image_embeds: f32s("image_embeds"),
        logits: f32s("logits"),
        vocab,
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (x as f64, y as f64);
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt()).max(1e-300)
}

fn close(what: &str, got: &[f32], want: &[f32]) {
    let c = cosine(got, want);
    assert!(c >= 0.9999, "{what}: cosine {c}");
}

const PROMPT: &str = "a picture of";

fn make(py: &Path, family: &str, size: &str, dir: &Path) {
    let d = dir.to_str().unwrap();
    let m = "vlm_recipes.hf_captioners";
    common::recipe(
        py,
        &[
            "-m", m, "make", "--family", family, "--size", size, "--out", d,
        ],
    );
}

/// PyTorch's reference for the model in `dir`, written to `out`.
fn reference(py: &Path, dir: &Path, image: &Path, prompt: &str, out: &Path) {
    common::recipe(
        py,
        &[
            "-m",
            "vlm_recipes.hf_captioners",
            "reference",
            "--model",
            dir.to_str().unwrap(),
            "--image",
            image.to_str().unwrap(),
            "--prompt",
            prompt,
            "--out",
            out.to_str().unwrap(),
        ],
    );
}

fn eval_image(i: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../models/demo-eval/images/{i:05}.png"))
}

fn check_family(family: &str) {
    check(family, "tiny");
}

fn check(family: &str, size: &str) {
    let Some(py) = common::python_or_skip(&format!("{family} against PyTorch")) else {
        return;
    };
    let dir = std::env::temp_dir().join(format!("vlm-hf-{family}-{size}-{}", std::process::id()));
    make(&py, family, size, &dir);
    check_folder(&py, family, &dir, PROMPT, &dir.join("ref.safetensors"));
    if size == "tiny" {
        check_int8(family, &dir);
    }
    std::fs::remove_dir_all(&dir).ok();
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The family quantizes — image encoder, projector (pixel shuffle, MLP, perceiver
/// resampler), decoder (causal, and PaliGemma's prefix that attends both ways) — into
/// an artifact that captions, with every graph int8 and its output close to fp32's.
fn check_int8(family: &str, dir: &Path) {
    let calib = dir.join("calib");
    std::fs::create_dir_all(&calib).unwrap();
    for i in 0..8 {
        let name = format!("calib-{i:03}.png");
        std::fs::copy(
            root().join("models/demo-calib").join(&name),
            calib.join(&name),
        )
        .unwrap();
    }
    let req = CaptionRequest {
        model_dir: dir.to_owned(),
        calib_dir: calib,
        options: vlm_quantize::int8::Options::default(),
        prompt: Some(PROMPT.into()),
        max_tokens: 8,
        layout: hf::Layout {
            context: 256,
            ..hf::Layout::default()
        },
        eval_data: None,
        kv_cache: KvCache::Int8,
    };
    let (bytes, r) = quantize_captioner(&req, &mut |_, _, _| {}).unwrap();
    assert_eq!(r.graphs.len(), 3, "{family}");
    // The report names what the caches hold: int8 exactly when they shrank.
    let k = &r.kv_cache;
    assert_eq!(
        k.storage == KvCache::Int8,
        k.bytes < k.f32_bytes,
        "{family}: {k:?}"
    );
    for g in &r.graphs {
        assert!(
            g.cosine.median >= 0.99,
            "{family} {}: cosine {:?}",
            g.tower,
            g.cosine
        );
    }
    let cap = Captioner::from_model(vlm_host::Model::from_aligned(bytes, dir).unwrap()).unwrap();
    for role in [
        vlm_runtime::Role::ImageEncoder,
        vlm_runtime::Role::Projector,
        vlm_runtime::Role::Prefill,
        vlm_runtime::Role::Decoder,
    ] {
        let g = cap.model().runtime().graph(role).unwrap();
        assert!(
            g.ops().any(|(_, op)| op.precision() == "int8"),
            "{family} {}: no int8 op",
            role.name()
        );
    }
    let pixels = cap.pixels(&eval_image(3)).unwrap();
    let opts = Options {
        max_tokens: 8,
        repetition_penalty: 1.0,
    };
    cap.caption(&pixels, PROMPT, &opts, |_| true).unwrap();
}

/// The model folder `dir` against PyTorch on one eval image and `prompt`.
fn check_folder(py: &Path, family: &str, dir: &Path, prompt: &str, ref_path: &Path) {
    let image = eval_image(3);
    reference(py, dir, &image, prompt, ref_path);
    let r = read_ref(ref_path);
    // Prefill chunks of 8 with a remainder, so both decoder graphs run.
    let layout = hf::Layout {
        context: r.input_ids.len() + 48,
        prefill_rows: 8,
    };
    let cap = hf::load(dir, layout).unwrap();
    let bytes = cap.write().unwrap();
    // The real configurations are GBs: keep one copy of the weights at a time.
    drop(cap);
    let model = vlm_host::Model::from_aligned(bytes, dir).unwrap();
    let c = Captioner::from_model(model).unwrap();
    assert_eq!(
        c.prompt_ids(prompt).unwrap(),
        r.input_ids,
        "{family}: prompt ids"
    );
    let pixels = c.pixels(&image).unwrap();
    let worst = pixels
        .iter()
        .zip(&r.pixels)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(worst <= 1e-5, "{family}: pixels differ by {worst}");
    let (a, w) = c.buffers();
    let (mut arena, mut work) = (vec![0u8; a], vec![0.0f32; w]);
    let mut g = c.generator(&mut arena, &mut work).unwrap();
    g.encode_image(&r.pixels).unwrap();
    close(
        &format!("{family} vision features"),
        g.features(),
        &r.features,
    );
    close(
        &format!("{family} image embeddings"),
        g.image_embeddings(),
        &r.image_embeds,
    );
    let v = r.vocab;
    let before = allocs();
    g.prefill(&r.input_ids, r.continuation.len()).unwrap();
    let prefill_allocs = allocs() - before;
    close(
        &format!("{family} logits, prompt"),
        g.logits(),
        &r.logits[..v],
    );
    for (i, &t) in r.continuation.iter().enumerate() {
        g.step(t).unwrap();
        close(
            &format!("{family} logits, step {}", i + 1),
            g.logits(),
            &r.logits[(i + 1) * v..(i + 2) * v],
        );
    }
    assert_eq!(prefill_allocs, 0, "{family}: prefill allocated");
    // Greedy decoding to the end of the context: no allocation per token.
    g.prefill(&r.input_ids, 0).unwrap();
    let mut out = vec![0u32; layout.context - r.input_ids.len()];
    let mut seen = vec![false; v];
    let opts = Options {
        max_tokens: out.len(),
        repetition_penalty: 1.3,
    };
    let before = allocs();
    let n = greedy(&mut g, &opts, &mut seen, &mut out, |_| true).unwrap();
    assert_eq!(allocs() - before, 0, "{family}: {n} tokens allocated");
}

/// The shipped demo captioner, trained (its logits are far from ties, unlike random
/// weights: `demo_captioner.rs` also compares its greedy and beam captions).
#[test]
fn demo_captioner_matches_pytorch() {
    let Some(py) = common::python_or_skip("demo captioner against PyTorch") else {
        return;
    };
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo-captioner");
    let r = std::env::temp_dir().join(format!("vlm-demo-captioner-ref-{}", std::process::id()));
    check_folder(&py, "idefics3", &dir, "Caption:", &r);
    std::fs::remove_file(&r).ok();
}

/// The other families as the recipe trains them (not shipped): see
/// `common::trained_captioners`.
#[test]
#[ignore]
fn trained_captioners_match_pytorch() {
    let py = common::python_or_skip("trained captioners against PyTorch").unwrap();
    for (family, dir, prompt) in common::trained_captioners() {
        let r =
            std::env::temp_dir().join(format!("vlm-trained-{family}-ref-{}", std::process::id()));
        check_folder(&py, family, &dir, prompt, &r);
        std::fs::remove_file(&r).ok();
    }
}

#[test]
fn idefics3_matches_pytorch() {
    check_family("idefics3");
}

#[test]
fn llava_matches_pytorch() {
    check_family("llava");
}

#[test]
fn paligemma_matches_pytorch() {
    check_family("paligemma");
}

#[test]
fn idefics2_matches_pytorch() {
    check_family("idefics2");
}

// The published configurations with random weights (the recipe cuts the depth of the
// larger ones to fit fp32 in memory; it prints what it cut). Minutes each, so run by
// hand: `cargo test -p vlm-quantize --test hf_captioners -- --ignored`.

#[test]
#[ignore]
fn real_smolvlm_256m_matches_pytorch() {
    check("idefics3", "real");
}

#[test]
#[ignore]
fn real_llava_interleave_qwen_config_matches_pytorch() {
    check("llava", "real");
}

#[test]
#[ignore]
fn real_paligemma_config_matches_pytorch() {
    check("paligemma", "real");
}

#[test]
#[ignore]
fn real_idefics2_config_matches_pytorch() {
    check("idefics2", "real");
}

fn quantize_demo() -> (AlignedBytes, CaptionQuantReport) {
    let req = CaptionRequest {
        model_dir: root().join("models/demo-captioner"),
        calib_dir: root().join("models/demo-calib"),
        options: vlm_quantize::int8::Options::default(),
        prompt: None,
        max_tokens: 32,
        layout: hf::Layout::default(),
        eval_data: Some(root().join("models/demo-captions")),
        kv_cache: KvCache::Int8,
    };
    quantize_captioner(&req, &mut |_, _, _| {}).unwrap()
}

#[test]
fn demo_captioner_in_int8_keeps_its_captions() {
    let (bytes, r) = quantize_demo();
    let e = r.eval.as_ref().expect("an eval folder was given");
    assert_eq!(e.agreement.images, 312);
    assert!(
        e.agreement.identical_share() >= 0.90,
        "greedy tokens identical on {} of {} images",
        e.agreement.identical,
        e.agreement.images
    );
    let rel = |f: f64, q: f64| (q - f).abs() / f;
    assert!(
        rel(e.fp32.bleu[3], e.int8.bleu[3]) <= 0.03,
        "BLEU-4 {} -> {}",
        e.fp32.bleu[3],
        e.int8.bleu[3]
    );
    assert!(
        rel(e.fp32.cider_d, e.int8.cider_d) <= 0.03,
        "CIDEr-D {} -> {}",
        e.fp32.cider_d,
        e.int8.cider_d
    );
    let seen = |rep: &vlm_host::caption_eval::CaptionReport| {
        rep.groups
            .iter()
            .find(|g| g.name.contains("seen pairs"))
            .expect("a seen-pairs group")
            .objects_named
    };
    assert!(
        (seen(&e.fp32) - seen(&e.int8)).abs() <= 2.0,
        "seen pairs named {} -> {}",
        seen(&e.fp32),
        seen(&e.int8)
    );
    let names: Vec<&str> = r.graphs.iter().map(|g| g.tower).collect();
    assert_eq!(names, ["image encoder", "projector", "decoder"]);
    for g in &r.graphs {
        assert!(g.budget_met, "{}: cosine {:?}", g.tower, g.cosine);
        let int8 = g.layers.iter().filter(|l| l.precision == "int8").count();
        assert!(int8 > 0, "{}: no int8 layer", g.tower);
    }
    assert!(
        r.artifact_bytes * 3 < r.fp32_bytes,
        "{} bytes int8 against {} fp32",
        r.artifact_bytes,
        r.fp32_bytes
    );

    let model = vlm_runtime::Model::from_bytes(bytes.as_bytes()).unwrap();
    // Prefill and step hold the same int8 weights: stored once, so no name twice.
    let t = model.tensors();
    let mut names: Vec<&str> = (0..model.tensor_count() as u32)
        .map(|i| t.name(i))
        .collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(names.len(), before, "a tensor is stored twice");
    for role in [
        vlm_runtime::Role::ImageEncoder,
        vlm_runtime::Role::Projector,
        vlm_runtime::Role::Prefill,
        vlm_runtime::Role::Decoder,
    ] {
        let g = model.graph(role).unwrap();
        assert!(
            g.ops().any(|(_, op)| op.precision() == "int8"),
            "{}: no int8 op",
            role.name()
        );
    }
    same_tokens_on_every_kernel_set(bytes);
}

/// Greedy tokens on every kernel set this CPU runs, against the scalar reference's, with
/// no allocation per token. The
/// integer parts are bit-exact; the fp32 parts (norms, attention, softmax) may round
/// differently per ISA, so a different token is a failure unless the reference's own
/// top two logits were that close at that step: a near-tie, which no kernel can be asked
/// to break the same way.
fn same_tokens_on_every_kernel_set(bytes: AlignedBytes) {
    let cap =
        Captioner::from_model(vlm_host::Model::from_aligned(bytes, Path::new("int8")).unwrap())
            .unwrap();
    let prompt = cap.prompt_or_default(None);
    let ids = cap.prompt_ids(&prompt).unwrap();
    let set =
        vlm_host::caption_eval::CaptionSet::load(&root().join("models/demo-captions")).unwrap();
    let (a, w) = cap.buffers();
    let isas: Vec<Isa> = vlm_runtime::kernels::ALL
        .into_iter()
        .filter(|i| i.supported())
        .collect();
    let mut checked = 0;
    for item in set.items.iter().step_by(13) {
        let pixels = cap.pixels(&set.image_path(item)).unwrap();
        let run = |isa: Isa| -> Vec<(u32, f32)> {
            let (mut arena, mut work) = (vec![0u8; a], vec![0.0f32; w]);
            let mut g = Generator::new(
                cap.model().runtime(),
                *cap.meta(),
                &mut arena,
                &mut work,
                isa,
            )
            .unwrap();
            g.encode_image(&pixels).unwrap();
            g.prefill(&ids, 24).unwrap();
            let mut out = Vec::with_capacity(24);
            let before = allocs();
            for _ in 0..24 {
                let l = g.logits();
                let id = argmax(l);
                let top = l[id as usize];
                let second = l
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != id as usize)
                    .map(|(_, v)| *v)
                    .fold(f32::NEG_INFINITY, f32::max);
                out.push((id, top - second));
                if cap.meta().is_stop(id) {
                    break;
                }
                g.step(id).unwrap();
            }
            assert_eq!(allocs() - before, 0, "{}: decoding allocated", isa.name());
            out
        };
        let reference = run(Isa::Scalar);
        for &isa in &isas {
            let got = run(isa);
            for (step, (r, g)) in reference.iter().zip(&got).enumerate() {
                if r.0 != g.0 {
                    assert!(
                        r.1 < 1e-3,
                        "{}: {} differs from scalar at step {step} (margin {})",
                        item.image,
                        isa.name(),
                        r.1
                    );
                    break;
                }
            }
        }
        checked += 1;
    }
    assert!(checked >= 20);
}
