//! Constant folding: a node whose inputs are all constant is evaluated here. All shape
//! arithmetic lands here, since every activation's shape is known.

use std::rc::Rc;

use tract_onnx::pb;

use super::expr_identify::erf;
use super::layout::{layout_for, split_layouts};
use super::ndarray::{broadcast_shapes, norm_axis, size_of, NdArray};
use super::onnx_proto::{attr_f, attr_i, attr_t, data_type, decode_tensor, typed};
use super::value::Constant;
use super::{ImportResult, MAX_ELEMENTS, MAX_FOLD_MACS};

fn cast_constant(a: &Constant, to: i64) -> ImportResult<Constant> {
    let wrap = |v: i64| -> i64 {
        match to {
            data_type::INT32 => i64::from(v as i32),
            data_type::INT16 => i64::from(v as i16),
            data_type::INT8 => i64::from(v as i8),
            data_type::UINT8 => i64::from(v as u8),
            data_type::UINT16 => i64::from(v as u16),
            data_type::UINT32 => i64::from(v as u32),
            data_type::BOOL => i64::from(v != 0),
            _ => v,
        }
    };
    Ok(match (a, to) {
        (Constant::Float(x), data_type::FLOAT | data_type::DOUBLE) => Constant::Float(x.clone()),
        (Constant::Int(x), data_type::FLOAT | data_type::DOUBLE) => {
            Constant::Float(x.map(|v| v as f32))
        }
        (Constant::Float(x), data_type::BOOL) => Constant::Int(x.map(|v| i64::from(v != 0.0))),
        (Constant::Float(x), t) if is_int_type(t) => Constant::Int(x.map(|v| wrap(v as i64))),
        (Constant::Int(x), t) if is_int_type(t) => Constant::Int(x.map(wrap)),
        _ => bail!("Cast to data type {to} is not supported"),
    })
}

fn is_int_type(t: i64) -> bool {
    matches!(
        t,
        data_type::INT64
            | data_type::INT32
            | data_type::INT16
            | data_type::INT8
            | data_type::UINT8
            | data_type::UINT16
            | data_type::UINT32
            | data_type::UINT64
            | data_type::BOOL
    )
}

fn arith(op: &str, n: &pb::NodeProto, a: &Constant, b: &Constant) -> ImportResult<Constant> {
    let fmod = attr_i(n, "fmod", 0)?;
    Ok(match (a, b) {
        (Constant::Float(x), Constant::Float(y)) => {
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
                    return Ok(Constant::Int(x.zip(y, |p, q| Ok(i64::from(c(p, q))))?));
                }
            };
            Constant::Float(x.zip(y, |p, q| Ok(f(p, q)))?)
        }
        (Constant::Int(x), Constant::Int(y)) => {
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
            Constant::Int(r)
        }
        _ => bail!("{op} of a float and an integer tensor"),
    })
}

/// numpy-style matmul of float constants.
fn matmul_f(a: &NdArray<f32>, b: &NdArray<f32>) -> ImportResult<NdArray<f32>> {
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
    NdArray::new(shape, out)
}

pub(super) fn shape_constant(shape: &[usize], n: &pb::NodeProto) -> ImportResult<Constant> {
    let r = shape.len() as i64;
    let clampi = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r) as usize;
    let start = clampi(attr_i(n, "start", 0)?);
    let end = clampi(attr_i(n, "end", r)?);
    let dims: Vec<i64> = shape[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(Constant::Int(NdArray::new(vec![dims.len()], dims)?))
}

pub(super) fn constant_attr(n: &pb::NodeProto) -> ImportResult<Constant> {
    if let Some(t) = attr_t(n, "value")? {
        return decode_tensor(t);
    }
    if let Some(a) = typed(n, "value_float", 1)? {
        return Ok(Constant::Float(NdArray::scalar(a.f)));
    }
    if let Some(a) = typed(n, "value_floats", 6)? {
        return Ok(Constant::Float(NdArray::new(
            vec![a.floats.len()],
            a.floats.clone(),
        )?));
    }
    if let Some(a) = typed(n, "value_int", 2)? {
        return Ok(Constant::Int(NdArray::scalar(a.i)));
    }
    if let Some(a) = typed(n, "value_ints", 7)? {
        return Ok(Constant::Int(NdArray::new(
            vec![a.ints.len()],
            a.ints.clone(),
        )?));
    }
    bail!("Constant without a supported value attribute")
}

/// Evaluates a node whose inputs are all constant.
pub(super) fn fold(n: &pb::NodeProto, c: &[Option<Rc<Constant>>]) -> ImportResult<Vec<Constant>> {
    let op = n.op_type.as_str();
    let arg = |i: usize| -> ImportResult<&Constant> {
        c.get(i)
            .and_then(|x| x.as_deref())
            .ok_or_else(|| format!("input {i} is missing"))
    };
    let params: Vec<Option<&Constant>> = c.iter().map(|x| x.as_deref()).collect();
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
        "Cast" => cast_constant(arg(0)?, attr_i(n, "to", 0)?)?,
        "Shape" => shape_constant(arg(0)?.shape(), n)?,
        "Size" => Constant::Int(NdArray::scalar(arg(0)?.len() as i64)),
        "Concat" => {
            let parts: Vec<&Constant> = params.iter().flatten().copied().collect();
            let Some(first) = parts.first() else {
                bail!("Concat of nothing");
            };
            let axis = norm_axis(attr_i(n, "axis", 0)?, first.shape().len())?;
            match first {
                Constant::Float(_) => {
                    let p = parts
                        .iter()
                        .map(|a| a.floats())
                        .collect::<ImportResult<Vec<_>>>()?;
                    Constant::Float(NdArray::concat(&p, axis)?)
                }
                Constant::Int(_) => {
                    let p = parts
                        .iter()
                        .map(|a| match a {
                            Constant::Int(x) => Ok(x),
                            Constant::Float(_) => {
                                Err("Concat of float and integer tensors".to_string())
                            }
                        })
                        .collect::<ImportResult<Vec<_>>>()?;
                    Constant::Int(NdArray::concat(&p, axis)?)
                }
            }
        }
        "ConstantOfShape" => {
            let shape = arg(0)?
                .ints()?
                .iter()
                .map(|&d| usize::try_from(d).map_err(|_| format!("ConstantOfShape dimension {d}")))
                .collect::<ImportResult<Vec<usize>>>()?;
            let total = size_of(&shape)?;
            match attr_t(n, "value")?.map(decode_tensor).transpose()? {
                None => Constant::Float(NdArray::new(shape, vec![0.0; total])?),
                Some(Constant::Float(v)) if v.len() == 1 => {
                    Constant::Float(NdArray::new(shape, vec![v.data[0]; total])?)
                }
                Some(Constant::Int(v)) if v.len() == 1 => {
                    Constant::Int(NdArray::new(shape, vec![v.data[0]; total])?)
                }
                Some(_) => bail!("ConstantOfShape's value must hold one element"),
            }
        }
        "Range" => match (arg(0)?, arg(1)?, arg(2)?) {
            (Constant::Int(s), Constant::Int(l), Constant::Int(d))
                if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
            {
                let (s, l, d) = (s.data[0] as i128, l.data[0] as i128, d.data[0] as i128);
                if d == 0 {
                    bail!("Range with delta 0");
                }
                let count = ((l - s + d - d.signum()) / d).max(0);
                if count > MAX_ELEMENTS as i128 {
                    bail!("Range of {count} elements");
                }
                let v: Vec<i64> = (0..count).map(|k| (s + k * d) as i64).collect();
                Constant::Int(NdArray::new(vec![v.len()], v)?)
            }
            (Constant::Float(s), Constant::Float(l), Constant::Float(d))
                if s.len() == 1 && l.len() == 1 && d.len() == 1 =>
            {
                let (s, l, d) = (s.data[0] as f64, l.data[0] as f64, d.data[0] as f64);
                let count = ((l - s) / d).ceil();
                if !count.is_finite() || count > MAX_ELEMENTS as f64 {
                    bail!("Range from {s} to {l} by {d}");
                }
                let v: Vec<f32> = (0..count.max(0.0) as usize)
                    .map(|k| (s + k as f64 * d) as f32)
                    .collect();
                Constant::Float(NdArray::new(vec![v.len()], v)?)
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
                Constant::Int(x) => x,
                Constant::Float(_) => bail!("Where's condition is not boolean"),
            };
            match (arg(1)?, arg(2)?) {
                (Constant::Float(x), Constant::Float(y)) => {
                    let xy = x.zip(y, |p, q| Ok((p, q)))?;
                    Constant::Float(cond.zip(&xy, |k, (p, q)| Ok(if k != 0 { p } else { q }))?)
                }
                (Constant::Int(x), Constant::Int(y)) => {
                    let xy = x.zip(y, |p, q| Ok((p, q)))?;
                    Constant::Int(cond.zip(&xy, |k, (p, q)| Ok(if k != 0 { p } else { q }))?)
                }
                _ => bail!("Where of a float and an integer tensor"),
            }
        }
        "Not" => Constant::Int(match arg(0)? {
            Constant::Int(x) => x.map(|v| i64::from(v == 0)),
            Constant::Float(_) => bail!("Not of a float tensor"),
        }),
        "Neg" => match arg(0)? {
            Constant::Float(x) => Constant::Float(x.map(|v| -v)),
            Constant::Int(x) => Constant::Int(x.map(|v| v.wrapping_neg())),
        },
        "Abs" => match arg(0)? {
            Constant::Float(x) => Constant::Float(x.map(f32::abs)),
            Constant::Int(x) => Constant::Int(x.map(|v| v.wrapping_abs())),
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
            Constant::Float(arg(0)?.floats()?.map(f))
        }
        "MatMul" => Constant::Float(matmul_f(arg(0)?.floats()?, arg(1)?.floats()?)?),
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
            Constant::Float(y)
        }
        _ => bail!("operator {op} is not supported (here on constant inputs)"),
    }])
}
