//! n-d arrays: constants and index tensors share one small, checked implementation.

use super::{ImportResult, MAX_ELEMENTS};

#[derive(Debug, Clone, PartialEq)]
pub(super) struct NdArray<T> {
    pub(super) shape: Vec<usize>,
    pub(super) data: Vec<T>,
}

/// Elements of `shape`, refused above [`MAX_ELEMENTS`].
pub(super) fn size_of(shape: &[usize]) -> ImportResult<usize> {
    let n = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} is too large"))?;
    if n > MAX_ELEMENTS {
        bail!("shape {shape:?} has {n} elements, more than import handles ({MAX_ELEMENTS})");
    }
    Ok(n)
}

pub(super) fn row_major(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; shape.len()];
    for k in (0..shape.len().saturating_sub(1)).rev() {
        s[k] = s[k + 1].saturating_mul(shape[k + 1]);
    }
    s
}

pub(super) fn norm_axis(axis: i64, rank: usize) -> ImportResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        bail!("axis {axis} is out of range for rank {rank}");
    }
    Ok(a as usize)
}

pub(super) fn norm_index(i: i64, dim: usize) -> ImportResult<usize> {
    let d = dim as i64;
    let j = if i < 0 { i + d } else { i };
    if j < 0 || j >= d {
        bail!("index {i} is out of range for a dimension of {dim}");
    }
    Ok(j as usize)
}

/// numpy broadcasting of two shapes.
pub(super) fn broadcast_shapes(a: &[usize], b: &[usize]) -> ImportResult<Vec<usize>> {
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

impl<T: Copy> NdArray<T> {
    pub(super) fn new(shape: Vec<usize>, data: Vec<T>) -> ImportResult<Self> {
        let n = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        if n != Some(data.len()) {
            bail!("shape {shape:?} does not hold {} elements", data.len());
        }
        Ok(Self { shape, data })
    }

    pub(super) fn scalar(v: T) -> Self {
        Self {
            shape: vec![],
            data: vec![v],
        }
    }

    pub(super) fn len(&self) -> usize {
        self.data.len()
    }

    /// Element `base + Σ pos[k]·strides[k]` of `self` for every position of `shape`: the
    /// one primitive behind transposes, slices and broadcasts.
    pub(super) fn strided(
        &self,
        shape: Vec<usize>,
        strides: &[isize],
        base: isize,
    ) -> ImportResult<Self> {
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

    pub(super) fn reshape(&self, shape: Vec<usize>) -> ImportResult<Self> {
        if size_of(&shape)? != self.len() {
            bail!("cannot reshape {:?} to {shape:?}", self.shape);
        }
        Ok(Self {
            shape,
            data: self.data.clone(),
        })
    }

    pub(super) fn transpose(&self, perm: &[usize]) -> ImportResult<Self> {
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
    pub(super) fn broadcast_to(&self, shape: &[usize]) -> ImportResult<Self> {
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
    pub(super) fn gather(
        &self,
        axis: usize,
        ind: &[usize],
        ind_shape: &[usize],
    ) -> ImportResult<Self> {
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
        NdArray::new(shape, data)
    }

    pub(super) fn concat(parts: &[&Self], axis: usize) -> ImportResult<Self> {
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
        NdArray::new(shape, data)
    }

    pub(super) fn zip<U: Copy, V: Copy>(
        &self,
        other: &NdArray<U>,
        mut f: impl FnMut(T, U) -> ImportResult<V>,
    ) -> ImportResult<NdArray<V>> {
        let shape = broadcast_shapes(&self.shape, &other.shape)?;
        let a = self.broadcast_to(&shape)?;
        let b = other.broadcast_to(&shape)?;
        let data = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| f(x, y))
            .collect::<ImportResult<Vec<V>>>()?;
        Ok(NdArray { shape, data })
    }

    pub(super) fn map<U: Copy>(&self, f: impl FnMut(T) -> U) -> NdArray<U> {
        NdArray {
            shape: self.shape.clone(),
            data: self.data.iter().copied().map(f).collect(),
        }
    }
}

/// `0, 1, 2, …` in `shape`: the index tensor of a freshly written dense buffer.
pub(super) fn arange(shape: Vec<usize>) -> ImportResult<NdArray<i64>> {
    let n = size_of(&shape)?;
    NdArray::new(shape, (0..n as i64).collect())
}
