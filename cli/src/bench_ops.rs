//! `vlm bench --ops`: the op battery's perf mode — every op variant of
//! `vlm_runtime::harness` timed on each kernel set this CPU has, beside the scalar
//! reference, so a kernel's gain (or a regression) shows per op rather than per model;
//! and `vlm bench --gemv`: a decoder step's int8 matrix–vector products alone.

use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;
use vlm_runtime::harness::{cases, time, Rng};
use vlm_runtime::kernels::scalar::{MatMut, Panels};
use vlm_runtime::kernels::{Isa, ALL};
use vlm_runtime::Cpu;

use crate::bench::{plain_epilogue, random_problem, BenchArgs, Width};

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

/// A decoder step's int8 products, `(name, inputs, outputs)`: SmolVLM-256M's Llama
/// (576 wide, 9/3 heads of 64, MLP 1536, 49,152-token untied head).
const DECODE_PRODUCTS: [(&str, usize, usize); 5] = [
    ("q, o", 576, 576),
    ("k, v", 576, 192),
    ("gate, up", 576, 1536),
    ("down", 1536, 576),
    ("LM head", 576, 49_152),
];

/// Bytes of weight copies each product cycles through: past any CPU's last-level cache,
/// so every call streams its weights from memory, as a decode step over a 160 MB text
/// model does.
const GEMV_STREAM_BYTES: usize = 256 << 20;

#[derive(Serialize)]
struct GemvRow {
    product: &'static str,
    k: usize,
    n: usize,
    /// Per kernel set, best first: (name, µs per call, weight GB/s).
    runs: Vec<(&'static str, f64, f64)>,
}

pub fn bench_gemv(args: &BenchArgs) -> Result<()> {
    let isas: Vec<Isa> = ALL
        .into_iter()
        .filter(|i| i.supported() && *i != Isa::Scalar)
        .collect();
    let mut rng = Rng(0x6e3a_9c1d_52f7_b804);
    let mut rows = Vec::new();
    for (product, k, n) in DECODE_PRODUCTS {
        let (q, one) = random_problem(&mut rng, 1, k, n, Width::EIGHT);
        let len = one.len();
        let copies = GEMV_STREAM_BYTES.div_ceil(len).max(2);
        let mut ws = Vec::with_capacity(copies * len);
        for _ in 0..copies {
            ws.extend_from_slice(&one);
        }
        let w_scale = vec![1.0f32 / 4096.0; n];
        let ep = plain_epilogue(&w_scale);
        let mut out = vec![0.0f32; n];
        let mut runs = Vec::new();
        for &isa in &isas {
            // Passes over all copies, the fastest kept: the memory system's best, as
            // a steady decode sees it.
            let mut best = f64::MAX;
            for _ in 0..args.warmup.max(1) + args.runs {
                let t = Instant::now();
                for w in ws.chunks_exact(len) {
                    let mat = MatMut {
                        data: &mut out,
                        rows: 1,
                        cols: n,
                        stride: n,
                    };
                    isa.gemm_u8i8(&q, k, Panels::full(w), &ep, mat);
                }
                best = best.min(t.elapsed().as_secs_f64() / copies as f64);
            }
            runs.push((isa.name(), best * 1e6, len as f64 / best / 1e9));
        }
        rows.push(GemvRow {
            product,
            k,
            n,
            runs,
        });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(());
    }
    print!("{:<10} {:>6} {:>6}", "product", "in", "out");
    for isa in &isas {
        print!(" {:>22}", isa.name());
    }
    println!("   (µs per one-row call and weight GB/s, streamed from memory, 1 thread)");
    for r in &rows {
        print!("{:<10} {:>6} {:>6}", r.product, r.k, r.n);
        for (_, us, gbs) in &r.runs {
            print!(" {:>10.1} {:>6.1} GB/s", us, gbs);
        }
        println!();
    }
    Ok(())
}
