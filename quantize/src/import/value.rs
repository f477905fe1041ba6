//! Abstract values: what each ONNX value becomes during import (a constant, a view of a
//! buffer, a pending element-wise expression, or attention scores).

use std::rc::Rc;

use super::expr::Expr;
use super::layout::Layout;
use super::ndarray::NdArray;
use super::ImportResult;

/// A constant: f32, or any integer/bool type held as i64.
#[derive(Debug, Clone)]
pub(super) enum Constant {
    Float(NdArray<f32>),
    Int(NdArray<i64>),
}

impl Constant {
    pub(super) fn shape(&self) -> &[usize] {
        match self {
            Constant::Float(a) => &a.shape,
            Constant::Int(a) => &a.shape,
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Constant::Float(a) => a.len(),
            Constant::Int(a) => a.len(),
        }
    }

    pub(super) fn floats(&self) -> ImportResult<&NdArray<f32>> {
        match self {
            Constant::Float(a) => Ok(a),
            Constant::Int(_) => bail!("expected a float tensor, got an integer one"),
        }
    }

    pub(super) fn ints(&self) -> ImportResult<&[i64]> {
        match self {
            Constant::Int(a) => Ok(&a.data),
            Constant::Float(_) => bail!("expected an integer tensor, got a float one"),
        }
    }

    pub(super) fn scalar_f(&self) -> Option<f32> {
        match self {
            Constant::Float(a) if a.len() == 1 => Some(a.data[0]),
            _ => None,
        }
    }

    pub(super) fn layout(&self, l: &Layout) -> ImportResult<Constant> {
        Ok(match self {
            Constant::Float(a) => Constant::Float(l.apply(a)?),
            Constant::Int(a) => Constant::Int(l.apply(a)?),
        })
    }
}

/// An activation in buffer `buf`: `idx` holds, for each element of the ONNX value's
/// logical shape, its offset in the buffer.
#[derive(Debug, Clone)]
pub(super) struct View {
    pub(super) buf: u32,
    pub(super) idx: Rc<NdArray<i64>>,
    /// Token ids (i32 in the buffer), not f32 values.
    pub(super) int: bool,
}

impl View {
    pub(super) fn same(&self, o: &View) -> bool {
        self.buf == o.buf && (Rc::ptr_eq(&self.idx, &o.idx) || self.idx == o.idx)
    }

    pub(super) fn relayout(&self, l: &Layout) -> ImportResult<View> {
        Ok(View {
            buf: self.buf,
            idx: Rc::new(l.apply(&self.idx)?),
            int: self.int,
        })
    }
}

/// A pending element-wise expression over one activation, applied when consumed.
#[derive(Debug, Clone)]
pub(super) struct PendingExpr {
    pub(super) src: View,
    pub(super) ex: Rc<Expr>,
    /// Operations in `ex` (bounded by [`MAX_EXPR_OPS`](super::MAX_EXPR_OPS)).
    pub(super) ops: usize,
    /// The node that built the expression last, to name the op that applies it.
    pub(super) node: Rc<str>,
}

/// Where attention scores' queries come from.
#[derive(Debug, Clone)]
pub(super) enum QuerySource {
    View(View),
    /// Queries that depend only on constants (a pooling head's probe, projected).
    Const(Rc<NdArray<f32>>),
}

/// `scale · q·kᵀ` (then, once `probs`, its softmax), waiting for the values.
#[derive(Debug, Clone)]
pub(super) struct Scores {
    pub(super) q: QuerySource,
    /// kᵀ, logical `[lead.., head_dim, keys]`.
    pub(super) kt: View,
    pub(super) scale: f64,
    pub(super) probs: bool,
    pub(super) shape: Vec<usize>,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    Const(Rc<Constant>),
    View(View),
    Pending(PendingExpr),
    Scores(Scores),
}

impl Value {
    pub(super) fn shape(&self) -> &[usize] {
        match self {
            Value::Const(a) => a.shape(),
            Value::View(v) => &v.idx.shape,
            Value::Pending(e) => &e.src.idx.shape,
            Value::Scores(s) => &s.shape,
        }
    }

    /// Whether reading this value reads buffer `b`.
    pub(super) fn reads(&self, b: u32) -> bool {
        match self {
            Value::Const(_) => false,
            Value::View(v) => v.buf == b,
            Value::Pending(e) => e.src.buf == b,
            Value::Scores(s) => s.kt.buf == b || matches!(&s.q, QuerySource::View(q) if q.buf == b),
        }
    }
}

/// Applies a layout op to any value.
pub(super) fn relayout(v: &Value, l: &Layout) -> ImportResult<Value> {
    Ok(match v {
        Value::Const(a) => Value::Const(Rc::new(a.layout(l)?)),
        Value::View(x) => Value::View(x.relayout(l)?),
        Value::Pending(e) => Value::Pending(PendingExpr {
            src: e.src.relayout(l)?,
            ..e.clone()
        }),
        Value::Scores(_) => bail!("layout changes of attention scores are not supported"),
    })
}
