//! Layout changes (Reshape, Flatten, Transpose, Squeeze, Unsqueeze, Slice, Expand, Tile,
//! Gather, Split): a [`Layout`] computed once from the input shape and the node's constant
//! operands, then applied alike to constants and to index tensors.

use std::collections::HashSet;

use tract_onnx::pb;

use super::ndarray::{broadcast_shapes, norm_axis, norm_index, row_major, size_of, NdArray};
use super::onnx_proto::{attr_i, attr_ints};
use super::value::Constant;
use super::ImportResult;

/// A layout change, computed once from the input shape and constant operands, then applied
/// alike to constants and to index tensors.
#[derive(Debug, Clone)]
pub(super) enum Layout {
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
    pub(super) fn apply<T: Copy>(&self, x: &NdArray<T>) -> ImportResult<NdArray<T>> {
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

/// Computes a layout op's [`Layout`] from the input shape and its constant operands.
pub(super) fn layout_for(
    n: &pb::NodeProto,
    shape: &[usize],
    params: &[Option<&Constant>],
) -> ImportResult<Layout> {
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
                    .collect::<ImportResult<Vec<_>>>()?,
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
                        .collect::<ImportResult<HashSet<usize>>>()?;
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
                .collect::<ImportResult<HashSet<usize>>>()?;
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
                .collect::<ImportResult<_>>()?;
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
                .collect::<ImportResult<Vec<usize>>>()?;
            let out: Vec<usize> = shape
                .iter()
                .zip(&reps)
                .map(|(&d, &k)| d.checked_mul(k).ok_or("Tile too large".to_string()))
                .collect::<ImportResult<_>>()?;
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
                .collect::<ImportResult<Vec<usize>>>()?;
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
pub(super) fn slice_range(
    dim: usize,
    start: i64,
    end: i64,
    step: i64,
) -> ImportResult<(usize, isize, usize)> {
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
pub(super) fn split_layouts(
    n: &pb::NodeProto,
    shape: &[usize],
    split: Option<&Constant>,
) -> ImportResult<Vec<Layout>> {
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
            .collect::<ImportResult<_>>()?,
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
