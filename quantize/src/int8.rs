//! int8 conversion of one tower: SmoothQuant-style migration of activation outliers into
//! the weights after each LayerNorm, static activation ranges from calibration, weights
//! symmetric per output channel, then a check against fp32 with a mixed-precision
//! fallback for the most sensitive layers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use vlm_runtime::format::{activation_limit, weight_limit};
use vlm_runtime::kernels::scalar::{quantize_one, MatRef};
use vlm_runtime::ops::{Embedding, LayerNorm, Linear, Op, PatchEmbed, Precision, RmsNorm, Weights};
use vlm_runtime::score::cosine;
use vlm_runtime::{Observed, Observer};

use crate::calibrate::{
    activation_ranges, channel_ranges, linear_nodes, tower_kind, ActivationRanges, ChannelRange,
    Method, Sample,
};
use crate::graph::{Graph, TensorData};
use crate::runner::single_tower;
use crate::Result;

#[derive(Debug, Clone, Serialize)]
pub struct Options {
    pub method: Method,
    /// SmoothQuant's migration strength α (0 = none, 1 = all onto the weights).
    pub smooth_alpha: Option<f32>,
    /// The accuracy budget: the median fp32-vs-int8 embedding cosine over the evaluation
    /// samples must reach this, or the most sensitive layers fall back to fp32.
    pub min_cosine: f32,
    /// At most this many layers fall back.
    pub max_fallback: usize,
    /// What attention's q·kᵀ and p·v multiply: bf16 halves their cost on CPUs with bf16
    /// dot products (and costs ~1e-5 of embedding cosine); the softmax stays f32.
    #[serde(serialize_with = "precision_name")]
    pub attention: Precision,
    /// Which layers get 7-bit weights (−63..=63), which AVX2 multiplies in two thirds
    /// of the instructions 8-bit ones take; every other CPU runs them at the same speed.
    pub weight_bits: WeightBits,
    /// Which 7-bit-weight layers quantize their input to 0..=127 too.
    pub activation_bits: ActivationBits,
}

/// Activation widths the quantizer may give a layer with 7-bit weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationBits {
    /// 0..=255 everywhere (the default).
    Eight,
    /// 0..=127 on every layer with 7-bit weights, then back to 8 bits, most sensitive
    /// layer first, while the budget is missed: AVX2 adds two byte multiplies' pair sums
    /// before widening them (3 multiplier µops per 64 products instead of 4). The
    /// activations' rounding step doubles: about 3 dB of each layer's own SQNR on the
    /// base-size SigLIP (BENCHMARKS.md). Other CPUs gain nothing.
    Seven,
}

/// Weight widths the quantizer may give a linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightBits {
    /// 8-bit everywhere (the default): the most accurate, and what CPUs with a byte dot
    /// product (VNNI, dotprod, i8mm) run as fast as 7-bit.
    Eight,
    /// 7-bit where the layer's own error grows by at most [`NARROW_NOISE_GROWTH`].
    Auto,
    /// 7-bit on every int8 layer: onnxruntime's `reduce_range`, for AVX2-only targets.
    Seven,
}

/// How much a layer's own output noise (on its fp32 inputs, activations quantized as
/// deployed) may grow when its weights lose their eighth bit, for `WeightBits::Auto` to
/// take them: where the activations' rounding dominates a layer's error, halving the
/// weights' resolution adds little to it. 1.25 is ≤ 1 dB of the layer's own SQNR.
pub const NARROW_NOISE_GROWTH: f64 = 1.25;

fn precision_name<S: serde::Serializer>(
    p: &Precision,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(p.name())
}

impl Default for Options {
    fn default() -> Self {
        Self {
            method: Method::Mse,
            smooth_alpha: Some(0.5),
            min_cosine: 0.999,
            max_fallback: 8,
            attention: Precision::Bf16,
            weight_bits: WeightBits::Eight,
            activation_bits: ActivationBits::Eight,
        }
    }
}

/// Summary statistics of embedding cosines.
#[derive(Debug, Clone, Serialize)]
pub struct CosineStats {
    pub median: f32,
    pub min: f32,
    pub mean: f32,
    pub count: usize,
}

impl CosineStats {
    pub fn of(v: &[f32]) -> Self {
        let mut s = v.to_vec();
        s.sort_by(f32::total_cmp);
        let n = s.len().max(1);
        Self {
            median: if s.is_empty() {
                f32::NAN
            } else if s.len() % 2 == 1 {
                s[s.len() / 2]
            } else {
                0.5 * (s[s.len() / 2 - 1] + s[s.len() / 2])
            },
            min: s.first().copied().unwrap_or(f32::NAN),
            mean: s.iter().sum::<f32>() / n as f32,
            count: s.len(),
        }
    }
}

/// One op's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub index: usize,
    pub name: String,
    pub kind: &'static str,
    /// "int8", "fp32" (fallback) or "-" (no weights).
    pub precision: &'static str,
    /// SQNR of this op's output in the int8 tower against fp32, dB (error accumulated
    /// from every op before it).
    pub sqnr_db: f64,
    /// SQNR of this layer alone quantized, on fp32 inputs (linear layers).
    pub own_sqnr_db: Option<f64>,
    /// The same with 7-bit weights.
    pub own_sqnr_7bit_db: Option<f64>,
    /// The same with 7-bit weights and activations (when the options allow them).
    pub own_sqnr_7bit_x_db: Option<f64>,
    /// The static activation range the layer's input is quantized over.
    pub input_range: Option<(f32, f32)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TowerReport {
    pub tower: &'static str,
    pub calibration_samples: usize,
    pub evaluation_samples: usize,
    pub macs: u64,
    pub cosine: CosineStats,
    /// Layers kept in fp32 to meet the budget (ONNX node names).
    pub fallback: Vec<String>,
    pub budget_met: bool,
    pub layers: Vec<LayerReport>,
}

pub struct QuantizedTower {
    pub graph: Graph,
    pub report: TowerReport,
}

/// Progress callback: (stage, done, total).
pub type Progress<'a> = &'a mut dyn FnMut(&str, usize, usize);

/// Quantizes one fp32 tower.
pub fn quantize_tower(
    fp32: &Graph,
    calib: &[Sample],
    eval: &[Sample],
    opts: &Options,
    progress: Progress,
) -> Result<QuantizedTower> {
    let tower = fp32.role.name();
    let n = calib.len();
    let mut done = 0;
    let mut ranges = channel_ranges(fp32, calib, || {
        done += 1;
        progress(&format!("{tower}: calibration ranges"), done, n);
    })?;
    let mut smoothed = fp32.clone();
    if let Some(alpha) = opts.smooth_alpha.filter(|a| *a > 0.0) {
        smooth(&mut smoothed, &mut ranges, alpha);
    }
    let means: HashMap<usize, Vec<f64>> = ranges.iter().map(|(&n, r)| (n, r.mean())).collect();
    let mut done = 0;
    let seven_x = opts.activation_bits == ActivationBits::Seven;
    let act = activation_ranges(&smoothed, calib, &ranges, opts.method, seven_x, || {
        done += 1;
        progress(&format!("{tower}: {} ranges", opts.method.name()), done, n);
    })?;
    let [own, own7, own7x] = own_sqnr(
        &smoothed,
        &act,
        calib.get(..calib.len().min(4)).unwrap_or(&[]),
    )?;
    let narrow: HashSet<usize> = match opts.weight_bits {
        WeightBits::Eight => HashSet::new(),
        WeightBits::Auto => own
            .iter()
            .filter(|(i, db)| {
                own7.get(i).is_some_and(|db7| {
                    // Noise ratio from the SQNR difference; both are of the same signal.
                    10f64.powf((**db - db7) / 10.0) <= NARROW_NOISE_GROWTH
                })
            })
            .map(|(&i, _)| i)
            .collect(),
        WeightBits::Seven => own.keys().copied().collect(),
    };
    let narrow_x: HashSet<usize> = match opts.activation_bits {
        ActivationBits::Eight => HashSet::new(),
        ActivationBits::Seven => narrow
            .iter()
            .copied()
            .filter(|i| act.seven.contains_key(i))
            .collect(),
    };

    // Smoothing changes LayerNorm outputs (not the function), so per-op errors are
    // measured against the smoothed fp32 graph.
    let reference = outputs(&smoothed, eval, &mut |d, t| {
        progress(&format!("{tower}: fp32 reference"), d, t)
    })?;
    // Most sensitive first: the lowest SQNR of a layer quantized on its own.
    let mut order: Vec<usize> = own.keys().copied().collect();
    // Ties (layers as sensitive as each other) in node order, not the hash map's.
    order.sort_by(|a, b| own[a].total_cmp(&own[b]).then(a.cmp(b)));
    // 7-bit activations come off in the order of their own error with them.
    let mut order_x: Vec<usize> = narrow_x.iter().copied().collect();
    let db_x = |i: &usize| own7x.get(i).copied().unwrap_or(f64::NEG_INFINITY);
    order_x.sort_by(|a, b| db_x(a).total_cmp(&db_x(b)).then(a.cmp(b)));
    // The ladder, one layer a rung, each kind of rung costing more time than the one
    // before: 7-bit activations become 8-bit, then 7-bit weights 8-bit, then 8-bit
    // layers fp32 (at most `max_fallback` of those). `--max-fallback 0` ends the ladder
    // before its fp32 rungs only: the 7-bit rungs still climb while the budget is missed.
    let rungs: Vec<Rung> = order_x
        .iter()
        .map(|&i| Rung::Activations(i))
        .chain(
            order
                .iter()
                .filter(|i| narrow.contains(i))
                .map(|&i| Rung::Weights(i)),
        )
        .chain(order.iter().take(opts.max_fallback).map(|&i| Rung::Fp32(i)))
        .collect();
    // The 7-bit weights, 7-bit activations and fp32 layers left with the first k rungs
    // taken.
    let taken = |k: usize| {
        let mut fallback = HashSet::new();
        let (mut narrow, mut narrow_x) = (narrow.clone(), narrow_x.clone());
        for rung in &rungs[..k] {
            match *rung {
                Rung::Activations(i) => narrow_x.remove(&i),
                Rung::Weights(i) => narrow.remove(&i),
                Rung::Fp32(i) => fallback.insert(i),
            };
        }
        (narrow, narrow_x, fallback)
    };
    let mut check = |k: usize| -> Result<(Checked, bool)> {
        let (narrow, narrow_x, fallback) = taken(k);
        let widths = Widths {
            narrow: &narrow,
            narrow_x: &narrow_x,
        };
        let q = to_int8(&smoothed, &act, &means, &fallback, widths, opts.attention);
        let (cos, layers) = compare(&q, &reference, eval, &mut |d, t| {
            progress(
                &format!("{tower}: int8 check, {k} of {} rungs", rungs.len()),
                d,
                t,
            )
        })?;
        let stats = CosineStats::of(&cos);
        let met = stats.median >= opts.min_cosine || eval.is_empty();
        Ok((Checked { q, stats, layers }, met))
    };
    let (k, (c, met)) = fewest_rungs(rungs.len(), &mut check)?;
    let (_, narrow_x, fallback) = taken(k);
    let report = TowerReport {
        tower,
        calibration_samples: calib.len(),
        evaluation_samples: eval.len(),
        macs: fp32.macs(),
        cosine: c.stats,
        fallback: order
            .iter()
            .filter(|i| fallback.contains(i))
            .map(|&i| c.q.nodes[i].name.clone())
            .collect(),
        budget_met: met,
        layers: c
            .q
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| LayerReport {
                index: i,
                name: node.name.clone(),
                kind: node.op.kind(),
                precision: match node.op {
                    // A scaled fp32 table (Gemma's) has per-row scales too.
                    Op::Embedding(e) if c.q.tensor(e.table).data.as_f32().is_some() => "fp32",
                    op => op.precision(),
                },
                sqnr_db: c.layers.get(i).copied().unwrap_or(f64::NAN),
                own_sqnr_db: own.get(&i).copied(),
                own_sqnr_7bit_db: own7.get(&i).copied(),
                own_sqnr_7bit_x_db: own7x.get(&i).copied(),
                input_range: act.of(i, narrow_x.contains(&i)),
            })
            .collect(),
    };
    Ok(QuantizedTower { graph: c.q, report })
}

/// One step up the fallback ladder for one layer.
enum Rung {
    Activations(usize),
    Weights(usize),
    Fp32(usize),
}

/// A tower with the first k rungs taken, and its check against fp32.
struct Checked {
    q: Graph,
    stats: CosineStats,
    layers: Vec<f64>,
}

/// The fewest rungs `k` in `0..=n` whose check meets the budget (`check(k)` says
/// whether it does), or `n` when none does, with that check's result. Checks 0, 1, 3,
/// 7, … (doubling the step) until one meets it, then halves the gap: about 2·log2(k)
/// checks where one a rung took k + 1 (a base-size SigLIP tower at 7 + 7 bits has 162
/// rungs: at most 15 checks, where a full walk took 163). Where the budget is met from
/// some rung on, as taking back precision makes it, this is the first such rung;
/// otherwise it is a rung that meets it after one that did not.
fn fewest_rungs<T>(
    n: usize,
    check: &mut dyn FnMut(usize) -> Result<(T, bool)>,
) -> Result<(usize, (T, bool))> {
    let first = check(0)?;
    if first.1 || n == 0 {
        return Ok((0, first));
    }
    // lo: a rung count known to miss; (hi, best): the fewest known to meet.
    let (mut lo, mut step) = (0, 1);
    let (mut hi, mut best) = loop {
        let k = (lo + step).min(n);
        let c = check(k)?;
        if c.1 || k == n {
            break (k, c);
        }
        lo = k;
        step *= 2;
    };
    if !best.1 {
        return Ok((n, best));
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        let c = check(mid)?;
        if c.1 {
            (hi, best) = (mid, c);
        } else {
            lo = mid;
        }
    }
    Ok((hi, best))
}

/// The buffers each node reads.
fn consumers(g: &Graph, buf: u32) -> Vec<usize> {
    g.nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.op.reads().as_slice().contains(&buf))
        .map(|(i, _)| i)
        .collect()
}

/// SmoothQuant: for each LayerNorm or RMSNorm read only by linear layers, divide its
/// output channel `j` by `s_j = a_j^α / w_j^(1−α)` (folded into gamma and beta) and
/// multiply column `j` of every reader's weights by it. The fp32 function is unchanged;
/// the activation's outlier channels shrink so one per-tensor int8 scale fits them all.
fn smooth(g: &mut Graph, ranges: &mut HashMap<usize, ChannelRange>, alpha: f32) {
    for l in 0..g.nodes.len() {
        let (params, out) = match g.nodes[l].op {
            Op::LayerNorm(LayerNorm {
                gamma, beta, out, ..
            }) => (vec![gamma, beta], out),
            Op::RmsNorm(RmsNorm { gamma, out, .. }) => (vec![gamma], out),
            _ => continue,
        };
        let readers = consumers(g, out.buf);
        let cols = out.cols as usize;
        let all_linear = !readers.is_empty()
            && readers.iter().all(|&r| {
                matches!(g.nodes[r].op, Op::Linear(Linear { x, weights: Weights::F32 { .. }, .. })
                    if x.cols == out.cols && ranges.contains_key(&r))
            });
        if !all_linear {
            continue;
        }
        let mut a = vec![0.0f32; cols];
        let mut w = vec![0.0f32; cols];
        for &r in &readers {
            let cr = &ranges[&r];
            for (a, (lo, hi)) in a.iter_mut().zip(cr.min.iter().zip(&cr.max)) {
                *a = a.max(lo.abs()).max(hi.abs());
            }
            if let Some(Weights::F32 { w: wt }) = g.nodes[r].op.weights() {
                let data = g.tensor(wt).data.as_f32().unwrap_or(&[]);
                for row in data.chunks(cols) {
                    for (w, v) in w.iter_mut().zip(row) {
                        *w = w.max(v.abs());
                    }
                }
            }
        }
        let s: Vec<f32> = (0..cols)
            .map(|j| {
                if a[j] > 0.0 && w[j] > 0.0 {
                    (libm::powf(a[j], alpha) / libm::powf(w[j], 1.0 - alpha)).clamp(1e-4, 1e4)
                } else {
                    1.0
                }
            })
            .collect();
        for t in params {
            if let TensorData::F32(v) = &mut g.tensor_mut(t).data {
                Arc::make_mut(v)
                    .iter_mut()
                    .zip(&s)
                    .for_each(|(x, s)| *x /= s);
            }
        }
        for &r in &readers {
            if let Some(Weights::F32 { w: wt }) = g.nodes[r].op.weights() {
                if let TensorData::F32(v) = &mut g.tensor_mut(wt).data {
                    for row in Arc::make_mut(v).chunks_mut(cols) {
                        row.iter_mut().zip(&s).for_each(|(x, s)| *x *= s);
                    }
                }
            }
            if let Some(cr) = ranges.get_mut(&r) {
                for ((lo, hi), s) in cr.min.iter_mut().zip(cr.max.iter_mut()).zip(&s) {
                    *lo /= s;
                    *hi /= s;
                }
                for (sum, s) in cr.sum.iter_mut().zip(&s) {
                    *sum /= *s as f64;
                }
            }
        }
    }
}

/// Symmetric per-row int8: scale = max|row| / 127.
pub fn quantize_rows(w: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    quantize_rows_to(w, cols, weight_limit(false))
}

/// Symmetric per-row integers within ±`top`: scale = max|row| / `top`.
pub fn quantize_rows_to(w: &[f32], cols: usize, top: i8) -> (Vec<i8>, Vec<f32>) {
    let top = f32::from(top);
    let mut q = Vec::with_capacity(w.len());
    let mut scales = Vec::with_capacity(w.len() / cols.max(1));
    for row in w.chunks(cols.max(1)) {
        let m = row.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = if m > 0.0 { m / top } else { 1.0 };
        scales.push(s);
        q.extend(row.iter().map(|v| (v / s).round().clamp(-top, top) as i8));
    }
    (q, scales)
}

/// The u8 scale and zero point of a range that contains 0, over 0..=`top`.
pub fn activation_params(lo: f32, hi: f32, top: u8) -> (f32, i32) {
    let (lo, hi) = (lo.min(0.0), hi.max(0.0));
    let top = f32::from(top);
    let scale = if hi > lo { (hi - lo) / top } else { 1.0 };
    let zero = (-lo / scale).round().clamp(0.0, top) as i32;
    (scale, zero)
}

impl ActivationRanges {
    /// Layer `i`'s range for 7-bit activations (`seven`) or 8-bit ones.
    fn of(&self, i: usize, seven: bool) -> Option<(f32, f32)> {
        if seven { &self.seven } else { &self.eight }
            .get(&i)
            .copied()
    }
}

/// The layers given 7-bit weights, and of those the ones given 7-bit activations.
#[derive(Clone, Copy)]
struct Widths<'a> {
    narrow: &'a HashSet<usize>,
    narrow_x: &'a HashSet<usize>,
}

/// The graph with int8 weights on every linear layer not in `fallback` (7-bit weights
/// and activations as `widths` says), and an int8 token-embedding table.
fn to_int8(
    g: &Graph,
    act: &ActivationRanges,
    means: &HashMap<usize, Vec<f64>>,
    fallback: &HashSet<usize>,
    widths: Widths,
    attention: Precision,
) -> Graph {
    let mut q = g.clone();
    for i in 0..q.nodes.len() {
        let name = q.nodes[i].name.clone();
        if let Op::Attention(a) = &mut q.nodes[i].op {
            a.precision = attention;
        }
        match q.nodes[i].op {
            Op::Linear(Linear {
                weights: Weights::F32 { w },
                ..
            })
            | Op::PatchEmbed(PatchEmbed {
                weights: Weights::F32 { w },
                ..
            }) if !fallback.contains(&i) => {
                let is_narrow = widths.narrow.contains(&i);
                let is_narrow_x = is_narrow && widths.narrow_x.contains(&i);
                let Some((lo, hi)) = act.of(i, is_narrow_x) else {
                    continue;
                };
                let t = q.tensor(w).clone();
                let (rows, cols) = (t.dims[0], t.dims[1]);
                let top = weight_limit(is_narrow);
                let (qw, scales) = quantize_rows_to(t.data.as_f32().unwrap_or(&[]), cols, top);
                let (x_scale, x_zero) = activation_params(lo, hi, activation_limit(is_narrow_x));
                // The kernels sum q·w with q in 0..=255 (or 127); the zero point's share,
                // x_scale·w_scale·x_zero·Σw, is a constant per output: folded into the
                // bias (or the patch embedding's add table) here, once.
                // Bias correction (Nagel et al.): rounding the weights shifts output o's
                // mean by Σ_k (w − ŵ)·E[x_k]; calibration measured E[x], so the shift goes
                // back into the bias, subtracted below with the zero point's share.
                let wf = t.data.as_f32().unwrap_or(&[]);
                let mean = means.get(&i);
                let correction: Vec<f32> = qw
                    .chunks(cols)
                    .zip(&scales)
                    .enumerate()
                    .map(|(o, (row, s))| {
                        let zero = x_scale
                            * s
                            * x_zero as f32
                            * row.iter().map(|&v| v as i32).sum::<i32>() as f32;
                        let shift = mean.map_or(0.0, |m| {
                            row.iter()
                                .zip(&wf[o * cols..(o + 1) * cols])
                                .zip(m)
                                .map(|((&q, &w), &mu)| (w as f64 - q as f64 * *s as f64) * mu)
                                .sum::<f64>()
                        });
                        zero - shift as f32
                    })
                    .collect();
                let wi = q.add_i8_panels(t.name.clone(), rows, cols, &qw);
                let si = q.add_f32(format!("{name}.w_scale"), vec![rows], scales);
                let new = Weights::I8 {
                    w: wi,
                    w_scale: si,
                    x_scale,
                    x_zero,
                    narrow: is_narrow,
                    narrow_x: is_narrow_x,
                };
                match q.nodes[i].op {
                    Op::Linear(Linear { bias, .. }) => {
                        let mut b = match bias {
                            Some(b) => q.tensor(b).data.as_f32().unwrap_or(&[]).to_vec(),
                            None => vec![0.0; rows],
                        };
                        b.iter_mut().zip(&correction).for_each(|(b, c)| *b -= c);
                        let bi = q.add_f32(format!("{name}.bias"), vec![rows], b);
                        if let Op::Linear(l) = &mut q.nodes[i].op {
                            l.weights = new;
                            l.bias = Some(bi);
                        }
                    }
                    Op::PatchEmbed(PatchEmbed { add, .. }) => {
                        let mut a = q.tensor(add).data.as_f32().unwrap_or(&[]).to_vec();
                        for row in a.chunks_mut(rows) {
                            row.iter_mut().zip(&correction).for_each(|(b, c)| *b -= c);
                        }
                        let ai = q.add_f32(format!("{name}.add"), vec![a.len() / rows, rows], a);
                        if let Op::PatchEmbed(p) = &mut q.nodes[i].op {
                            p.weights = new;
                            p.add = ai;
                        }
                    }
                    _ => {}
                }
            }
            Op::Embedding(Embedding {
                table, table_scale, ..
            }) if q.tensor(table).data.as_f32().is_some() => {
                let t = q.tensor(table).clone();
                let (qt, mut scales) = quantize_rows(t.data.as_f32().unwrap_or(&[]), t.dims[1]);
                // A scaled table (Gemma's √d) folds its row scale into the int8 one.
                if let Some(f) = table_scale.and_then(|s| q.tensor(s).data.as_f32()) {
                    scales.iter_mut().zip(f).for_each(|(s, f)| *s *= f);
                }
                let rows = scales.len();
                let ti = q.add_i8(t.name.clone(), t.dims.clone(), qt);
                let si = q.add_f32(format!("{name}.row_scale"), vec![rows], scales);
                if let Op::Embedding(e) = &mut q.nodes[i].op {
                    e.table = ti;
                    e.table_scale = Some(si);
                }
            }
            _ => {}
        }
    }
    drop_unused_tensors(&mut q);
    q
}

/// A graph with int8 token-embedding tables (per-row scales): what a lookup needs, no
/// calibration (a table row is copied, not multiplied with activations).
pub fn quantize_embedding(g: &Graph) -> Graph {
    let none = HashSet::new();
    to_int8(
        g,
        &ActivationRanges::default(),
        &HashMap::new(),
        &none,
        Widths {
            narrow: &none,
            narrow_x: &none,
        },
        Precision::F32,
    )
}

/// Gives `target` the int8 decisions made on `quantized`, a graph of the same layers
/// over other buffers (a decoder's prefill and step take them from its calibration
/// graph): each node named as one of `quantized`'s takes its weights and bias, its norm
/// parameters (smoothed) or its attention precision. Both graphs then hold equal
/// tensors under equal names, which the writer stores once.
pub fn adopt(target: &mut Graph, quantized: &Graph) {
    let by_name: HashMap<&str, &Op> = quantized
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), &n.op))
        .collect();
    let mut copied: HashMap<u32, u32> = HashMap::new();
    let tensors = &mut target.tensors;
    let mut take = |t: u32| -> u32 {
        *copied.entry(t).or_insert_with(|| {
            tensors.push(quantized.tensor(t).clone());
            (tensors.len() - 1) as u32
        })
    };
    for node in &mut target.nodes {
        let Some(&src) = by_name.get(node.name.as_str()) else {
            continue;
        };
        match (&mut node.op, src) {
            (Op::Linear(l), Op::Linear(s)) => {
                l.weights = match s.weights {
                    Weights::F32 { w } => Weights::F32 { w: take(w) },
                    Weights::I8 {
                        w,
                        w_scale,
                        x_scale,
                        x_zero,
                        narrow,
                        narrow_x,
                    } => Weights::I8 {
                        w: take(w),
                        w_scale: take(w_scale),
                        x_scale,
                        x_zero,
                        narrow,
                        narrow_x,
                    },
                };
                l.bias = s.bias.map(&mut take);
            }
            (Op::RmsNorm(n), Op::RmsNorm(s)) => n.gamma = take(s.gamma),
            (Op::LayerNorm(n), Op::LayerNorm(s)) => {
                n.gamma = take(s.gamma);
                n.beta = take(s.beta);
            }
            (Op::Attention(a), Op::Attention(s)) => a.precision = s.precision,
            _ => {}
        }
    }
    drop_unused_tensors(target);
}

/// Removes tensors no op refers to any more (the fp32 weights int8 replaced).
fn drop_unused_tensors(g: &mut Graph) {
    let mut used = vec![false; g.tensors.len()];
    let mark = |i: u32, used: &mut Vec<bool>| used[i as usize] = true;
    for n in &g.nodes {
        for t in n.op.tensors() {
            mark(t, &mut used);
        }
    }
    let mut remap = vec![u32::MAX; g.tensors.len()];
    let mut kept = Vec::new();
    for (i, t) in std::mem::take(&mut g.tensors).into_iter().enumerate() {
        if used[i] {
            remap[i] = kept.len() as u32;
            kept.push(t);
        }
    }
    g.tensors = kept;
    for n in &mut g.nodes {
        n.op.visit_tensors(&mut |t| *t = remap[*t as usize]);
    }
}

/// Copies of every op's output on one run.
struct Capture {
    outputs: HashMap<usize, Vec<f32>>,
}

impl Observer for Capture {
    fn observe(&mut self, node: usize, what: Observed, x: MatRef<'_>) {
        if what == Observed::Output {
            let mut v = Vec::with_capacity(x.rows * x.cols);
            for r in 0..x.rows {
                v.extend_from_slice(x.row(r));
            }
            self.outputs.insert(node, v);
        }
    }
}

type RunOutputs = Vec<(Vec<f32>, HashMap<usize, Vec<f32>>)>;

/// The embedding and every op's output for each sample.
fn outputs(
    g: &Graph,
    samples: &[Sample],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<RunOutputs> {
    let a = single_tower(g)?;
    let kind = tower_kind(g);
    let mut out = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        let mut cap = Capture {
            outputs: HashMap::new(),
        };
        let emb = s.run(&a, kind, Some(&mut cap))?;
        out.push((emb, cap.outputs));
        progress(i + 1, samples.len());
    }
    Ok(out)
}

/// Embedding cosines and per-op SQNR (dB) of `q` against the fp32 reference outputs.
fn compare(
    q: &Graph,
    reference: &RunOutputs,
    samples: &[Sample],
    progress: &mut dyn FnMut(usize, usize),
) -> Result<(Vec<f32>, Vec<f64>)> {
    let a = single_tower(q)?;
    let kind = tower_kind(q);
    let mut signal = vec![0.0f64; q.nodes.len()];
    let mut noise = vec![0.0f64; q.nodes.len()];
    let mut cos = Vec::new();
    for (i, (s, (ref_emb, ref_out))) in samples.iter().zip(reference).enumerate() {
        let mut cap = Capture {
            outputs: HashMap::new(),
        };
        let emb = s.run(&a, kind, Some(&mut cap))?;
        cos.push(cosine(&emb, ref_emb));
        for (node, got) in cap.outputs {
            if let Some(want) = ref_out.get(&node) {
                for (g, w) in got.iter().zip(want) {
                    signal[node] += (*w as f64).powi(2);
                    noise[node] += (*g as f64 - *w as f64).powi(2);
                }
            }
        }
        progress(i + 1, samples.len());
    }
    let sqnr = signal
        .iter()
        .zip(&noise)
        .map(|(s, n)| sqnr_db(*s, *n))
        .collect();
    Ok((cos, sqnr))
}

pub fn sqnr_db(signal: f64, noise: f64) -> f64 {
    if noise <= 0.0 {
        f64::INFINITY
    } else {
        10.0 * libm::log10(signal / noise)
    }
}

/// Integers and per-row scales of one weight matrix.
type QuantizedRows = (Vec<i8>, Vec<f32>);

/// One sampled input row of a layer: as it is, and dequantized from 8-bit activations
/// and (where its range allows them) 7-bit ones.
type SampledRow<'x> = (&'x [f32], Vec<f32>, Option<Vec<f32>>);

/// Each linear layer's error when it alone is quantized, on its fp32 inputs (a few rows
/// per sample): the sensitivity that orders the fallback.
struct OwnError<'g> {
    graph: &'g Graph,
    act: &'g ActivationRanges,
    /// Each layer's weights at 8 and at 7 bits.
    quantized: HashMap<usize, [QuantizedRows; 2]>,
    signal: HashMap<usize, f64>,
    /// The output noise with 8-bit weights and activations, 7-bit weights, and 7-bit
    /// weights and activations.
    noise: HashMap<usize, [f64; 3]>,
}

impl Observer for OwnError<'_> {
    fn observe(&mut self, node: usize, what: Observed, x: MatRef<'_>) {
        if what != Observed::LinearInput {
            return;
        }
        let (Some((lo, hi)), Some(op)) = (self.act.of(node, false), self.graph.nodes.get(node))
        else {
            return;
        };
        let Some(Weights::F32 { w }) = op.op.weights() else {
            return;
        };
        let t = self.graph.tensor(w);
        let k = t.dims[1];
        let wf = t.data.as_f32().unwrap_or(&[]);
        let widths = self
            .quantized
            .entry(node)
            .or_insert_with(|| [false, true].map(|n| quantize_rows_to(wf, k, weight_limit(n))));
        // The input as each activation width rounds it (8 bits; 7 where the options
        // allow them), dequantized.
        let dequantize = |row: &[f32], (lo, hi): (f32, f32), narrow_x: bool| -> Vec<f32> {
            let top = activation_limit(narrow_x);
            let (xs, xz) = activation_params(lo, hi, top);
            let inv = 1.0 / xs;
            row.iter()
                .map(|&v| (quantize_one(v, inv, xz, top) as i32 - xz) as f32 * xs)
                .collect()
        };
        let seven = self.act.of(node, true);
        let step = (x.rows / 16).max(1);
        // Each sampled row, and its input as 8-bit and (where allowed) 7-bit activations
        // round it.
        let rows: Vec<SampledRow> = (0..x.rows)
            .step_by(step)
            .map(|r| {
                let row = x.row(r);
                let xq = dequantize(row, (lo, hi), false);
                (row, xq, seven.map(|range| dequantize(row, range, true)))
            })
            .collect();
        // These products were a fifth of a base-size SigLIP's quantize time on one core.
        // They run on every core, each output's dot products as one thread's sequential
        // sums, into `dots` (output-major: [y, yq per noise slot] per sampled row); the
        // totals below then add them in the order a single loop did, so the bits (and the
        // artifact) are the same on any number of cores.
        let outputs = wf.len().checked_div(k).unwrap_or(0);
        let mut dots = vec![[0.0f64; 4]; outputs * rows.len()];
        let dot_output = |o: usize, out: &mut [[f64; 4]]| {
            let span = o * k..(o + 1) * k;
            let w = &wf[span.clone()];
            let (q8, s8) = (&widths[0].0[span.clone()], widths[0].1[o] as f64);
            let (q7, s7) = (&widths[1].0[span], widths[1].1[o] as f64);
            for ((row, xq, xq7), d) in rows.iter().zip(out) {
                // Independent sums, each in element order and from -0.0 as `Iterator::sum`
                // starts: three in one pass (the chains overlap in the core's pipeline),
                // the 7-bit activations' after it where they exist.
                let mut acc = [-0.0f64; 4];
                for ((((&a, &w), &x), &b8), &b7) in row.iter().zip(w).zip(xq).zip(q8).zip(q7) {
                    acc[0] += a as f64 * w as f64;
                    acc[1] += x as f64 * (b8 as f64 * s8);
                    acc[2] += x as f64 * (b7 as f64 * s7);
                }
                if let Some(xq7) = xq7 {
                    for (&x7, &b7) in xq7.iter().zip(q7) {
                        acc[3] += x7 as f64 * (b7 as f64 * s7);
                    }
                }
                *d = acc;
            }
        };
        let per_output = rows.len().max(1);
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(outputs.div_ceil(8))
            .max(1);
        let chunk = outputs.div_ceil(threads).max(1) * per_output;
        std::thread::scope(|scope| {
            for (c, part) in dots.chunks_mut(chunk).enumerate() {
                let dot_output = &dot_output;
                scope.spawn(move || {
                    let first = c * chunk / per_output;
                    for (i, out) in part.chunks_mut(per_output).enumerate() {
                        dot_output(first + i, out);
                    }
                });
            }
        });
        let (mut sig, mut noi) = (0.0f64, [0.0f64; 3]);
        for (r, (_, _, xq7)) in rows.iter().enumerate() {
            for o in 0..outputs {
                let d = &dots[o * per_output + r];
                let y = d[0];
                sig += y * y;
                for (slot, noi) in noi.iter_mut().enumerate() {
                    if slot == 2 && xq7.is_none() {
                        continue;
                    }
                    *noi += (y - d[1 + slot]).powi(2);
                }
            }
        }
        *self.signal.entry(node).or_default() += sig;
        let n = self.noise.entry(node).or_default();
        for (n, v) in n.iter_mut().zip(noi) {
            *n += v;
        }
        if seven.is_none() {
            n[2] = f64::NAN;
        }
    }
}

/// Each linear layer's own SQNR (dB) with 8-bit weights and activations, with 7-bit
/// weights, and with 7-bit weights and activations (only layers with a 7-bit range).
fn own_sqnr(
    g: &Graph,
    act: &ActivationRanges,
    samples: &[Sample],
) -> Result<[HashMap<usize, f64>; 3]> {
    let a = single_tower(g)?;
    let kind = tower_kind(g);
    let mut obs = OwnError {
        graph: g,
        act,
        quantized: HashMap::new(),
        signal: HashMap::new(),
        noise: HashMap::new(),
    };
    for s in samples {
        s.run(&a, kind, Some(&mut obs))?;
    }
    let width = |b: usize| {
        linear_nodes(g)
            .into_iter()
            .filter_map(|n| {
                let (signal, noise) = (*obs.signal.get(&n)?, obs.noise.get(&n)?[b]);
                (!noise.is_nan()).then(|| (n, sqnr_db(signal, noise)))
            })
            .collect()
    };
    Ok([width(0), width(1), width(2)])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where the budget is met from rung t on, the search lands on t (on n where t is
    /// past the ladder), checking far fewer rungs than one at a time would.
    #[test]
    fn fewest_rungs_finds_the_first_rung_that_meets_the_budget() {
        for n in 0..70usize {
            for t in 0..=n + 1 {
                let mut checks = Vec::new();
                let (k, (seen, met)) = fewest_rungs(n, &mut |k| {
                    checks.push(k);
                    Ok((k, k >= t))
                })
                .unwrap();
                assert_eq!(k, t.min(n), "n {n}, t {t}, checks {checks:?}");
                assert_eq!((seen, met), (k, t <= n), "the result is k's own check");
                assert!(checks.iter().all(|&c| c <= n));
                let log = (usize::BITS - t.min(n).leading_zeros()) as usize;
                assert!(checks.len() <= 2 * log + 2, "n {n}, t {t}: {checks:?}");
            }
        }
    }

    /// A failing check ends the search with its error.
    #[test]
    fn fewest_rungs_passes_a_checks_error_on() {
        let mut calls = 0;
        let r = fewest_rungs(8, &mut |_| {
            calls += 1;
            if calls == 3 {
                Err(crate::Error::NoLabels)
            } else {
                Ok(((), false))
            }
        });
        assert!(matches!(r, Err(crate::Error::NoLabels)));
        assert_eq!(calls, 3, "no check after the failing one");
    }
}
