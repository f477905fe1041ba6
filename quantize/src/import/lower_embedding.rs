//! Embeddings: a token table gathered by the input ids, and the patch embedding (a Conv
//! with kernel = stride over the input pixels).

use std::rc::Rc;

use tract_onnx::pb;
use vlm_runtime::ops::{Embedding, Op, PatchEmbed, Weights};

use super::importer::Importer;
use super::ndarray::{arange, size_of};
use super::onnx_proto::{attr_i, attr_ints, attr_s};
use super::value::{Constant, Value, View};
use super::ImportResult;
use crate::graph::TowerInput;

impl Importer<'_> {
    pub(super) fn embedding(
        &mut self,
        name: &str,
        table: &Constant,
        ids: &View,
        axis: i64,
    ) -> ImportResult<Value> {
        let table = table.floats()?;
        if axis != 0 || table.shape.len() != 2 {
            bail!("a token embedding gathers rows of a 2-D table");
        }
        let (vocab, dim) = (table.shape[0], table.shape[1]);
        let n = ids.idx.len();
        if ids.buf != self.g.input_buf
            || ids.idx.data.iter().enumerate().any(|(i, &o)| o != i as i64)
        {
            bail!("the token embedding must read the input ids in order");
        }
        let out = self.new_buf(n, dim)?;
        let t = self.tensor(
            &format!("{name}:table"),
            vec![vocab, dim],
            table.data.clone(),
        );
        let add = self.tensor(&format!("{name}:add"), vec![n, dim], vec![0.0; n * dim]);
        let out_mat = self.whole(out);
        self.push(
            name,
            Op::Embedding(Embedding {
                ids: ids.buf,
                table: t,
                table_scale: None,
                add,
                out: out_mat,
                position: None,
            }),
        );
        let mut shape = ids.idx.shape.clone();
        shape.push(dim);
        Ok(Value::View(View {
            buf: out,
            idx: Rc::new(arange(shape)?),
            int: false,
        }))
    }

    pub(super) fn patch_embed(
        &mut self,
        n: &pb::NodeProto,
        name: &str,
        x: Value,
        ins: &[Option<Value>],
    ) -> ImportResult<Value> {
        let TowerInput::Pixels {
            channels,
            height,
            width,
        } = self.g.input
        else {
            bail!("Conv in a text tower");
        };
        let Value::View(x) = x else {
            bail!("Conv is only supported on the input pixels");
        };
        let pixels = x.buf == self.g.input_buf
            && !x.int
            && x.idx.shape == [1, channels, height, width]
            && x.idx.data.iter().enumerate().all(|(i, &o)| o == i as i64);
        if !pixels {
            bail!("Conv is only supported on the input pixels, as given");
        }
        let Some(Value::Const(w)) = ins.get(1).cloned().flatten() else {
            bail!("Conv weights must be constant");
        };
        let w = w.floats()?;
        let [dim, wc, kh, kw] = w.shape[..] else {
            bail!("Conv weights of shape {:?}", w.shape);
        };
        let p = kh;
        let ints = |k: &str, d: i64| -> ImportResult<Vec<i64>> {
            Ok(attr_ints(n, k)?.unwrap_or(vec![d; 2]))
        };
        let pads = attr_ints(n, "pads")?.unwrap_or(vec![0; 4]);
        let auto_pad = attr_s(n, "auto_pad")?.unwrap_or_else(|| "NOTSET".into());
        let patchy = dim > 0
            && wc == channels
            && kw == p
            && p > 0
            && ints("kernel_shape", p as i64)? == [p as i64; 2]
            && ints("strides", 1)? == [p as i64; 2]
            && ints("dilations", 1)? == [1, 1]
            && attr_i(n, "group", 1)? == 1
            && pads.iter().all(|&v| v == 0)
            && matches!(
                auto_pad.as_str(),
                "NOTSET" | "VALID" | "SAME_UPPER" | "SAME_LOWER"
            );
        if !patchy {
            bail!(
                "only a patch embedding is supported: a Conv with kernel = stride, no padding, \
                 dilation 1, one group, over all {channels} channels"
            );
        }
        if height % p != 0 || width % p != 0 {
            bail!("a {height}×{width} image does not divide into {p}×{p} patches");
        }
        let (gh, gw) = (height / p, width / p);
        let patches = gh * gw;
        let mut add = vec![0f32; size_of(&[patches, dim])?];
        if let Some(bias) = ins.get(2).cloned().flatten() {
            let Value::Const(b) = bias else {
                bail!("Conv bias must be constant");
            };
            let b = b.floats()?;
            if b.len() != dim {
                bail!("Conv bias of {} values for {dim} channels", b.len());
            }
            for row in add.chunks_exact_mut(dim) {
                row.copy_from_slice(&b.data);
            }
        }
        let out = self.new_buf(patches, dim)?;
        let wt = self.tensor(
            &format!("{name}:weight"),
            vec![dim, channels * p * p],
            w.data.clone(),
        );
        let add = self.tensor(&format!("{name}:add"), vec![patches, dim], add);
        let out_mat = self.whole(out);
        let u = |v: usize| u32::try_from(v).map_err(|_| format!("{v} is too large"));
        let input = self.g.input_buf;
        self.push(
            name,
            Op::PatchEmbed(PatchEmbed {
                input,
                channels: u(channels)?,
                height: u(height)?,
                width: u(width)?,
                patch: u(p)?,
                weights: Weights::F32 { w: wt },
                add,
                out: out_mat,
            }),
        );
        // The buffer is token-major [patches, dim]; ONNX sees [1, dim, gh, gw].
        let idx = arange(vec![gh, gw, dim])?
            .transpose(&[2, 0, 1])?
            .reshape(vec![1, dim, gh, gw])?;
        Ok(Value::View(View {
            buf: out,
            idx: Rc::new(idx),
            int: false,
        }))
    }
}
