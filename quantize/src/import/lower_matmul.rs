//! MatMul and Gemm: a constant right operand makes a linear layer (constants added to its
//! output become its bias); two activations make attention scores q·kᵀ.

use std::rc::Rc;

use tract_onnx::pb;
use vlm_runtime::ops::{Activation, Embedding, Linear, Op, PatchEmbed, Weights};

use super::importer::Importer;
use super::layout::Layout;
use super::ndarray::{arange, broadcast_shapes, size_of, NdArray};
use super::onnx_proto::{attr_f, attr_i};
use super::value::{relayout, Constant, QuerySource, Scores, Value, View};
use super::ImportResult;
use crate::graph::TensorData;

impl Importer<'_> {
    /// `x · w` with `w` a constant `[in, out]` (leading dims of 1 allowed).
    fn linear(&mut self, name: &str, x: View, w: &NdArray<f32>) -> ImportResult<View> {
        let xs = x.idx.shape.clone();
        if xs.is_empty() || w.shape.is_empty() {
            bail!("MatMul of a scalar");
        }
        let (w_in, w_out, drop_out) = match w.shape.len() {
            1 => (w.shape[0], 1, true),
            r => {
                if w.shape[..r - 2].iter().any(|&d| d != 1) {
                    bail!("MatMul with a batch of weight matrices {:?}", w.shape);
                }
                (w.shape[r - 2], w.shape[r - 1], false)
            }
        };
        let k = xs[xs.len() - 1];
        if k != w_in {
            bail!("MatMul of {xs:?} and {:?}", w.shape);
        }
        let xm = self.mat(&x)?;
        let rows = xm.rows as usize;
        // The output shape, as ONNX broadcasting gives it.
        let mut out_shape = if xs.len() == 1 {
            vec![]
        } else {
            xs[..xs.len() - 1].to_vec()
        };
        if w.shape.len() > 2 && w.shape.len() > xs.len() {
            let extra = w.shape.len() - xs.len().max(2);
            let mut lead = vec![1; extra];
            lead.extend(out_shape);
            out_shape = lead;
        }
        if !drop_out {
            out_shape.push(w_out);
        }
        size_of(&[w_out, w_in])?;
        let wt = transpose_2d(&w.data, w_in, w_out);
        let out = self.new_buf(rows, w_out)?;
        let t = self.tensor(&format!("{name}:weight"), vec![w_out, w_in], wt);
        let out_mat = self.whole(out);
        self.push(
            name,
            Op::Linear(Linear {
                x: xm,
                weights: Weights::F32 { w: t },
                bias: None,
                act: Activation::None,
                out: out_mat,
            }),
        );
        Ok(View {
            buf: out,
            idx: Rc::new(arange(out_shape)?),
            int: false,
        })
    }

    pub(super) fn matmul(
        &mut self,
        name: &str,
        (an, a): (&str, Value),
        (bn, b): (&str, Value),
    ) -> ImportResult<Value> {
        match (a, b) {
            (Value::Scores(s), v) if s.probs => self.attention(name, s, bn, v),
            (Value::Scores(_), _) | (_, Value::Scores(_)) => {
                bail!("attention scores must go through Softmax before the MatMul with the values")
            }
            (a, Value::Const(w)) => {
                let x = self.materialise(an, a)?;
                Ok(Value::View(self.linear(name, x, w.floats()?)?))
            }
            (a, b) => {
                let (q, qs) = match a {
                    Value::Const(c) => (QuerySource::Const(Rc::new(c.floats()?.clone())), 1.0),
                    other => {
                        let (v, s) = self.scaled_operand(an, other)?;
                        (QuerySource::View(v), s)
                    }
                };
                let (kt, ks) = self.scaled_operand(bn, b)?;
                let qsh = match &q {
                    QuerySource::View(v) => v.idx.shape.clone(),
                    QuerySource::Const(c) => c.shape.clone(),
                };
                let ksh = &kt.idx.shape;
                let r = qsh.len();
                if r < 2
                    || ksh.len() != r
                    || qsh[..r - 2] != ksh[..r - 2]
                    || qsh[r - 1] != ksh[r - 2]
                {
                    bail!(
                        "a MatMul of two activations is only supported as attention scores \
                         q·kᵀ of matching heads; got {qsh:?} · {ksh:?}"
                    );
                }
                let mut shape = qsh[..r - 1].to_vec();
                shape.push(ksh[r - 1]);
                Ok(Value::Scores(Scores {
                    q,
                    kt,
                    scale: qs * ks,
                    probs: false,
                    shape,
                }))
            }
        }
    }

    pub(super) fn gemm(
        &mut self,
        n: &pb::NodeProto,
        name: &str,
        ins: &[Option<Value>],
    ) -> ImportResult<Value> {
        let a = ins.first().cloned().flatten().ok_or("input 0 is missing")?;
        let Some(Value::Const(b)) = ins.get(1).cloned().flatten() else {
            bail!("Gemm is only supported with constant weights (B)");
        };
        let mut a = match a {
            Value::Const(_) => bail!("Gemm is only supported with constant weights (B)"),
            v => v,
        };
        if a.shape().len() != 2 || b.shape().len() != 2 {
            bail!("Gemm of {:?} and {:?}", a.shape(), b.shape());
        }
        if attr_i(n, "transA", 0)? != 0 {
            a = relayout(&a, &Layout::Transpose(vec![1, 0]))?;
        }
        let mut w = b.floats()?.clone();
        if attr_i(n, "transB", 0)? != 0 {
            w = w.transpose(&[1, 0])?;
        }
        let alpha = attr_f(n, "alpha", 1.0)?;
        if alpha != 1.0 {
            w = w.map(|v| v * alpha);
        }
        let x = self.materialise(n.input.first().map_or("", |s| s), a)?;
        let y = self.linear(name, x, &w)?;
        match ins.get(2).cloned().flatten() {
            None => Ok(Value::View(y)),
            Some(Value::Const(c)) => {
                let beta = attr_f(n, "beta", 1.0)?;
                let c = Constant::Float(c.floats()?.map(|v| v * beta));
                match self.fold_add(None, &y, &c, 1.0)? {
                    Some(v) => Ok(v),
                    None => bail!("Gemm's C must be a bias (the same for every row)"),
                }
            }
            Some(_) => bail!("Gemm's C must be constant"),
        }
    }

    /// `x + sign·c` folded into the op that wrote `x` (a linear layer's bias, or a patch /
    /// token embedding's `add`), when that op wrote all of `x`'s buffer, nothing has read
    /// it since, and no other live value sees it. `None` when any of that fails.
    pub(super) fn fold_add(
        &mut self,
        xname: Option<&str>,
        x: &View,
        c: &Constant,
        sign: f32,
    ) -> ImportResult<Option<Value>> {
        let Constant::Float(c) = c else {
            return Ok(None);
        };
        let b = x.buf;
        let Some(&p) = self.producer.get(&b) else {
            return Ok(None);
        };
        if x.int || !self.last_toucher(p, b) {
            return Ok(None);
        }
        if let Some(xn) = xname {
            if self.uses(xn) != 1 || self.live_reader(b, |k, _| k == xn).is_some() {
                return Ok(None);
            }
        } else if self.live_reader(b, |_, _| false).is_some() {
            return Ok(None);
        }
        let shape = broadcast_shapes(&x.idx.shape, &c.shape)?;
        if size_of(&shape)? != x.idx.len() {
            return Ok(None);
        }
        let idx = x.idx.broadcast_to(&shape)?;
        let cb = c.broadcast_to(&shape)?;
        let len = self.g.buffers[b as usize];
        let mut full = vec![0f32; len];
        let mut hit = vec![false; len];
        for (&o, &v) in idx.data.iter().zip(&cb.data) {
            let Some(slot) = usize::try_from(o).ok().filter(|&o| o < len) else {
                return Ok(None);
            };
            if std::mem::replace(&mut hit[slot], true) {
                return Ok(None);
            }
            full[slot] = sign * v;
        }
        if hit.iter().any(|h| !h) {
            return Ok(None);
        }
        let whole = self.whole(b);
        let (t, extra) = match self.g.nodes[p].op {
            Op::Linear(Linear {
                bias,
                act: Activation::None,
                out,
                ..
            }) if out == whole => {
                let cols = out.cols as usize;
                let row = full[..cols].to_vec();
                if full.chunks_exact(cols).any(|r| r != row.as_slice()) {
                    return Ok(None);
                }
                match bias {
                    Some(t) => (t, row),
                    None => {
                        let t_name = format!("{}:bias", self.g.nodes[p].name);
                        let t = self.tensor(&t_name, vec![cols], row);
                        if let Op::Linear(Linear { bias, .. }) = &mut self.g.nodes[p].op {
                            *bias = Some(t);
                        }
                        (t, Vec::new())
                    }
                }
            }
            Op::PatchEmbed(PatchEmbed { add, out, .. })
            | Op::Embedding(Embedding { add, out, .. })
                if out == whole =>
            {
                (add, full)
            }
            _ => return Ok(None),
        };
        if !extra.is_empty() {
            match &mut self.g.tensor_mut(t).data {
                TensorData::F32(d) if d.len() == extra.len() => {
                    std::sync::Arc::make_mut(d)
                        .iter_mut()
                        .zip(&extra)
                        .for_each(|(a, e)| *a += e);
                }
                _ => bail!("internal: tensor {t} does not match its op"),
            }
        }
        Ok(Some(Value::View(View {
            buf: b,
            idx: Rc::new(idx),
            int: false,
        })))
    }
}

/// `[rows, cols]` row-major to `[cols, rows]`, in tiles (weight matrices of base-size
/// towers are megabytes; a naive transpose strides through them cache line by line).
fn transpose_2d(a: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    const TILE: usize = 32;
    let mut t = vec![0f32; rows * cols];
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (0..cols).step_by(TILE) {
            for r in r0..(r0 + TILE).min(rows) {
                for c in c0..(c0 + TILE).min(cols) {
                    t[c * rows + r] = a[r * cols + c];
                }
            }
        }
    }
    t
}
