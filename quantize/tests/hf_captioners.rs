//! Hugging Face captioners read from their folders (`vlm_quantize::hf`) compute what
//! PyTorch computes: the recipe builds each family's real class with a small config and
//! random weights (`vlm_recipes.hf_captioners make`), saves it as `save_pretrained` does,
//! and records the processor's prompt ids and pixels, the vision features, the image
//! embeddings and the logits at the last prompt position and at 8 teacher-forced steps
//! (`… reference`); the runtime must give the same ids, and cosine ≥ 0.9999 for every
//! tensor. Random weights give near-tied logits, so greedy tokens are not compared here.
//! Also: no allocation per generated token, nor in prefill.
//!
//! Needs the recipe's Python (see `common`).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};

use vlm_host::caption::Captioner;
use vlm_models::generate::{greedy, Options};
use vlm_quantize::hf;

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
    std::fs::remove_dir_all(&dir).ok();
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
