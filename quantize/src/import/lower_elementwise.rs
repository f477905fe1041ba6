//! Element-wise ops on activations: pending expressions built up node by node and applied
//! (as a GELU, fused into the linear layer that wrote their input when possible) once
//! something consumes them; attention-score scaling; biases; residual adds.

use std::rc::Rc;

use vlm_runtime::ops::{Activate, Activation, Add, Linear, Op};

use super::expr::{BinaryFn, Expr};
use super::expr_identify::{classify, ExprKind};
use super::importer::Importer;
use super::layout::Layout;
use super::ndarray::{arange, broadcast_shapes};
use super::value::{Constant, PendingExpr, Value, View};
use super::{ImportResult, MAX_EXPR_OPS};

impl Importer<'_> {
    /// The value as data in a buffer: pending element-wise expressions are applied here.
    pub(super) fn materialise(&mut self, name: &str, v: Value) -> ImportResult<View> {
        match v {
            Value::View(x) => Ok(x),
            Value::Pending(e) => match classify(&e.ex) {
                ExprKind::Identity => Ok(e.src),
                ExprKind::Act(act) => {
                    self.activate(&e, act)?;
                    Ok(e.src)
                }
                ExprKind::Scale(s) => bail!(
                    "the element-wise expression ending at {} scales by {s}, which only \
                     attention scores support",
                    e.node
                ),
                ExprKind::Other => bail!(
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
    fn activate(&mut self, e: &PendingExpr, act: Activation) -> ImportResult<()> {
        let b = e.src.buf;
        if b == self.g.input_buf {
            bail!("an activation of the tower input is not supported");
        }
        let same = |v: &Value| matches!(v, Value::Pending(o) if o.src.buf == b && Rc::ptr_eq(&o.ex, &e.ex));
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
            if let Op::Linear(Linear { act: a, out, .. }) = &mut self.g.nodes[p].op {
                if *a == Activation::None && *out == whole {
                    *a = act;
                    fused = true;
                }
            }
        }
        if !fused {
            let node = e.node.to_string();
            self.push(&node, Op::Activate(Activate { x: whole, act }));
        }
        // Every pending copy of this expression now is the buffer itself.
        for v in self.env.values_mut() {
            if let Value::Pending(o) = v {
                if o.src.buf == b && Rc::ptr_eq(&o.ex, &e.ex) {
                    *v = Value::View(o.src.clone());
                }
            }
        }
        Ok(())
    }

    pub(super) fn binary(
        &mut self,
        name: &str,
        op: BinaryFn,
        (an, a): (&str, Value),
        (bn, b): (&str, Value),
    ) -> ImportResult<Value> {
        let scalar = |c: &Constant| {
            c.scalar_f()
                .ok_or_else(|| format!("{op:?} of attention scores with a non-scalar constant"))
        };
        match (&a, &b) {
            (Value::Scores(s), Value::Const(c)) if matches!(op, BinaryFn::Mul | BinaryFn::Div) => {
                let k = scalar(c)? as f64;
                let mut s = s.clone();
                s.scale *= if op == BinaryFn::Mul { k } else { 1.0 / k };
                return Ok(Value::Scores(s));
            }
            (Value::Const(c), Value::Scores(s)) if op == BinaryFn::Mul => {
                let mut s = s.clone();
                s.scale *= scalar(c)? as f64;
                return Ok(Value::Scores(s));
            }
            (Value::Scores(_), _) | (_, Value::Scores(_)) => {
                bail!("attention scores can only be scaled by a constant (masks and biases are not supported)")
            }
            _ => {}
        }
        // A constant added to a fresh linear/embedding output becomes its bias.
        match (&a, &b, op) {
            (Value::View(x), Value::Const(c), BinaryFn::Add | BinaryFn::Sub) => {
                let sign = if op == BinaryFn::Add { 1.0 } else { -1.0 };
                if let Some(v) = self.fold_add(Some(an), x, c, sign)? {
                    return Ok(v);
                }
            }
            (Value::Const(c), Value::View(x), BinaryFn::Add) => {
                if let Some(v) = self.fold_add(Some(bn), x, c, 1.0)? {
                    return Ok(v);
                }
            }
            _ => {}
        }
        match (elementwise(&a), elementwise(&b), &a, &b) {
            (Some((src, ex, ops)), None, _, Value::Const(c)) => {
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
                    Rc::new(Expr::Binary(op, ex, Rc::new(Expr::Const(k as f64)))),
                    ops + 1,
                    name,
                )
            }
            (None, Some((src, ex, ops)), Value::Const(c), _) => {
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
                    Rc::new(Expr::Binary(op, Rc::new(Expr::Const(k as f64)), ex)),
                    ops + 1,
                    name,
                )
            }
            (Some((sa, ea, oa)), Some((sb, eb, ob)), _, _) if sa.same(&sb) => {
                make_elem(sa, Rc::new(Expr::Binary(op, ea, eb)), oa + ob + 1, name)
            }
            (Some(_), Some(_), _, _) if op == BinaryFn::Add => {
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
    ) -> ImportResult<Value> {
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
            Op::Add(Add {
                a: ma,
                b: mb,
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

/// The source view and expression of an element-wise operand (a float view is [`Expr::Input`]).
pub(super) fn elementwise(v: &Value) -> Option<(View, Rc<Expr>, usize)> {
    match v {
        Value::View(x) if !x.int => Some((x.clone(), Rc::new(Expr::Input), 0)),
        Value::Pending(e) => Some((e.src.clone(), e.ex.clone(), e.ops)),
        _ => None,
    }
}

/// `src` broadcast against a scalar constant's shape (which can only add leading 1s).
fn broadcast_view(src: View, c_shape: &[usize]) -> ImportResult<View> {
    let shape = broadcast_shapes(&src.idx.shape, c_shape)?;
    if shape == src.idx.shape {
        Ok(src)
    } else {
        src.relayout(&Layout::Expand(shape))
    }
}

pub(super) fn make_elem(src: View, ex: Rc<Expr>, ops: usize, node: &str) -> ImportResult<Value> {
    if ops > MAX_EXPR_OPS {
        bail!("element-wise expression of more than {MAX_EXPR_OPS} operations");
    }
    Ok(Value::Pending(PendingExpr {
        src,
        ex,
        ops,
        node: node.into(),
    }))
}
