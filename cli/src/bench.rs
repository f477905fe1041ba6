//! `vlm bench`: how fast one tower runs here, and how close it comes to what the CPU's
//! int8 units can do at all.
//!
//! The ceiling is measured, not looked up: a register-only loop of the session's own
//! multiply-accumulate instruction (`kernels::x86_*_peak`) on as many threads as the
//! tower gets, so turbo, SMT siblings and a shared machine weigh on both sides alike.

use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use vlm_quantize::graph::{TowerInput, TowerKind as GraphTower};
use vlm_quantize::{Artifact, Fp32Siglip};
use vlm_runtime::format::{packed_index, packed_len};
use vlm_runtime::kernels::scalar::{q_stride, Epilogue, MatMut};
use vlm_runtime::kernels::Isa;
use vlm_runtime::ops::{Activation, Op, Weights};
use vlm_runtime::{Session, TowerKind};

#[derive(Clone, Copy, ValueEnum)]
pub enum TowerArg {
    Vision,
    Text,
}

#[derive(Args)]
pub struct BenchArgs {
    /// An int8 artifact (.vlmq, timed on the vlm runtime) or an fp32 model folder
    /// (timed on tract, for comparison).
    #[arg(long, value_name = "FILE|DIR")]
    model: PathBuf,
    /// The tower to time.
    #[arg(long, value_enum, default_value = "vision")]
    tower: TowerArg,
    /// Threads the large GEMMs are split across (tract ignores it: it runs on one).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 10)]
    runs: usize,
    /// Untimed runs first (caches, page faults, CPU frequency).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Also time the int8 GEMM kernel alone on each distinct shape of the tower's
    /// int8 linear layers.
    #[arg(long)]
    kernels: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Peak {
    instruction: &'static str,
    threads: usize,
    gmac_per_s: f64,
}

#[derive(Serialize)]
struct KernelShape {
    m: usize,
    k: usize,
    n: usize,
    layers: usize,
    /// Fraction of the tower's MACs these layers do.
    mac_share: f64,
    median_ms: f64,
    gmac_per_s: f64,
    peak_percent: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    runtime: &'static str,
    model: String,
    tower: &'static str,
    isa: Option<&'static str>,
    threads: usize,
    runs: usize,
    warmup: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    macs: u64,
    gmac_per_s: f64,
    peak: Option<Peak>,
    peak_percent: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kernels: Vec<KernelShape>,
}

/// Pixel values every runtime is timed on (`vlm_recipes.bench_ort` makes the same ones):
/// fixed, so runs compare, and not all zeros, so no kernel meets an unusually easy input.
fn pattern_pixels(len: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 37) % 251) as f32 / 125.0 - 1.0)
        .collect()
}

/// Token ids for the text tower: half the sequence words, the rest padding.
fn pattern_ids(len: usize, vocab: usize, pad: u32) -> Vec<u32> {
    (0..len)
        .map(|i| {
            if i < len / 2 {
                ((i * 7919 + 11) % vocab.max(1)) as u32
            } else {
                pad
            }
        })
        .collect()
}

struct Timing {
    median: Duration,
    min: Duration,
    max: Duration,
}

fn time_runs(warmup: usize, runs: usize, mut f: impl FnMut() -> Result<()>) -> Result<Timing> {
    for _ in 0..warmup {
        f()?;
    }
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(summarize(samples))
}

/// Median (the mean of the middle two for an even count), min and max of `runs >= 1`
/// samples.
fn summarize(mut samples: Vec<Duration>) -> Timing {
    samples.sort();
    let mid = samples.len() / 2;
    let median = if samples.len() % 2 == 1 {
        samples[mid]
    } else {
        (samples[mid - 1] + samples[mid]) / 2
    };
    Timing {
        median,
        min: samples[0],
        max: samples[samples.len() - 1],
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `run(iters)` of a `kernels::x86_*_peak` module: the multiply-accumulates it did.
type PeakLoop = fn(u64) -> u64;

/// The register-only multiply-accumulate loop matching an ISA's GEMM kernel, if any.
fn peak_loop(isa: Isa) -> Option<(PeakLoop, &'static str)> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::X86Avx512Vnni => Some((
            vlm_runtime::kernels::x86_avx512vnni_peak::run,
            "vpdpbusd zmm",
        )),
        #[cfg(target_arch = "x86_64")]
        Isa::X86Avx2 => Some((
            vlm_runtime::kernels::x86_avx2_peak::run,
            "vpmaddwd+vpaddd ymm",
        )),
        _ => None,
    }
}

/// Best MAC/s of `f` on `threads` threads at once. The best of many short trials: a
/// ceiling is what the core does when nothing else runs on it, and on a shared machine
/// a short window is likelier to be such a moment than a long one.
fn measure_peak(f: PeakLoop, threads: usize) -> f64 {
    const TRIAL: f64 = 0.02;
    let mut iters = 1u64 << 12;
    loop {
        let t = Instant::now();
        f(iters);
        let e = t.elapsed();
        if e >= Duration::from_millis(5) || iters >= 1 << 40 {
            iters = ((iters as f64) * TRIAL / e.as_secs_f64().max(1e-9)).max(1.0) as u64;
            break;
        }
        iters *= 2;
    }
    let start = Instant::now();
    let mut best = 0.0f64;
    for trial in 0..30 {
        if trial >= 5 && start.elapsed() > Duration::from_millis(600) {
            break;
        }
        let barrier = Barrier::new(threads);
        let done: Vec<(u64, Duration)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    s.spawn(|| {
                        barrier.wait();
                        let t = Instant::now();
                        let macs = f(iters);
                        (macs, t.elapsed())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("the peak loop does not panic"))
                .collect()
        });
        let macs: u64 = done.iter().map(|d| d.0).sum();
        let secs = done
            .iter()
            .map(|d| d.1)
            .max()
            .unwrap_or_default()
            .as_secs_f64();
        if secs > 0.0 {
            best = best.max(macs as f64 / secs);
        }
    }
    best
}

/// xorshift64: the kernel timings need bytes with no structure, not good randomness.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// (M, K, N) of a GEMM: `[M, K]` activations by `[N, K]` weights.
type Shape = (usize, usize, usize);

/// Times `isa`'s int8 GEMM alone on an `m × k` by `[n, k]` problem; per-call duration.
fn time_gemm(
    isa: Isa,
    threads: usize,
    (m, k, n): Shape,
    warmup: usize,
    runs: usize,
) -> Result<Duration> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (m * 31 + k * 17 + n) as u64);
    let qs = q_stride(k);
    let q: Vec<u8> = (0..m * qs).map(|_| rng.next() as u8).collect();
    // Padding stays zero, as the writer leaves it.
    let mut w = vec![0i8; packed_len(n, k)];
    for o in 0..n {
        for j in 0..k {
            w[packed_index(o, j, k)] = rng.next() as i8;
        }
    }
    let w_scale = vec![1.0f32 / 4096.0; n];
    let ep = Epilogue {
        x_scale: 1.0 / 256.0,
        w_scale: &w_scale,
        bias: None,
        act: Activation::None,
    };
    let mut out = vec![0.0f32; m * n];
    let mut call = || {
        let mat = MatMut {
            data: &mut out,
            rows: m,
            cols: n,
            stride: n,
        };
        isa.gemm_u8i8_threads(threads, &q, k, &w, &ep, mat);
    };
    // One call of a small layer is tens of µs: time batches of at least ~5 ms so the
    // clock's resolution and the loop around it do not show.
    let t = Instant::now();
    call();
    let once = t.elapsed().as_secs_f64().max(1e-7);
    let reps = ((5e-3 / once).ceil() as usize).clamp(1, 10_000);
    let timing = time_runs(warmup, runs, || {
        for _ in 0..reps {
            call();
        }
        Ok(())
    })?;
    Ok(timing.median / reps as u32)
}

/// Each distinct (M, K, N) of the tower's int8 linear layers, in order of first use,
/// with how many layers have it.
fn int8_shapes(ops: impl Iterator<Item = Op>) -> Vec<(Shape, usize)> {
    let mut shapes: Vec<(Shape, usize)> = Vec::new();
    for op in ops {
        let shape = match op {
            Op::Linear {
                x,
                out,
                weights: Weights::I8 { .. },
                ..
            } => (x.rows as usize, x.cols as usize, out.cols as usize),
            Op::PatchEmbed {
                channels,
                patch,
                out,
                weights: Weights::I8 { .. },
                ..
            } => (
                out.rows as usize,
                (channels * patch * patch) as usize,
                out.cols as usize,
            ),
            _ => continue,
        };
        match shapes.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, count)) => *count += 1,
            None => shapes.push((shape, 1)),
        }
    }
    shapes
}

fn gmacs(macs: u64, d: Duration) -> f64 {
    macs as f64 / d.as_secs_f64().max(1e-12) / 1e9
}

fn bench_int8(args: &BenchArgs, kind: TowerKind) -> Result<Report> {
    let path = &args.model;
    let artifact =
        Artifact::load(path).with_context(|| format!("loading model {}", path.display()))?;
    let model = artifact.model();
    let tower = *model.tower(kind).ok_or_else(|| {
        anyhow!(
            "{}: the artifact has no {} tower",
            path.display(),
            kind.name()
        )
    })?;
    let macs = tower.macs(model);
    let mut arena = vec![0u8; model.arena_size_for_threads(args.threads)];
    let mut session = Session::new(model, &mut arena).context("starting a session")?;
    session.set_threads(args.threads);
    let isa = session.isa();
    let mut out = vec![0.0f32; model.meta.embed_dim];
    let pixels = pattern_pixels(tower.input_len);
    let ids = pattern_ids(tower.input_len, model.meta.vocab_size, model.meta.pad_id);
    let timing = time_runs(args.warmup, args.runs, || {
        match kind {
            TowerKind::Vision => session.encode_image(&pixels, &mut out),
            TowerKind::Text => session.encode_text(&ids, &mut out),
        }
        .with_context(|| format!("running the {} tower", kind.name()))
    })?;
    let gmac_per_s = gmacs(macs, timing.median);
    let peak = peak_loop(isa).map(|(f, instruction)| Peak {
        instruction,
        threads: args.threads,
        gmac_per_s: measure_peak(f, args.threads) / 1e9,
    });
    let percent = |g: f64| peak.as_ref().map(|p| 100.0 * g / p.gmac_per_s);
    let mut kernels = Vec::new();
    if args.kernels {
        for ((m, k, n), layers) in int8_shapes(tower.ops(model).map(|(_, op)| op)) {
            let per_call = time_gemm(isa, args.threads, (m, k, n), args.warmup, args.runs)?;
            let shape_macs = (m * k * n) as u64;
            let g = gmacs(shape_macs, per_call);
            kernels.push(KernelShape {
                m,
                k,
                n,
                layers,
                mac_share: (shape_macs * layers as u64) as f64 / macs.max(1) as f64,
                median_ms: ms(per_call),
                gmac_per_s: g,
                peak_percent: percent(g),
            });
        }
    }
    Ok(Report {
        runtime: "vlm-int8",
        model: path.display().to_string(),
        tower: kind.name(),
        isa: Some(isa.name()),
        threads: args.threads,
        runs: args.runs,
        warmup: args.warmup,
        median_ms: ms(timing.median),
        min_ms: ms(timing.min),
        max_ms: ms(timing.max),
        macs,
        gmac_per_s,
        peak_percent: percent(gmac_per_s),
        peak,
        kernels,
    })
}

/// The MACs of a folder's tower, counted on the same import `vlm quantize` starts from,
/// so the fp32 and int8 figures divide the same work.
fn fp32_macs(fp32: &Fp32Siglip, kind: TowerKind) -> Result<u64> {
    let cfg = fp32.config();
    let (file, graph_kind, input) = match kind {
        TowerKind::Vision => (
            &cfg.vision.onnx,
            GraphTower::Vision,
            TowerInput::Pixels {
                channels: cfg.vision.num_channels,
                height: cfg.preprocess.size[0],
                width: cfg.preprocess.size[1],
            },
        ),
        TowerKind::Text => (
            &cfg.text.onnx,
            GraphTower::Text,
            TowerInput::Tokens {
                len: cfg.text.max_length,
            },
        ),
    };
    let path = fp32.dir().join(file);
    let graph = vlm_quantize::import::import_tower(&path, graph_kind, input)
        .with_context(|| format!("counting the MACs of {}", path.display()))?;
    Ok(graph.macs())
}

fn bench_fp32(args: &BenchArgs, kind: TowerKind) -> Result<Report> {
    let path = &args.model;
    let fp32 =
        Fp32Siglip::load(path).with_context(|| format!("loading model {}", path.display()))?;
    let macs = fp32_macs(&fp32, kind)?;
    let cfg = fp32.config();
    let [h, w] = cfg.preprocess.size;
    let pixels = pattern_pixels(cfg.vision.num_channels * h * w);
    let ids: Vec<i64> = pattern_ids(
        cfg.text.max_length,
        cfg.text.vocab_size,
        cfg.text.pad_token_id,
    )
    .into_iter()
    .map(i64::from)
    .collect();
    let timing = time_runs(args.warmup, args.runs, || {
        match kind {
            // The copy is ~0.6 MB against a forward pass of hundreds of ms.
            TowerKind::Vision => fp32.embed_pixels(pixels.clone()),
            TowerKind::Text => fp32.embed_ids(&ids),
        }
        .map(drop)
        .with_context(|| format!("running the {} tower", kind.name()))
    })?;
    Ok(Report {
        runtime: "tract-fp32",
        model: path.display().to_string(),
        tower: kind.name(),
        isa: None,
        threads: 1,
        runs: args.runs,
        warmup: args.warmup,
        median_ms: ms(timing.median),
        min_ms: ms(timing.min),
        max_ms: ms(timing.max),
        macs,
        gmac_per_s: gmacs(macs, timing.median),
        peak: None,
        peak_percent: None,
        kernels: Vec::new(),
    })
}

fn print_text(r: &Report, requested_threads: usize) {
    let engine = match r.isa {
        Some(isa) => format!("{} ({isa})", r.runtime),
        None => r.runtime.to_string(),
    };
    println!("model      {}", r.model);
    println!("runtime    {engine}, {} tower", r.tower);
    if r.threads == requested_threads {
        println!("threads    {}", r.threads);
    } else {
        println!(
            "threads    {} (tract runs on one; --threads {requested_threads} ignored)",
            r.threads
        );
    }
    println!("runs       {} (after {} warmup)", r.runs, r.warmup);
    println!("median     {:.3} ms", r.median_ms);
    println!("min        {:.3} ms", r.min_ms);
    println!("max        {:.3} ms", r.max_ms);
    println!("MACs       {:.3} G per run", r.macs as f64 / 1e9);
    println!("GMAC/s     {:.1}", r.gmac_per_s);
    match (&r.peak, r.peak_percent) {
        (Some(p), Some(pct)) => {
            println!(
                "peak       {:.1} GMAC/s ({}, registers only, {} thread{})",
                p.gmac_per_s,
                p.instruction,
                p.threads,
                if p.threads == 1 { "" } else { "s" }
            );
            println!("of peak    {pct:.1} %");
        }
        _ if r.isa.is_none() => println!("peak       n/a for the fp32 path"),
        _ => println!("peak       n/a for this ISA"),
    }
    if !r.kernels.is_empty() {
        println!();
        println!("int8 GEMM alone, random data, {} thread(s):", r.threads);
        println!(
            "{:>6} {:>6} {:>6} {:>7} {:>9} {:>10} {:>8} {:>9}",
            "M", "K", "N", "layers", "MAC share", "µs/call", "GMAC/s", "of peak"
        );
        for s in &r.kernels {
            let pct = s
                .peak_percent
                .map_or_else(|| "n/a".to_string(), |p| format!("{p:.1} %"));
            println!(
                "{:>6} {:>6} {:>6} {:>7} {:>8.1}% {:>10.1} {:>8.1} {:>9}",
                s.m,
                s.k,
                s.n,
                s.layers,
                100.0 * s.mac_share,
                1e3 * s.median_ms,
                s.gmac_per_s,
                pct
            );
        }
    }
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let kind = match args.tower {
        TowerArg::Vision => TowerKind::Vision,
        TowerArg::Text => TowerKind::Text,
    };
    let report = if args.model.is_file() {
        bench_int8(&args, kind)?
    } else if args.model.is_dir() {
        if args.kernels {
            bail!(
                "--kernels times the int8 GEMM: pass an int8 artifact (.vlmq), not the folder {}",
                args.model.display()
            );
        }
        bench_fp32(&args, kind)?
    } else {
        bail!("{}: no such model file or folder", args.model.display());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, args.threads);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let d = |v: &[u64]| v.iter().map(|&x| Duration::from_millis(x)).collect();
        let t = summarize(d(&[30, 10, 20]));
        assert_eq!(
            (t.median, t.min, t.max),
            (
                Duration::from_millis(20),
                Duration::from_millis(10),
                Duration::from_millis(30)
            )
        );
        assert_eq!(
            summarize(d(&[40, 10, 20, 30])).median,
            Duration::from_millis(25)
        );
    }

    #[test]
    fn shapes_are_counted_once_each_in_order() {
        let w = Weights::I8 {
            w: 0,
            w_scale: 0,
            x_scale: 1.0,
            x_zero: 0,
        };
        let lin = |rows, cols, n| Op::Linear {
            x: vlm_runtime::ops::Mat::dense(0, rows, cols),
            weights: w,
            bias: None,
            act: Activation::None,
            out: vlm_runtime::ops::Mat::dense(1, rows, n),
        };
        let ops = [lin(4, 8, 16), lin(4, 16, 8), lin(4, 8, 16)];
        assert_eq!(
            int8_shapes(ops.into_iter()),
            vec![((4, 8, 16), 2), ((4, 16, 8), 1)]
        );
    }

    #[test]
    fn the_pixel_pattern_is_what_bench_ort_makes() {
        // bench_ort.py: (arange(n) * 37 % 251) / 125 - 1, in float32.
        let p = pattern_pixels(300);
        assert_eq!(p[0], -1.0);
        assert_eq!(p[7], (7.0 * 37.0 % 251.0) / 125.0 - 1.0);
        assert_eq!(p[251], -1.0);
        assert!(p.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
