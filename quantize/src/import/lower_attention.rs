//! Attention: scores (`scale · q·kᵀ`, soft-maxed) multiplied with the values become one
//! [`Op::Attention`], its heads found in the layouts of q, k and v.

use std::rc::Rc;

use vlm_runtime::ops::{Attention, Mask, Op, Precision, Query};

use super::expr_identify::{classify, ExprKind};
use super::importer::Importer;
use super::ndarray::arange;
use super::value::{QuerySource, Scores, Value, View};
use super::ImportResult;

impl Importer<'_> {
    /// An attention operand: a view, with any constant scaling split off.
    pub(super) fn scaled_operand(&mut self, name: &str, v: Value) -> ImportResult<(View, f64)> {
        let (x, s) = match v {
            Value::Pending(e) => match classify(&e.ex) {
                ExprKind::Scale(s) => (e.src, s),
                ExprKind::Identity => (e.src, 1.0),
                _ => (self.materialise(name, Value::Pending(e))?, 1.0),
            },
            other => (self.materialise(name, other)?, 1.0),
        };
        if x.int {
            bail!("token ids are used as activations");
        }
        Ok((x, s))
    }

    pub(super) fn attention(
        &mut self,
        name: &str,
        s: Scores,
        vn: &str,
        v: Value,
    ) -> ImportResult<Value> {
        let (v, vs) = self.scaled_operand(vn, v)?;
        if (vs - 1.0).abs() > 1e-6 {
            bail!("scaled attention values are not supported");
        }
        let ksh = &s.kt.idx.shape;
        let r = ksh.len();
        let lead = ksh[..r - 2].to_vec();
        let (dh, nk) = (ksh[r - 2], ksh[r - 1]);
        let vsh = &v.idx.shape;
        if vsh.len() != r || vsh[..r - 2] != lead[..] || vsh[r - 2] != nk || vsh[r - 1] != dh {
            bail!("attention values of shape {vsh:?} for keys {ksh:?}");
        }
        let heads: usize = lead.iter().product();
        let nq = s.shape[r - 2];
        let hd = heads * dh;
        let k_idx = s.kt.idx.transpose(&{
            let mut p: Vec<usize> = (0..r).collect();
            p.swap(r - 2, r - 1);
            p
        })?;
        let k = self.head_mat(s.kt.buf, &k_idx, heads, nk, dh, "keys")?;
        let vm = self.head_mat(v.buf, &v.idx, heads, nk, dh, "values")?;
        let q = match &s.q {
            QuerySource::View(q) => {
                Query::Mat(self.head_mat(q.buf, &q.idx, heads, nq, dh, "queries")?)
            }
            QuerySource::Const(c) => {
                let t = c.reshape(vec![heads, nq, dh])?.transpose(&[1, 0, 2])?;
                let tensor = self.tensor(&format!("{name}:query"), vec![nq, hd], t.data);
                Query::Const {
                    tensor,
                    rows: u32::try_from(nq).map_err(|_| "too many queries".to_string())?,
                }
            }
        };
        let out = self.new_buf(nq, hd)?;
        let out_mat = self.whole(out);
        let u = |v: usize| u32::try_from(v).map_err(|_| format!("{v} is too large"));
        self.push(
            name,
            Op::Attention(Attention {
                q,
                k,
                v: vm,
                heads: u(heads)?,
                head_dim: u(dh)?,
                scale: s.scale as f32,
                precision: Precision::F32,
                out: out_mat,
                mask: Mask::None,
                past: None,
            }),
        );
        // The output buffer is [queries, heads·dh]; ONNX sees [lead.., queries, dh].
        let mut shape = lead;
        shape.extend([nq, dh]);
        let idx = arange(vec![nq, heads, dh])?
            .transpose(&[1, 0, 2])?
            .reshape(shape)?;
        Ok(Value::View(View {
            buf: out,
            idx: Rc::new(idx),
            int: false,
        }))
    }
}
