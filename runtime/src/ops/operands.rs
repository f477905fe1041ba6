//! What ops name: windows of buffers, weights, activations, attention's query source,
//! precision and mask. Each type reads and writes its own words.

use super::encoding::{Reader, Words};
use crate::format::FormatError;
use crate::names::{self, activation, mask, precision, query, weights, NONE};

/// A row-major window of a buffer: element `(r, c)` is `buf[offset + r * stride + c]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mat {
    pub buf: u32,
    pub offset: u32,
    pub rows: u32,
    pub cols: u32,
    pub stride: u32,
}

impl Mat {
    /// A whole buffer seen as `rows × cols`.
    pub const fn dense(buf: u32, rows: u32, cols: u32) -> Self {
        Self {
            buf,
            offset: 0,
            rows,
            cols,
            stride: cols,
        }
    }

    /// The number of buffer elements from the window's first to one past its last.
    pub fn span(&self) -> Option<usize> {
        if self.rows == 0 || self.cols == 0 {
            return Some(0);
        }
        let last = (self.rows as usize - 1)
            .checked_mul(self.stride as usize)?
            .checked_add(self.cols as usize)?;
        (self.offset as usize).checked_add(last)
    }

    /// Whether rows follow each other with no gap (the window is one contiguous run).
    pub fn is_contiguous(&self) -> bool {
        self.stride == self.cols || self.rows <= 1
    }

    pub(crate) fn encode(self, o: &mut Words) {
        for w in [self.buf, self.offset, self.rows, self.cols, self.stride] {
            o.push(w);
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, FormatError> {
        Ok(Mat {
            buf: r.next()?,
            offset: r.next()?,
            rows: r.next()?,
            cols: r.next()?,
            stride: r.next()?,
        })
    }
}

/// The activation function fused after a linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): SigLIP's `gelu_pytorch_tanh`.
    GeluTanh,
    /// 0.5·x·(1 + erf(x/√2)): exact GELU.
    GeluErf,
    /// x·σ(x): SiLU (Llama's, Qwen2's and Mistral's gate).
    Silu,
}

impl Activation {
    pub fn code(self) -> u32 {
        match self {
            Activation::None => activation::NONE,
            Activation::GeluTanh => activation::GELU_TANH,
            Activation::GeluErf => activation::GELU_ERF,
            Activation::Silu => activation::SILU,
        }
    }

    pub fn from_code(code: u32) -> Result<Self, FormatError> {
        Ok(match code {
            activation::NONE => Activation::None,
            activation::GELU_TANH => Activation::GeluTanh,
            activation::GELU_ERF => Activation::GeluErf,
            activation::SILU => Activation::Silu,
            _ => {
                return Err(FormatError::BadField {
                    field: "activation",
                })
            }
        })
    }

    pub fn name(self) -> &'static str {
        names::name_of(names::ACTIVATIONS, self.code())
    }
}

impl Activation {
    /// Whether the SIMD GEMM epilogues compute it themselves (identity and GELU-tanh);
    /// the others go through the scalar [`crate::kernels::scalar::activate`] per element.
    pub fn has_simd_form(self) -> bool {
        matches!(self, Activation::None | Activation::GeluTanh)
    }

    /// " + GELU-tanh", for op descriptions ("" for none).
    pub fn suffix(self) -> &'static str {
        match self {
            Activation::None => "",
            Activation::GeluTanh => " + GELU-tanh",
            Activation::GeluErf => " + GELU-erf",
            Activation::Silu => " + SiLU",
        }
    }
}

/// The weights of a linear map `y = x·Wᵀ (+ bias)`, `W` stored `[out, in]` row-major.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weights {
    /// fp32 weights: the reference path, and layers kept in higher precision.
    F32 { w: u32 },
    /// int8 weights, symmetric per output channel (`w_scale[out]`), applied to activations
    /// quantized to u8 with one static scale and zero point fixed at quantize time:
    /// `y[o] = x_scale · w_scale[o] · Σ_k (q[k] − x_zero) · w[o][k]`,
    /// `q = clamp(round(x / x_scale) + x_zero, 0, 255)`.
    ///
    /// `narrow`: every weight is within −63..=63 (7 bits), which the model checks at load.
    /// The sums are the same on every CPU either way; CPUs whose byte multiplies sum
    /// pairs in 16 bits (AVX2) multiply such weights with fewer instructions, and the
    /// quantizer chooses them per layer where they cost no accuracy.
    ///
    /// `narrow_x` (only with `narrow`): the activations are quantized to 0..=127 instead
    /// (`format::activation_limit`). Four products then sum within 16 bits, so AVX2 adds
    /// two byte multiplies' pair sums before widening them: an opt-in of the quantizer
    /// for AVX2-only targets, at some accuracy.
    I8 {
        w: u32,
        w_scale: u32,
        x_scale: f32,
        x_zero: i32,
        narrow: bool,
        narrow_x: bool,
    },
}

impl Weights {
    /// The weight tensor's index.
    pub fn tensor(&self) -> u32 {
        match *self {
            Weights::F32 { w } | Weights::I8 { w, .. } => w,
        }
    }

    /// Shows the weight and scale tensor indices to `f`.
    pub fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        match self {
            Weights::F32 { w } => f(w),
            Weights::I8 { w, w_scale, .. } => {
                f(w);
                f(w_scale);
            }
        }
    }

    /// "fp32", "int8", "int8 (7-bit weights)" or "int8 (7-bit weights and activations)",
    /// for reports.
    pub fn precision(&self) -> &'static str {
        match self {
            Weights::F32 { .. } => "fp32",
            Weights::I8 { narrow: false, .. } => "int8",
            Weights::I8 {
                narrow: true,
                narrow_x: false,
                ..
            } => "int8 (7-bit weights)",
            Weights::I8 { narrow_x: true, .. } => "int8 (7-bit weights and activations)",
        }
    }

    pub(crate) fn encode(self, o: &mut Words) {
        let words = match self {
            Weights::F32 { w } => [weights::F32, w, NONE, 0, 0],
            Weights::I8 {
                w,
                w_scale,
                x_scale,
                x_zero,
                narrow,
                narrow_x,
            } => [
                match (narrow, narrow_x) {
                    (_, true) => weights::I8_NARROW_X,
                    (true, false) => weights::I8_NARROW,
                    (false, false) => weights::I8,
                },
                w,
                w_scale,
                x_scale.to_bits(),
                x_zero as u32,
            ],
        };
        for x in words {
            o.push(x);
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, FormatError> {
        let kind = r.next()?;
        let w = r.next()?;
        let w_scale = r.next()?;
        let x_scale = f32::from_bits(r.next()?);
        let x_zero = r.next()? as i32;
        match kind {
            weights::F32 => Ok(Weights::F32 { w }),
            weights::I8 | weights::I8_NARROW | weights::I8_NARROW_X => Ok(Weights::I8 {
                w,
                w_scale,
                x_scale,
                x_zero,
                narrow: kind != weights::I8,
                narrow_x: kind == weights::I8_NARROW_X,
            }),
            _ => Err(FormatError::BadField {
                field: "weights kind",
            }),
        }
    }
}

/// Where an attention's queries come from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Query {
    /// Computed from the input, like keys and values.
    Mat(Mat),
    /// A constant `[rows, heads·head_dim]` tensor (a pooling head's learned probe, already
    /// projected): the query side of the attention costs nothing at run time.
    Const { tensor: u32, rows: u32 },
}

impl Query {
    /// How many queries (rows of the attention's output).
    pub fn rows(&self) -> u32 {
        match *self {
            Query::Mat(m) => m.rows,
            Query::Const { rows, .. } => rows,
        }
    }

    /// Kind word, then a *Mat*'s five words (a constant: tensor, 0, rows, 0, 0).
    pub(crate) fn encode(self, o: &mut Words) {
        match self {
            Query::Mat(m) => {
                o.push(query::MAT);
                m.encode(o);
            }
            Query::Const { tensor, rows } => {
                o.push(query::CONST);
                for w in [tensor, 0, rows, 0, 0] {
                    o.push(w);
                }
            }
        }
    }

    pub(crate) fn decode(r: &mut Reader) -> Result<Self, FormatError> {
        let kind = r.next()?;
        let m = Mat::decode(r)?;
        match kind {
            query::MAT => Ok(Query::Mat(m)),
            query::CONST => Ok(Query::Const {
                tensor: m.buf,
                rows: m.rows,
            }),
            _ => Err(FormatError::BadField {
                field: "query kind",
            }),
        }
    }
}

/// What attention's two matrix products (q·kᵀ and p·v) multiply. Part of the artifact,
/// not of the kernel set, so every CPU computes the same numbers from one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 operands, f32 sums.
    F32,
    /// Operands rounded to bfloat16 (`kernels::scalar::bf16_round`), exact products
    /// summed in f32; the softmax weights enter p·v unnormalised, as bf16, and the sum is
    /// divided by the total of those same weights. Half the work of f32 on CPUs with bf16
    /// dot products, and the weights still sum to one exactly.
    Bf16,
}

impl Precision {
    pub fn code(self) -> u32 {
        match self {
            Precision::F32 => precision::F32,
            Precision::Bf16 => precision::BF16,
        }
    }

    pub fn from_code(code: u32) -> Result<Self, FormatError> {
        match code {
            precision::F32 => Ok(Precision::F32),
            precision::BF16 => Ok(Precision::Bf16),
            _ => Err(FormatError::BadField {
                field: "attention precision",
            }),
        }
    }

    pub fn name(self) -> &'static str {
        names::name_of(names::PRECISIONS, self.code())
    }
}

/// Which keys each query of an attention may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mask {
    /// Every query sees every key (encoders).
    None,
    /// Query `i` sees keys `0 ..= past + i`, `past` being the position counter before
    /// this run (0 without one): a decoder.
    Causal,
}

impl Mask {
    pub fn code(self) -> u32 {
        match self {
            Mask::None => mask::NONE,
            Mask::Causal => mask::CAUSAL,
        }
    }

    pub fn from_code(code: u32) -> Result<Self, FormatError> {
        match code {
            mask::NONE => Ok(Mask::None),
            mask::CAUSAL => Ok(Mask::Causal),
            _ => Err(FormatError::BadField {
                field: "attention mask",
            }),
        }
    }
}

/// An optional operand: `None` is stored as `0xFFFFFFFF`.
pub(crate) fn encode_opt(o: &mut Words, x: Option<u32>) {
    o.push(x.unwrap_or(NONE));
}

pub(crate) fn decode_opt(r: &mut Reader) -> Result<Option<u32>, FormatError> {
    let w = r.next()?;
    Ok((w != NONE).then_some(w))
}
