//! `vlm bench`: how fast one tower runs here, and how close it comes to what the CPU's
//! int8 units can do at all.
//!
//! The ceiling is measured, not looked up: a register-only loop of the session's own
//! multiply-accumulate instruction (`kernels::x86_*_peak`) on as many threads as the
//! tower gets, so turbo, SMT siblings and a shared machine weigh on both sides alike.

use std::path::{Path, PathBuf};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;
use vlm_quantize::graph::TowerInput;
use vlm_quantize::{Artifact, Fp32Siglip};
use vlm_runtime::format::{packed_index, packed_len};
use vlm_runtime::harness::Rng;
use vlm_runtime::kernels::scalar::{q_stride, Epilogue, MatMut, Panels};
use vlm_runtime::kernels::Isa;
use vlm_runtime::ops::{Activation, Op, Weights};
use vlm_runtime::{Role, Session};

/// The tower to time (a SigLIP artifact's image or text encoder).
#[derive(Clone, Copy, ValueEnum)]
pub enum Tower {
    Vision,
    Text,
}

impl Tower {
    fn role(self) -> Role {
        match self {
            Tower::Vision => Role::ImageEncoder,
            Tower::Text => Role::TextEncoder,
        }
    }

    /// The name reports and `bench-peers.sh` use.
    fn name(self) -> &'static str {
        match self {
            Tower::Vision => "vision",
            Tower::Text => "text",
        }
    }
}

#[derive(Args)]
pub struct BenchArgs {
    /// An int8 artifact (.vlmq, timed on the vlm runtime) or an fp32 model folder
    /// (timed on tract, for comparison).
    #[arg(long, value_name = "FILE|DIR", required_unless_present_any = ["ops", "gemv"])]
    pub(crate) model: Option<PathBuf>,
    /// The tower to time.
    #[arg(long, value_enum, default_value = "vision")]
    tower: Tower,
    #[command(flatten)]
    pub(crate) device: crate::device::DeviceArg,
    /// Threads the large GEMMs are split across (tract ignores it: it runs on one).
    #[arg(long, default_value_t = 1)]
    pub(crate) threads: usize,
    /// Timed runs.
    #[arg(long, default_value_t = 10)]
    pub(crate) runs: usize,
    /// Untimed runs first (caches, page faults, CPU frequency).
    #[arg(long, default_value_t = 3)]
    pub(crate) warmup: usize,
    /// Also time the int8 GEMM kernel alone on each distinct shape of the tower's
    /// int8 linear layers.
    #[arg(long)]
    kernels: bool,
    /// Also show where a run's time goes: each op's shortest time over the runs, summed
    /// per kind and shape of op.
    #[arg(long)]
    pub(crate) profile: bool,
    /// Time the op battery instead of a model: every op variant on every kernel set
    /// this CPU has, next to the scalar reference (`vlm_runtime::harness`).
    #[arg(long)]
    pub(crate) ops: bool,
    /// Time a decoder step's int8 matrix–vector products instead of a model:
    /// SmolVLM-256M's shapes at one row, weights streamed from memory as in decoding,
    /// in GB/s on each kernel set this CPU has.
    #[arg(long)]
    pub(crate) gemv: bool,
    /// Time a captioner instead (a Hugging Face folder or an artifact): image encode,
    /// prefill and decode speeds, on 1 and 2 threads unless --threads is given.
    #[arg(long)]
    pub(crate) caption: bool,
    /// Tokens decoded per timed caption (--caption).
    #[arg(long, value_name = "N", default_value_t = 32)]
    pub(crate) decode_tokens: usize,
    /// KV cache positions of a captioner read from a folder (--caption).
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub(crate) context: usize,
    /// Whether --threads was given (not its default).
    #[arg(skip)]
    pub(crate) threads_given: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub(crate) json: bool,
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
    /// 7-bit weights and activations (`narrow`, `narrow_x` in the JSON), which AVX2
    /// multiplies faster.
    #[serde(flatten)]
    width: Width,
    layers: usize,
    /// Fraction of the tower's MACs these layers do.
    mac_share: f64,
    median_ms: f64,
    gmac_per_s: f64,
    peak_percent: Option<f64>,
}

#[derive(Serialize)]
pub(crate) struct ProfileRow {
    op: String,
    calls: usize,
    ms: f64,
}

#[derive(Serialize)]
struct Report {
    runtime: &'static str,
    model: String,
    tower: &'static str,
    isa: Option<&'static str>,
    /// The GPU the tower ran on (`--device`), if not the CPU.
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<String>,
    threads: usize,
    runs: usize,
    pub(crate) warmup: usize,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    /// Every timed run (ms), so runs made in several rounds can be pooled.
    samples_ms: Vec<f64>,
    macs: u64,
    gmac_per_s: f64,
    peak: Option<Peak>,
    peak_percent: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    kernels: Vec<KernelShape>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    profile: Vec<ProfileRow>,
}

/// Pixel values every runtime is timed on (`vlm_recipes.peer_inputs` makes the same ones):
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
    /// Every timed run, in the order run.
    samples: Vec<Duration>,
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
fn summarize(samples: Vec<Duration>) -> Timing {
    let mut sorted = samples.clone();
    sorted.sort();
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2
    };
    Timing {
        median,
        min: sorted[0],
        max: sorted[sorted.len() - 1],
        samples,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// `run(iters)` of a `kernels::x86_*_peak` module: the multiply-accumulates it did.
type PeakLoop = fn(u64) -> u64;

/// An int8 layer's widths: 7-bit weights (`narrow`), and 7-bit activations with them
/// (`narrow_x`).
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize)]
pub(crate) struct Width {
    pub narrow: bool,
    pub narrow_x: bool,
}

impl Width {
    pub const EIGHT: Width = Width {
        narrow: false,
        narrow_x: false,
    };

    fn name(self) -> &'static str {
        match (self.narrow, self.narrow_x) {
            (_, true) => "7+7-bit",
            (true, false) => "7-bit",
            (false, false) => "8-bit",
        }
    }
}

/// The register-only multiply-accumulate loop matching an ISA's GEMM kernel for this
/// width, if any.
#[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
fn peak_loop(isa: Isa, width: Width) -> Option<(PeakLoop, &'static str)> {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::X86Avx2 if width.narrow_x => Some((
            vlm_runtime::kernels::x86_avx2_peak::run_narrow_x,
            "2 vpmaddubsw+vpaddw+vpmaddwd+vpaddd ymm, 7-bit weights and activations",
        )),
        #[cfg(target_arch = "x86_64")]
        Isa::X86Avx2 if width.narrow => Some((
            vlm_runtime::kernels::x86_avx2_peak::run_narrow,
            "vpmaddubsw+vpmaddwd+vpaddd ymm, 7-bit weights",
        )),
        #[cfg(target_arch = "x86_64")]
        Isa::X86Avx512Vnni => Some((
            vlm_runtime::kernels::x86_avx512vnni_peak::run,
            "vpdpbusd zmm",
        )),
        #[cfg(target_arch = "x86_64")]
        Isa::X86AvxVnni => Some((vlm_runtime::kernels::x86_avxvnni_peak::run, "vpdpbusd ymm")),
        #[cfg(target_arch = "x86_64")]
        Isa::X86Avx2 => Some((
            vlm_runtime::kernels::x86_avx2_peak::run,
            "vpsignb+vpmaddubsw+vpmaddwd+vpaddd ymm",
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

/// (M, K, N) of a GEMM: `[M, K]` activations by `[N, K]` weights.
type Shape = (usize, usize, usize);

/// A random int8 product as the runtime meets one: `m` rows of activations
/// (`q_stride(k)` bytes each) and `[n, k]` weights packed in panels, symmetric
/// (−127..=127: what the quantizer writes and the loader accepts), padding zero as the
/// writer leaves it; both within `width`'s ranges.
pub(crate) fn random_problem(
    rng: &mut Rng,
    m: usize,
    k: usize,
    n: usize,
    width: Width,
) -> (Vec<u8>, Vec<i8>) {
    let x_top = vlm_runtime::format::activation_limit(width.narrow_x);
    let q: Vec<u8> = (0..m * q_stride(k))
        .map(|_| rng.next_u64() as u8 & x_top)
        .collect();
    let top = i16::from(vlm_runtime::format::weight_limit(width.narrow));
    let mut w = vec![0i8; packed_len(n, k)];
    for o in 0..n {
        for j in 0..k {
            w[packed_index(o, j, k)] = ((rng.next_u64() % (2 * top as u64 + 1)) as i16 - top) as i8;
        }
    }
    (q, w)
}

/// A timed product's epilogue: scales only, no bias or activation.
pub(crate) fn plain_epilogue(w_scale: &[f32]) -> Epilogue<'_> {
    Epilogue {
        x_scale: 1.0 / 256.0,
        w_scale,
        bias: None,
        act: Activation::None,
    }
}

/// Times `isa`'s int8 GEMM alone on an `m × k` by `[n, k]` problem; per-call duration.
fn time_gemm(
    isa: Isa,
    threads: usize,
    ((m, k, n), width): (Shape, Width),
    warmup: usize,
    runs: usize,
) -> Result<Duration> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (m * 31 + k * 17 + n) as u64);
    let (q, w) = random_problem(&mut rng, m, k, n, width);
    let w = Panels {
        w: &w,
        narrow: width.narrow,
        narrow_x: width.narrow_x,
    };
    let w_scale = vec![1.0f32 / 4096.0; n];
    let ep = plain_epilogue(&w_scale);
    let mut out = vec![0.0f32; m * n];
    let mut spare = vec![0.0f32; vlm_runtime::kernels::gemm_u8i8_spare_floats(m, n, threads)];
    let mut call = || {
        let mat = MatMut {
            data: &mut out,
            rows: m,
            cols: n,
            stride: n,
        };
        isa.gemm_u8i8_threads(threads, &q, k, w, &ep, mat, &mut spare);
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

/// Each distinct (M, K, N) and weight width of the tower's int8 linear layers, in order
/// of first use, with how many layers have it.
fn int8_shapes(ops: impl Iterator<Item = Op>) -> Vec<((Shape, Width), usize)> {
    let mut shapes: Vec<((Shape, Width), usize)> = Vec::new();
    for op in ops {
        let (
            Some(Weights::I8 {
                narrow, narrow_x, ..
            }),
            Some(shape),
        ) = (op.weights(), op.gemm_shape())
        else {
            continue;
        };
        let shape = (shape, Width { narrow, narrow_x });
        match shapes.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, count)) => *count += 1,
            None => shapes.push((shape, 1)),
        }
    }
    shapes
}

/// Each op's shortest time over `runs` runs (after `warmup`), summed per label, in
/// order of first use. Minima: on a shared machine noise only ever adds, and an op's
/// minimum is what it costs.
pub(crate) fn profile<B: vlm_runtime::Backend>(
    session: &mut Session<'_, '_, B>,
    graph: usize,
    input: vlm_runtime::Input<'_>,
    (warmup, runs): (usize, usize),
) -> Result<Vec<ProfileRow>> {
    let model = *session.model();
    let g = *model
        .graph_at(graph)
        .ok_or_else(|| anyhow!("the artifact has no graph {graph}"))?;
    let ops: Vec<Op> = g.ops().map(|(_, op)| op).collect();
    let mut t = vlm_runtime::harness::OpTimer::new(ops.len());
    let mut best = vec![Duration::MAX; ops.len()];
    let mut out = vec![0.0f32; g.outputs().next().map_or(0, |p| p.len())];
    for run in 0..warmup + runs {
        t.start();
        session
            .run(graph, &[input], &mut [&mut out], Some(&mut t))
            .with_context(|| format!("profiling the {}", g.role.name()))?;
        if run >= warmup {
            for (b, s) in best.iter_mut().zip(&t.spent) {
                *b = (*b).min(*s);
            }
        }
    }
    let mut rows: Vec<ProfileRow> = Vec::new();
    for (op, b) in ops.iter().zip(best) {
        let label = op.to_string();
        let row = match rows.iter_mut().position(|r| r.op == label) {
            Some(i) => &mut rows[i],
            None => {
                rows.push(ProfileRow {
                    op: label,
                    calls: 0,
                    ms: 0.0,
                });
                rows.last_mut().expect("just pushed")
            }
        };
        row.calls += 1;
        row.ms += ms(b);
    }
    Ok(rows)
}

fn gmacs(macs: u64, d: Duration) -> f64 {
    macs as f64 / d.as_secs_f64().max(1e-12) / 1e9
}

fn bench_int8(args: &BenchArgs, kind: Tower) -> Result<Report> {
    let path = args.model.as_deref().unwrap_or(Path::new(""));
    let artifact =
        Artifact::load(path).with_context(|| format!("loading model {}", path.display()))?;
    let model = artifact.runtime();
    let index = model.graph_index(kind.role()).ok_or_else(|| {
        anyhow!(
            "{}: the artifact has no {} graph",
            path.display(),
            kind.role().name()
        )
    })?;
    let tower = *model.graph_at(index).expect("found above");
    let input_len = tower.inputs().next().map_or(0, |p| p.len());
    let macs = tower.macs();
    let mut arena = vec![0u8; model.arena_size_for_threads(args.threads)];
    artifact.set_threads(args.threads);
    args.device
        .attach(&artifact)
        .with_context(|| format!("loading model {}", path.display()))?;
    let device = artifact.device();
    let backend = artifact.backend().context("starting a session")?;
    let mut session =
        Session::with_backend(model, &mut arena, backend).context("starting a session")?;
    // What `Cpu::new` runs on this CPU (the session's kernels when it is on the CPU).
    let isa = vlm_runtime::kernels::Isa::detect();
    let mut out = vec![0.0f32; tower.outputs().next().map_or(0, |p| p.len())];
    let pixels = pattern_pixels(input_len);
    let meta = artifact
        .siglip()
        .ok_or_else(|| anyhow!("{}: not a SigLIP artifact", path.display()))?;
    let ids = pattern_ids(input_len, meta.vocab_size, meta.pad_id);
    let input = match kind {
        Tower::Vision => vlm_runtime::Input::F32(&pixels),
        Tower::Text => vlm_runtime::Input::U32(&ids),
    };
    let timing = time_runs(args.warmup, args.runs, || {
        session
            .run(index, &[input], &mut [&mut out], None)
            .with_context(|| format!("running the {} tower", kind.name()))
    })?;
    let gmac_per_s = gmacs(macs, timing.median);
    let shapes = int8_shapes(tower.ops().map(|(_, op)| op));
    // The tower's peak is the loop of the width most of its int8 MACs have: on AVX2,
    // 7-bit weights take a shorter loop than 8-bit ones, and 7-bit activations with
    // them a shorter one still.
    let int8_macs = |width: Width| -> u64 {
        shapes
            .iter()
            .filter(|((_, w), _)| *w == width)
            .map(|(((m, k, n), _), layers)| (m * k * n * layers) as u64)
            .sum()
    };
    let tower_width = shapes
        .iter()
        .map(|((_, w), _)| *w)
        .max_by_key(|w| int8_macs(*w))
        .unwrap_or(Width::EIGHT);
    let peak_of = |width: Width| {
        // A CPU loop's peak says nothing of a GPU's run.
        let cpu_loop = peak_loop(isa, width).filter(|_| device.is_none());
        cpu_loop.map(|(f, instruction)| Peak {
            instruction,
            threads: args.threads,
            gmac_per_s: measure_peak(f, args.threads) / 1e9,
        })
    };
    let peak = peak_of(tower_width);
    let percent = |g: f64| peak.as_ref().map(|p| 100.0 * g / p.gmac_per_s);
    let mut kernels = Vec::new();
    if args.kernels {
        // A shape of another width is measured against its own loop's peak, where the
        // ISA has one of its own.
        let own_loop = |width: Width| peak_loop(isa, width).map(|l| l.1);
        let mut others: Vec<(Width, Option<Peak>)> = Vec::new();
        for &((_, w), _) in &shapes {
            if own_loop(w) != own_loop(tower_width) && !others.iter().any(|(o, _)| *o == w) {
                others.push((w, peak_of(w)));
            }
        }
        for (((m, k, n), width), layers) in shapes {
            let shape = ((m, k, n), width);
            let per_call = time_gemm(isa, args.threads, shape, args.warmup, args.runs)?;
            let shape_macs = (m * k * n) as u64;
            let g = gmacs(shape_macs, per_call);
            kernels.push(KernelShape {
                m,
                k,
                n,
                width,
                layers,
                mac_share: (shape_macs * layers as u64) as f64 / macs.max(1) as f64,
                median_ms: ms(per_call),
                gmac_per_s: g,
                peak_percent: match others.iter().find(|(o, _)| *o == width) {
                    Some((_, p)) => p.as_ref().map(|p| 100.0 * g / p.gmac_per_s),
                    None => percent(g),
                },
            });
        }
    }
    let profile = if args.profile {
        profile(&mut session, index, input, (args.warmup.min(1), args.runs))?
    } else {
        Vec::new()
    };
    Ok(Report {
        runtime: "vlm-int8",
        model: path.display().to_string(),
        tower: kind.name(),
        isa: Some(isa.name()),
        device: device.clone(),
        threads: args.threads,
        runs: args.runs,
        warmup: args.warmup,
        median_ms: ms(timing.median),
        min_ms: ms(timing.min),
        max_ms: ms(timing.max),
        samples_ms: timing.samples.iter().map(|&d| ms(d)).collect(),
        macs,
        gmac_per_s,
        peak_percent: percent(gmac_per_s),
        peak,
        kernels,
        profile,
    })
}

/// The MACs of a folder's tower, counted on the same import `vlm quantize` starts from,
/// so the fp32 and int8 figures divide the same work.
fn fp32_macs(fp32: &Fp32Siglip, kind: Tower) -> Result<u64> {
    let cfg = fp32.config();
    let (file, input) = match kind {
        Tower::Vision => (
            &cfg.vision.onnx,
            TowerInput::Pixels {
                channels: cfg.vision.num_channels,
                height: cfg.preprocess.size[0],
                width: cfg.preprocess.size[1],
            },
        ),
        Tower::Text => (
            &cfg.text.onnx,
            TowerInput::Tokens {
                len: cfg.text.max_length,
            },
        ),
    };
    let path = fp32.dir().join(file);
    let graph = vlm_quantize::import::import_tower(&path, kind.role(), input)
        .with_context(|| format!("counting the MACs of {}", path.display()))?;
    Ok(graph.macs())
}

fn bench_fp32(args: &BenchArgs, kind: Tower) -> Result<Report> {
    let path = args.model.as_deref().unwrap_or(Path::new(""));
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
            Tower::Vision => fp32.embed_pixels(pixels.clone()),
            Tower::Text => fp32.embed_ids(&ids),
        }
        .map(drop)
        .with_context(|| format!("running the {} tower", kind.name()))
    })?;
    Ok(Report {
        runtime: "tract-fp32",
        model: path.display().to_string(),
        tower: kind.name(),
        isa: None,
        device: None,
        threads: 1,
        runs: args.runs,
        warmup: args.warmup,
        median_ms: ms(timing.median),
        min_ms: ms(timing.min),
        max_ms: ms(timing.max),
        samples_ms: timing.samples.iter().map(|&d| ms(d)).collect(),
        macs,
        gmac_per_s: gmacs(macs, timing.median),
        peak: None,
        peak_percent: None,
        kernels: Vec::new(),
        profile: Vec::new(),
    })
}

fn print_text(r: &Report, requested_threads: usize) {
    let engine = match (&r.device, r.isa) {
        (Some(d), _) => format!("{} ({d})", r.runtime),
        (None, Some(isa)) => format!("{} ({isa})", r.runtime),
        (None, None) => r.runtime.to_string(),
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
        _ if r.device.is_some() => println!("peak       n/a on a GPU"),
        _ => println!("peak       n/a for this ISA"),
    }
    if !r.kernels.is_empty() {
        println!();
        println!("int8 GEMM alone, random data, {} thread(s):", r.threads);
        println!(
            "{:>6} {:>6} {:>6} {:>7} {:>7} {:>9} {:>10} {:>8} {:>9}",
            "M", "K", "N", "weights", "layers", "MAC share", "µs/call", "GMAC/s", "of peak"
        );
        for s in &r.kernels {
            let pct = s
                .peak_percent
                .map_or_else(|| "n/a".to_string(), |p| format!("{p:.1} %"));
            println!(
                "{:>6} {:>6} {:>6} {:>7} {:>7} {:>8.1}% {:>10.1} {:>8.1} {:>9}",
                s.m,
                s.k,
                s.n,
                s.width.name(),
                s.layers,
                100.0 * s.mac_share,
                1e3 * s.median_ms,
                s.gmac_per_s,
                pct
            );
        }
    }
}

pub(crate) fn print_profile(rows: &[ProfileRow]) {
    let total: f64 = rows.iter().map(|r| r.ms).sum();
    let w = rows.iter().map(|r| r.op.chars().count()).max().unwrap_or(2);
    println!();
    println!("where the time goes (each op's shortest time over the runs):");
    println!("{:<w$} {:>6} {:>10} {:>7}", "op", "calls", "ms", "share");
    for r in rows {
        println!(
            "{:<w$} {:>6} {:>10.3} {:>6.1}%",
            r.op,
            r.calls,
            r.ms,
            100.0 * r.ms / total.max(1e-12)
        );
    }
    println!("{:<w$} {:>6} {:>10.3}", "sum", "", total);
}

pub fn bench(args: BenchArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let kind = args.tower;
    if args.caption {
        return crate::bench_caption::bench_caption(&args, args.decode_tokens);
    }
    if args.ops {
        return crate::bench_ops::bench_ops(&args);
    }
    if args.gemv {
        return crate::bench_ops::bench_gemv(&args);
    }
    let model = args.model.clone().unwrap_or_default();
    let report = if model.is_file() {
        bench_int8(&args, kind)?
    } else if model.is_dir() {
        args.device.folder(&model)?;
        if args.kernels || args.profile {
            bail!(
                "--{} times the vlm runtime: pass an int8 artifact (.vlmq), not the folder {}",
                if args.kernels { "kernels" } else { "profile" },
                model.display()
            );
        }
        bench_fp32(&args, kind)?
    } else {
        bail!("{}: no such model file or folder", model.display());
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report, args.threads);
        if !report.profile.is_empty() {
            print_profile(&report.profile);
        }
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
            narrow: false,
            narrow_x: false,
        };
        let lin = |rows, cols, n| {
            Op::Linear(vlm_runtime::ops::Linear {
                x: vlm_runtime::ops::Mat::dense(0, rows, cols),
                weights: w,
                bias: None,
                act: Activation::None,
                out: vlm_runtime::ops::Mat::dense(1, rows, n),
            })
        };
        let ops = [lin(4, 8, 16), lin(4, 16, 8), lin(4, 8, 16)];
        assert_eq!(
            int8_shapes(ops.into_iter()),
            vec![
                (((4, 8, 16), Width::EIGHT), 2),
                (((4, 16, 8), Width::EIGHT), 1)
            ]
        );
    }

    #[test]
    fn the_pixel_pattern_is_what_the_peers_get() {
        // peer_inputs.py: (arange(n) * 37 % 251) / 125 - 1, in float32.
        let p = pattern_pixels(300);
        assert_eq!(p[0], -1.0);
        assert_eq!(p[7], (7.0 * 37.0 % 251.0) / 125.0 - 1.0);
        assert_eq!(p[251], -1.0);
        assert!(p.iter().all(|v| (-1.0..=1.0).contains(v)));
    }
}
