//! The checks the real-GPU tests (gpu.rs) and the emulated-GPU tests (emulated.rs) run
//! alike; each file only finds its GPU.

use std::sync::Arc;

use vlm_cuda::{CudaModel, Gpu};
use vlm_runtime::harness::{cases, check, encoder_tower, run};
use vlm_runtime::kernels::Isa;
use vlm_runtime::{Backend, Cpu, Role};

/// Every case of the op battery through the backend against the scalar reference, bit
/// for bit (tighter than the harness's budgets); every case puts ops on the GPU, and only position advances stay on
/// the CPU. Prints and returns a one-line summary.
pub fn battery(gpu: &Arc<Gpu>) -> String {
    let start = std::time::Instant::now();
    let mut failures = Vec::new();
    let (mut passed, mut on_gpu, mut on_cpu) = (0, 0, 0);
    let all = cases();
    for case in &all {
        let model = case.model();
        let m = CudaModel::new(Arc::clone(gpu), &model).unwrap();
        let mut b = m.backend().unwrap();
        match check(case, &mut b) {
            // Every op, fp32 attention too, is the reference's operations in its order:
            // the GPU gives its bits, where the harness allows the CPU's SIMD kernels
            // fp32 attention's budget.
            Ok(worst) if worst > 0.0 => failures.push(format!(
                "{}: within the budget but not the reference's bits (largest relative difference {worst:e})",
                case.name
            )),
            Ok(_) => passed += 1,
            Err(e) => {
                let driver = b
                    .last_error()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                failures.push(format!("{}: {e}{driver}", case.name));
            }
        }
        let (d, c) = b.op_counts();
        if d == 0 {
            failures.push(format!("{}: no op ran on the GPU", case.name));
        }
        // Only position advances stay on the host, by design.
        if let Some(k) = b.cpu_op_kinds().iter().find(|&&k| k != "advance") {
            failures.push(format!("{}: a {k} op ran on the CPU", case.name));
        }
        on_gpu += d;
        on_cpu += c;
    }
    let summary = format!(
        "{} ({}.{}): {passed} of {} cases give the reference's bits; {on_gpu} ops on the GPU, \
         {on_cpu} left to the CPU ({:.1} s)",
        gpu.name(),
        gpu.capability().0,
        gpu.capability().1,
        all.len(),
        start.elapsed().as_secs_f64()
    );
    eprintln!("{summary}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    summary
}

/// An encoder tower of shape `(layers, tokens, width, heads, mlp)` (every op of a
/// SigLIP tower, chained) against the scalar reference, every op on the GPU.
pub fn tower(
    gpu: &Arc<Gpu>,
    (layers, tokens, width, heads, mlp): (usize, usize, usize, usize, usize),
) {
    let case = encoder_tower(layers, tokens, width, heads, mlp);
    let model = case.model();
    let want = run(&case, Cpu::new(Isa::Scalar)).unwrap();
    let m = CudaModel::new(Arc::clone(gpu), &model).unwrap();
    let mut b = m.backend().unwrap();
    let got = run(&case, &mut b).unwrap_or_else(|e| panic!("{e}: {:?}", b.last_error()));
    let worst = got
        .iter()
        .zip(&want)
        .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
        .fold(0.0f32, f32::max);
    let (d, c) = b.op_counts();
    eprintln!(
        "{} on {}: largest relative difference {worst:.2e}, {d} ops on the GPU",
        case.name,
        gpu.name()
    );
    // The reference's bits, attention's included.
    assert_eq!(worst, 0.0, "not the reference's bits");
    assert_eq!(got.len(), want.len());
    assert_eq!(c, 0, "every op of the tower runs on the GPU");
}

/// The built-in demo artifact through the host crate (`Model::set_device`, a backend
/// per run), both towers: the CPU's embeddings, to the cosine.
pub fn demo(gpu: Arc<Gpu>) {
    let model = vlm_host::demo::model().unwrap();
    let len = |role| {
        let g = model.runtime().graph(role).unwrap();
        g.inputs().next().unwrap().len()
    };
    let pixels: Vec<f32> = (0..len(Role::ImageEncoder))
        .map(|i| ((i * 37) % 251) as f32 / 125.0 - 1.0)
        .collect();
    let ids: Vec<u32> = (0..len(Role::TextEncoder))
        .map(|i| (i * 7 % 50 + 1) as u32)
        .collect();
    let cpu = (
        model.embed_pixels(&pixels).unwrap(),
        model.embed_ids(&ids).unwrap(),
    );
    let name = gpu.name().to_string();
    let on_gpu = CudaModel::new(gpu, model.runtime()).unwrap();
    model.set_device(
        name,
        Arc::new(move || {
            let b = on_gpu.backend().map_err(|e| e.to_string())?;
            Ok(Box::new(b) as Box<dyn Backend>)
        }),
    );
    let gpu_out = (
        model.embed_pixels(&pixels).unwrap(),
        model.embed_ids(&ids).unwrap(),
    );
    for (what, a, b) in [("image", &cpu.0, &gpu_out.0), ("text", &cpu.1, &gpu_out.1)] {
        let dot: f64 = a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum();
        let norm = |v: &[f32]| v.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
        let cosine = dot / (norm(a) * norm(b));
        eprintln!("demo {what} embedding, GPU against CPU: cosine {cosine:.7}");
        assert!(cosine >= 0.99999, "{what}: cosine {cosine}");
    }
}
