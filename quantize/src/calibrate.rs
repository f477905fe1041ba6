//! Calibration: the fp32 graph run on the runtime's own executor over a calibration set,
//! with observers that record what each linear layer is fed; then the activation range
//! each layer's static int8 quantization will use (min-max, percentile or MSE-optimal).

use std::collections::HashMap;

use vlm_runtime::format::activation_limit;
use vlm_runtime::kernels::scalar::MatRef;
use vlm_runtime::ops::Op;
use vlm_runtime::{Input, Observed, Observer};

use crate::graph::Graph;
use crate::runner::single_tower;
use crate::Result;

/// How an activation range is chosen from what calibration saw.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The full observed range: no clipping, coarsest steps.
    MinMax,
    /// Clips the given fraction (e.g. 0.9999) of values in each tail pair.
    Percentile(f64),
    /// The range minimising expected squared error (clipping plus rounding) over the
    /// observed histogram.
    Mse,
}

impl Method {
    pub fn name(&self) -> String {
        match self {
            Method::MinMax => "minmax".into(),
            Method::Percentile(p) => format!("percentile({})", p * 100.0),
            Method::Mse => "mse".into(),
        }
    }
}

/// One tower input for calibration or evaluation.
#[derive(Debug, Clone)]
pub enum Sample {
    /// Values in one run (pixels, or a projector's vision features).
    Pixels(Vec<f32>),
    Tokens(Vec<u32>),
    /// A decoder's input embeddings for a whole sequence (prompt and caption), fed from a
    /// fresh KV cache in runs of these many rows, as generation feeds them.
    Sequence {
        rows: Vec<f32>,
        runs: Vec<usize>,
    },
}

impl Sample {
    /// Runs the sample through `artifact`'s graph `role`: its output (every row's, for a
    /// sequence).
    pub fn run(
        &self,
        artifact: &crate::runner::Artifact,
        role: vlm_runtime::Role,
        observer: Option<&mut dyn Observer>,
    ) -> Result<Vec<f32>> {
        Ok(match self {
            Sample::Pixels(p) => artifact.run(role, Input::F32(p), observer)?,
            Sample::Tokens(t) => artifact.run(role, Input::U32(t), observer)?,
            Sample::Sequence { rows, runs } => artifact.run_sequence(role, rows, runs, observer)?,
        })
    }
}

/// Per-column min and max of a linear layer's input.
#[derive(Debug, Clone, Default)]
pub struct ChannelRange {
    pub min: Vec<f32>,
    pub max: Vec<f32>,
    /// Per-column sum and the row count: the mean input, for bias correction.
    pub sum: Vec<f64>,
    pub rows: u64,
}

impl ChannelRange {
    fn update(&mut self, x: MatRef<'_>) {
        if self.min.is_empty() {
            self.min = vec![f32::INFINITY; x.cols];
            self.max = vec![f32::NEG_INFINITY; x.cols];
            self.sum = vec![0.0; x.cols];
        }
        for r in 0..x.rows {
            for (c, &v) in x.row(r).iter().enumerate() {
                if v.is_finite() {
                    self.min[c] = self.min[c].min(v);
                    self.max[c] = self.max[c].max(v);
                    self.sum[c] += v as f64;
                }
            }
        }
        self.rows += x.rows as u64;
    }

    /// The mean of each input column over everything calibration saw.
    pub fn mean(&self) -> Vec<f64> {
        let n = self.rows.max(1) as f64;
        self.sum.iter().map(|s| s / n).collect()
    }

    /// The range over all columns, widened to include 0 (so 0 is exactly representable).
    pub fn overall(&self) -> (f32, f32) {
        let lo = self.min.iter().copied().fold(0.0f32, f32::min);
        let hi = self.max.iter().copied().fold(0.0f32, f32::max);
        (lo, hi)
    }
}

struct RangeObserver<'a> {
    ranges: &'a mut HashMap<usize, ChannelRange>,
}

impl Observer for RangeObserver<'_> {
    fn observe(&mut self, node: usize, what: Observed, x: MatRef<'_>) {
        if what == Observed::LinearInput {
            self.ranges.entry(node).or_default().update(x);
        }
    }
}

/// Pass 1: per-column ranges of every linear layer's input (keyed by node index).
pub fn channel_ranges(
    graph: &Graph,
    samples: &[Sample],
    mut progress: impl FnMut(),
) -> Result<HashMap<usize, ChannelRange>> {
    let artifact = single_tower(graph)?;
    let kind = tower_kind(graph);
    let mut ranges = HashMap::new();
    for s in samples {
        let mut obs = RangeObserver {
            ranges: &mut ranges,
        };
        s.run(&artifact, kind, Some(&mut obs))?;
        progress();
    }
    Ok(ranges)
}

pub(crate) fn tower_kind(g: &Graph) -> vlm_runtime::Role {
    g.role
}

const BINS: usize = 2048;

/// A histogram of one layer's input over a fixed range.
#[derive(Debug, Clone)]
pub struct Histogram {
    pub lo: f32,
    pub hi: f32,
    pub counts: Vec<u64>,
}

impl Histogram {
    fn new(lo: f32, hi: f32) -> Self {
        Self {
            lo,
            hi: if hi > lo { hi } else { lo + 1e-6 },
            counts: vec![0; BINS],
        }
    }

    fn add(&mut self, x: MatRef<'_>) {
        let w = (self.hi - self.lo) / BINS as f32;
        for r in 0..x.rows {
            for &v in x.row(r) {
                if v.is_finite() {
                    let b = ((v - self.lo) / w) as isize;
                    self.counts[b.clamp(0, BINS as isize - 1) as usize] += 1;
                }
            }
        }
    }

    fn center(&self, b: usize) -> f64 {
        let w = (self.hi - self.lo) as f64 / BINS as f64;
        self.lo as f64 + (b as f64 + 0.5) * w
    }

    fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The value below which `q` of the mass lies.
    fn quantile(&self, q: f64) -> f32 {
        let target = q * self.total() as f64;
        let mut acc = 0.0;
        for (b, &c) in self.counts.iter().enumerate() {
            acc += c as f64;
            if acc >= target {
                return self.center(b) as f32;
            }
        }
        self.hi
    }

    /// Expected squared error of quantizing the histogram's mass to `steps + 1` levels
    /// over `[lo, hi]` (clipping outside, uniform rounding error inside).
    fn error(&self, lo: f64, hi: f64, steps: f64) -> f64 {
        let step = (hi - lo) / steps;
        let round = step * step / 12.0;
        let mut e = 0.0;
        for (b, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let v = self.center(b);
            let d = if v < lo {
                (lo - v).powi(2)
            } else if v > hi {
                (v - hi).powi(2)
            } else {
                round
            };
            e += c as f64 * d;
        }
        e
    }
}

struct HistObserver<'a> {
    hists: &'a mut HashMap<usize, Histogram>,
}

impl Observer for HistObserver<'_> {
    fn observe(&mut self, node: usize, what: Observed, x: MatRef<'_>) {
        if what == Observed::LinearInput {
            if let Some(h) = self.hists.get_mut(&node) {
                h.add(x);
            }
        }
    }
}

/// Each quantized layer's activation range for 8-bit activations (0..=255) and for
/// 7-bit ones (0..=127): fewer levels move the MSE optimum towards more clipping.
#[derive(Debug, Clone, Default)]
pub struct ActivationRanges {
    pub eight: HashMap<usize, (f32, f32)>,
    pub seven: HashMap<usize, (f32, f32)>,
}

/// Pass 2 (percentile and MSE only): histograms of each linear input over its known
/// range, then the chosen range per layer, for 7-bit activations too if `seven`.
/// Min-max needs no second pass.
pub fn activation_ranges(
    graph: &Graph,
    samples: &[Sample],
    ranges: &HashMap<usize, ChannelRange>,
    method: Method,
    seven: bool,
    mut progress: impl FnMut(),
) -> Result<ActivationRanges> {
    let overall: HashMap<usize, (f32, f32)> =
        ranges.iter().map(|(&n, r)| (n, r.overall())).collect();
    if method == Method::MinMax {
        return Ok(ActivationRanges {
            seven: if seven {
                overall.clone()
            } else {
                HashMap::new()
            },
            eight: overall,
        });
    }
    let mut hists: HashMap<usize, Histogram> = overall
        .iter()
        .map(|(&n, &(lo, hi))| (n, Histogram::new(lo, hi)))
        .collect();
    let artifact = single_tower(graph)?;
    let kind = tower_kind(graph);
    for s in samples {
        let mut obs = HistObserver { hists: &mut hists };
        s.run(&artifact, kind, Some(&mut obs))?;
        progress();
    }
    let choose = |h: &Histogram, top: u8| match method {
        Method::Percentile(p) => {
            let tail = (1.0 - p).max(0.0);
            (h.quantile(tail).min(0.0), h.quantile(1.0 - tail).max(0.0))
        }
        _ => mse_range(h, f64::from(top)),
    };
    let mut out = ActivationRanges::default();
    for (n, h) in hists {
        if seven {
            out.seven.insert(n, choose(&h, activation_limit(true)));
        }
        out.eight.insert(n, choose(&h, activation_limit(false)));
    }
    Ok(out)
}

/// Searches clipping points on a grid of fractions of each side's full extent, for
/// `steps + 1` levels.
fn mse_range(h: &Histogram, steps: f64) -> (f32, f32) {
    let (lo0, hi0) = (h.lo.min(0.0) as f64, h.hi.max(0.0) as f64);
    let grid = 40;
    let frac = |i: usize| 0.2 + 0.8 * i as f64 / grid as f64;
    let mut best = (h.error(lo0, hi0, steps), lo0, hi0);
    for i in 0..=grid {
        for j in 0..=grid {
            let (lo, hi) = (lo0 * frac(i), hi0 * frac(j));
            if hi - lo <= 0.0 {
                continue;
            }
            let e = h.error(lo, hi, steps);
            if e < best.0 {
                best = (e, lo, hi);
            }
        }
    }
    (best.1 as f32, best.2 as f32)
}

/// The nodes whose input is quantized: linear layers and the patch embedding.
pub fn linear_nodes(graph: &Graph) -> Vec<usize> {
    graph
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| matches!(n.op, Op::Linear { .. } | Op::PatchEmbed { .. }))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist_of(values: &[f32]) -> Histogram {
        let lo = values.iter().copied().fold(0.0f32, f32::min);
        let hi = values.iter().copied().fold(0.0f32, f32::max);
        let mut h = Histogram::new(lo, hi);
        h.add(MatRef {
            data: values,
            rows: 1,
            cols: values.len(),
            stride: values.len(),
        });
        h
    }

    /// Laplace-distributed values (what post-LayerNorm activations look like): the
    /// thin tails are clipped, the body kept, and the error never exceeds min-max's.
    #[test]
    fn mse_clips_thin_tails_and_keeps_a_uniform_range() {
        let n = 100_000;
        let lap: Vec<f32> = (1..n)
            .map(|i| {
                let u = i as f64 / n as f64 - 0.5;
                (-u.signum() * (1.0 - 2.0 * u.abs()).ln()) as f32
            })
            .collect();
        let h = hist_of(&lap);
        let (lo, hi) = mse_range(&h, 255.0);
        assert!(hi < 0.9 * h.hi && hi > 4.0, "hi {hi} of {}", h.hi);
        assert!(lo > 0.9 * h.lo && lo < -4.0, "lo {lo} of {}", h.lo);
        let e = |lo: f32, hi: f32, steps| h.error(lo as f64, hi as f64, steps);
        assert!(e(lo, hi, 255.0) <= e(h.lo, h.hi, 255.0));
        // Half the levels: coarser steps make clipping cheaper, so the range narrows.
        let (lo7, hi7) = mse_range(&h, 127.0);
        assert!(hi7 < hi && lo7 > lo, "7-bit {lo7}..{hi7}, 8-bit {lo}..{hi}");
        assert!(e(lo7, hi7, 127.0) <= e(lo, hi, 127.0));
        // Uniform data: nothing to clip.
        let u: Vec<f32> = (0..10_000)
            .map(|i| -1.0 + 2.0 * i as f32 / 9999.0)
            .collect();
        let (lo, hi) = mse_range(&hist_of(&u), 255.0);
        assert!(hi > 0.95 && lo < -0.95, "{lo} {hi}");
    }

    #[test]
    fn percentile_cuts_the_tails() {
        let mut v: Vec<f32> = (0..100_000).map(|i| (i % 1000) as f32 / 1000.0).collect();
        v.push(50.0);
        let h = hist_of(&v);
        let hi = h.quantile(1.0 - 1e-4);
        assert!(hi < 1.1, "{hi}");
    }
}
