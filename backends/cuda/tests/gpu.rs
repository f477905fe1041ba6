//! The GPU battery: every case of the runtime's op battery (`vlm_runtime::harness`)
//! through the CUDA backend against the scalar reference, under each op's budget (0:
//! bit for bit, as the int8 GEMMs, norms and GELU must be), and the demo model end to
//! end against the CPU. Needs a GPU: without a driver or a device each test prints a
//! SKIPPED line and passes — unless `VLM_REQUIRE_GPU` is set (scripts/gpu-check.sh sets
//! it), where that is a failure.

use std::sync::Arc;

use vlm_cuda::{device_count, CudaModel, Gpu};
use vlm_runtime::harness::{cases, check, encoder_tower, run};

fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    let why = match device_count() {
        Ok(n) if n > 0 => match Gpu::open(0) {
            Ok(g) => return Some(Arc::new(g)),
            Err(e) => e.to_string(),
        },
        Ok(_) => "the CUDA driver sees no GPU".to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        std::env::var_os("VLM_REQUIRE_GPU").is_none(),
        "VLM_REQUIRE_GPU is set, but: {why}"
    );
    eprintln!("SKIPPED {test}: {why}");
    None
}

#[test]
fn every_op_matches_the_reference_on_the_gpu() {
    let Some(gpu) = gpu_or_skip("every_op_matches_the_reference_on_the_gpu") else {
        return;
    };
    let mut failures = Vec::new();
    let (mut on_gpu, mut on_cpu) = (0, 0);
    for case in cases() {
        let model = case.model();
        let m = CudaModel::new(Arc::clone(&gpu), &model).unwrap();
        let mut b = m.backend().unwrap();
        match check(&case, &mut b) {
            Ok(err) => eprintln!("{:<60} max error {err:.2e}", case.name),
            Err(e) => failures.push(format!("{}: {e}", case.name)),
        }
        if let Some(k) = b.cpu_op_kinds().iter().find(|&&k| k != "advance") {
            failures.push(format!("{}: a {k} op ran on the CPU", case.name));
        }
        let (d, c) = b.op_counts();
        on_gpu += d;
        on_cpu += c;
    }
    eprintln!(
        "{} ({}.{}): {on_gpu} ops on the GPU, {on_cpu} left to the CPU",
        gpu.name(),
        gpu.capability().0,
        gpu.capability().1
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(on_gpu > 0, "no op ran on the GPU");
}

/// The built-in demo artifact's image embedding on the GPU, against the CPU's (its text
/// tower too runs in tests/emulated.rs's version of this check).
#[test]
fn the_demo_models_embedding_matches_the_cpu() {
    let Some(gpu) = gpu_or_skip("the_demo_models_embedding_matches_the_cpu") else {
        return;
    };
    let model = vlm_host::demo::model().unwrap();
    let pixels: Vec<f32> = {
        let g = model
            .runtime()
            .graph(vlm_runtime::Role::ImageEncoder)
            .unwrap();
        let n = g.inputs().next().unwrap().len();
        (0..n)
            .map(|i| ((i * 37) % 251) as f32 / 125.0 - 1.0)
            .collect()
    };
    let cpu = model.embed_pixels(&pixels).unwrap();
    let on_gpu = CudaModel::new(gpu, model.runtime()).unwrap();
    model.set_device(
        "cuda:0".into(),
        Arc::new(move || {
            let b = on_gpu.backend().map_err(|e| e.to_string())?;
            Ok(Box::new(b) as Box<dyn vlm_runtime::Backend>)
        }),
    );
    let gpu_out = model.embed_pixels(&pixels).unwrap();
    let dot: f64 = cpu.iter().zip(&gpu_out).map(|(a, b)| (a * b) as f64).sum();
    let norm = |v: &[f32]| v.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
    let cosine = dot / (norm(&cpu) * norm(&gpu_out));
    eprintln!("demo image embedding, GPU against CPU: cosine {cosine:.7}");
    assert!(cosine >= 0.99999, "cosine {cosine}");
}

/// A small ViT encoder (every op of a SigLIP tower, chained: residency across ops, not
/// just one op) on the GPU against the scalar reference.
#[test]
fn an_encoder_tower_matches_the_reference() {
    let Some(gpu) = gpu_or_skip("an_encoder_tower_matches_the_reference") else {
        return;
    };
    let case = encoder_tower(3, 50, 96, 4, 384);
    let model = case.model();
    let want = run(
        &case,
        vlm_runtime::Cpu::new(vlm_runtime::kernels::Isa::Scalar),
    )
    .unwrap();
    let m = CudaModel::new(gpu, &model).unwrap();
    let mut b = m.backend().unwrap();
    let got = run(&case, &mut b).unwrap();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
        .fold(0.0f32, f32::max);
    eprintln!("{}: largest relative difference {worst:.2e}", case.name);
    // fp32 attention's exponential is the only inexact step (2e-5 per op).
    assert!(worst < 1e-3, "{worst}");
    assert_eq!(b.op_counts().1, 0, "every op of the tower runs on the GPU");
}
