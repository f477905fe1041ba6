//! Import: an exported SigLIP ONNX tower lowered to the runtime's own ops ([`Graph`]).
//!
//! torch.onnx writes a tower as hundreds of small nodes: shape arithmetic, layout changes,
//! and a transformer's arithmetic spelled out (GELU as a chain of Mul/Add/Tanh, attention
//! as MatMul/Softmax/MatMul). The runtime has seven coarse ops. Import bridges the two by
//! abstract interpretation: the nodes are walked in order with the input shape fixed, and
//! every ONNX value becomes one of
//!
//! - a **constant**: initializers, and every node whose inputs are all constant, folded
//!   here. All shape arithmetic lands here, since every activation's shape is known;
//! - a **view**: an activation held in a graph buffer, with an *index tensor* of the
//!   value's logical shape holding each element's offset in that buffer. Reshape,
//!   Transpose, Gather, Slice… of an activation only rewrite the index tensor; an op that
//!   reads a matrix checks that the index tensor is one (`offset + r·stride + c`). So q, k
//!   and v may be column ranges of one packed projection, heads are found wherever the
//!   exporter's reshapes put them, and no layout op ever costs a copy;
//! - a **pending form**: an element-wise expression over one view, identified (GELU, or a
//!   plain scaling) by evaluating it on probe points when something consumes it; or
//!   attention scores / probabilities waiting for the MatMul with the values.
//!
//! Whatever cannot be expressed this way is refused with an error naming the first node
//! that could not be lowered. Nothing is matched by node or initializer name: sizes,
//! depth, heads and layouts all come from the graph and the input shape.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb;
use tract_onnx::prelude::Framework;
use vlm_runtime::ops::{Activation, Mat, Op, Precision, Query, Weights};

use crate::graph::{Graph, TensorData, TowerInput, TowerKind};
use crate::{Error, Result};

/// Lowers one ONNX tower. `input` fixes the input shape (batch 1):
/// [`TowerInput::Pixels`] for the vision tower (input f32 `[1, C, H, W]`),
/// [`TowerInput::Tokens`] for the text tower (input int64 `[1, len]`).
pub fn import_tower(path: &Path, kind: TowerKind, input: TowerInput) -> Result<Graph> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_owned(),
        });
    }
    let model = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| Error::Onnx {
            path: path.to_owned(),
            msg: format!("{e:#}"),
        })?;
    import_model(&model, kind, input).map_err(|f| Error::Import {
        path: path.to_owned(),
        node: f.node,
        msg: f.msg,
    })
}

/// Why import stopped: the node (or "(model)") and what was wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub node: String,
    pub msg: String,
}

/// Import-internal results: a message, to which the node loop adds the node.
type Res<T> = std::result::Result<T, String>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(format!($($t)*)) };
}

/// The most elements import creates for one array (folded constants, index tensors):
/// far above what a SigLIP tower needs, low enough that a file asking for a huge tensor
/// gets an error instead of exhausting memory.
const MAX_ELEMENTS: usize = 1 << 25;
/// The most multiply-adds constant folding spends on one MatMul (same reason).
const MAX_FOLD_MACS: u64 = 1 << 28;
/// The most operations a pending element-wise expression may hold (GELU needs ~12): it is
/// evaluated recursively, so its size must stay bounded whatever the file says.
const MAX_EXPR_OPS: usize = 256;

/// ONNX TensorProto data types used here.
mod dt {
    pub const FLOAT: i64 = 1;
    pub const UINT8: i64 = 2;
    pub const INT8: i64 = 3;
    pub const UINT16: i64 = 4;
    pub const INT16: i64 = 5;
    pub const INT32: i64 = 6;
    pub const INT64: i64 = 7;
    pub const BOOL: i64 = 9;
    pub const DOUBLE: i64 = 11;
    pub const UINT32: i64 = 12;
    pub const UINT64: i64 = 13;
}

// ---------------------------------------------------------------------------------------
// n-d arrays: constants and index tensors share one small, checked implementation.

#[derive(Debug, Clone, PartialEq)]
struct Nd<T> {
    shape: Vec<usize>,
    data: Vec<T>,
}

/// Elements of `shape`, refused above [`MAX_ELEMENTS`].
fn size_of(shape: &[usize]) -> Res<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if n > MAX_ELEMENTS {
        bail!("shape {shape:?} has {n} elements, more than import handles ({MAX_ELEMENTS})");
    }
    Ok(n)
}

fn row_major(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1].saturating_mul(shape[k + 1]);
    }
    s
}

fn norm_axis(axis: i64, rank: usize) -> Res<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

fn norm_index(i: i64, dim: usize) -> Res<usize> {
    let d = dim as i64;
    let j = if i < 0 { i + d } else { i };
    if j < 0 || j >= d {
        bail!("index {i} is out of range for a dimension of {dim}");
    }
    Ok(j as usize)
}

/// numpy broadcasting of two shapes.
fn broadcast_shapes(a: &[usize], b: &[usize]) -> Res<Vec<usize>> {
    let r = a.len().max(b.len());
    let dim = |s: &[usize], i: usize| {
        if i + s.len() >= r {
            s[i + s.len() - r]
        } else {
            1
        }
    };
    (0..r)
        .map(|i| match (dim(a, i), dim(b, i)) {
            (x, y) if x == y => Ok(x),
            (1, y) => Ok(y),
            (x, 1) => Ok(x),
            _ => Err(format!("shapes {a:?} and {b:?} do not broadcast")),
        })
        .collect()
}

impl<T: Copy> Nd<T> {
    fn new(shape: Vec<usize>, data: Vec<T>) -> Res<Self> {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if n != Some(data.len()) {
            bail!("shape {shape:?} does not hold {} elements", data.len());
        }
        Ok(Self { shape, data })
    }

    fn scalar(v: T) -> Self {
        Self {
            shape: vec![],
            data: vec![v],
        }
    }

    fn len(&self) -> usize {
        self.data.len()
    }

    /// Element `base + Σ pos[k]·strides[k]` of `self` for every position of `shape`: the
    /// one primitive behind transposes, slices and broadcasts.
    fn strided(&self, shape: Vec<usize>, strides: &[isize], base: isize) -> Res<Self> {
        let n = size_of(&shape)?;
        let mut data = Vec::with_capacity(n);
        if n > 0 {
            let mut pos = vec![0usize; shape.len()];
            let mut off = base;
            'all: loop {
                let v = usize::try_from(off)
                    .ok()
                    .and_then(|i| self.data.get(i))
                    .ok_or_else(|| "internal: strided index out of range".to_string())?;
                data.push(*v);
                let mut k = shape.len();
                loop {
                    if k == 0 {
                        break 'all;
                    }
                    k -= 1;
                    pos[k] += 1;
                    off += strides[k];
                    if pos[k] < shape[k] {
                        break;
                    }
                    off -= strides[k] * shape[k] as isize;
                    pos[k] = 0;
                }
            }
        }
        Ok(Self { shape, data })
    }

    fn reshape(&self, shape: Vec<usize>) -> Res<Self> {
        if size_of(&shape)? != self.len() {
            bail!("cannot reshape {:?} to {shape:?}", self.shape);
        }
        Ok(Self {
            shape,
            data: self.data.clone(),
        })
    }

    fn transpose(&self, perm: &[usize]) -> Res<Self> {
        let r = self.shape.len();
        let mut seen = vec![false; r];
        if perm.len() != r
            || perm
                .iter()
                .any(|&p| p >= r || std::mem::replace(&mut seen[p], true))
        {
            bail!("{perm:?} is not a permutation of {r} axes");
        }
        let st = row_major(&self.shape);
        let shape = perm.iter().map(|&p| self.shape[p]).collect();
        let strides: Vec<isize> = perm.iter().map(|&p| st[p] as isize).collect();
        self.strided(shape, &strides, 0)
    }

    /// Broadcasts to `shape` (which must be this shape broadcast with something).
    fn broadcast_to(&self, shape: &[usize]) -> Res<Self> {
        if shape == self.shape.as_slice() {
            return Ok(self.clone());
        }
        let (r, rs) = (shape.len(), self.shape.len());
        if rs > r {
            bail!("cannot broadcast {:?} to {shape:?}", self.shape);
        }
        let st = row_major(&self.shape);
        let mut strides = vec![0isize; r];
        for k in 0..rs {
            let (d, t) = (self.shape[k], shape[k + r - rs]);
            if d == t {
                strides[k + r - rs] = st[k] as isize;
            } else if d != 1 {
                bail!("cannot broadcast {:?} to {shape:?}", self.shape);
            }
        }
        self.strided(shape.to_vec(), &strides, 0)
    }

    /// `ind` (already in range) taken along `axis`; `ind_shape` replaces that axis.
    fn gather(&self, axis: usize, ind: &[usize], ind_shape: &[usize]) -> Res<Self> {
        let Some(&n) = self.shape.get(axis) else {
            bail!("axis {axis} is out of range for shape {:?}", self.shape);
        };
        let outer: usize = self.shape[..axis].iter().product();
        let inner: usize = self.shape[axis + 1..].iter().product();
        let mut shape = self.shape[..axis].to_vec();
        shape.extend_from_slice(ind_shape);
        shape.extend_from_slice(&self.shape[axis + 1..]);
        let total = size_of(&shape)?;
        let mut data = Vec::with_capacity(total);
        for o in 0..outer {
            for &i in ind {
                if i >= n {
                    bail!("internal: gather index {i} out of range {n}");
                }
                let at = (o * n + i) * inner;
                data.extend_from_slice(&self.data[at..at + inner]);
            }
        }
        Nd::new(shape, data)
    }

    fn concat(parts: &[&Self], axis: usize) -> Res<Self> {
        let Some(first) = parts.first() else {
            bail!("Concat of nothing");
        };
        let r = first.shape.len();
        if axis >= r {
            bail!("axis {axis} is out of range for rank {r}");
        }
        let mut shape = first.shape.clone();
        shape[axis] = 0;
        for p in parts {
            let same =
                p.shape.len() == r && (0..r).all(|k| k == axis || p.shape[k] == first.shape[k]);
            if !same {
                bail!("cannot concatenate {:?} and {:?}", first.shape, p.shape);
            }
            shape[axis] += p.shape[axis];
        }
        let total = size_of(&shape)?;
        let outer: usize = first.shape[..axis].iter().product();
        let mut data = Vec::with_capacity(total);
        for o in 0..outer {
            for p in parts {
                let chunk = p.len() / outer.max(1);
                data.extend_from_slice(&p.data[o * chunk..(o + 1) * chunk]);
            }
        }
        Nd::new(shape, data)
    }

    fn zip<U: Copy, V: Copy>(
        &self,
        other: &Nd<U>,
        mut f: impl FnMut(T, U) -> Res<V>,
    ) -> Res<Nd<V>> {
        let shape = broadcast_shapes(&self.shape, &other.shape)?;
        let a = self.broadcast_to(&shape)?;
        let b = other.broadcast_to(&shape)?;
        let data = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| f(x, y))
            .collect::<Res<Vec<V>>>()?;
        Ok(Nd { shape, data })
    }

    fn map<U: Copy>(&self, f: impl FnMut(T) -> U) -> Nd<U> {
        Nd {
            shape: self.shape.clone(),
            data: self.data.iter().copied().map(f).collect(),
        }
    }
}

/// `0, 1, 2, …` in `shape`: the index tensor of a freshly written dense buffer.
fn arange(shape: Vec<usize>) -> Res<Nd<i64>> {
    let n = size_of(&shape)?;
    Nd::new(shape, (0..n as i64).collect())
}

/// A layout change, computed once from the input shape and constant operands, then applied
/// alike to constants and to index tensors.
#[derive(Debug, Clone)]
enum Layout {
    Reshape(Vec<usize>),
    Transpose(Vec<usize>),
    Gather {
        axis: usize,
        ind: Vec<usize>,
        ind_shape: Vec<usize>,
    },
    /// `(axis, start, step, len)` per sliced axis.
    Slice(Vec<(usize, usize, isize, usize)>),
    Expand(Vec<usize>),
    Tile(Vec<usize>),
}

impl Layout {
    fn apply<T: Copy>(&self, x: &Nd<T>) -> Res<Nd<T>> {
        match self {
            Layout::Reshape(s) => x.reshape(s.clone()),
            Layout::Transpose(p) => x.transpose(p),
            Layout::Gather {
                axis,
                ind,
                ind_shape,
            } => x.gather(*axis, ind, ind_shape),
            Layout::Expand(s) => x.broadcast_to(s),
            Layout::Slice(axes) => {
                let st = row_major(&x.shape);
                let mut shape = x.shape.clone();
                let mut strides: Vec<isize> = st.iter().map(|&s| s as isize).collect();
                let mut base = 0isize;
                for &(axis, start, step, len) in axes {
                    if axis >= shape.len() {
                        bail!("internal: slice axis {axis} out of range");
                    }
                    base += (start * st[axis]) as isize;
                    strides[axis] = step * st[axis] as isize;
                    shape[axis] = len;
                }
                x.strided(shape, &strides, base)
            }
            Layout::Tile(reps) => {
                let mut y = x.clone();
                for (axis, &r) in reps.iter().enumerate() {
                    if r != 1 {
                        let n = y.shape[axis];
                        let ind: Vec<usize> = (0..r).flat_map(|_| 0..n).collect();
                        y = y.gather(axis, &ind, &[n * r])?;
                    }
                }
                Ok(y)
            }
        }
    }
}

/// A constant: f32, or any integer/bool type held as i64.
#[derive(Debug, Clone)]
enum Arr {
    F(Nd<f32>),
    I(Nd<i64>),
}

impl Arr {
    fn shape(&self) -> &[usize] {
        match self {
            Arr::F(a) => &a.shape,
            Arr::I(a) => &a.shape,
        }
    }

    fn len(&self) -> usize {
        match self {
            Arr::F(a) => a.len(),
            Arr::I(a) => a.len(),
        }
    }

    fn floats(&self) -> Res<&Nd<f32>> {
        match self {
            Arr::F(a) => Ok(a),
            Arr::I(_) => bail!("expected a float tensor, got an integer one"),
        }
    }

    fn ints(&self) -> Res<&[i64]> {
        match self {
            Arr::I(a) => Ok(&a.data),
            Arr::F(_) => bail!("expected an integer tensor, got a float one"),
        }
    }

    fn scalar_f(&self) -> Option<f32> {
        match self {
            Arr::F(a) if a.len() == 1 => Some(a.data[0]),
            _ => None,
        }
    }

    fn layout(&self, l: &Layout) -> Res<Arr> {
        Ok(match self {
            Arr::F(a) => Arr::F(l.apply(a)?),
            Arr::I(a) => Arr::I(l.apply(a)?),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Abstract values.

/// An activation in buffer `buf`: `idx` holds, for each element of the ONNX value's
/// logical shape, its offset in the buffer.
#[derive(Debug, Clone)]
struct View {
    buf: u32,
    idx: Rc<Nd<i64>>,
    /// Token ids (i32 in the buffer), not f32 values.
    int: bool,
}

impl View {
    fn same(&self, o: &View) -> bool {
        self.buf == o.buf && (Rc::ptr_eq(&self.idx, &o.idx) || self.idx == o.idx)
    }

    fn relayout(&self, l: &Layout) -> Res<View> {
        Ok(View {
            buf: self.buf,
            idx: Rc::new(l.apply(&self.idx)?),
            int: self.int,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Un {
    Neg,
    Abs,
    Sqrt,
    Exp,
    Tanh,
    Erf,
    Sigmoid,
    Recip,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Bin {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

/// An element-wise function of one activation `X`.
#[derive(Debug)]
enum Ex {
    X,
    C(f64),
    Un(Un, Rc<Ex>),
    Bin(Bin, Rc<Ex>, Rc<Ex>),
}

impl Ex {
    fn eval(&self, x: f64) -> f64 {
        match self {
            Ex::X => x,
            Ex::C(c) => *c,
            Ex::Un(u, a) => {
                let a = a.eval(x);
                match u {
                    Un::Neg => -a,
                    Un::Abs => a.abs(),
                    Un::Sqrt => a.sqrt(),
                    Un::Exp => libm::exp(a),
                    Un::Tanh => libm::tanh(a),
                    Un::Erf => erf(a),
                    Un::Sigmoid => 1.0 / (1.0 + libm::exp(-a)),
                    Un::Recip => 1.0 / a,
                }
            }
            Ex::Bin(op, a, b) => {
                let (a, b) = (a.eval(x), b.eval(x));
                match op {
                    Bin::Add => a + b,
                    Bin::Sub => a - b,
                    Bin::Mul => a * b,
                    Bin::Div => a / b,
                    Bin::Pow => libm::pow(a, b),
                }
            }
        }
    }
}

/// A pending element-wise expression over one activation, applied when consumed.
#[derive(Debug, Clone)]
struct Elem {
    src: View,
    ex: Rc<Ex>,
    /// Operations in `ex` (bounded by [`MAX_EXPR_OPS`]).
    ops: usize,
    /// The node that built the expression last, to name the op that applies it.
    node: Rc<str>,
}

#[derive(Debug, Clone)]
enum Q {
    View(View),
    /// Queries that depend only on constants (a pooling head's probe, projected).
    Const(Rc<Nd<f32>>),
}

/// `scale · q·kᵀ` (then, once `probs`, its softmax), waiting for the values.
#[derive(Debug, Clone)]
struct Scores {
    q: Q,
    /// kᵀ, logical `[lead.., head_dim, keys]`.
    kt: View,
    scale: f64,
    probs: bool,
    shape: Vec<usize>,
}

#[derive(Debug, Clone)]
enum Value {
    Const(Rc<Arr>),
    View(View),
    Elem(Elem),
    Scores(Scores),
}

impl Value {
    fn shape(&self) -> &[usize] {
        match self {
            Value::Const(a) => a.shape(),
            Value::View(v) => &v.idx.shape,
            Value::Elem(e) => &e.src.idx.shape,
            Value::Scores(s) => &s.shape,
        }
    }

    /// Whether reading this value reads buffer `b`.
    fn reads(&self, b: u32) -> bool {
        match self {
            Value::Const(_) => false,
            Value::View(v) => v.buf == b,
            Value::Elem(e) => e.src.buf == b,
            Value::Scores(s) => s.kt.buf == b || matches!(&s.q, Q::View(q) if q.buf == b),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Identifying element-wise expressions.

/// erf to ~1e-13: a Maclaurin series near zero, a continued fraction for erfc beyond.
fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let two_over_sqrt_pi = 2.0 / std::f64::consts::PI.sqrt();
    let r = if a < 3.0 {
        let (a2, mut term, mut sum) = (a * a, a, a);
        for n in 1..200 {
            term *= -a2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * two_over_sqrt_pi
    } else {
        // erfc(a) = e^(−a²)/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + …))))
        let mut f = a;
        for k in (1..=60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - libm::exp(-a * a) / (std::f64::consts::PI.sqrt() * f)
    };
    r.copysign(x)
}

fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + libm::tanh(c * (x + 0.044715 * x * x * x)))
}

fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Identity,
    Scale(f64),
    Act(Activation),
    Other,
}

/// What an expression computes, judged on probe points: exporters spell GELU many ways
/// (x·x·x or Pow, constants folded or not, erf(x/√2) or erf(x·0.7071)), all of which agree
/// with the definition to float rounding, while GELU-tanh and GELU-erf differ by ~1e-4.
fn classify(ex: &Ex) -> Kind {
    let xs: Vec<f64> = (0..=200).map(|i| -8.0 + 0.08 * i as f64).collect();
    let ys: Vec<f64> = xs.iter().map(|&x| ex.eval(x)).collect();
    let matches = |f: &dyn Fn(f64) -> f64| {
        xs.iter().zip(&ys).all(|(&x, &y)| {
            let g = f(x);
            (y - g).abs() <= 1e-6 * (1.0 + g.abs())
        })
    };
    let s = ex.eval(1.0);
    if s.is_finite() && matches(&|x| s * x) {
        return if (s - 1.0).abs() <= 1e-6 {
            Kind::Identity
        } else {
            Kind::Scale(s)
        };
    }
    if matches(&gelu_tanh) {
        Kind::Act(Activation::GeluTanh)
    } else if matches(&gelu_erf) {
        Kind::Act(Activation::GeluErf)
    } else {
        Kind::Other
    }
}

// ---------------------------------------------------------------------------------------
// Reading the protobuf.

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// An attribute's value, checking its declared type (0: an old exporter left it unset).
fn typed<'a>(n: &'a pb::NodeProto, name: &str, ty: i32) -> Res<Option<&'a pb::AttributeProto>> {
    match attr(n, name) {
        Some(a) if a.r#type == ty || a.r#type == 0 => Ok(Some(a)),
        Some(a) => bail!("attribute {name} has type {}, expected {ty}", a.r#type),
        None => Ok(None),
    }
}

fn attr_i(n: &pb::NodeProto, name: &str, default: i64) -> Res<i64> {
    Ok(typed(n, name, 2)?.map_or(default, |a| a.i))
}

fn attr_f(n: &pb::NodeProto, name: &str, default: f32) -> Res<f32> {
    Ok(typed(n, name, 1)?.map_or(default, |a| a.f))
}

fn attr_ints(n: &pb::NodeProto, name: &str) -> Res<Option<Vec<i64>>> {
    Ok(typed(n, name, 7)?.map(|a| a.ints.clone()))
}

fn attr_s(n: &pb::NodeProto, name: &str) -> Res<Option<String>> {
    Ok(typed(n, name, 3)?.map(|a| String::from_utf8_lossy(&a.s).into_owned()))
}

fn attr_t<'a>(n: &'a pb::NodeProto, name: &str) -> Res<Option<&'a pb::TensorProto>> {
    match typed(n, name, 4)? {
        Some(a) => match &a.t {
            Some(t) => Ok(Some(t)),
            None => bail!("attribute {name} holds no tensor"),
        },
        None => Ok(None),
    }
}

fn le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

/// A TensorProto's values (raw little-endian bytes or typed fields), checked against its
/// dims; only what SigLIP exports use.
fn decode_tensor(t: &pb::TensorProto) -> Res<Arr> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        bail!(
            "tensor {:?} keeps its data in an external file, which import does not read \
             (export the model with its weights inside the .onnx file)",
            t.name
        );
    }
    if t.segment.is_some() {
        bail!(
            "tensor {:?} is segmented, which import does not read",
            t.name
        );
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor {:?} has dimension {d}", t.name)))
        .collect::<Res<Vec<usize>>>()?;
    let raw = &t.raw_data;
    let ints =
        |w: usize, f: &dyn Fn(&[u8]) -> i64| -> Vec<i64> { raw.chunks_exact(w).map(f).collect() };
    let sized = |w: usize| -> Res<()> {
        if !raw.len().is_multiple_of(w) {
            bail!(
                "tensor {:?} has {} raw bytes, not a multiple of {w}",
                t.name,
                raw.len()
            );
        }
        Ok(())
    };
    let ty = i64::from(t.data_type);
    let arr = match ty {
        dt::FLOAT | dt::DOUBLE => {
            let data: Vec<f32> = if !raw.is_empty() {
                if ty == dt::FLOAT {
                    sized(4)?;
                    if shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
                        != Some(raw.len() / 4)
                    {
                        bail!(
                            "tensor {:?} has {} values for shape {shape:?}",
                            t.name,
                            raw.len() / 4
                        );
                    }
                    // tract's loader copies the bytes in optimised code; a per-element loop
                    // here costs seconds on a base-size tower in a debug build. The checks
                    // above keep it on a path that cannot fail.
                    let loaded = tract_onnx::tensor::load_tensor(&FopenDataResolver, t, None)
                        .map_err(|e| format!("tensor {:?}: {e}", t.name))?;
                    let plain = loaded
                        .try_as_plain_ram()
                        .map_err(|e| format!("tensor {:?}: {e}", t.name))?;
                    plain
                        .as_slice::<f32>()
                        .map_err(|e| format!("tensor {:?}: {e}", t.name))?
                        .to_vec()
                } else {
                    sized(8)?;
                    le::<8, f32>(raw, |b| f64::from_le_bytes(b) as f32)
                }
            } else if ty == dt::FLOAT {
                t.float_data.clone()
            } else {
                t.double_data.iter().map(|&v| v as f32).collect()
            };
            Arr::F(Nd::new(shape, data).map_err(|e| format!("tensor {:?}: {e}", t.name))?)
        }
        dt::INT64
        | dt::INT32
        | dt::INT16
        | dt::INT8
        | dt::UINT8
        | dt::UINT16
        | dt::BOOL
        | dt::UINT32
        | dt::UINT64 => {
            let data: Vec<i64> = if !raw.is_empty() {
                let w = match ty {
                    dt::INT64 | dt::UINT64 => 8,
                    dt::INT32 | dt::UINT32 => 4,
                    dt::INT16 | dt::UINT16 => 2,
                    _ => 1,
                };
                sized(w)?;
                match ty {
                    dt::INT64 | dt::UINT64 => le::<8, i64>(raw, i64::from_le_bytes),
                    dt::INT32 => le::<4, i64>(raw, |b| i64::from(i32::from_le_bytes(b))),
                    dt::UINT32 => le::<4, i64>(raw, |b| i64::from(u32::from_le_bytes(b))),
                    dt::INT16 => le::<2, i64>(raw, |b| i64::from(i16::from_le_bytes(b))),
                    dt::UINT16 => le::<2, i64>(raw, |b| i64::from(u16::from_le_bytes(b))),
                    dt::INT8 => ints(1, &|c| i64::from(c[0] as i8)),
                    _ => ints(1, &|c| i64::from(c[0])),
                }
            } else {
                match ty {
                    dt::INT64 => t.int64_data.clone(),
                    dt::UINT32 | dt::UINT64 => t.uint64_data.iter().map(|&v| v as i64).collect(),
                    _ => t.int32_data.iter().map(|&v| i64::from(v)).collect(),
                }
            };
            Arr::I(Nd::new(shape, data).map_err(|e| format!("tensor {:?}: {e}", t.name))?)
        }
        other => bail!(
            "tensor {:?} has data type {other}, which import does not read",
            t.name
        ),
    };
    Ok(arr)
}

fn node_name(n: &pb::NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        format!(
            "<{} producing {}>",
            n.op_type,
            n.output.first().map_or("nothing", |s| s)
        )
    }
}

fn node_label(n: &pb::NodeProto) -> String {
    format!("{} ({})", node_name(n), n.op_type)
}

// ---------------------------------------------------------------------------------------
// Constant folding.

fn cast_arr(a: &Arr, to: i64) -> Res<Arr> {
    let wrap = |v: i64| -> i64 {
        match to {
            dt::INT32 => i64::from(v as i32),
            dt::INT16 => i64::from(v as i16),
            dt::INT8 => i64::from(v as i8),
            dt::UINT8 => i64::from(v as u8),
            dt::UINT16 => i64::from(v as u16),
            dt::UINT32 => i64::from(v as u32),
            dt::BOOL => i64::from(v != 0),
            _ => v,
        }
    };
    Ok(match (a, to) {
        (Arr::F(x), dt::FLOAT | dt::DOUBLE) => Arr::F(x.clone()),
        (Arr::I(x), dt::FLOAT | dt::DOUBLE) => Arr::F(x.map(|v| v as f32)),
        (Arr::F(x), dt::BOOL) => Arr::I(x.map(|v| i64::from(v != 0.0))),
        (Arr::F(x), t) if is_int_type(t) => Arr::I(x.map(|v| wrap(v as i64))),
        (Arr::I(x), t) if is_int_type(t) => Arr::I(x.map(wrap)),
        _ => bail!("Cast to data type {to} is not supported"),
    })
}

fn is_int_type(t: i64) -> bool {
    matches!(
        t,
        dt::INT64
            | dt::INT32
            | dt::INT16
            | dt::INT8
            | dt::UINT8
            | dt::UINT16
            | dt::UINT32
            | dt::UINT64
            | dt::BOOL
    )
}

fn arith(op: &str, n: &pb::NodeProto, a: &Arr, b: &Arr) -> Res<Arr> {
    let fmod = attr_i(n, "fmod", 0)?;
    Ok(match (a, b) {
        (Arr::F(x), Arr::F(y)) => {
            let f: fn(f32, f32) -> f32 = match op {
                "Add" => |p, q| p + q,
                "Sub" => |p, q| p - q,
                "Mul" => |p, q| p * q,
                "Div" => |p, q| p / q,
                "Pow" => libm::powf,
                "Mod" => |p, q| p % q,
                "Min" => f32::min,
                "Max" => f32::max,
                _ => {
                    let c: fn(f32, f32) -> bool = match op {
                        "Equal" => |p, q| p == q,
                        "Less" => |p, q| p < q,
                        "Greater" => |p, q| p > q,
                        "LessOrEqual" => |p, q| p <= q,
                        "GreaterOrEqual" => |p, q| p >= q,
                        _ => bail!("{op} of float constants is not supported"),
                    };
                    return Ok(Arr::I(x.zip(y, |p, q| Ok(i64::from(c(p, q))))?));
                }
            };
            Arr::F(x.zip(y, |p, q| Ok(f(p, q)))?)
        }
        (Arr::I(x), Arr::I(y)) => {
            let r = x.zip(y, |p, q| {
                Ok(match op {
                    "Add" => p.wrapping_add(q),
                    "Sub" => p.wrapping_sub(q),
                    "Mul" => p.wrapping_mul(q),
                    "Div" | "Mod" if q == 0 => bail!("integer {op} by zero"),
                    "Div" => p.wrapping_div(q),
                    "Mod" => {
                        let r = p.wrapping_rem(q);
                        if fmod == 0 && r != 0 && ((r < 0) != (q < 0)) {
                            r + q
                        } else {
                            r
                        }
                    }
                    "Pow" => u32::try_from(q)
                        .ok()
                        .and_then(|e| p.checked_pow(e))
                        .ok_or_else(|| format!("integer Pow {p}^{q} is out of range"))?,
                    "Min" => p.min(q),
                    "Max" => p.max(q),
                    "Equal" => i64::from(p == q),
                    "Less" => i64::from(p < q),
                    "Greater" => i64::from(p > q),
                    "LessOrEqual" => i64::from(p <= q),
                    "GreaterOrEqual" => i64::from(p >= q),
                    "And" => i64::from(p != 0 && q != 0),
                    "Or" => i64::from(p != 0 || q != 0),
                    "Xor" => i64::from((p != 0) != (q != 0)),
                    _ => bail!("{op} of integer constants is not supported"),
                })
            })?;
            Arr::I(r)
        }
        _ => bail!("{op} of a float and an integer tensor"),
    })
}

/// numpy-style matmul of float constants.
fn matmul_f(a: &Nd<f32>, b: &Nd<f32>) -> Res<Nd<f32>> {
    if a.shape.is_empty() || b.shape.is_empty() {
        bail!("MatMul of a scalar");
    }
    let a2 = if a.shape.len() == 1 {
        a.reshape(vec![1, a.shape[0]])?
    } else {
        a.clone()
    };
    let b2 = if b.shape.len() == 1 {
        b.reshape(vec![b.shape[0], 1])?
    } else {
        b.clone()
    };
    let (ra, rb) = (a2.shape.len(), b2.shape.len());
    let (m, k, k2, n) = (
        a2.shape[ra - 2],
        a2.shape[ra - 1],
        b2.shape[rb - 2],
        b2.shape[rb - 1],
    );
    if k != k2 {
        bail!("MatMul of {:?} and {:?}", a.shape, b.shape);
    }
    let batch = broadcast_shapes(&a2.shape[..ra - 2], &b2.shape[..rb - 2])?;
    let nb = size_of(&batch)?;
    let macs = (nb as u64) * (m as u64) * (k as u64) * (n as u64);
    if macs > MAX_FOLD_MACS {
        bail!("folding this constant MatMul would take {macs} multiply-adds");
    }
    let mut sa = batch.clone();
    sa.extend([m, k]);
    let mut sb = batch.clone();
    sb.extend([k, n]);
    let (a3, b3) = (a2.broadcast_to(&sa)?, b2.broadcast_to(&sb)?);
    let mut out = Vec::with_capacity(size_of(&[nb, m, n])?);
    for bi in 0..nb {
        let (pa, pb) = (&a3.data[bi * m * k..], &b3.data[bi * k * n..]);
        for i in 0..m {
            for j in 0..n {
                out.push((0..k).map(|l| pa[i * k + l] * pb[l * n + j]).sum());
            }
        }
    }
    let mut shape = batch;
    if a.shape.len() > 1 {
        shape.push(m);
    }
    if b.shape.len() > 1 {
        shape.push(n);
    }
    Nd::new(shape, out)
}

/// Computes a layout op's [`Layout`] from the input shape and its constant operands.
fn layout_for(n: &pb::NodeProto, shape: &[usize], params: &[Option<&Arr>]) -> Res<Layout> {
    let param = |i: usize| params.get(i).copied().flatten();
    let need =
        |i: usize, what: &str| param(i).ok_or_else(|| format!("the {what} input is missing"));
    let r = shape.len();
    Ok(match n.op_type.as_str() {
        "Reshape" => {
            let spec = need(1, "shape")?.ints()?;
            let allowzero = attr_i(n, "allowzero", 0)? != 0;
            let mut out = Vec::with_capacity(spec.len());
            let mut infer = None;
            for (k, &d) in spec.iter().enumerate() {
                match d {
                    -1 if infer.is_none() => {
                        infer = Some(k);
                        out.push(1);
                    }
                    0 if !allowzero => match shape.get(k) {
                        Some(&s) => out.push(s),
                        None => bail!("Reshape copies dimension {k} of a rank-{r} input"),
                    },
                    d if d >= 0 => out.push(d as usize),
                    _ => bail!("Reshape to {spec:?}"),
                }
            }
            let total: usize = shape.iter().product();
            if let Some(k) = infer {
                let rest = out
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .unwrap_or(0);
                if rest == 0 || !total.is_multiple_of(rest) {
                    bail!("cannot reshape {shape:?} to {spec:?}");
                }
                out[k] = total / rest;
            }
            Layout::Reshape(out)
        }
        "Flatten" => {
            let a = attr_i(n, "axis", 1)?;
            let a = if a < 0 { a + r as i64 } else { a };
            if a < 0 || a > r as i64 {
                bail!("Flatten axis out of range for rank {r}");
            }
            let a = a as usize;
            Layout::Reshape(vec![
                shape[..a].iter().product(),
                shape[a..].iter().product(),
            ])
        }
        "Transpose" => {
            let perm = match attr_ints(n, "perm")? {
                Some(p) => p
                    .iter()
                    .map(|&x| usize::try_from(x).map_err(|_| format!("perm {p:?}")))
                    .collect::<Res<Vec<_>>>()?,
                None => (0..r).rev().collect(),
            };
            Layout::Transpose(perm)
        }
        "Squeeze" => {
            let out = match param(1) {
                Some(axes) => {
                    let axes = axes
                        .ints()?
                        .iter()
                        .map(|&a| norm_axis(a, r))
                        .collect::<Res<HashSet<usize>>>()?;
                    if let Some(&a) = axes.iter().find(|&&a| shape[a] != 1) {
                        bail!("Squeeze of axis {a}, of size {}", shape[a]);
                    }
                    (0..r)
                        .filter(|k| !axes.contains(k))
                        .map(|k| shape[k])
                        .collect()
                }
                None => shape.iter().copied().filter(|&d| d != 1).collect(),
            };
            Layout::Reshape(out)
        }
        "Unsqueeze" => {
            let axes = need(1, "axes")?.ints()?;
            let ro = r + axes.len();
            let axes = axes
                .iter()
                .map(|&a| norm_axis(a, ro))
                .collect::<Res<HashSet<usize>>>()?;
            if axes.len() + r != ro {
                bail!("Unsqueeze with repeated axes");
            }
            let mut dims = shape.iter();
            let out = (0..ro)
                .map(|k| {
                    if axes.contains(&k) {
                        1
                    } else {
                        *dims.next().unwrap_or(&1)
                    }
                })
                .collect();
            Layout::Reshape(out)
        }
        "Slice" => {
            let starts = need(1, "starts")?.ints()?;
            let ends = need(2, "ends")?.ints()?;
            let axes: Vec<i64> = match param(3) {
                Some(a) => a.ints()?.to_vec(),
                None => (0..starts.len() as i64).collect(),
            };
            let steps: Vec<i64> = match param(4) {
                Some(s) => s.ints()?.to_vec(),
                None => vec![1; starts.len()],
            };
            if ends.len() != starts.len()
                || axes.len() != starts.len()
                || steps.len() != starts.len()
            {
                bail!("Slice's starts, ends, axes and steps differ in length");
            }
            let mut out = Vec::new();
            let mut seen = HashSet::new();
            for k in 0..starts.len() {
                let axis = norm_axis(axes[k], r)?;
                if !seen.insert(axis) {
                    bail!("Slice of axis {axis} twice");
                }
                let (s, st, len) = slice_range(shape[axis], starts[k], ends[k], steps[k])?;
                out.push((axis, s, st, len));
            }
            Layout::Slice(out)
        }
        "Expand" => {
            let target: Vec<usize> = need(1, "shape")?
                .ints()?
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("Expand to dimension {d}")))
                .collect::<Res<_>>()?;
            Layout::Expand(broadcast_shapes(shape, &target)?)
        }
        "Tile" => {
            let reps = need(1, "repeats")?.ints()?;
            if reps.len() != r {
                bail!("Tile with {} repeats of a rank-{r} input", reps.len());
            }
            let reps = reps
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("Tile repeat {d}")))
                .collect::<Res<Vec<usize>>>()?;
            let out: Vec<usize> = shape
                .iter()
                .zip(&reps)
                .map(|(&d, &k)| d.checked_mul(k).ok_or("Tile too large".to_string()))
                .collect::<Res<_>>()?;
            size_of(&out)?;
            Layout::Tile(reps)
        }
        "Gather" => {
            let axis = norm_axis(attr_i(n, "axis", 0)?, r)?;
            let ind = need(1, "indices")?;
            let dim = shape[axis];
            let list = ind
                .ints()?
                .iter()
                .map(|&i| norm_index(i, dim))
                .collect::<Res<Vec<usize>>>()?;
            Layout::Gather {
                axis,
                ind: list,
                ind_shape: ind.shape().to_vec(),
            }
        }
        op => bail!("internal: {op} is not a layout op"),
    })
}

/// ONNX Slice on one axis: `(start, step, len)`, clamped as the spec says.
fn slice_range(dim: usize, start: i64, end: i64, step: i64) -> Res<(usize, isize, usize)> {
    if step == 0 {
        bail!("Slice with step 0");
    }
    let d = dim as i64;
    let norm = |v: i64| if v < 0 { v.saturating_add(d) } else { v };
    let (s, e) = (norm(start), norm(end));
    let (s, len) = if step > 0 {
        let (s, e) = (s.clamp(0, d), e.clamp(0, d));
        (s, if e > s { (e - s - 1) / step + 1 } else { 0 })
    } else {
        let (s, e) = (s.clamp(-1, d - 1), e.clamp(-1, d - 1));
        let back = step
            .checked_neg()
            .ok_or("Slice step out of range".to_string())?;
        (s, if s > e { (s - e - 1) / back + 1 } else { 0 })
    };
    Ok(match len {
        0 => (0, 1, 0),
        // One element: the step is never taken (and may be huge).
        1 => (s as usize, 1, 1),
        _ => (s as usize, step as isize, len as usize),
    })
}

/// Split's pieces along its axis, as slices.
fn split_layouts(n: &pb::NodeProto, shape: &[usize], split: Option<&Arr>) -> Res<Vec<Layout>> {
    let axis = norm_axis(attr_i(n, "axis", 0)?, shape.len())?;
    let dim = shape[axis];
    let parts = n.output.len();
    if parts == 0 {
        bail!("Split with no outputs");
    }
    let sizes: Vec<usize> = match split {
        Some(s) => s
            .ints()?
            .iter()
            .map(|&v| usize::try_from(v).map_err(|_| format!("Split size {v}")))
            .collect::<Res<_>>()?,
        None => {
            let chunk = dim.div_ceil(parts);
            (0..parts)
                .map(|k| chunk.min(dim.saturating_sub(k * chunk)))
                .collect()
        }
    };
    if sizes.len() != parts || sizes.iter().sum::<usize>() != dim {
        bail!("Split sizes {sizes:?} do not cut a dimension of {dim} into {parts}");
    }
    let mut start = 0;
    Ok(sizes
        .iter()
        .map(|&len| {
            let l = Layout::Slice(vec![(axis, start, 1, len)]);
            start += len;
            l
        })
        .collect())
}

fn shape_arr(shape: &[usize], n: &pb::NodeProto) -> Res<Arr> {
    let r = shape.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(attr_i(n, "start", 0)?);
    let end = clampi(attr_i(n, "end", r)?);
    let dims: Vec<i64> = shape[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(Arr::I(Nd::new(vec![dims.len()], dims)?))
}

fn constant_attr(n: &pb::NodeProto) -> Res<Arr> {
    if let Some(t) = attr_t(n, "value")? {
        return decode_tensor(t);
    }
    if let Some(a) = typed(n, "value_float", 1)? {
        return Ok(Arr::F(Nd::scalar(a.f)));
    }
    if let Some(a) = typed(n, "value_floats", 6)? {
        return Ok(Arr::F(Nd::new(vec![a.floats.len()], a.floats.clone())?));
    }
    if let Some(a) = typed(n, "value_int", 2)? {
        return Ok(Arr::I(Nd::scalar(a.i)));
    }
    if let Some(a) = typed(n, "value_ints", 7)? {
        return Ok(Arr::I(Nd::new(vec![a.ints.len()], a.ints.clone())?));
    }
    bail!("Constant without a supported value attribute")
}

/// Evaluates a node whose inputs are all constant.
fn fold(n: &pb::NodeProto, c: &[Option<Rc<Arr>>]) -> Res<Vec<Arr>> {
    let op = n.op_type.as_str();
    let arg = |i: usize| -> Res<&Arr> {
        c.get(i)
            .and_then(|x| x.as_deref())
            .ok_or_else(|| format!("input {i} is missing"))
    };
    let params: Vec<Option<&Arr>> = c.iter().map(|x| x.as_deref()).collect();
    Ok(vec![match op {
        "Reshape" | "Flatten" | "Transpose" | "Squeeze" | "Unsqueeze" | "Slice" | "Expand"
        | "Tile" | "Gather" => {
            let x = arg(0)?;
            x.layout(&layout_for(n, x.shape(), &params)?)?
        }
        "Split" => {
            let x = arg(0)?;
            return split_layouts(n, x.shape(), params.get(1).copied().flatten())?
                .iter()
                .map(|l| x.layout(l))
                .collect();
        }
        "Identity" | "Dropout" => arg(0)?.clone(),
        "Cast" => cast_arr(arg(0)?, attr_i(n, "to", 0)?)?,
        "Shape" => shape_arr(arg(0)?.shape(), n)?,
        "Size" => Arr::I(Nd::scalar(arg(0)?.len() as i64)),
        "Concat" => {
            let parts: Vec<&Arr> = params.iter().flatten().copied().collect();
            let Some(first) = parts.first() else {
                bail!("Concat of nothing");
            };
            let axis = norm_axis(attr_i(n, "axis", 0)?, first.shape().len())?;
            match first {
                Arr::F(_) => {
                    let p = parts.iter().map(|a| a.floats()).collect::<Res<Vec<_>>>()?;
                    Arr::F(Nd::concat(&p, axis)?)
                }
                Arr::I(_) => {
                    let p = parts
                        .iter()
                        .map(|a| match a {
                            Arr::I(x) => Ok(x),
                            Arr::F(_) => Err("Concat of float and integer tensors".to_string()),
                        })
                        .collect::<Res<Vec<_>>>()?;
                    Arr::I(Nd::concat(&p, axis)?)
                }
            }
        }
        "ConstantOfShape" => {
            let shape = arg(0)?
                .ints()?
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("ConstantOfShape dimension {d}")))
                .collect::<Res<Vec<usize>>>()?;
            let total = size_of(&shape)?;
            match attr_t(n, "value")?.map(decode_tensor).transpose()? {
                None => Arr::F(Nd::new(shape, vec![0.0; total])?),
                Some(Arr::F(v)) if v.len() == 1 => Arr::F(Nd::new(shape, vec![v.data[0]; total])?),
                Some(Arr::I(v)) if v.len() == 1 => Arr::I(Nd::new(shape, vec![v.data[0]; total])?),
                Some(_) => bail!("ConstantOfShape's value must hold one element"),
            }
        }
        "Range" => match (arg(0)?, arg(1)?, arg(2)?) {
            (Arr::I(s), Arr::I(l), Arr::I(d)) if s.len() == 1 && l.len() == 1 && d.len() == 1 => {
                let (s, l, d) = (s.data[0] as i128, l.data[0] as i128, d.data[0] as i128);
                if d == 0 {
                    bail!("Range with delta 0");
                }
                let count = ((l - s + d - d.signum()) / d).max(0);
                if count > MAX_ELEMENTS as i128 {
                    bail!("Range of {count} elements");
                }
                let v: Vec<i64> = (0..count).map(|k| (s + k * d) as i64).collect();
                Arr::I(Nd::new(vec![v.len()], v)?)
            }
            (Arr::F(s), Arr::F(l), Arr::F(d)) if s.len() == 1 && l.len() == 1 && d.len() == 1 => {
                let (s, l, d) = (s.data[0] as f64, l.data[0] as f64, d.data[0] as f64);
                let count = ((l - s) / d).ceil();
                if !count.is_finite() || count > MAX_ELEMENTS as f64 {
                    bail!("Range from {s} to {l} by {d}");
                }
                let v: Vec<f32> = (0..count.max(0.0) as usize)
                    .map(|k| (s + k as f64 * d) as f32)
                    .collect();
                Arr::F(Nd::new(vec![v.len()], v)?)
            }
            _ => bail!("Range needs three scalars of one type"),
        },
        "Add" | "Sub" | "Mul" | "Div" | "Mod" | "Pow" | "Min" | "Max" | "Equal" | "Less"
        | "Greater" | "LessOrEqual" | "GreaterOrEqual" | "And" | "Or" | "Xor"
            if c.len() == 2 =>
        {
            arith(op, n, arg(0)?, arg(1)?)?
        }
        "Where" => {
            let cond = match arg(0)? {
                Arr::I(x) => x,
                Arr::F(_) => bail!("Where's condition is not boolean"),
            };
            match (arg(1)?, arg(2)?) {
                (Arr::F(x), Arr::F(y)) => {
                    let xy = x.zip(y, |p, q| Ok((p, q)))?;
                    Arr::F(cond.zip(&xy, |k, (p, q)| Ok(if k != 0 { p } else { q }))?)
                }
                (Arr::I(x), Arr::I(y)) => {
                    let xy = x.zip(y, |p, q| Ok((p, q)))?;
                    Arr::I(cond.zip(&xy, |k, (p, q)| Ok(if k != 0 { p } else { q }))?)
                }
                _ => bail!("Where of a float and an integer tensor"),
            }
        }
        "Not" => Arr::I(match arg(0)? {
            Arr::I(x) => x.map(|v| i64::from(v == 0)),
            Arr::F(_) => bail!("Not of a float tensor"),
        }),
        "Neg" => match arg(0)? {
            Arr::F(x) => Arr::F(x.map(|v| -v)),
            Arr::I(x) => Arr::I(x.map(|v| v.wrapping_neg())),
        },
        "Abs" => match arg(0)? {
            Arr::F(x) => Arr::F(x.map(f32::abs)),
            Arr::I(x) => Arr::I(x.map(|v| v.wrapping_abs())),
        },
        "Sqrt" | "Exp" | "Log" | "Tanh" | "Erf" | "Sigmoid" | "Reciprocal" | "Floor" | "Ceil" => {
            let f: fn(f32) -> f32 = match op {
                "Sqrt" => f32::sqrt,
                "Exp" => libm::expf,
                "Log" => libm::logf,
                "Tanh" => libm::tanhf,
                "Erf" => |v| erf(v as f64) as f32,
                "Sigmoid" => |v| 1.0 / (1.0 + libm::expf(-v)),
                "Reciprocal" => |v| 1.0 / v,
                "Floor" => f32::floor,
                _ => f32::ceil,
            };
            Arr::F(arg(0)?.floats()?.map(f))
        }
        "MatMul" => Arr::F(matmul_f(arg(0)?.floats()?, arg(1)?.floats()?)?),
        "Gemm" => {
            let mut a = arg(0)?.floats()?.clone();
            let mut b = arg(1)?.floats()?.clone();
            if a.shape.len() != 2 || b.shape.len() != 2 {
                bail!("Gemm of {:?} and {:?}", a.shape, b.shape);
            }
            if attr_i(n, "transA", 0)? != 0 {
                a = a.transpose(&[1, 0])?;
            }
            if attr_i(n, "transB", 0)? != 0 {
                b = b.transpose(&[1, 0])?;
            }
            let alpha = attr_f(n, "alpha", 1.0)?;
            let mut y = matmul_f(&a, &b)?.map(|v| v * alpha);
            if let Some(cc) = params.get(2).copied().flatten() {
                let beta = attr_f(n, "beta", 1.0)?;
                y = y.zip(cc.floats()?, |p, q| Ok(p + beta * q))?;
                if y.shape.len() != 2 {
                    bail!("Gemm's C does not broadcast to its output");
                }
            }
            Arr::F(y)
        }
        _ => bail!("operator {op} is not supported (here on constant inputs)"),
    }])
}

// ---------------------------------------------------------------------------------------
// The importer.

struct Importer<'m> {
    g: Graph,
    inits: HashMap<&'m str, &'m pb::TensorProto>,
    /// Live values: each is removed once its last consumer has been lowered, so a buffer
    /// referenced by nothing here may be changed in place.
    env: HashMap<String, Value>,
    uses: HashMap<String, usize>,
    /// Each buffer as `rows × cols`.
    shapes: Vec<(usize, usize)>,
    /// The node that last wrote each buffer.
    producer: HashMap<u32, usize>,
}

/// The buffers an op reads or writes.
fn op_buffers(op: &Op) -> Vec<u32> {
    match *op {
        Op::PatchEmbed { input, out, .. } => vec![input, out.buf],
        Op::Embedding { ids, out, .. } => vec![ids, out.buf],
        Op::LayerNorm { x, out, .. } | Op::Linear { x, out, .. } => vec![x.buf, out.buf],
        Op::Attention { q, k, v, out, .. } => {
            let mut b = vec![k.buf, v.buf, out.buf];
            if let Query::Mat(m) = q {
                b.push(m.buf);
            }
            b
        }
        Op::Add { a, b, out } => vec![a.buf, b.buf, out.buf],
        Op::Activate { x, .. } => vec![x.buf],
    }
}

pub(crate) fn import_model(
    model: &pb::ModelProto,
    kind: TowerKind,
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
    fn new(graph: &'m pb::GraphProto, kind: TowerKind, input: TowerInput) -> Res<Self> {
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
                TowerKind::Vision,
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
            (TowerKind::Text, TowerInput::Tokens { len }) => (vec![1, len], true, 1, len),
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
            matches!(i64::from(tt.elem_type), dt::INT64 | dt::INT32)
        } else {
            i64::from(tt.elem_type) == dt::FLOAT
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
            use pb::tensor_shape_proto::dimension::Value as D;
            let dims: Vec<Option<i64>> = shape
                .dim
                .iter()
                .map(|d| match d.value {
                    Some(D::DimValue(v)) => Some(v),
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

    fn get(&mut self, name: &str) -> Res<Value> {
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

    fn uses(&self, name: &str) -> usize {
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
    fn live_reader(&self, b: u32, skip: impl Fn(&str, &Value) -> bool) -> Option<&str> {
        self.env
            .iter()
            .find(|(k, v)| v.reads(b) && self.uses(k) > 0 && !skip(k, v))
            .map(|(k, _)| k.as_str())
    }

    /// Whether node `p` is the last op to read or write buffer `b`.
    fn last_toucher(&self, p: usize, b: u32) -> bool {
        self.g
            .nodes
            .get(p + 1..)
            .is_some_and(|later| later.iter().all(|n| !op_buffers(&n.op).contains(&b)))
    }

    fn new_buf(&mut self, rows: usize, cols: usize) -> Res<u32> {
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

    fn whole(&self, b: u32) -> Mat {
        let (rows, cols) = self.shapes[b as usize];
        Mat::dense(b, rows as u32, cols as u32)
    }

    fn push(&mut self, name: &str, op: Op) {
        let out = op.output().buf;
        self.g.push(name, op);
        self.producer.insert(out, self.g.nodes.len() - 1);
    }

    fn tensor(&mut self, name: &str, dims: Vec<usize>, data: Vec<f32>) -> u32 {
        self.g.add_f32(name, dims, data)
    }

    /// A window of buffer `b`, checked to lie inside it.
    fn fit_mat(&self, b: u32, offset: i64, rows: usize, cols: usize, stride: i64) -> Res<Mat> {
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
    fn mat(&self, v: &View) -> Res<Mat> {
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
    fn head_mat(
        &self,
        buf: u32,
        idx: &Nd<i64>,
        heads: usize,
        rows: usize,
        dh: usize,
        what: &str,
    ) -> Res<Mat> {
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

    /// The value as data in a buffer: pending element-wise expressions are applied here.
    fn materialise(&mut self, name: &str, v: Value) -> Res<View> {
        match v {
            Value::View(x) => Ok(x),
            Value::Elem(e) => match classify(&e.ex) {
                Kind::Identity => Ok(e.src),
                Kind::Act(act) => {
                    self.activate(&e, act)?;
                    Ok(e.src)
                }
                Kind::Scale(s) => bail!(
                    "the element-wise expression ending at {} scales by {s}, which only \
                     attention scores support",
                    e.node
                ),
                Kind::Other => bail!(
                    "the element-wise expression ending at {} is neither GELU (tanh or erf \
                     form) nor the identity",
                    e.node
                ),
            },
            Value::Const(_) => bail!("input {name:?} is a constant where an activation is needed"),
            Value::Scores(_) => bail!(
                "attention scores ({name:?}) can only be scaled, soft-maxed and multiplied \
                 with the values"
            ),
        }
    }

    /// Applies `act` to the whole buffer under `e` in place: fused into the linear layer
    /// that wrote it when nothing has touched it since, else as an [`Op::Activate`].
    fn activate(&mut self, e: &Elem, act: Activation) -> Res<()> {
        let b = e.src.buf;
        if b == self.g.input_buf {
            bail!("an activation of the tower input is not supported");
        }
        let same =
            |v: &Value| matches!(v, Value::Elem(o) if o.src.buf == b && Rc::ptr_eq(&o.ex, &e.ex));
        if let Some(k) = self.live_reader(b, |_, v| same(v)) {
            bail!(
                "{act:?} would be applied in place, but {k:?} still needs the values it \
                 would overwrite"
            );
        }
        let whole = self.whole(b);
        let fusable = match self.producer.get(&b) {
            Some(&p) if self.last_toucher(p, b) => Some(p),
            _ => None,
        };
        let mut fused = false;
        if let Some(p) = fusable {
            if let Op::Linear { act: a, out, .. } = &mut self.g.nodes[p].op {
                if *a == Activation::None && *out == whole {
                    *a = act;
                    fused = true;
                }
            }
        }
        if !fused {
            let node = e.node.to_string();
            self.push(&node, Op::Activate { x: whole, act });
        }
        // Every pending copy of this expression now is the buffer itself.
        for v in self.env.values_mut() {
            if let Value::Elem(o) = v {
                if o.src.buf == b && Rc::ptr_eq(&o.ex, &e.ex) {
                    *v = Value::View(o.src.clone());
                }
            }
        }
        Ok(())
    }

    /// An attention operand: a view, with any constant scaling split off.
    fn scaled_operand(&mut self, name: &str, v: Value) -> Res<(View, f64)> {
        let (x, s) = match v {
            Value::Elem(e) => match classify(&e.ex) {
                Kind::Scale(s) => (e.src, s),
                Kind::Identity => (e.src, 1.0),
                _ => (self.materialise(name, Value::Elem(e))?, 1.0),
            },
            other => (self.materialise(name, other)?, 1.0),
        };
        if x.int {
            bail!("token ids are used as activations");
        }
        Ok((x, s))
    }

    fn node(&mut self, n: &pb::NodeProto) -> Res<()> {
        if !(n.domain.is_empty() || n.domain == "ai.onnx") {
            bail!("operators of domain {:?} are not supported", n.domain);
        }
        let op = n.op_type.as_str();
        let outs: Vec<Value> = if op == "Constant" {
            vec![Value::Const(Rc::new(constant_attr(n)?))]
        } else {
            let ins = n
                .input
                .iter()
                .map(|s| {
                    if s.is_empty() {
                        Ok(None)
                    } else {
                        self.get(s).map(Some)
                    }
                })
                .collect::<Res<Vec<Option<Value>>>>()?;
            if ins
                .iter()
                .all(|v| matches!(v, None | Some(Value::Const(_))))
            {
                let consts: Vec<Option<Rc<Arr>>> = ins
                    .iter()
                    .map(|v| match v {
                        Some(Value::Const(a)) => Some(a.clone()),
                        _ => None,
                    })
                    .collect();
                fold(n, &consts)?
                    .into_iter()
                    .map(|a| Value::Const(Rc::new(a)))
                    .collect()
            } else {
                self.lower(n, ins)?
            }
        };
        for (k, name) in n.output.iter().enumerate() {
            if name.is_empty() || self.uses(name) == 0 {
                continue;
            }
            match outs.get(k) {
                Some(v) => {
                    self.env.insert(name.clone(), v.clone());
                }
                None => bail!("output {k} ({name:?}) is not supported"),
            }
        }
        Ok(())
    }

    /// A node with at least one non-constant input.
    fn lower(&mut self, n: &pb::NodeProto, ins: Vec<Option<Value>>) -> Res<Vec<Value>> {
        let op = n.op_type.as_str();
        let name = node_name(n);
        let input = |i: usize| -> Res<Value> {
            ins.get(i)
                .cloned()
                .flatten()
                .ok_or_else(|| format!("input {i} is missing"))
        };
        let in_name = |i: usize| n.input.get(i).map_or("", |s| s.as_str());
        // Operands that shape or index an activation must be known now.
        let params = ins
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                None => Ok(None),
                Some(Value::Const(a)) => Ok(Some(a.as_ref())),
                Some(_) if i == 0 => Ok(None),
                Some(_) => Err(i),
            })
            .collect::<std::result::Result<Vec<Option<&Arr>>, usize>>();
        let x = input(0)?;
        Ok(match op {
            "Identity" => vec![x],
            "Dropout" => {
                let training = match ins.get(2).cloned().flatten() {
                    None => false,
                    Some(Value::Const(t)) => t.ints()?.iter().any(|&v| v != 0),
                    Some(_) => true,
                };
                if training {
                    bail!("Dropout in training mode");
                }
                vec![x]
            }
            "Cast" => {
                let to = attr_i(n, "to", 0)?;
                let ok = match &x {
                    // Narrower integer types would wrap large ids.
                    Value::View(v) if v.int => matches!(to, dt::INT32 | dt::INT64),
                    _ => matches!(to, dt::FLOAT | dt::DOUBLE),
                };
                if !ok {
                    bail!("casting an activation to data type {to} is not supported");
                }
                vec![x]
            }
            "Shape" => vec![Value::Const(Rc::new(shape_arr(x.shape(), n)?))],
            "Size" => vec![Value::Const(Rc::new(Arr::I(Nd::scalar(
                x.shape().iter().product::<usize>() as i64,
            ))))],
            "Reshape" | "Flatten" | "Transpose" | "Squeeze" | "Unsqueeze" | "Slice" | "Expand"
            | "Tile" | "Split" | "Gather"
                if params.is_ok() =>
            {
                let params = params.map_err(|_| "internal".to_string())?;
                let layouts = if op == "Split" {
                    split_layouts(n, x.shape(), params.get(1).copied().flatten())?
                } else {
                    vec![layout_for(n, x.shape(), &params)?]
                };
                layouts
                    .iter()
                    .map(|l| relayout(&x, l))
                    .collect::<Res<Vec<Value>>>()?
            }
            "Gather" => match (&x, input(1)?) {
                (Value::Const(table), Value::View(ids)) if ids.int => {
                    vec![self.embedding(&name, table, &ids, attr_i(n, "axis", 0)?)?]
                }
                _ => bail!("Gather with indices computed from activations is not supported"),
            },
            "Reshape" | "Flatten" | "Transpose" | "Squeeze" | "Unsqueeze" | "Slice" | "Expand"
            | "Tile" | "Split" => {
                let i = params.err().unwrap_or(1);
                bail!(
                    "input {i} ({:?}) must be a constant, not computed from activations",
                    in_name(i)
                )
            }
            "Conv" => vec![self.patch_embed(n, &name, x, &ins)?],
            "MatMul" => vec![self.matmul(&name, (in_name(0), x), (in_name(1), input(1)?))?],
            "Gemm" => vec![self.gemm(n, &name, &ins)?],
            "LayerNormalization" => vec![self.layer_norm(n, &name, in_name(0), x, &ins)?],
            "Softmax" => match x {
                Value::Scores(mut s) if !s.probs => {
                    let axis = norm_axis(attr_i(n, "axis", -1)?, s.shape.len())?;
                    if axis + 1 != s.shape.len() {
                        bail!("Softmax over axis {axis} of attention scores (not the keys)");
                    }
                    s.probs = true;
                    vec![Value::Scores(s)]
                }
                _ => bail!("Softmax is only supported over attention scores (q·kᵀ)"),
            },
            "Add" | "Sub" | "Mul" | "Div" | "Pow" => {
                let b = input(1)?;
                let bin = match op {
                    "Add" => Bin::Add,
                    "Sub" => Bin::Sub,
                    "Mul" => Bin::Mul,
                    "Div" => Bin::Div,
                    _ => Bin::Pow,
                };
                vec![self.binary(&name, bin, (in_name(0), x), (in_name(1), b))?]
            }
            "Neg" | "Abs" | "Sqrt" | "Exp" | "Tanh" | "Erf" | "Sigmoid" | "Reciprocal" => {
                let u = match op {
                    "Neg" => Un::Neg,
                    "Abs" => Un::Abs,
                    "Sqrt" => Un::Sqrt,
                    "Exp" => Un::Exp,
                    "Tanh" => Un::Tanh,
                    "Erf" => Un::Erf,
                    "Sigmoid" => Un::Sigmoid,
                    _ => Un::Recip,
                };
                let Some((src, ex, ops)) = elementwise(&x) else {
                    bail!("{op} of this value is not supported");
                };
                vec![make_elem(src, Rc::new(Ex::Un(u, ex)), ops + 1, &name)?]
            }
            _ => bail!("operator {op} is not supported on activations"),
        })
    }

    fn embedding(&mut self, name: &str, table: &Arr, ids: &View, axis: i64) -> Res<Value> {
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
            Op::Embedding {
                ids: ids.buf,
                table: t,
                table_scale: None,
                add,
                out: out_mat,
            },
        );
        let mut shape = ids.idx.shape.clone();
        shape.push(dim);
        Ok(Value::View(View {
            buf: out,
            idx: Rc::new(arange(shape)?),
            int: false,
        }))
    }

    fn patch_embed(
        &mut self,
        n: &pb::NodeProto,
        name: &str,
        x: Value,
        ins: &[Option<Value>],
    ) -> Res<Value> {
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
        let ints =
            |k: &str, d: i64| -> Res<Vec<i64>> { Ok(attr_ints(n, k)?.unwrap_or(vec![d; 2])) };
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
            Op::PatchEmbed {
                input,
                channels: u(channels)?,
                height: u(height)?,
                width: u(width)?,
                patch: u(p)?,
                weights: Weights::F32 { w: wt },
                add,
                out: out_mat,
            },
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

    /// `x · w` with `w` a constant `[in, out]` (leading dims of 1 allowed).
    fn linear(&mut self, name: &str, x: View, w: &Nd<f32>) -> Res<View> {
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
            Op::Linear {
                x: xm,
                weights: Weights::F32 { w: t },
                bias: None,
                act: Activation::None,
                out: out_mat,
            },
        );
        Ok(View {
            buf: out,
            idx: Rc::new(arange(out_shape)?),
            int: false,
        })
    }

    fn matmul(&mut self, name: &str, (an, a): (&str, Value), (bn, b): (&str, Value)) -> Res<Value> {
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
                    Value::Const(c) => (Q::Const(Rc::new(c.floats()?.clone())), 1.0),
                    other => {
                        let (v, s) = self.scaled_operand(an, other)?;
                        (Q::View(v), s)
                    }
                };
                let (kt, ks) = self.scaled_operand(bn, b)?;
                let qsh = match &q {
                    Q::View(v) => v.idx.shape.clone(),
                    Q::Const(c) => c.shape.clone(),
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

    fn attention(&mut self, name: &str, s: Scores, vn: &str, v: Value) -> Res<Value> {
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
            Q::View(q) => Query::Mat(self.head_mat(q.buf, &q.idx, heads, nq, dh, "queries")?),
            Q::Const(c) => {
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
            Op::Attention {
                q,
                k,
                v: vm,
                heads: u(heads)?,
                head_dim: u(dh)?,
                scale: s.scale as f32,
                precision: Precision::F32,
                out: out_mat,
            },
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

    fn gemm(&mut self, n: &pb::NodeProto, name: &str, ins: &[Option<Value>]) -> Res<Value> {
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
                let c = Arr::F(c.floats()?.map(|v| v * beta));
                match self.fold_add(None, &y, &c, 1.0)? {
                    Some(v) => Ok(v),
                    None => bail!("Gemm's C must be a bias (the same for every row)"),
                }
            }
            Some(_) => bail!("Gemm's C must be constant"),
        }
    }

    fn layer_norm(
        &mut self,
        n: &pb::NodeProto,
        name: &str,
        xn: &str,
        x: Value,
        ins: &[Option<Value>],
    ) -> Res<Value> {
        let x = self.materialise(xn, x)?;
        let r = x.idx.shape.len();
        if norm_axis(attr_i(n, "axis", -1)?, r)? + 1 != r {
            bail!("LayerNormalization is only supported over the last axis");
        }
        let eps = attr_f(n, "epsilon", 1e-5)?;
        let xm = self.mat(&x)?;
        let cols = xm.cols as usize;
        let param = |i: usize, what: &str| -> Res<Option<Vec<f32>>> {
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
            Op::LayerNorm {
                x: xm,
                gamma,
                beta,
                eps,
                out: out_mat,
            },
        );
        Ok(Value::View(View {
            buf: out,
            idx: Rc::new(arange(x.idx.shape.clone())?),
            int: false,
        }))
    }

    /// `x + sign·c` folded into the op that wrote `x` (a linear layer's bias, or a patch /
    /// token embedding's `add`), when that op wrote all of `x`'s buffer, nothing has read
    /// it since, and no other live value sees it. `None` when any of that fails.
    fn fold_add(
        &mut self,
        xname: Option<&str>,
        x: &View,
        c: &Arr,
        sign: f32,
    ) -> Res<Option<Value>> {
        let Arr::F(c) = c else { return Ok(None) };
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
            Op::Linear {
                bias,
                act: Activation::None,
                out,
                ..
            } if out == whole => {
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
                        if let Op::Linear { bias, .. } = &mut self.g.nodes[p].op {
                            *bias = Some(t);
                        }
                        (t, Vec::new())
                    }
                }
            }
            Op::PatchEmbed { add, out, .. } | Op::Embedding { add, out, .. } if out == whole => {
                (add, full)
            }
            _ => return Ok(None),
        };
        if !extra.is_empty() {
            match &mut self.g.tensor_mut(t).data {
                TensorData::F32(d) if d.len() == extra.len() => {
                    d.iter_mut().zip(&extra).for_each(|(a, e)| *a += e);
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

    fn binary(
        &mut self,
        name: &str,
        op: Bin,
        (an, a): (&str, Value),
        (bn, b): (&str, Value),
    ) -> Res<Value> {
        use Value as V;
        let scalar = |c: &Arr| {
            c.scalar_f()
                .ok_or_else(|| format!("{op:?} of attention scores with a non-scalar constant"))
        };
        match (&a, &b) {
            (V::Scores(s), V::Const(c)) if matches!(op, Bin::Mul | Bin::Div) => {
                let k = scalar(c)? as f64;
                let mut s = s.clone();
                s.scale *= if op == Bin::Mul { k } else { 1.0 / k };
                return Ok(V::Scores(s));
            }
            (V::Const(c), V::Scores(s)) if op == Bin::Mul => {
                let mut s = s.clone();
                s.scale *= scalar(c)? as f64;
                return Ok(V::Scores(s));
            }
            (V::Scores(_), _) | (_, V::Scores(_)) => {
                bail!("attention scores can only be scaled by a constant (masks and biases are not supported)")
            }
            _ => {}
        }
        // A constant added to a fresh linear/embedding output becomes its bias.
        match (&a, &b, op) {
            (V::View(x), V::Const(c), Bin::Add | Bin::Sub) => {
                let sign = if op == Bin::Add { 1.0 } else { -1.0 };
                if let Some(v) = self.fold_add(Some(an), x, c, sign)? {
                    return Ok(v);
                }
            }
            (V::Const(c), V::View(x), Bin::Add) => {
                if let Some(v) = self.fold_add(Some(bn), x, c, 1.0)? {
                    return Ok(v);
                }
            }
            _ => {}
        }
        match (elementwise(&a), elementwise(&b), &a, &b) {
            (Some((src, ex, ops)), None, _, V::Const(c)) => {
                let Some(k) = c.scalar_f() else {
                    bail!(
                        "{op:?} of an activation with a constant of shape {:?} is only \
                         supported as a bias right after a linear layer or embedding",
                        c.shape()
                    );
                };
                let src = broadcast_view(src, c.shape())?;
                make_elem(
                    src,
                    Rc::new(Ex::Bin(op, ex, Rc::new(Ex::C(k as f64)))),
                    ops + 1,
                    name,
                )
            }
            (None, Some((src, ex, ops)), V::Const(c), _) => {
                let Some(k) = c.scalar_f() else {
                    bail!(
                        "{op:?} of a constant of shape {:?} with an activation is only \
                         supported as a bias right after a linear layer or embedding",
                        c.shape()
                    );
                };
                let src = broadcast_view(src, c.shape())?;
                make_elem(
                    src,
                    Rc::new(Ex::Bin(op, Rc::new(Ex::C(k as f64)), ex)),
                    ops + 1,
                    name,
                )
            }
            (Some((sa, ea, oa)), Some((sb, eb, ob)), _, _) if sa.same(&sb) => {
                make_elem(sa, Rc::new(Ex::Bin(op, ea, eb)), oa + ob + 1, name)
            }
            (Some(_), Some(_), _, _) if op == Bin::Add => {
                self.residual(name, (an, a.clone()), (bn, b.clone()))
            }
            _ => bail!(
                "{op:?} of these operands is not supported (element-wise ops apply to one \
                 activation and scalar constants; activations are only added together)"
            ),
        }
    }

    fn residual(
        &mut self,
        name: &str,
        (an, a): (&str, Value),
        (bn, b): (&str, Value),
    ) -> Res<Value> {
        let x = self.materialise(an, a)?;
        let y = self.materialise(bn, b)?;
        if x.idx.shape != y.idx.shape {
            bail!(
                "adding activations of shapes {:?} and {:?} (broadcasting is not supported)",
                x.idx.shape,
                y.idx.shape
            );
        }
        let (ma, mb) = (self.mat(&x)?, self.mat(&y)?);
        let out = self.new_buf(ma.rows as usize, ma.cols as usize)?;
        let out_mat = self.whole(out);
        self.push(
            name,
            Op::Add {
                a: ma,
                b: mb,
                out: out_mat,
            },
        );
        Ok(Value::View(View {
            buf: out,
            idx: Rc::new(arange(x.idx.shape.clone())?),
            int: false,
        }))
    }

    fn finish(&mut self, out_name: &str) -> Res<()> {
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

/// Applies a layout op to any value.
fn relayout(v: &Value, l: &Layout) -> Res<Value> {
    Ok(match v {
        Value::Const(a) => Value::Const(Rc::new(a.layout(l)?)),
        Value::View(x) => Value::View(x.relayout(l)?),
        Value::Elem(e) => Value::Elem(Elem {
            src: e.src.relayout(l)?,
            ..e.clone()
        }),
        Value::Scores(_) => bail!("layout changes of attention scores are not supported"),
    })
}

/// The source view and expression of an element-wise operand (a float view is `X`).
fn elementwise(v: &Value) -> Option<(View, Rc<Ex>, usize)> {
    match v {
        Value::View(x) if !x.int => Some((x.clone(), Rc::new(Ex::X), 0)),
        Value::Elem(e) => Some((e.src.clone(), e.ex.clone(), e.ops)),
        _ => None,
    }
}

/// `src` broadcast against a scalar constant's shape (which can only add leading 1s).
fn broadcast_view(src: View, c_shape: &[usize]) -> Res<View> {
    let shape = broadcast_shapes(&src.idx.shape, c_shape)?;
    if shape == src.idx.shape {
        Ok(src)
    } else {
        src.relayout(&Layout::Expand(shape))
    }
}

fn make_elem(src: View, ex: Rc<Ex>, ops: usize, node: &str) -> Res<Value> {
    if ops > MAX_EXPR_OPS {
        bail!("element-wise expression of more than {MAX_EXPR_OPS} operations");
    }
    Ok(Value::Elem(Elem {
        src,
        ex,
        ops,
        node: node.into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn demo(file: &str) -> pb::ModelProto {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../models/demo")
            .join(file);
        tract_onnx::onnx().proto_model_for_path(path).unwrap()
    }

    const DEMO_PIXELS: TowerInput = TowerInput::Pixels {
        channels: 3,
        height: 64,
        width: 64,
    };
    const DEMO_TOKENS: TowerInput = TowerInput::Tokens { len: 16 };

    fn f32s(name: &str, dims: &[i64], data: Vec<f32>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: dt::FLOAT as i32,
            float_data: data,
            ..Default::default()
        }
    }

    fn i64s(name: &str, dims: &[i64], data: Vec<i64>) -> pb::TensorProto {
        pb::TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: dt::INT64 as i32,
            int64_data: data,
            ..Default::default()
        }
    }

    fn ramp(n: usize, k: f32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * k)
            .collect()
    }

    fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
        pb::NodeProto {
            op_type: op.into(),
            name: name.into(),
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn with_int(mut n: pb::NodeProto, name: &str, v: i64) -> pb::NodeProto {
        n.attribute.push(pb::AttributeProto {
            name: name.into(),
            r#type: 2,
            i: v,
            ..Default::default()
        });
        n
    }

    fn value(name: &str, elem: i64, dims: &[i64]) -> pb::ValueInfoProto {
        use pb::tensor_shape_proto::{dimension::Value as D, Dimension};
        pb::ValueInfoProto {
            name: name.into(),
            r#type: Some(pb::TypeProto {
                value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                    elem_type: elem as i32,
                    shape: Some(pb::TensorShapeProto {
                        dim: dims
                            .iter()
                            .map(|&d| Dimension {
                                value: Some(D::DimValue(d)),
                                ..Default::default()
                            })
                            .collect(),
                    }),
                })),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A text tower over 4 token ids of width 8: embedding (+ positions), then `body`
    /// from value "h" ([1, 4, 8]) to "y" ([1, 4, 8]), then the last token as the output.
    fn text_model(body: Vec<pb::NodeProto>, mut inits: Vec<pb::TensorProto>) -> pb::ModelProto {
        inits.extend([
            f32s("table", &[10, 8], ramp(80, 1.0)),
            f32s("pos", &[1, 4, 8], ramp(32, 0.1)),
            i64s("last", &[], vec![-1]),
            f32s("w", &[8, 8], ramp(64, 0.3)),
            f32s("b", &[8], ramp(8, 0.1)),
        ]);
        let mut nodes = vec![
            node("Gather", "/emb/Gather", &["table", "ids"], &["tok"]),
            node("Add", "/emb/Add", &["tok", "pos"], &["h"]),
        ];
        nodes.extend(body);
        nodes.push(with_int(
            node("Gather", "/pool/Gather", &["y", "last"], &["out"]),
            "axis",
            1,
        ));
        pb::ModelProto {
            ir_version: 8,
            opset_import: vec![pb::OperatorSetIdProto {
                domain: String::new(),
                version: 17,
            }],
            graph: Some(pb::GraphProto {
                node: nodes,
                initializer: inits,
                input: vec![value("ids", dt::INT64, &[1, 4])],
                output: vec![value("out", dt::FLOAT, &[1, 8])],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    const TOKENS4: TowerInput = TowerInput::Tokens { len: 4 };

    fn failure(m: &pb::ModelProto) -> Failure {
        import_model(m, TowerKind::Text, TOKENS4).expect_err("import should have failed")
    }

    #[test]
    fn a_small_tower_lowers_and_folds() {
        let body = vec![
            node("MatMul", "/fc/MatMul", &["h", "w"], &["mm"]),
            node("Add", "/fc/Add", &["b", "mm"], &["y"]),
        ];
        let g = import_model(&text_model(body, vec![]), TowerKind::Text, TOKENS4).unwrap();
        let kinds: Vec<&str> = g.nodes.iter().map(|n| n.op.kind()).collect();
        assert_eq!(kinds, ["embedding", "linear"]);
        let Op::Embedding { add, .. } = g.nodes[0].op else {
            unreachable!()
        };
        // The position table was folded into the embedding's `add`.
        assert_eq!(g.tensor(add).data.as_f32().unwrap(), &ramp(32, 0.1)[..]);
        let Op::Linear {
            bias: Some(b),
            weights: Weights::F32 { w },
            x,
            ..
        } = g.nodes[1].op
        else {
            panic!("{:?}", g.nodes[1]);
        };
        assert_eq!(g.tensor(b).data.as_f32().unwrap(), &ramp(8, 0.1)[..]);
        // Stored [out, in]: the ONNX [in, out] matrix transposed.
        let wt = g.tensor(w).data.as_f32().unwrap();
        let w0 = ramp(64, 0.3);
        assert_eq!(wt[8 + 3], w0[3 * 8 + 1]);
        assert_eq!((x.rows, x.cols), (4, 8));
        assert_eq!((g.output.rows, g.output.cols, g.output.offset), (1, 8, 24));
    }

    #[test]
    fn an_unsupported_op_is_refused_by_name() {
        let body = vec![node("Sin", "/text/bad/Sin", &["h"], &["y"])];
        let f = failure(&text_model(body, vec![]));
        assert_eq!(f.node, "/text/bad/Sin (Sin)");
        assert!(f.msg.contains("not supported"), "{}", f.msg);
        // The public error names it too.
        let e = Error::Import {
            path: "t.onnx".into(),
            node: f.node,
            msg: f.msg,
        };
        assert!(e.to_string().contains("/text/bad/Sin"), "{e}");
    }

    #[test]
    fn an_activation_other_than_gelu_is_refused() {
        let body = vec![
            node("MatMul", "/fc1/MatMul", &["h", "w"], &["a"]),
            node("Tanh", "/act/Tanh", &["a"], &["t"]),
            node("MatMul", "/fc2/MatMul", &["t", "w"], &["y"]),
        ];
        let f = failure(&text_model(body, vec![]));
        assert_eq!(f.node, "/fc2/MatMul (MatMul)");
        assert!(
            f.msg.contains("/act/Tanh") && f.msg.contains("GELU"),
            "{}",
            f.msg
        );
    }

    #[test]
    fn gelu_in_place_is_refused_while_its_input_is_still_needed() {
        // y = fc2(gelu(a)) + a: GELU cannot overwrite `a`, which the residual still reads.
        let half = f32s("half", &[], vec![0.5]);
        let one = f32s("one", &[], vec![1.0]);
        let k = f32s("k", &[], vec![std::f32::consts::FRAC_1_SQRT_2]);
        let body = vec![
            node("MatMul", "/fc1/MatMul", &["h", "w"], &["a"]),
            node("Mul", "/act/Mul", &["a", "k"], &["s"]),
            node("Erf", "/act/Erf", &["s"], &["e"]),
            node("Add", "/act/Add", &["e", "one"], &["e1"]),
            node("Mul", "/act/Mul_1", &["a", "e1"], &["p"]),
            node("Mul", "/act/Mul_2", &["p", "half"], &["g"]),
            node("MatMul", "/fc2/MatMul", &["g", "w"], &["f"]),
            node("Add", "/res/Add", &["f", "a"], &["y"]),
        ];
        let f = failure(&text_model(
            body.clone(),
            vec![half.clone(), one.clone(), k.clone()],
        ));
        assert_eq!(f.node, "/fc2/MatMul (MatMul)");
        assert!(f.msg.contains("still needs"), "{}", f.msg);
        // Without the residual it is fused into fc1 as exact GELU.
        let mut ok = body;
        ok.pop();
        ok.last_mut().unwrap().output = vec!["y".into()];
        let g = import_model(
            &text_model(ok, vec![half, one, k]),
            TowerKind::Text,
            TOKENS4,
        )
        .unwrap();
        let acts: Vec<Activation> = g
            .nodes
            .iter()
            .filter_map(|n| match n.op {
                Op::Linear { act, .. } => Some(act),
                _ => None,
            })
            .collect();
        assert_eq!(acts, [Activation::GeluErf, Activation::None]);
    }

    #[test]
    fn attention_masks_are_refused() {
        let mut transpose = node("Transpose", "/k/Transpose", &["h"], &["kt"]);
        transpose.attribute.push(pb::AttributeProto {
            name: "perm".into(),
            r#type: 7,
            ints: vec![0, 2, 1],
            ..Default::default()
        });
        let mut body = vec![
            node("MatMul", "/q/MatMul", &["h", "w"], &["q"]),
            transpose,
            node("MatMul", "/attn/MatMul", &["q", "kt"], &["s"]),
            node("Add", "/attn/Add", &["s", "mask"], &["sm"]),
            node("Softmax", "/attn/Softmax", &["sm"], &["p"]),
            node("MatMul", "/attn/MatMul_1", &["p", "h"], &["y"]),
        ];
        let mask = f32s("mask", &[1, 4, 4], vec![0.0; 16]);
        let f = failure(&text_model(body.clone(), vec![mask]));
        assert_eq!(f.node, "/attn/Add (Add)");
        assert!(f.msg.contains("masks"), "{}", f.msg);
        // Without the mask it is one attention op over a single head.
        body.remove(3);
        body[3].input[0] = "s".into();
        let g = import_model(&text_model(body, vec![]), TowerKind::Text, TOKENS4).unwrap();
        let kinds: Vec<&str> = g.nodes.iter().map(|n| n.op.kind()).collect();
        assert_eq!(kinds, ["embedding", "linear", "attention"]);
    }

    #[test]
    fn wrong_inputs_are_refused_for_the_whole_model() {
        let m = text_model(vec![node("Identity", "/id", &["h"], &["y"])], vec![]);
        let f = import_model(&m, TowerKind::Text, TowerInput::Tokens { len: 5 }).unwrap_err();
        assert_eq!(f.node, "(model)");
        assert!(
            f.msg.contains("[1, 4]") || f.msg.contains("1, 4"),
            "{}",
            f.msg
        );
        let f = import_model(&m, TowerKind::Vision, DEMO_PIXELS).unwrap_err();
        assert_eq!(f.node, "(model)");
        let mut old = m.clone();
        old.opset_import[0].version = 11;
        assert!(import_model(&old, TowerKind::Text, TOKENS4)
            .unwrap_err()
            .msg
            .contains("opset"));
        let mut empty = m;
        empty.graph = None;
        assert!(import_model(&empty, TowerKind::Text, TOKENS4).is_err());
    }

    /// Random damage to the demo towers (attributes, constants, initializers, wiring) must
    /// give errors or graphs, never a panic.
    #[test]
    fn damaged_models_never_panic() {
        let mut rnd = {
            let mut s = 0x5eed_u64;
            move || {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (s >> 33) as usize
            }
        };
        let wild = [
            -3i64,
            -1,
            0,
            1,
            2,
            3,
            7,
            64,
            1 << 20,
            1 << 40,
            i64::MAX,
            i64::MIN,
        ];
        let ops = [
            "Reshape",
            "Transpose",
            "Gather",
            "Softmax",
            "MatMul",
            "Add",
            "Mul",
            "Concat",
            "Slice",
            "Squeeze",
            "Unsqueeze",
            "Expand",
            "Tile",
            "Range",
            "ConstantOfShape",
            "Split",
            "Cast",
            "Where",
            "LayerNormalization",
            "Conv",
            "Gemm",
            "Div",
            "Mod",
            "Shape",
        ];
        let mut errors = 0;
        for (file, kind, input) in [
            ("vision.onnx", TowerKind::Vision, DEMO_PIXELS),
            ("text.onnx", TowerKind::Text, DEMO_TOKENS),
        ] {
            let base = demo(file);
            for _ in 0..60 {
                let mut m = base.clone();
                let g = m.graph.as_mut().unwrap();
                for _ in 0..1 + rnd() % 3 {
                    let nn = g.node.len();
                    let ni = g.initializer.len();
                    let n = &mut g.node[rnd() % nn];
                    match rnd() % 8 {
                        0 => {
                            if let Some(a) = n.attribute.first_mut() {
                                a.i = wild[rnd() % wild.len()];
                                for v in a.ints.iter_mut() {
                                    *v = wild[rnd() % wild.len()];
                                }
                                a.f = [0.0, -1.0, f32::NAN, 1e30][rnd() % 4];
                            }
                        }
                        1 => {
                            if let Some(t) = n.attribute.iter_mut().find_map(|a| a.t.as_mut()) {
                                if t.raw_data.len() >= 8 {
                                    let k = rnd() % (t.raw_data.len() / 8) * 8;
                                    t.raw_data[k..k + 8]
                                        .copy_from_slice(&wild[rnd() % wild.len()].to_le_bytes());
                                } else {
                                    t.dims.push(wild[rnd() % wild.len()]);
                                }
                            }
                        }
                        2 => n.op_type = ops[rnd() % ops.len()].into(),
                        3 => {
                            if n.input.len() > 1 {
                                n.input.swap(0, 1);
                            } else {
                                n.input.push(String::new());
                            }
                        }
                        4 => {
                            let k = rnd() % nn;
                            let other = g.node[k].output.first().cloned().unwrap_or_default();
                            let n = &mut g.node[rnd() % nn];
                            if let Some(i) = n.input.first_mut() {
                                *i = other;
                            }
                        }
                        5 => {
                            let t = &mut g.initializer[rnd() % ni];
                            match rnd() % 3 {
                                0 => t.raw_data.truncate(t.raw_data.len() / 2),
                                1 => t.dims.reverse(),
                                _ => t.dims.push(2),
                            }
                        }
                        6 => {
                            let k = rnd() % nn;
                            g.node.remove(k);
                        }
                        _ => n.attribute.clear(),
                    }
                }
                match import_model(&m, kind, input) {
                    Err(_) => errors += 1,
                    Ok(g) => {
                        let x = vec![1.0f32; input.len()];
                        // What imports must be a graph the runtime accepts.
                        if let Err(e) = crate::runner::run_f32(&g, &x) {
                            panic!("a damaged {file} imported to a graph the runtime refuses: {e}");
                        }
                    }
                }
            }
        }
        // Most damage is caught; some (a dead node, a harmless attribute) is not.
        assert!(
            errors > 30,
            "only {errors} of 120 damaged models were refused"
        );
    }

    #[test]
    fn erf_is_accurate() {
        for (x, want) in [
            (0.0, 0.0),
            (0.5, 0.520_499_877_813_046_5),
            (1.0, 0.842_700_792_949_714_9),
            (2.0, 0.995_322_265_018_952_7),
            (2.9, 0.999_958_902_121_900_6),
            (3.0, 0.999_977_909_503_001_4),
            (4.0, 0.999_999_984_582_742_1),
            (-1.5, -0.966_105_146_475_310_7),
        ] {
            assert!(
                (erf(x) - want).abs() < 1e-12,
                "erf({x}) = {} vs {want}",
                erf(x)
            );
        }
    }

    #[test]
    fn expressions_are_identified_by_what_they_compute() {
        let x = || Rc::new(Ex::X);
        let c = |v: f64| Rc::new(Ex::C(v));
        let bin = |op, a, b| Rc::new(Ex::Bin(op, a, b));
        let un = |op, a| Rc::new(Ex::Un(op, a));
        // The exporter's GELU-tanh: 0.5·x·(1 + tanh(0.79788·(x + 0.044715·x·x·x))), f32 constants.
        let cube = bin(Bin::Mul, x(), bin(Bin::Mul, x(), x()));
        let inner = bin(Bin::Add, x(), bin(Bin::Mul, c(0.044714998453855515), cube));
        let t = un(Un::Tanh, bin(Bin::Mul, c(0.7978845834732056), inner));
        let gelu = bin(
            Bin::Mul,
            c(0.5),
            bin(Bin::Mul, x(), bin(Bin::Add, c(1.0), t)),
        );
        assert_eq!(classify(&gelu), Kind::Act(Activation::GeluTanh));
        // With Pow instead of x·x·x.
        let inner = bin(
            Bin::Add,
            x(),
            bin(Bin::Mul, c(0.044715), bin(Bin::Pow, x(), c(3.0))),
        );
        let t = un(Un::Tanh, bin(Bin::Mul, c(0.7978845834732056), inner));
        let gelu = bin(
            Bin::Mul,
            bin(Bin::Mul, x(), bin(Bin::Add, t, c(1.0))),
            c(0.5),
        );
        assert_eq!(classify(&gelu), Kind::Act(Activation::GeluTanh));
        // Exact GELU, as x·Φ(x) with a division by √2.
        let e = un(Un::Erf, bin(Bin::Div, x(), c(1.4142135381698608)));
        let gelu = bin(
            Bin::Div,
            bin(Bin::Mul, x(), bin(Bin::Add, e, c(1.0))),
            c(2.0),
        );
        assert_eq!(classify(&gelu), Kind::Act(Activation::GeluErf));
        // Quick GELU x·σ(1.702x) is close to neither.
        let quick = bin(Bin::Mul, x(), un(Un::Sigmoid, bin(Bin::Mul, c(1.702), x())));
        assert_eq!(classify(&quick), Kind::Other);
        assert_eq!(classify(&bin(Bin::Mul, x(), c(1.0))), Kind::Identity);
        assert_eq!(classify(&bin(Bin::Mul, x(), c(0.25))), Kind::Scale(0.25));
        assert_eq!(classify(&bin(Bin::Add, x(), c(0.25))), Kind::Other);
    }

    #[test]
    fn slices_follow_onnx() {
        assert_eq!(slice_range(10, 2, 8, 3).unwrap(), (2, 3, 2));
        assert_eq!(slice_range(10, -1, i64::MIN, -1).unwrap(), (9, -1, 10));
        assert_eq!(slice_range(10, 0, i64::MAX, 1).unwrap(), (0, 1, 10));
        assert_eq!(slice_range(10, 5, 2, 1).unwrap().2, 0);
        assert_eq!(slice_range(10, 20, 30, 1).unwrap().2, 0);
        assert_eq!(slice_range(10, 3, 4, i64::MAX).unwrap(), (3, 1, 1));
        assert!(slice_range(10, 0, 5, 0).is_err());
        assert!(slice_range(10, 5, 0, i64::MIN).is_err());
    }
}
