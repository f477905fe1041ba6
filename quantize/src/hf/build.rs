//! Small steps for writing a graph from checkpoint tensors: each reads its weights,
//! checks their shapes and appends one op with a fresh output buffer.

use vlm_runtime::ops::{Activation, Add, LayerNorm, Linear, Mat, Op, RmsNorm, Weights};

use super::checkpoint::Checkpoint;
use crate::graph::Graph;
use crate::Result;

pub struct Builder<'c> {
    pub ck: &'c Checkpoint,
    pub g: Graph,
}

pub fn dense(buf: u32, rows: usize, cols: usize) -> Mat {
    Mat::dense(buf, rows as u32, cols as u32)
}

/// Columns `at .. at + n` of `m`.
pub fn cols(m: Mat, at: usize, n: usize) -> Mat {
    Mat {
        offset: m.offset + at as u32,
        cols: n as u32,
        ..m
    }
}

impl Builder<'_> {
    pub fn new_mat(&mut self, rows: usize, cols: usize) -> Mat {
        let b = self.g.add_buffer(rows * cols);
        dense(b, rows, cols)
    }

    pub fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<u32> {
        let data = self.ck.shared(name, shape)?;
        Ok(self.g.add_f32(name, shape.to_vec(), data))
    }

    /// Rows of several `[n_i, cols]` weights stacked into one (fused q/k/v, gate/up).
    pub fn stacked(&mut self, names: &[&str], rows: &[usize], cols: usize) -> Result<u32> {
        let name = names.join("+");
        let data = self.ck.memo(&format!("{name}{rows:?}x{cols}"), || {
            let mut data = Vec::new();
            for (n, &r) in names.iter().zip(rows) {
                data.extend(self.ck.get(n, &[r, cols])?);
            }
            Ok(data)
        })?;
        let total = rows.iter().sum();
        Ok(self.g.add_f32(name, vec![total, cols], data))
    }

    /// Biases stacked as [`Builder::stacked`]; `None` if none of them exists, zeros for
    /// the missing ones otherwise.
    pub fn stacked_bias(&mut self, names: &[&str], rows: &[usize]) -> Result<Option<u32>> {
        if !names.iter().any(|n| self.ck.has(n)) {
            return Ok(None);
        }
        let name = names.join("+");
        let data = self.ck.memo(&format!("{name}{rows:?}"), || {
            let mut data = Vec::new();
            for (n, &r) in names.iter().zip(rows) {
                data.extend(self.ck.get_opt(n, &[r])?.unwrap_or_else(|| vec![0.0; r]));
            }
            Ok(data)
        })?;
        let total = rows.iter().sum();
        Ok(Some(self.g.add_f32(name, vec![total], data)))
    }

    pub fn push(&mut self, name: &str, op: impl Into<Op>) {
        self.g.push(name, op.into());
    }

    /// `act(x·Wᵀ + b)` with the weight tensor `w` (`[out, x.cols]`) already added.
    pub fn linear_with(
        &mut self,
        name: &str,
        x: Mat,
        w: u32,
        bias: Option<u32>,
        out_cols: usize,
        act: Activation,
    ) -> Mat {
        let out = self.new_mat(x.rows as usize, out_cols);
        self.push(
            name,
            Linear {
                x,
                weights: Weights::F32 { w },
                bias,
                act,
                out,
            },
        );
        out
    }

    /// A checkpoint's `nn.Linear` named `prefix` (`prefix.weight`, optional
    /// `prefix.bias`).
    pub fn linear(
        &mut self,
        prefix: &str,
        x: Mat,
        out_cols: usize,
        act: Activation,
    ) -> Result<Mat> {
        let w = self.tensor(&format!("{prefix}.weight"), &[out_cols, x.cols as usize])?;
        let bname = format!("{prefix}.bias");
        let bias = if self.ck.has(&bname) {
            Some(self.tensor(&bname, &[out_cols])?)
        } else {
            None
        };
        Ok(self.linear_with(prefix, x, w, bias, out_cols, act))
    }

    pub fn layer_norm(&mut self, prefix: &str, x: Mat, eps: f32) -> Result<Mat> {
        let d = x.cols as usize;
        let gamma = self.tensor(&format!("{prefix}.weight"), &[d])?;
        let beta = self.tensor(&format!("{prefix}.bias"), &[d])?;
        let out = self.new_mat(x.rows as usize, d);
        self.push(
            prefix,
            LayerNorm {
                x,
                gamma,
                beta,
                eps,
                out,
            },
        );
        Ok(out)
    }

    /// `gemma`: the stored weight is `w` in `x · (1 + w)`.
    pub fn rms_norm(&mut self, prefix: &str, x: Mat, eps: f32, gemma: bool) -> Result<Mat> {
        let d = x.cols as usize;
        let name = format!("{prefix}.weight");
        let w = if gemma {
            // Gemma computes x·(1 + w) in f32: the same number as x·gamma with gamma
            // rounded once here.
            self.ck.memo(&format!("{name}+1"), || {
                let mut w = self.ck.get(&name, &[d])?;
                w.iter_mut().for_each(|v| *v += 1.0);
                Ok(w)
            })?
        } else {
            self.ck.shared(&name, &[d])?
        };
        let gamma = self.g.add_f32(name, vec![d], w);
        let out = self.new_mat(x.rows as usize, d);
        self.push(prefix, RmsNorm { x, gamma, eps, out });
        Ok(out)
    }

    pub fn add(&mut self, name: &str, a: Mat, b: Mat) -> Mat {
        let out = self.new_mat(a.rows as usize, a.cols as usize);
        self.push(name, Add { a, b, out });
        out
    }
}
