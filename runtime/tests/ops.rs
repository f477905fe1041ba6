//! The op battery (`vlm_runtime::harness`): every op, in every variant, on every ISA this
//! CPU supports (under QEMU: every Arm level) against the scalar reference, each op under
//! its one error budget. A new op joins by adding cases; a new backend by running them.

use vlm_runtime::harness::{budget, cases, check, run, Case};
use vlm_runtime::kernels::ALL;
use vlm_runtime::names::OPCODES;
use vlm_runtime::Cpu;

#[test]
fn every_op_matches_the_reference_on_every_isa() {
    let cases = cases();
    let isas: Vec<_> = ALL.into_iter().filter(|i| i.supported()).collect();
    let mut failures = Vec::new();
    for case in &cases {
        for &isa in &isas {
            for threads in [1, 3] {
                let mut cpu = Cpu::new(isa);
                cpu.threads = threads;
                match check(case, cpu) {
                    Ok(worst) => assert!(worst <= budget(case.op)),
                    Err(e) => failures.push(format!("{e} ({threads} threads)")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    eprintln!("{} cases × {:?}", cases.len(), isas);
}

/// Threads change who computes what, never the bits: attention splits a decoder step's
/// heads and a prompt's rows, layer norms and sums their rows, each computed exactly as
/// on one thread.
#[test]
fn split_ops_on_threads_match_one_thread() {
    let split = |c: &&Case| matches!(c.op, "attention" | "cache_append_i8" | "layer_norm" | "add");
    for case in cases().iter().filter(split) {
        for isa in ALL.into_iter().filter(|i| i.supported()) {
            let on = |threads| {
                let mut cpu = Cpu::new(isa);
                cpu.threads = threads;
                run(case, cpu).unwrap_or_else(|e| panic!("{}: {e}", case.name))
            };
            let one = on(1);
            for threads in [2, 3, 5] {
                let got = on(threads);
                let same = got
                    .iter()
                    .zip(&one)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same && got.len() == one.len(),
                    "{} on {} differs on {threads} threads",
                    case.name,
                    isa.name()
                );
            }
        }
    }
}

#[test]
fn every_op_has_a_case() {
    let cases = cases();
    for (_, op) in OPCODES {
        // `cache_append` and `advance` run inside the cached-attention cases.
        let covered = cases
            .iter()
            .any(|c| c.op == *op || c.name.contains("cached"));
        assert!(covered, "no battery case for {op}");
    }
    for (_, op) in OPCODES {
        if !matches!(*op, "cache_append" | "advance") {
            assert!(
                cases.iter().any(|c| c.op == *op),
                "no battery case for {op}"
            );
        }
    }
}

/// The encoder tower a backend's speed is measured on (`harness::encoder_tower`) is a
/// valid artifact, and every ISA runs it as the scalar reference does, but for fp32
/// attention's exponential (within its budget per op, through the layers).
#[test]
fn the_encoder_tower_runs_on_every_isa() {
    let case = vlm_runtime::harness::encoder_tower(2, 20, 64, 4, 128);
    let want = run(&case, Cpu::new(vlm_runtime::kernels::Isa::Scalar)).unwrap();
    assert_eq!(want.len(), 20 * 64);
    assert!(want.iter().all(|v| v.is_finite()) && want.iter().any(|&v| v != 0.0));
    for isa in ALL.into_iter().filter(|i| i.supported()) {
        let got = run(&case, Cpu::new(isa)).unwrap();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs() / (1.0 + w.abs()))
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{}: {worst}", isa.name());
    }
}
