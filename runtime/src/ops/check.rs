//! What an op's validation may ask of the graph and tensors it belongs to.

use super::{Mat, Weights};
use crate::format::{activation_limit, weight_limit, MAX_I8_DEPTH};
use crate::graph::{Graph, PortKind};
use crate::model::{DType, TensorRef, Tensors};

/// The graph and tensors an op is checked against, at load.
pub struct Check<'c, 'a> {
    pub(crate) tensors: &'c Tensors<'a>,
    pub(crate) graph: &'c Graph<'a>,
}

impl<'a> Check<'_, 'a> {
    pub fn tensor(&self, i: u32) -> Option<TensorRef<'a>> {
        self.tensors.get(i)
    }

    /// Whether `m` is a non-empty window inside its buffer.
    pub fn fits(&self, m: Mat) -> bool {
        self.graph.mat_fits(m)
    }

    /// Whether tensor `i` is f32 with `len` elements.
    pub fn f32_len(&self, i: u32, len: usize) -> bool {
        self.tensor(i)
            .is_some_and(|t| t.dtype == DType::F32 && t.len() == len)
    }

    /// Whether `buf` is a whole input port of element type `dtype`; its element count.
    pub fn input(&self, buf: u32, dtype: DType) -> Option<usize> {
        self.port(PortKind::Input, buf, dtype)
    }

    /// Whether `buf` is a whole state port of element type `dtype`; its element count.
    pub fn state(&self, buf: u32, dtype: DType) -> Option<usize> {
        self.port(PortKind::State, buf, dtype)
    }

    fn port(&self, kind: PortKind, buf: u32, dtype: DType) -> Option<usize> {
        self.graph
            .ports()
            .find(|p| p.kind == kind && p.mat.buf == buf && p.dtype == dtype)
            .map(|p| self.graph.buffer_len(p.mat.buf))
    }

    /// Whether `buf` is one of the graph's state buffers (any type).
    pub fn is_state(&self, buf: u32) -> bool {
        self.graph
            .ports()
            .any(|p| p.kind == PortKind::State && p.mat.buf == buf)
    }

    /// A linear map's weights against its `[rows, cols]` shape.
    pub fn weights(&self, w: Weights, rows: usize, cols: usize) -> Result<(), &'static str> {
        let dims_ok = |i: u32, dt: DType| {
            self.tensor(i).is_some_and(|t| {
                t.dtype == dt && t.rank == 2 && t.dims[0] == rows && t.dims[1] == cols
            })
        };
        match w {
            Weights::F32 { w } => dims_ok(w, DType::F32)
                .then_some(())
                .ok_or("f32 weights do not match the layer's shape"),
            Weights::I8 {
                w,
                w_scale,
                x_scale,
                x_zero,
                narrow,
                narrow_x,
            } => {
                if !dims_ok(w, DType::I8Panels) {
                    return Err("int8 weights do not match the layer's shape");
                }
                if cols > MAX_I8_DEPTH {
                    return Err("int8 layer has too many inputs for a 32-bit accumulator");
                }
                if !self.f32_len(w_scale, rows) {
                    return Err("weight scales do not match the output channels");
                }
                if !(x_scale.is_finite() && x_scale > 0.0 && (0..=255).contains(&x_zero)) {
                    return Err("bad activation quantization parameters");
                }
                // AVX2 adds two pair sums in 16 bits only on 7-bit weights and
                // activations; anything wider would saturate there and nowhere else.
                if narrow_x && !narrow {
                    return Err("7-bit int8 activations need 7-bit weights");
                }
                if x_zero > i32::from(activation_limit(narrow_x)) {
                    return Err("7-bit int8 activations have a zero point above 127");
                }
                // One pass over the weights for both bounds. Symmetric weights never
                // reach −128, and the AVX2 and plain NEON GEMMs sum pairs of products in
                // 16 bits only because they do not: a −128 would make those CPUs compute
                // other numbers than the rest. AVX2 multiplies 7-bit weights by u8
                // activations with no flip: a wider one would saturate a pair sum there
                // and nowhere else.
                let largest = self
                    .tensor(w)
                    .and_then(|t| t.i8s().iter().map(|v| v.unsigned_abs()).max())
                    .unwrap_or(0);
                if largest > 127 {
                    return Err("int8 weights hold -128 (symmetric weights are -127..127)");
                }
                if largest > weight_limit(narrow).unsigned_abs() {
                    return Err("7-bit int8 weights hold a value outside -63..63");
                }
                Ok(())
            }
        }
    }

    /// An op's output must not share arena bytes with what it reads.
    pub fn disjoint(&self, reads: &[u32], out: Mat) -> Result<(), &'static str> {
        let w = self.graph.buffer_range(out.buf);
        for &r in reads {
            let r = self.graph.buffer_range(r);
            if r.start < w.end && w.start < r.end {
                return Err("output overlaps an input in the arena");
            }
        }
        Ok(())
    }
}
