//! LayerNormalization over the last axis, with constant scale and bias.

use std::rc::Rc;

use tract_onnx::pb;
use vlm_runtime::ops::{LayerNorm, Op};

use super::importer::Importer;
use super::ndarray::{arange, norm_axis};
use super::onnx_proto::{attr_f, attr_i};
use super::value::{Value, View};
use super::ImportResult;

impl Importer<'_> {
    pub(super) fn layer_norm(
        &mut self,
        n: &pb::NodeProto,
        name: &str,
        xn: &str,
        x: Value,
        ins: &[Option<Value>],
    ) -> ImportResult<Value> {
        let x = self.materialise(xn, x)?;
        let r = x.idx.shape.len();
        if norm_axis(attr_i(n, "axis", -1)?, r)? + 1 != r {
            bail!("LayerNormalization is only supported over the last axis");
        }
        let eps = attr_f(n, "epsilon", 1e-5)?;
        let xm = self.mat(&x)?;
        let cols = xm.cols as usize;
        let param = |i: usize, what: &str| -> ImportResult<Option<Vec<f32>>> {
            match ins.get(i).cloned().flatten() {
                None => Ok(None),
                Some(Value::Const(a)) => {
                    let a = a.floats()?;
                    if a.len() != cols || a.shape.last() != Some(&cols) {
                        bail!(
                            "LayerNormalization {what} of shape {:?} for {cols} columns",
                            a.shape
                        );
                    }
                    Ok(Some(a.data.clone()))
                }
                Some(_) => bail!("LayerNormalization {what} must be constant"),
            }
        };
        let gamma = param(1, "scale")?.ok_or("LayerNormalization without a scale")?;
        let beta = param(2, "bias")?.unwrap_or(vec![0.0; cols]);
        let gamma = self.tensor(&format!("{name}:gamma"), vec![cols], gamma);
        let beta = self.tensor(&format!("{name}:beta"), vec![cols], beta);
        let out = self.new_buf(xm.rows as usize, cols)?;
        let out_mat = self.whole(out);
        self.push(
            name,
            Op::LayerNorm(LayerNorm {
                x: xm,
                gamma,
                beta,
                eps,
                out: out_mat,
            }),
        );
        Ok(Value::View(View {
            buf: out,
            idx: Rc::new(arange(x.idx.shape.clone())?),
            int: false,
        }))
    }
}
