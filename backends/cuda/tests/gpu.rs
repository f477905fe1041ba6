//! The GPU battery: every case of the runtime's op battery (`vlm_runtime::harness`)
//! through the CUDA backend against the scalar reference, bit for bit on every op (fp32
//! attention too, where the harness allows the CPU's SIMD kernels a budget), an encoder,
//! and the demo model end to end against the CPU (tests/common, as the emulated GPU runs
//! them). Needs a GPU: without a driver or a device each test prints a
//! SKIPPED line and passes — unless `VLM_REQUIRE_GPU` is set (scripts/gpu-check.sh sets
//! it), where that is a failure.

use std::sync::Arc;

use vlm_cuda::{device_count, Gpu};

mod common;

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
    if let Some(gpu) = gpu_or_skip("every_op_matches_the_reference_on_the_gpu") {
        common::battery(&gpu);
    }
}

#[test]
fn an_encoder_tower_matches_the_reference() {
    if let Some(gpu) = gpu_or_skip("an_encoder_tower_matches_the_reference") {
        common::tower(&gpu, (3, 50, 96, 4, 384));
    }
}

#[test]
fn the_demo_models_embeddings_match_the_cpu() {
    if let Some(gpu) = gpu_or_skip("the_demo_models_embeddings_match_the_cpu") {
        common::demo(gpu);
    }
}
