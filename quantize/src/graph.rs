//! A graph as the host holds it between import and writing: the runtime's ops
//! ([`vlm_runtime::ops::Op`]) over owned buffers and tensors.
//!
//! Import produces it with fp32 weights; calibration runs it (written to an in-memory
//! artifact) on the runtime's own executor; quantization rewrites its weights; the writer
//! places its buffers in the arena and stores it.

use std::sync::Arc;

use vlm_runtime::model::DType;
use vlm_runtime::ops::{Mat, Op};
pub use vlm_runtime::Role;

/// What a tower reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowerInput {
    /// `[channels, height, width]` f32 pixel values (batch 1).
    Pixels {
        channels: usize,
        height: usize,
        width: usize,
    },
    /// `len` token ids (u32 in the buffer).
    Tokens { len: usize },
    /// `rows × dim` f32 values: vision features for a projector, input embeddings for a
    /// decoder.
    Values {
        rows: usize,
        dim: usize,
        name: &'static str,
    },
}

impl TowerInput {
    /// Elements of the input buffer.
    pub fn len(&self) -> usize {
        match *self {
            TowerInput::Pixels {
                channels,
                height,
                width,
            } => channels * height * width,
            TowerInput::Tokens { len } => len,
            TowerInput::Values { rows, dim, .. } => rows * dim,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type of the input port.
    pub fn dtype(&self) -> DType {
        match self {
            TowerInput::Pixels { .. } | TowerInput::Values { .. } => DType::F32,
            TowerInput::Tokens { .. } => DType::U32,
        }
    }

    /// The input port's name.
    pub fn name(&self) -> &'static str {
        match self {
            TowerInput::Pixels { .. } => "pixel_values",
            TowerInput::Tokens { .. } => "input_ids",
            TowerInput::Values { name, .. } => name,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// Shared: a checkpoint's tensor read once serves every graph that holds it (a
    /// decoder's prefill and step graphs, a tied LM head and its token table), so a
    /// model of GBs is in memory once while converting. Writers go through
    /// `Arc::make_mut`.
    F32(Arc<Vec<f32>>),
    I8(Vec<i8>),
    /// int8 `[out, in]` weights in the runtime's GEMM panel layout.
    I8Panels(Vec<i8>),
}

impl TensorData {
    pub fn len(&self) -> usize {
        match self {
            TensorData::F32(v) => v.len(),
            TensorData::I8(v) | TensorData::I8Panels(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn as_f32(&self) -> Option<&[f32]> {
        match self {
            TensorData::F32(v) => Some(v.as_slice()),
            TensorData::I8(_) | TensorData::I8Panels(_) => None,
        }
    }
}

/// A constant: weights, biases, tables, quantization scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Where it came from (the ONNX initializer or node), for reports and errors.
    pub name: String,
    pub dims: Vec<usize>,
    pub data: TensorData,
}

/// One op and the name of the ONNX node(s) it was lowered from.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub name: String,
    pub op: Op,
}

/// A buffer kept in the arena from one run to the next (a decoder's KV cache or
/// position): the writer places it in the state region.
#[derive(Debug, Clone, PartialEq)]
pub struct StatePort {
    pub name: String,
    pub buf: u32,
    /// f32 (a cache) or u32 (a position).
    pub dtype: DType,
}

/// One graph, ready to be calibrated, quantized and written.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    pub role: Role,
    pub input: TowerInput,
    /// The buffer the input is copied into.
    pub input_buf: u32,
    /// Each buffer's length in 4-byte elements (f32, or i32 token ids).
    pub buffers: Vec<usize>,
    pub tensors: Vec<Tensor>,
    pub nodes: Vec<Node>,
    /// What a run returns (an encoder's embedding: one row, `[1, embed_dim]`).
    pub output: Mat,
    /// Buffers that persist between runs.
    pub states: Vec<StatePort>,
    /// A prefill's row capacity (it runs on 1 ..= `rows` rows), else 0.
    pub rows: usize,
}

impl Graph {
    pub fn new(role: Role, input: TowerInput) -> Self {
        Self {
            role,
            input,
            input_buf: 0,
            buffers: vec![input.len()],
            tensors: Vec::new(),
            nodes: Vec::new(),
            output: Mat::dense(0, 0, 0),
            states: Vec::new(),
            rows: 0,
        }
    }

    /// A new state buffer of `len` elements; returns its index.
    pub fn add_state(&mut self, name: impl Into<String>, len: usize, dtype: DType) -> u32 {
        let buf = self.add_buffer(len);
        self.states.push(StatePort {
            name: name.into(),
            buf,
            dtype,
        });
        buf
    }

    pub fn is_state(&self, buf: u32) -> bool {
        self.states.iter().any(|s| s.buf == buf)
    }

    /// A new buffer of `len` elements; returns its index.
    pub fn add_buffer(&mut self, len: usize) -> u32 {
        self.buffers.push(len);
        (self.buffers.len() - 1) as u32
    }

    /// A new fp32 tensor; returns its index.
    pub fn add_f32(
        &mut self,
        name: impl Into<String>,
        dims: Vec<usize>,
        data: impl Into<Arc<Vec<f32>>>,
    ) -> u32 {
        let data = data.into();
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        self.tensors.push(Tensor {
            name: name.into(),
            dims,
            data: TensorData::F32(data),
        });
        (self.tensors.len() - 1) as u32
    }

    /// A new int8 tensor; returns its index.
    pub fn add_i8(&mut self, name: impl Into<String>, dims: Vec<usize>, data: Vec<i8>) -> u32 {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        self.tensors.push(Tensor {
            name: name.into(),
            dims,
            data: TensorData::I8(data),
        });
        (self.tensors.len() - 1) as u32
    }

    /// A new panel-packed int8 weight tensor from row-major `[rows, cols]` values.
    pub fn add_i8_panels(
        &mut self,
        name: impl Into<String>,
        rows: usize,
        cols: usize,
        row_major: &[i8],
    ) -> u32 {
        use vlm_runtime::format::{packed_index, packed_len};
        let mut data = vec![0i8; packed_len(rows, cols)];
        for o in 0..rows {
            for k in 0..cols {
                data[packed_index(o, k, cols)] = row_major[o * cols + k];
            }
        }
        self.tensors.push(Tensor {
            name: name.into(),
            dims: vec![rows, cols],
            data: TensorData::I8Panels(data),
        });
        (self.tensors.len() - 1) as u32
    }

    pub fn push(&mut self, name: impl Into<String>, op: Op) {
        self.nodes.push(Node {
            name: name.into(),
            op,
        });
    }

    pub fn tensor(&self, i: u32) -> &Tensor {
        &self.tensors[i as usize]
    }

    pub fn tensor_mut(&mut self, i: u32) -> &mut Tensor {
        &mut self.tensors[i as usize]
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.op.macs()).sum()
    }

    /// Bytes of all constants.
    pub fn weight_bytes(&self) -> usize {
        self.tensors
            .iter()
            .map(|t| match &t.data {
                TensorData::F32(v) => v.len() * 4,
                TensorData::I8(v) | TensorData::I8Panels(v) => v.len(),
            })
            .sum()
    }
}
