//! Element-wise expressions over one activation, as exporters spell them out node by node
//! (GELU as a chain of Mul/Add/Tanh…), evaluated in f64.

use std::rc::Rc;

use super::expr_identify::erf;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum UnaryFn {
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
pub(super) enum BinaryFn {
    Add,
    Sub,
    Mul,
    Div,
    Pow,
}

/// An element-wise function of one activation ([`Expr::Input`]).
#[derive(Debug)]
pub(super) enum Expr {
    /// The activation itself.
    Input,
    Const(f64),
    Unary(UnaryFn, Rc<Expr>),
    Binary(BinaryFn, Rc<Expr>, Rc<Expr>),
}

impl Expr {
    pub(super) fn eval(&self, x: f64) -> f64 {
        match self {
            Expr::Input => x,
            Expr::Const(c) => *c,
            Expr::Unary(u, a) => {
                let a = a.eval(x);
                match u {
                    UnaryFn::Neg => -a,
                    UnaryFn::Abs => a.abs(),
                    UnaryFn::Sqrt => a.sqrt(),
                    UnaryFn::Exp => libm::exp(a),
                    UnaryFn::Tanh => libm::tanh(a),
                    UnaryFn::Erf => erf(a),
                    UnaryFn::Sigmoid => 1.0 / (1.0 + libm::exp(-a)),
                    UnaryFn::Recip => 1.0 / a,
                }
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (a.eval(x), b.eval(x));
                match op {
                    BinaryFn::Add => a + b,
                    BinaryFn::Sub => a - b,
                    BinaryFn::Mul => a * b,
                    BinaryFn::Div => a / b,
                    BinaryFn::Pow => libm::pow(a, b),
                }
            }
        }
    }
}
