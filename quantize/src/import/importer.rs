//! The importer: its state, the loop over the graph's nodes, and the buffers and matrices
//! the lowered ops read and write. What each op type lowers to is in the `lower*` modules.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use tract_onnx::pb;
use vlm_runtime::ops::{Mat, Op};

use super::ndarray::{arange, size_of, NdArray};
use super::onnx_proto::{data_type, decode_tensor, node_label};
use super::value::{Value, View};
use super::{Failure, ImportResult};
use crate::graph::{Graph, Role, TowerInput};

pub(super) struct Importer<'m> {
    pub(super) g: Graph,
    inits: HashMap<&'m str, &'m pb::TensorProto>,
    /// Live values: each is removed once its last consumer has been lowered, so a buffer
    /// referenced by nothing here may be changed in place.
    pub(super) env: HashMap<String, Value>,
    uses: HashMap<String, usize>,
    /// Each buffer as `rows × cols`.
    shapes: Vec<(usize, usize)>,
    /// The node that last wrote each buffer.
    pub(super) producer: HashMap<u32, usize>,
}

/// The buffers an op reads or writes.
fn op_buffers(op: &Op) -> Vec<u32> {
    let mut b = op.reads().as_slice().to_vec();
    b.push(op.output().buf);
    b
}

pub(crate) fn import_model(
    model: &pb::ModelProto,
    kind: Role,
    input: TowerInput,
) -> std::result::Result<Graph, Failure> {
    let whole = |msg: String| Failure {
        node: "(model)".into(),
        msg,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| whole("the file holds no graph".into()))?;
    let opset = model
        .opset_import
        .iter()
        .filter(|o| o.domain.is_empty() || o.domain == "ai.onnx")
        .map(|o| o.version)
        .max()
        .unwrap_or(0);
    if opset < 13 {
        return Err(whole(format!(
            "exported with ONNX opset {opset}; import reads opset 13 and later"
        )));
    }
    let mut imp = Importer::new(graph, kind, input).map_err(whole)?;

    // Nodes nothing downstream of the output needs are skipped: exporters leave some, and
    // they need not be lowerable.
    let out_name = graph.output[0].name.as_str();
    let mut needed: HashSet<&str> = HashSet::from([out_name]);
    let mut live = vec![false; graph.node.len()];
    for (i, n) in graph.node.iter().enumerate().rev() {
        if n.output.iter().any(|o| needed.contains(o.as_str())) {
            live[i] = true;
            needed.extend(n.input.iter().filter(|s| !s.is_empty()).map(|s| s.as_str()));
        }
    }
    for (i, n) in graph.node.iter().enumerate() {
        if live[i] {
            for s in n.input.iter().filter(|s| !s.is_empty()) {
                *imp.uses.entry(s.clone()).or_default() += 1;
            }
        }
    }
    // The graph output is never released.
    *imp.uses.entry(out_name.to_owned()).or_default() += 1;

    for (i, n) in graph.node.iter().enumerate() {
        if !live[i] {
            continue;
        }
        imp.node(n).map_err(|msg| Failure {
            node: node_label(n),
            msg,
        })?;
        imp.release(n);
    }
    imp.finish(out_name).map_err(|msg| Failure {
        node: format!("(graph output {out_name})"),
        msg,
    })?;
    Ok(imp.g)
}

impl<'m> Importer<'m> {
    fn new(graph: &'m pb::GraphProto, kind: Role, input: TowerInput) -> ImportResult<Self> {
        let inits: HashMap<&str, &pb::TensorProto> = graph
            .initializer
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let inputs: Vec<&pb::ValueInfoProto> = graph
            .input
            .iter()
            .filter(|i| !inits.contains_key(i.name.as_str()))
            .collect();
        let [inp] = inputs.as_slice() else {
            bail!("the graph has {} inputs; a tower has one", inputs.len());
        };
        if graph.output.len() != 1 {
            bail!(
                "the graph has {} outputs; a tower has one",
                graph.output.len()
            );
        }
        let (want_shape, int, rows, cols) = match (kind, input) {
            (
                Role::ImageEncoder,
                TowerInput::Pixels {
                    channels,
                    height,
                    width,
                },
            ) => (
                vec![1, channels, height, width],
                false,
                channels * height,
                width,
            ),
            (Role::TextEncoder, TowerInput::Tokens { len }) => (vec![1, len], true, 1, len),
            _ => bail!("a {} tower does not read {input:?}", kind.name()),
        };
        if want_shape.contains(&0) {
            bail!("input shape {want_shape:?} is empty");
        }
        let Some(pb::type_proto::Value::TensorType(tt)) =
            inp.r#type.as_ref().and_then(|t| t.value.as_ref())
        else {
            bail!("input {} is not a tensor", inp.name);
        };
        let ok_type = if int {
            matches!(i64::from(tt.elem_type), data_type::INT64 | data_type::INT32)
        } else {
            i64::from(tt.elem_type) == data_type::FLOAT
        };
        if !ok_type {
            bail!(
                "input {} has data type {}; a {} tower reads {}",
                inp.name,
                tt.elem_type,
                kind.name(),
                if int {
                    "int64 token ids"
                } else {
                    "float pixels"
                }
            );
        }
        if let Some(shape) = &tt.shape {
            use pb::tensor_shape_proto::dimension::Value as Dim;
            let dims: Vec<Option<i64>> = shape
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(Dim::DimValue(v)) => Some(v),
                    _ => None,
                })
                .collect();
            let fits = dims.len() == want_shape.len()
                && dims
                    .iter()
                    .zip(&want_shape)
                    .all(|(d, &w)| d.is_none_or(|d| d == w as i64));
            if !fits {
                let dims: Vec<String> = dims
                    .iter()
                    .map(|d| d.map_or("?".into(), |d| d.to_string()))
                    .collect();
                bail!(
                    "input {} has shape [{}]; import was asked for {want_shape:?}",
                    inp.name,
                    dims.join(", ")
                );
            }
        }
        let mut g = Graph::new(kind, input);
        g.input_buf = 0;
        let mut env = HashMap::new();
        env.insert(
            inp.name.clone(),
            Value::View(View {
                buf: g.input_buf,
                idx: Rc::new(arange(want_shape)?),
                int,
            }),
        );
        Ok(Self {
            g,
            inits,
            env,
            uses: HashMap::new(),
            shapes: vec![(rows, cols)],
            producer: HashMap::new(),
        })
    }

    pub(super) fn get(&mut self, name: &str) -> ImportResult<Value> {
        if let Some(v) = self.env.get(name) {
            return Ok(v.clone());
        }
        match self.inits.get(name) {
            Some(t) => {
                let v = Value::Const(Rc::new(decode_tensor(t)?));
                self.env.insert(name.to_owned(), v.clone());
                Ok(v)
            }
            None => bail!("value {name:?} is not defined before its use"),
        }
    }

    pub(super) fn uses(&self, name: &str) -> usize {
        self.uses.get(name).copied().unwrap_or(0)
    }

    fn release(&mut self, n: &pb::NodeProto) {
        for s in n.input.iter().filter(|s| !s.is_empty()) {
            if let Some(c) = self.uses.get_mut(s) {
                *c = c.saturating_sub(1);
                if *c == 0 {
                    self.env.remove(s);
                }
            }
        }
    }

    /// A live value, other than those `skip` accepts, that reads buffer `b`.
    pub(super) fn live_reader(&self, b: u32, skip: impl Fn(&str, &Value) -> bool) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, v)| v.reads(b) && self.uses(k) > 0 && !skip(k, v))
            .map(|(k, _)| k.as_str())
    }

    /// Whether node `p` is the last op to read or write buffer `b`.
    pub(super) fn last_toucher(&self, p: usize, b: u32) -> bool {
        self.g
            .nodes
            .get(p + 1..)
            .is_some_and(|later| later.iter().all(|n| !op_buffers(&n.op).contains(&b)))
    }

    pub(super) fn new_buf(&mut self, rows: usize, cols: usize) -> ImportResult<u32> {
        if rows == 0 || cols == 0 {
            bail!("an empty {rows}×{cols} activation");
        }
        let len = size_of(&[rows, cols])?;
        if u32::try_from(len).is_err() || self.g.buffers.len() >= u32::MAX as usize {
            bail!("buffer of {rows}×{cols} is too large");
        }
        let b = self.g.add_buffer(len);
        self.shapes.push((rows, cols));
        Ok(b)
    }

    pub(super) fn whole(&self, b: u32) -> Mat {
        let (rows, cols) = self.shapes[b as usize];
        Mat::dense(b, rows as u32, cols as u32)
    }

    pub(super) fn push(&mut self, name: &str, op: Op) {
        let out = op.output().buf;
        self.g.push(name, op);
        self.producer.insert(out, self.g.nodes.len() - 1);
    }

    pub(super) fn tensor(&mut self, name: &str, dims: Vec<usize>, data: Vec<f32>) -> u32 {
        self.g.add_f32(name, dims, data)
    }

    /// A window of buffer `b`, checked to lie inside it.
    fn fit_mat(
        &self,
        b: u32,
        offset: i64,
        rows: usize,
        cols: usize,
        stride: i64,
    ) -> ImportResult<Mat> {
        let conv = |v: i64| u32::try_from(v).ok();
        let m = match (
            conv(offset),
            conv(rows as i64),
            conv(cols as i64),
            conv(stride),
        ) {
            (Some(offset), Some(rows), Some(cols), Some(stride)) => Mat {
                buf: b,
                offset,
                rows,
                cols,
                stride,
            },
            _ => bail!("window (offset {offset}, stride {stride}) does not fit a buffer"),
        };
        let len = self.g.buffers.get(b as usize).copied().unwrap_or(0);
        if m.span().is_none_or(|s| s > len) || rows == 0 || cols == 0 {
            bail!("window of {rows}×{cols} at {offset} (stride {stride}) overruns its buffer");
        }
        Ok(m)
    }

    /// The view as a matrix: all leading dims as rows, the last as columns.
    pub(super) fn mat(&self, v: &View) -> ImportResult<Mat> {
        if v.int {
            bail!("token ids are used as activations");
        }
        let d = &v.idx.data;
        let cols = v.idx.shape.last().copied().unwrap_or(1);
        if d.is_empty() || cols == 0 {
            bail!("empty activation {:?}", v.idx.shape);
        }
        let rows = d.len() / cols;
        let off = d[0];
        let stride = if rows > 1 { d[cols] - off } else { cols as i64 };
        for r in 0..rows {
            for c in 0..cols {
                if d[r * cols + c] != off + r as i64 * stride + c as i64 {
                    bail!(
                        "activation of shape {:?} is not laid out as a row-major matrix \
                         (its layout would need a copy, which import does not insert)",
                        v.idx.shape
                    );
                }
            }
        }
        self.fit_mat(v.buf, off, rows, cols, stride)
    }

    /// Heads side by side: `idx` of logical `[lead.., rows, dh]` with `h` the flattened
    /// lead index must be `offset + r·stride + h·dh + j`, i.e. head `h` is columns
    /// `h·dh..(h+1)·dh` of one matrix (as [`Op::Attention`] reads them).
    pub(super) fn head_mat(
        &self,
        buf: u32,
        idx: &NdArray<i64>,
        heads: usize,
        rows: usize,
        dh: usize,
        what: &str,
    ) -> ImportResult<Mat> {
        let d = &idx.data;
        if d.len() != heads * rows * dh || d.is_empty() {
            bail!("internal: {what} has {} elements", d.len());
        }
        let off = d[0];
        let stride = if rows > 1 {
            d[dh] - off
        } else {
            (heads * dh) as i64
        };
        for h in 0..heads {
            for r in 0..rows {
                for j in 0..dh {
                    if d[(h * rows + r) * dh + j] != off + r as i64 * stride + (h * dh + j) as i64 {
                        bail!(
                            "the attention's {what} are not laid out as heads side by side in \
                             the columns of one matrix"
                        );
                    }
                }
            }
        }
        self.fit_mat(buf, off, rows, heads * dh, stride)
    }

    fn finish(&mut self, out_name: &str) -> ImportResult<()> {
        let v = self.get(out_name)?;
        let x = self.materialise(out_name, v)?;
        let m = self.mat(&x)?;
        if m.rows != 1 {
            bail!("the output is {:?}, not one embedding", x.idx.shape);
        }
        self.g.output = m;
        Ok(())
    }
}
