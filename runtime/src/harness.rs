//! The op battery (std): every op, in each of its variants, as a tiny one-graph artifact
//! with random operands; [`check`] runs it on a backend and compares every output with
//! the scalar reference under the op's one error budget ([`budget`]); [`time`] is the
//! perf mode. `runtime/tests/ops.rs` checks every case on every ISA this CPU (or QEMU)
//! has; `vlm bench --ops` prints the timings; `vlm bench --profile` times a whole
//! model's ops with [`OpTimer`]. A new op adds its cases to [`cases`]; a new backend runs
//! them all.

use std::string::{String, ToString};
use std::time::{Duration, Instant};
use std::vec::Vec;
use std::{format, vec};

use crate::backend::{Backend, Cpu};
use crate::encode::{container, meta_section, GraphSpec, PortSpec, Strings, Tensors};
use crate::exec::{Input, Observed, Observer};
use crate::format::{packed_index, packed_len, ALIGN};
use crate::graph::{PortKind, Role};
use crate::kernels::scalar::{i8_cache_cols, MatRef};
use crate::kernels::Isa;
use crate::model::DType;
use crate::names::section;
use crate::ops::*;
use crate::{Model, Session};

/// The most an op's output may differ from the scalar reference, per element, as a
/// fraction of `1 + |reference|`. Zero where the format fixes every operation and its
/// order (int8 GEMMs are exact integer sums; the fp32 GEMM, layer norm, GELU and bf16
/// attention compute the reference's bits on every ISA, and so does attention over an
/// int8 cache, whose cases go by `cache_append_i8`); fp32 attention's SIMD kernels use
/// their own exponential and summation order.
pub fn budget(op: &str) -> f32 {
    match op {
        "attention" => 2e-5,
        _ => 0.0,
    }
}

/// One op (or, for state, the few ops it needs around it) as a runnable artifact.
pub struct Case {
    /// What it exercises ("linear int8 + GELU-tanh 7×33→20").
    pub name: String,
    /// The op kind under test, whose budget applies.
    pub op: &'static str,
    bytes: Vec<u64>,
    len: usize,
    inputs: Vec<Vec<u32>>,
    dtypes: Vec<DType>,
    /// Runs in a row (a decoder step's state carries over).
    pub steps: usize,
}

impl Case {
    pub fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<u64, u8>(&self.bytes)[..self.len]
    }

    pub fn model(&self) -> Model<'_> {
        Model::from_bytes(self.bytes()).expect("a battery case that reads back")
    }

    fn inputs(&self) -> Vec<Input<'_>> {
        self.inputs
            .iter()
            .zip(&self.dtypes)
            .map(|(w, d)| match d {
                DType::U32 => Input::U32(w),
                _ => Input::F32(bytemuck::cast_slice(w)),
            })
            .collect()
    }
}

/// Runs `case` on `backend`; every output of every step, in order.
pub fn run<B: Backend>(case: &Case, backend: B) -> Result<Vec<f32>, crate::Error> {
    let model = case.model();
    let mut arena = vec![0u8; model.arena_size_for_threads(16)];
    let mut s = Session::with_backend(&model, &mut arena, backend)?;
    let g = model.graph_at(0).expect("one graph");
    let lens: Vec<usize> = g.outputs().map(|p| p.len()).collect();
    let mut all = Vec::new();
    for _ in 0..case.steps {
        let mut outs: Vec<Vec<f32>> = lens.iter().map(|&n| vec![0.0; n]).collect();
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        s.run(0, &case.inputs(), &mut refs, None)?;
        all.extend(outs.into_iter().flatten());
    }
    Ok(all)
}

/// The largest error of `backend` against the scalar reference on `case`, relative to
/// `1 + |reference|`; `Err` names the first element over the op's budget.
pub fn check<B: Backend>(case: &Case, backend: B) -> Result<f32, String> {
    let name = backend.name();
    let want = run(case, Cpu::new(Isa::Scalar)).map_err(|e| e.to_string())?;
    let got = run(case, backend).map_err(|e| format!("{name}: {e}"))?;
    let mut worst = 0.0f32;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = if g.to_bits() == w.to_bits() {
            0.0
        } else {
            (g - w).abs() / (1.0 + w.abs())
        };
        // NaN against a number is over any budget.
        if err.is_nan() || err > budget(case.op) {
            return Err(format!(
                "{}: {name} gives {g} at {i}, the reference {w} (budget {})",
                case.name,
                budget(case.op)
            ));
        }
        worst = worst.max(err);
    }
    Ok(worst)
}

/// The median time of one run of `case` on `backend` over `runs` runs (after one warm-up).
pub fn time<B: Backend>(case: &Case, backend: B, runs: usize) -> Result<Duration, crate::Error> {
    let model = case.model();
    let mut arena = vec![0u8; model.arena_size_for_threads(16)];
    let mut s = Session::with_backend(&model, &mut arena, backend)?;
    let g = model.graph_at(0).expect("one graph");
    let mut outs: Vec<Vec<f32>> = g.outputs().map(|p| vec![0.0; p.len()]).collect();
    let inputs = case.inputs();
    let mut samples = Vec::new();
    for i in 0..runs + 1 {
        s.reset_state()?;
        let mut refs: Vec<&mut [f32]> = outs.iter_mut().map(|o| o.as_mut_slice()).collect();
        let t = Instant::now();
        s.run(0, &inputs, &mut refs, None)?;
        if i > 0 {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    Ok(samples[samples.len() / 2])
}

/// An observer that times each op of a run (the time from the previous op's end to its
/// own): what `vlm bench --profile` reads.
pub struct OpTimer {
    last: Instant,
    /// Per op index, the last run's time.
    pub spent: Vec<Duration>,
}

impl OpTimer {
    pub fn new(ops: usize) -> Self {
        Self {
            last: Instant::now(),
            spent: vec![Duration::ZERO; ops],
        }
    }

    /// Call right before a run.
    pub fn start(&mut self) {
        self.last = Instant::now();
    }
}

impl Observer for OpTimer {
    fn observe(&mut self, node: usize, what: Observed, _: MatRef<'_>) {
        if what == Observed::Output {
            let now = Instant::now();
            if let Some(s) = self.spent.get_mut(node) {
                *s = now - self.last;
            }
            self.last = now;
        }
    }
}

/// xorshift64: deterministic operands (and benchmark bytes) without a dependency; they
/// need no structure, not good randomness.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// `n` values in ±`amp`, in steps of `amp / 1000`.
    pub fn f32s(&mut self, n: usize, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|_| ((self.next_u64() % 2001) as f32 / 1000.0 - 1.0) * amp)
            .collect()
    }
}

/// Builds one graph: buffers in order after the state region, nothing shared.
struct Build {
    rng: Rng,
    tensors: Tensors,
    strings: Strings,
    /// (length, is state)
    buffers: Vec<(usize, bool)>,
    ports: Vec<(PortKind, DType, Mat, &'static str)>,
    ops: Vec<Op>,
    inputs: Vec<Vec<u32>>,
}

impl Build {
    fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            tensors: Tensors::default(),
            strings: Strings::default(),
            buffers: Vec::new(),
            ports: Vec::new(),
            ops: Vec::new(),
            inputs: Vec::new(),
        }
    }

    fn buffer(&mut self, len: usize) -> u32 {
        self.buffers.push((len, false));
        (self.buffers.len() - 1) as u32
    }

    /// An f32 input of `rows × cols` random values in ±`amp`.
    fn input(&mut self, rows: usize, cols: usize, amp: f32) -> Mat {
        let b = self.buffer(rows * cols);
        let m = Mat::dense(b, rows as u32, cols as u32);
        self.ports.push((PortKind::Input, DType::F32, m, "x"));
        let v = self.rng.f32s(rows * cols, amp);
        self.inputs.push(bytemuck::cast_slice(&v).to_vec());
        m
    }

    fn ids(&mut self, ids: &[u32]) -> u32 {
        let b = self.buffer(ids.len());
        let m = Mat::dense(b, 1, ids.len() as u32);
        self.ports.push((PortKind::Input, DType::U32, m, "ids"));
        self.inputs.push(ids.to_vec());
        b
    }

    fn state(&mut self, len: usize, dtype: DType) -> u32 {
        self.buffers.push((len, true));
        let b = (self.buffers.len() - 1) as u32;
        self.ports.push((
            PortKind::State,
            dtype,
            Mat::dense(b, 1, len as u32),
            "state",
        ));
        b
    }

    fn out(&mut self, rows: usize, cols: usize) -> Mat {
        let b = self.buffer(rows * cols);
        let m = Mat::dense(b, rows as u32, cols as u32);
        self.ports.push((PortKind::Output, DType::F32, m, "y"));
        m
    }

    fn f32s(&mut self, dims: &[usize], amp: f32) -> u32 {
        let v = self.rng.f32s(dims.iter().product(), amp);
        let name = self.strings.add("t");
        self.tensors
            .push(DType::F32, dims, bytemuck::cast_slice(&v), name)
    }

    fn weights(&mut self, int8: bool, rows: usize, cols: usize) -> Weights {
        if !int8 {
            return Weights::F32 {
                w: self.f32s(&[rows, cols], 0.3),
            };
        }
        // Half the layers 7-bit, as the quantizer makes them where they cost nothing, and
        // half of those with 7-bit activations too (the AVX2 opt-in).
        let narrow = self.rng.next_u64().is_multiple_of(2);
        let narrow_x = narrow && self.rng.next_u64().is_multiple_of(2);
        let top = crate::format::weight_limit(narrow);
        let mut w = vec![0i8; packed_len(rows, cols)];
        for o in 0..rows {
            for k in 0..cols {
                w[packed_index(o, k, cols)] =
                    ((self.rng.next_u64() % (2 * top as u64 + 1)) as i64 - top as i64) as i8;
            }
        }
        let name = self.strings.add("w");
        let w = self.tensors.push(
            DType::I8Panels,
            &[rows, cols],
            bytemuck::cast_slice(&w),
            name,
        );
        let scales: Vec<f32> = (0..rows)
            .map(|_| 1e-3 * (1 + self.rng.next_u64() % 9) as f32)
            .collect();
        let name = self.strings.add("w_scale");
        let w_scale = self
            .tensors
            .push(DType::F32, &[rows], bytemuck::cast_slice(&scales), name);
        Weights::I8 {
            w,
            w_scale,
            x_scale: 0.01,
            x_zero: (i32::from(crate::format::activation_limit(narrow_x)) + 1) / 2,
            narrow,
            narrow_x,
        }
    }

    fn finish(mut self, name: String, op: &'static str, steps: usize) -> Case {
        let state_bytes: usize = self
            .buffers
            .iter()
            .filter(|b| b.1)
            .map(|b| (4 * b.0).next_multiple_of(ALIGN))
            .sum();
        let (mut state_at, mut at) = (0, state_bytes);
        let mut placed = Vec::new();
        for &(len, state) in &self.buffers {
            let cur = if state { &mut state_at } else { &mut at };
            placed.push((*cur, len));
            *cur += (4 * len).next_multiple_of(ALIGN).max(ALIGN);
        }
        let mut ports: Vec<PortSpec> = Vec::new();
        for kind in [PortKind::Input, PortKind::Output, PortKind::State] {
            for &(k, dtype, mat, name) in &self.ports {
                if k == kind {
                    ports.push(PortSpec {
                        kind,
                        dtype,
                        mat,
                        name,
                    });
                }
            }
        }
        let dtypes = self
            .ports
            .iter()
            .filter(|p| p.0 == PortKind::Input)
            .map(|p| p.1)
            .collect();
        let graph = GraphSpec {
            rows: 0,
            role: Role::Decoder,
            name: "battery",
            ports,
            buffers: placed,
            ops: self.ops.iter().map(|&o| ("op", o)).collect(),
            arena_bytes: at as u32,
            state_bytes: state_bytes as u32,
        }
        .encode(&mut self.strings);
        let (table, data) = self.tensors.finish();
        let bytes = container(&[
            (section::META, meta_section(0, 0, &[])),
            (section::TENSORS, table),
            (section::DATA, data),
            (section::GRAPH, graph),
            (section::STRINGS, self.strings.0),
        ]);
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(&bytes);
        Case {
            name,
            op,
            bytes: words,
            len: bytes.len(),
            inputs: self.inputs,
            dtypes,
            steps,
        }
    }
}

/// A ViT encoder with random weights as a one-graph artifact: `layers` pre-norm blocks
/// (layer norm; q, k and v projections; fp32 attention; output projection and residual;
/// layer norm; MLP with GELU-tanh; residual) over `tokens × dim` embeddings, every
/// linear layer int8 with 8-bit weights, then a final layer norm. SigLIP-B/16's encoder
/// is `(12, 196, 768, 12, 3072)`: what a backend's speed is measured on where no
/// exported model can be made (the GPU check runs on a machine with no Python).
pub fn encoder_tower(layers: usize, tokens: usize, dim: usize, heads: usize, mlp: usize) -> Case {
    let mut b = Build::new(0x5161_1b16);
    let mut x = b.input(tokens, dim, 1.0);
    let norm_into = |b: &mut Build, x: Mat, out: Mat| {
        let (gamma, beta) = (b.f32s(&[dim], 1.0), b.f32s(&[dim], 0.1));
        b.ops.push(
            LayerNorm {
                x,
                gamma,
                beta,
                eps: 1e-6,
                out,
            }
            .into(),
        );
        out
    };
    let norm = |b: &mut Build, x: Mat| {
        let out = Mat::dense(b.buffer(tokens * dim), tokens as u32, dim as u32);
        norm_into(b, x, out)
    };
    let linear = |b: &mut Build, x: Mat, outs: usize, act: Activation| {
        let weights = match b.weights(true, outs, x.cols as usize) {
            // 8-bit widths (the values drawn for 7 bits fit them too).
            Weights::I8 { w, w_scale, .. } => Weights::I8 {
                w,
                w_scale,
                x_scale: 0.02,
                x_zero: 128,
                narrow: false,
                narrow_x: false,
            },
            f32 => f32,
        };
        let bias = Some(b.f32s(&[outs], 0.05));
        let out = Mat::dense(b.buffer(tokens * outs), tokens as u32, outs as u32);
        b.ops.push(
            Linear {
                x,
                weights,
                bias,
                act,
                out,
            }
            .into(),
        );
        out
    };
    let add = |b: &mut Build, a: Mat, c: Mat| {
        let out = Mat::dense(b.buffer(tokens * dim), tokens as u32, dim as u32);
        b.ops.push(Add { a, b: c, out }.into());
        out
    };
    let dh = dim / heads;
    for _ in 0..layers {
        let h = norm(&mut b, x);
        let q = linear(&mut b, h, dim, Activation::None);
        let k = linear(&mut b, h, dim, Activation::None);
        let v = linear(&mut b, h, dim, Activation::None);
        let o = Mat::dense(b.buffer(tokens * dim), tokens as u32, dim as u32);
        b.ops.push(
            Attention {
                q: Query::Mat(q),
                k,
                v,
                heads: heads as u32,
                head_dim: dh as u32,
                scale: 1.0 / (dh as f32).sqrt(),
                precision: Precision::F32,
                mask: Mask::None,
                past: None,
                out: o,
            }
            .into(),
        );
        let o = linear(&mut b, o, dim, Activation::None);
        x = add(&mut b, x, o);
        let h = norm(&mut b, x);
        let h = linear(&mut b, h, mlp, Activation::GeluTanh);
        let h = linear(&mut b, h, dim, Activation::None);
        x = add(&mut b, x, h);
    }
    let out = b.out(tokens, dim);
    norm_into(&mut b, x, out);
    let name =
        format!("encoder {layers}×({tokens} tokens, {dim} wide, {heads} heads, MLP {mlp}) int8");
    b.finish(name, "encoder", 1)
}

const ACTS: [Activation; 3] = [Activation::None, Activation::GeluTanh, Activation::GeluErf];

/// Every case of the battery: each op in each variant, on odd shapes (rows, inputs and
/// outputs not multiples of any tile).
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    let mut seed = 0x0b5e_55ed;
    let mut next = || {
        seed += 1;
        Build::new(seed)
    };
    for int8 in [false, true] {
        for act in ACTS {
            for (m, k, n) in [(7, 33, 20), (1, 70, 9), (40, 16, 35)] {
                let mut b = next();
                let x = b.input(m, k, 1.0);
                let weights = b.weights(int8, n, k);
                let bias = Some(b.f32s(&[n], 0.5));
                let y = b.out(m, n);
                let op = Linear {
                    x,
                    weights,
                    bias,
                    act,
                    out: y,
                };
                b.ops.push(op.into());
                cases.push(b.finish(op.to_string(), "linear", 1));
            }
        }
        let (c, h, w, p, d) = (3, 6, 9, 3, 20);
        let mut b = next();
        let x = b.input(1, c * h * w, 1.0);
        let weights = b.weights(int8, d, c * p * p);
        let patches = (h / p) * (w / p);
        let add = b.f32s(&[patches, d], 0.5);
        let o = b.out(patches, d);
        let op = PatchEmbed {
            input: x.buf,
            channels: c as u32,
            height: h as u32,
            width: w as u32,
            patch: p as u32,
            weights,
            add,
            out: o,
        };
        b.ops.push(op.into());
        cases.push(b.finish(op.to_string(), "patch_embed", 1));
    }
    // 50 rows: enough for threads to split them (`kernels::by_rows`).
    for (rows, cols) in [(5, 37), (1, 300), (9, 16), (50, 24)] {
        let mut b = next();
        let x = b.input(rows, cols, 3.0);
        let (gamma, beta) = (b.f32s(&[cols], 1.0), b.f32s(&[cols], 1.0));
        let o = b.out(rows, cols);
        let op = LayerNorm {
            x,
            gamma,
            beta,
            eps: 1e-6,
            out: o,
        };
        b.ops.push(op.into());
        cases.push(b.finish(op.to_string(), "layer_norm", 1));
    }
    for precision in [Precision::F32, Precision::Bf16] {
        for (nq, nk, heads, dh, constant) in [
            (7, 13, 2, 8, false),
            (1, 50, 3, 17, true),
            (20, 20, 1, 64, false),
        ] {
            let mut b = next();
            let width = heads * dh;
            let q = if constant {
                Query::Const {
                    tensor: b.f32s(&[nq, width], 1.0),
                    rows: nq as u32,
                }
            } else {
                Query::Mat(b.input(nq, width, 1.0))
            };
            let (k, v) = (b.input(nk, width, 1.0), b.input(nk, width, 1.0));
            let o = b.out(nq, width);
            let op = Attention {
                q,
                k,
                v,
                heads: heads as u32,
                head_dim: dh as u32,
                scale: 1.0 / (dh as f32).sqrt(),
                precision,
                mask: Mask::None,
                past: None,
                out: o,
            };
            b.ops.push(op.into());
            cases.push(b.finish(op.to_string(), "attention", 1));
        }
        cases.push(cached_attention(next(), precision));
    }
    // fp32, fp32 with row scales (Gemma's √dim), int8 with row scales.
    for (table_i8, scaled) in [(false, false), (false, true), (true, true)] {
        let (vocab, dim, n) = (11, 24, 5);
        let mut b = next();
        let ids = b.ids(&[3, 0, 10, 3, 7]);
        let table = if table_i8 {
            let t: Vec<i8> = (0..vocab * dim).map(|_| b.rng.next_u64() as i8).collect();
            let name = b.strings.add("table");
            b.tensors
                .push(DType::I8, &[vocab, dim], bytemuck::cast_slice(&t), name)
        } else {
            b.f32s(&[vocab, dim], 1.0)
        };
        let table_scale = scaled.then(|| b.f32s(&[vocab], if table_i8 { 0.01 } else { 4.0 }));
        let add = b.f32s(&[n, dim], 0.5);
        let o = b.out(n, dim);
        let op = Embedding {
            ids,
            table,
            table_scale,
            add,
            position: None,
            out: o,
        };
        b.ops.push(op.into());
        let kind = match (table_i8, scaled) {
            (false, false) => "fp32",
            (false, true) => "fp32 scaled",
            _ => "int8",
        };
        cases.push(b.finish(format!("{op} {kind}"), "embedding", 1));
    }
    // 40 rows: enough for threads to split them.
    for rows in [6, 40] {
        let mut b = next();
        let (x, y) = (b.input(rows, 45, 2.0), b.input(rows, 45, 2.0));
        let o = b.out(rows, 45);
        let op = Add { a: x, b: y, out: o };
        b.ops.push(op.into());
        cases.push(b.finish(op.to_string(), "add", 1));
    }
    for act in [Activation::GeluTanh, Activation::GeluErf] {
        let mut b = next();
        // In place: the input buffer is also the output.
        let x = b.input(4, 33, 4.0);
        b.ports.push((PortKind::Output, DType::F32, x, "y"));
        let op = Activate { x, act };
        b.ops.push(op.into());
        cases.push(b.finish(format!("{op} {}", act.name()), "activate", 1));
    }
    for (rows, cols) in [(5, 37), (1, 300)] {
        let mut b = next();
        let x = b.input(rows, cols, 3.0);
        let gamma = b.f32s(&[cols], 1.0);
        let o = b.out(rows, cols);
        let op = RmsNorm {
            x,
            gamma,
            eps: 1e-6,
            out: o,
        };
        b.ops.push(op.into());
        cases.push(b.finish(op.to_string(), "rms_norm", 1));
    }
    for act in [Activation::Silu, Activation::GeluTanh] {
        let mut b = next();
        let x = b.input(3, 2 * 19, 4.0);
        let o = b.out(3, 19);
        let op = Glu { x, act, out: o };
        b.ops.push(op.into());
        cases.push(b.finish(op.to_string(), "glu", 1));
    }
    {
        let mut b = next();
        let x = b.input(6 * 4, 5, 1.0);
        let o = b.out(3 * 2, 4 * 5);
        let op = PixelShuffle {
            x,
            grid_h: 6,
            grid_w: 4,
            scale: 2,
            out: o,
        };
        b.ops.push(op.into());
        cases.push(b.finish(op.to_string(), "pixel_shuffle", 1));
    }
    for cached in [false, true] {
        let (rows, heads, dh, positions) = (3, 5, 6, 8);
        let mut b = next();
        // In place, like activate; with a position, rows move on by `rows` each step.
        let x = b.input(rows, heads * dh, 2.0);
        b.ports.push((PortKind::Output, DType::F32, x, "y"));
        let table = b.f32s(&[positions, dh], 1.0);
        let position = cached.then(|| b.state(1, DType::U32));
        let op = Rope {
            x,
            heads: heads as u32,
            head_dim: dh as u32,
            table,
            position,
        };
        b.ops.push(op.into());
        if let Some(p) = position {
            b.ops.push(
                Advance {
                    position: p,
                    by: rows as u32,
                }
                .into(),
            );
        }
        let steps = if cached { positions / rows } else { 1 };
        cases.push(b.finish(format!("{op}, {steps} steps"), "rope", steps));
    }
    for precision in [Precision::F32, Precision::Bf16] {
        // A prompt's rows, and a decoder step's one row (whose heads threads split).
        for rows in [3, 1] {
            cases.push(grouped_attention(next(), precision, rows, false));
        }
    }
    for rows in [3, 1] {
        cases.push(grouped_attention(next(), Precision::F32, rows, true));
    }
    {
        let mut b = next();
        let tensor = b.f32s(&[4, 7], 1.0);
        let o = b.out(4, 7);
        let op = Constant { tensor, out: o };
        b.ops.push(op.into());
        cases.push(b.finish(op.to_string(), "constant", 1));
    }
    {
        let mut b = next();
        let x = b.input(5, 9, 1.0);
        let o = b.out(1, 9);
        let op = LastRow { x, out: o };
        b.ops.push(op.into());
        cases.push(b.finish(op.to_string(), "last_row", 1));
    }
    cases
}

/// Grouped-query attention (6 query heads over 2 key and value heads), causal over a
/// cache in state, `rows` queries a step: a decoder's prefill chunk, or with one row its
/// step. With `int8`, the cache is int8 (`cache_append_i8`; the case goes by that op).
fn grouped_attention(mut b: Build, precision: Precision, rows: usize, int8: bool) -> Case {
    let (heads, kv, dh, cap) = (6, 2, 8, 9);
    let width = kv * dh;
    let (cols, dtype) = match int8 {
        true => (i8_cache_cols(width, dh).unwrap_or(0), DType::I8),
        false => (width, DType::F32),
    };
    let pos = b.state(1, DType::U32);
    let kc = b.state(cap * cols, dtype);
    let vc = b.state(cap * cols, dtype);
    let cache = |buf| Mat::dense(buf, cap as u32, cols as u32);
    let q = b.input(rows, heads * dh, 1.0);
    let k = b.input(rows, width, 1.0);
    let v = b.input(rows, width, 1.0);
    for (x, c) in [(k, kc), (v, vc)] {
        let (position, cache) = (pos, cache(c));
        b.ops.push(match int8 {
            true => CacheAppendI8 {
                x,
                position,
                cache,
                head_dim: dh as u32,
            }
            .into(),
            false => CacheAppend { x, position, cache }.into(),
        });
    }
    let o = b.out(rows, heads * dh);
    let op = Attention {
        q: Query::Mat(q),
        k: cache(kc),
        v: cache(vc),
        heads: heads as u32,
        head_dim: dh as u32,
        scale: 0.35,
        precision,
        mask: Mask::Causal,
        past: Some(pos),
        out: o,
    };
    b.ops.push(op.into());
    b.ops.push(
        Advance {
            position: pos,
            by: rows as u32,
        }
        .into(),
    );
    b.finish(
        format!(
            "{op}, {kv} key heads, cached{}, {} steps",
            if int8 { " in int8" } else { "" },
            cap / rows
        ),
        if int8 { "cache_append_i8" } else { "attention" },
        cap / rows,
    )
}

/// A decoder's cache path: embedding at the position, keys and values appended to state,
/// causal attention over the cache with its past length, the position advanced; run for
/// several steps.
fn cached_attention(mut b: Build, precision: Precision) -> Case {
    let (heads, dh, cap, vocab) = (2, 8, 9, 13);
    let width = heads * dh;
    let pos = b.state(1, DType::U32);
    let kc = b.state(cap * width, DType::F32);
    let vc = b.state(cap * width, DType::F32);
    let ids = b.ids(&[5]);
    let table = b.f32s(&[vocab, 3 * width], 1.0);
    let add = b.f32s(&[cap, 3 * width], 0.5);
    let qkv = b.buffer(3 * width);
    b.ops.push(
        Embedding {
            ids,
            table,
            table_scale: None,
            add,
            position: Some(pos),
            out: Mat::dense(qkv, 1, 3 * width as u32),
        }
        .into(),
    );
    let part = |i: usize| Mat {
        buf: qkv,
        offset: (i * width) as u32,
        rows: 1,
        cols: width as u32,
        stride: 3 * width as u32,
    };
    for (i, cache) in [(1, kc), (2, vc)] {
        b.ops.push(
            CacheAppend {
                x: part(i),
                position: pos,
                cache: Mat::dense(cache, cap as u32, width as u32),
            }
            .into(),
        );
    }
    let o = b.out(1, width);
    let op = Attention {
        q: Query::Mat(part(0)),
        k: Mat::dense(kc, cap as u32, width as u32),
        v: Mat::dense(vc, cap as u32, width as u32),
        heads: heads as u32,
        head_dim: dh as u32,
        scale: 0.35,
        precision,
        mask: Mask::Causal,
        past: Some(pos),
        out: o,
    };
    b.ops.push(op.into());
    b.ops.push(
        Advance {
            position: pos,
            by: 1,
        }
        .into(),
    );
    b.finish(format!("{op}, cached, {cap} steps"), "attention", cap)
}
