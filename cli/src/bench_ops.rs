//! `vlm bench --ops`: the op battery's perf mode — every op variant of
//! `vlm_runtime::harness` timed on each kernel set this CPU has, beside the scalar
//! reference, so a kernel's gain (or a regression) shows per op rather than per model.

use anyhow::{Context, Result};
use serde::Serialize;
use vlm_runtime::harness::{cases, time};
use vlm_runtime::kernels::{Isa, ALL};
use vlm_runtime::Cpu;

use crate::bench::BenchArgs;

#[derive(Serialize)]
struct OpRow {
    case: String,
    op: &'static str,
    /// Median µs per kernel set, best first, the scalar reference last.
    us: Vec<(&'static str, f64)>,
}

pub fn bench_ops(args: &BenchArgs) -> Result<()> {
    let isas: Vec<Isa> = ALL.into_iter().filter(|i| i.supported()).collect();
    let mut rows = Vec::new();
    for case in cases() {
        let mut us = Vec::new();
        for &isa in &isas {
            let mut cpu = Cpu::new(isa);
            cpu.threads = args.threads;
            let d = time(&case, cpu, args.runs)
                .with_context(|| format!("timing {} on {}", case.name, isa.name()))?;
            us.push((isa.name(), d.as_secs_f64() * 1e6));
        }
        rows.push(OpRow {
            case: case.name,
            op: case.op,
            us,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    let w = rows
        .iter()
        .map(|r| r.case.chars().count())
        .max()
        .unwrap_or(4);
    print!("{:<w$}", "op");
    for isa in &isas {
        print!(" {:>15}", isa.name());
    }
    println!("   (median µs per run, {} thread(s))", args.threads);
    for r in &rows {
        print!("{:<w$}", r.case);
        let scalar = r.us.last().map_or(1.0, |x| x.1);
        for (_, t) in &r.us {
            print!(" {:>8.1} {:>5.1}×", t, scalar / t.max(1e-9));
        }
        println!();
    }
    Ok(())
}
