//! The GPU against the CPU on SigLIP-B/16's encoder (12 layers, 196 tokens, 768 wide, 12
//! heads, MLP 3072) with random int8 weights (`vlm_runtime::harness::encoder_tower`):
//! median milliseconds of a whole forward pass on 2 CPU threads and on the GPU, their
//! ratio, and the cosine of the two outputs. Prints one markdown table.
//!
//! `cargo run --release -p vlm-cuda --example gpu_bench [-- RUNS [LAYERS TOKENS WIDTH HEADS MLP]]`
//! (another encoder's shape: SigLIP-So400m/14 at 384 px is `27 729 1152 16 4304`).

use std::sync::Arc;
use std::time::Duration;

use vlm_cuda::{kernels, CudaModel, Gpu};
use vlm_runtime::harness::{encoder_tower, run, time};
use vlm_runtime::kernels::Isa;
use vlm_runtime::Cpu;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()?;
    let runs = args.first().copied().unwrap_or(10);
    let shape = match args.get(1..) {
        Some(&[l, t, w, h, m]) => (l, t, w, h, m),
        Some([]) | None => (12, 196, 768, 12, 3072),
        Some(_) => return Err("expected RUNS, then LAYERS TOKENS WIDTH HEADS MLP".into()),
    };
    let gpu = Arc::new(Gpu::open(0)?);
    let (major, minor) = kernels::nvrtc_version()?;
    let (layers, tokens, width, heads, mlp) = shape;
    let case = encoder_tower(layers, tokens, width, heads, mlp);
    let model = case.model();

    let mut cpu = Cpu::new(Isa::detect());
    cpu.threads = 2;
    let cpu_ms = ms(time(&case, cpu, runs)?);
    let cpu_out = run(&case, cpu)?;

    let on_gpu = CudaModel::new(Arc::clone(&gpu), &model)?;
    let mut b = on_gpu.backend()?;
    let gpu_ms = ms(time(&case, &mut b, runs)?);
    let gpu_out = run(&case, &mut b)?;
    let (on_device, on_cpu) = b.op_counts();

    let dot: f64 = cpu_out
        .iter()
        .zip(&gpu_out)
        .map(|(a, b)| (a * b) as f64)
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
    let cosine = dot / (norm(&cpu_out) * norm(&gpu_out));
    let (cc_major, cc_minor) = gpu.capability();
    println!(
        "GPU: {} (compute capability {cc_major}.{cc_minor}), kernels by NVRTC {major}.{minor}; CPU: {} on 2 threads",
        gpu.name(),
        cpu.isa.name()
    );
    println!("{}, median of {runs} runs after one warm-up", case.name);
    println!();
    println!("| figure | CPU, 2 threads | GPU | CPU / GPU |");
    println!("|---|---:|---:|---:|");
    let what = match shape {
        (12, 196, 768, 12, 3072) => "SigLIP-B/16 encoder".to_string(),
        _ => format!("encoder {layers}×{tokens}×{width}"),
    };
    println!(
        "| {what}, batch 1, ms | {cpu_ms:.2} | {gpu_ms:.2} | {:.1}× |",
        cpu_ms / gpu_ms
    );
    println!("| output cosine, GPU against CPU | | {cosine:.7} | |");
    println!("| ops on the GPU / left to the CPU | | {on_device} / {on_cpu} | |");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
