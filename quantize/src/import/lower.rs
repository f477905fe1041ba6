//! One node: folded when all its inputs are constant, else lowered by its op type (the
//! `lower_*` modules hold what each kind of op becomes).

use std::rc::Rc;

use tract_onnx::pb;

use super::expr::{BinaryFn, Expr, UnaryFn};
use super::fold::{constant_attr, fold, shape_constant};
use super::importer::Importer;
use super::layout::{layout_for, split_layouts};
use super::lower_elementwise::{elementwise, make_elem};
use super::ndarray::{norm_axis, NdArray};
use super::onnx_proto::{attr_i, data_type, node_name};
use super::value::{relayout, Constant, Value};
use super::ImportResult;

impl Importer<'_> {
    pub(super) fn node(&mut self, n: &pb::NodeProto) -> ImportResult<()> {
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
                .collect::<ImportResult<Vec<Option<Value>>>>()?;
            if ins
                .iter()
                .all(|v| matches!(v, None | Some(Value::Const(_))))
            {
                let consts: Vec<Option<Rc<Constant>>> = ins
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
    fn lower(&mut self, n: &pb::NodeProto, ins: Vec<Option<Value>>) -> ImportResult<Vec<Value>> {
        let op = n.op_type.as_str();
        let name = node_name(n);
        let input = |i: usize| -> ImportResult<Value> {
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
            .collect::<std::result::Result<Vec<Option<&Constant>>, usize>>();
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
                    Value::View(v) if v.int => matches!(to, data_type::INT32 | data_type::INT64),
                    _ => matches!(to, data_type::FLOAT | data_type::DOUBLE),
                };
                if !ok {
                    bail!("casting an activation to data type {to} is not supported");
                }
                vec![x]
            }
            "Shape" => vec![Value::Const(Rc::new(shape_constant(x.shape(), n)?))],
            "Size" => vec![Value::Const(Rc::new(Constant::Int(NdArray::scalar(
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
                    .collect::<ImportResult<Vec<Value>>>()?
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
                    "Add" => BinaryFn::Add,
                    "Sub" => BinaryFn::Sub,
                    "Mul" => BinaryFn::Mul,
                    "Div" => BinaryFn::Div,
                    _ => BinaryFn::Pow,
                };
                vec![self.binary(&name, bin, (in_name(0), x), (in_name(1), b))?]
            }
            "Neg" | "Abs" | "Sqrt" | "Exp" | "Tanh" | "Erf" | "Sigmoid" | "Reciprocal" => {
                let u = match op {
                    "Neg" => UnaryFn::Neg,
                    "Abs" => UnaryFn::Abs,
                    "Sqrt" => UnaryFn::Sqrt,
                    "Exp" => UnaryFn::Exp,
                    "Tanh" => UnaryFn::Tanh,
                    "Erf" => UnaryFn::Erf,
                    "Sigmoid" => UnaryFn::Sigmoid,
                    _ => UnaryFn::Recip,
                };
                let Some((src, ex, ops)) = elementwise(&x) else {
                    bail!("{op} of this value is not supported");
                };
                vec![make_elem(src, Rc::new(Expr::Unary(u, ex)), ops + 1, &name)?]
            }
            _ => bail!("operator {op} is not supported on activations"),
        })
    }
}
