//! The runtime's operations: the small set every tower is lowered to, and their encoding.
//!
//! An op names its operands by index: activations live in *buffers* (f32 arrays in the
//! caller's arena, placed by the memory plan), constants in *tensors* (in the artifact).
//! A [`Mat`] is a row-major 2-D window of a buffer, so an attention head or a single token
//! is addressed without a copy. The encoding is a flat list of little-endian `u32` words
//! (`runtime/FORMAT.md`): the writer calls [`Op::encode`], the reader [`Op::decode`], so
//! both sides share one definition.

use crate::format::FormatError;

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
}

/// The activation function fused after a linear layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    None,
    /// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): SigLIP's `gelu_pytorch_tanh`.
    GeluTanh,
    /// 0.5·x·(1 + erf(x/√2)): exact GELU.
    GeluErf,
}

impl Activation {
    fn code(self) -> u32 {
        match self {
            Activation::None => 0,
            Activation::GeluTanh => 1,
            Activation::GeluErf => 2,
        }
    }

    fn from_code(code: u32) -> Result<Self, FormatError> {
        Ok(match code {
            0 => Activation::None,
            1 => Activation::GeluTanh,
            2 => Activation::GeluErf,
            _ => {
                return Err(FormatError::BadField {
                    field: "activation",
                })
            }
        })
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
    I8 {
        w: u32,
        w_scale: u32,
        x_scale: f32,
        x_zero: i32,
    },
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
}

/// One operation of a tower's plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    /// Non-overlapping `patch × patch` tiles of a `[channels, height, width]` image (the
    /// input buffer), each flattened in (channel, row, col) order and mapped by a linear
    /// layer: `out[p] = W · tile(p) + add[p]`, patches in row-major grid order. `add` is a
    /// `[patches, dim]` tensor (conv bias plus position embedding).
    PatchEmbed {
        input: u32,
        channels: u32,
        height: u32,
        width: u32,
        patch: u32,
        weights: Weights,
        add: u32,
        out: Mat,
    },
    /// `out[i] = table[ids[i]] + add[i]`. `ids` is a buffer of `out.rows` i32 token ids;
    /// `table` is `[vocab, dim]`, f32 or int8 with a per-row scale tensor `table_scale`.
    Embedding {
        ids: u32,
        table: u32,
        table_scale: Option<u32>,
        add: u32,
        out: Mat,
    },
    /// Normalises each row over its columns, then `· gamma + beta`.
    LayerNorm {
        x: Mat,
        gamma: u32,
        beta: u32,
        eps: f32,
        out: Mat,
    },
    /// `out = act(x · Wᵀ + bias)`; `bias` is `[out]` or absent.
    Linear {
        x: Mat,
        weights: Weights,
        bias: Option<u32>,
        act: Activation,
        out: Mat,
    },
    /// Multi-head scaled dot-product attention with no mask: head `h` uses columns
    /// `h·head_dim .. (h+1)·head_dim` of `q`, `k`, `v` and `out`; `precision` says what
    /// the two matrix products multiply (see [`Precision`]).
    Attention {
        q: Query,
        k: Mat,
        v: Mat,
        heads: u32,
        head_dim: u32,
        scale: f32,
        precision: Precision,
        out: Mat,
    },
    /// `out = a + b`, element-wise (residual connections).
    Add { a: Mat, b: Mat, out: Mat },
    /// An activation applied in place, where it could not be fused into a linear layer.
    Activate { x: Mat, act: Activation },
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
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "fp32",
            Precision::Bf16 => "bf16",
        }
    }
}

/// Opcodes, the first word of every encoded op.
mod code {
    pub const PATCH_EMBED: u32 = 1;
    pub const EMBEDDING: u32 = 2;
    pub const LAYER_NORM: u32 = 3;
    pub const LINEAR: u32 = 4;
    pub const ATTENTION: u32 = 5;
    pub const ADD: u32 = 6;
    pub const ACTIVATE: u32 = 7;
    /// Attention with bf16 products: the words of `ATTENTION`.
    pub const ATTENTION_BF16: u32 = 8;
}

/// `u32::MAX` marks an absent optional tensor.
const NONE: u32 = u32::MAX;

/// The largest encoded op, in words.
pub const MAX_OP_WORDS: usize = 32;

/// A fixed-capacity word sink, so encoding needs no allocator.
pub struct Words {
    buf: [u32; MAX_OP_WORDS],
    len: usize,
}

impl Words {
    fn push(&mut self, w: u32) {
        self.buf[self.len] = w;
        self.len += 1;
    }

    fn mat(&mut self, m: Mat) {
        for w in [m.buf, m.offset, m.rows, m.cols, m.stride] {
            self.push(w);
        }
    }

    fn weights(&mut self, w: Weights) {
        match w {
            Weights::F32 { w } => {
                for x in [0, w, NONE, 0, 0] {
                    self.push(x);
                }
            }
            Weights::I8 {
                w,
                w_scale,
                x_scale,
                x_zero,
            } => {
                for x in [1, w, w_scale, x_scale.to_bits(), x_zero as u32] {
                    self.push(x);
                }
            }
        }
    }

    pub fn as_slice(&self) -> &[u32] {
        &self.buf[..self.len]
    }
}

/// Reads words off the front of an op's encoding.
struct Reader<'a> {
    words: &'a [u32],
    pos: usize,
}

impl Reader<'_> {
    fn next(&mut self) -> Result<u32, FormatError> {
        let w = *self
            .words
            .get(self.pos)
            .ok_or(FormatError::Truncated { what: "op record" })?;
        self.pos += 1;
        Ok(w)
    }

    fn mat(&mut self) -> Result<Mat, FormatError> {
        Ok(Mat {
            buf: self.next()?,
            offset: self.next()?,
            rows: self.next()?,
            cols: self.next()?,
            stride: self.next()?,
        })
    }

    fn opt(&mut self) -> Result<Option<u32>, FormatError> {
        let w = self.next()?;
        Ok((w != NONE).then_some(w))
    }

    fn weights(&mut self) -> Result<Weights, FormatError> {
        let kind = self.next()?;
        let w = self.next()?;
        let w_scale = self.next()?;
        let x_scale = f32::from_bits(self.next()?);
        let x_zero = self.next()? as i32;
        match kind {
            0 => Ok(Weights::F32 { w }),
            1 => Ok(Weights::I8 {
                w,
                w_scale,
                x_scale,
                x_zero,
            }),
            _ => Err(FormatError::BadField {
                field: "weights kind",
            }),
        }
    }
}

impl Op {
    /// The op's words: opcode, then its fields in declaration order.
    pub fn encode(&self) -> Words {
        let mut o = Words {
            buf: [0; MAX_OP_WORDS],
            len: 0,
        };
        match *self {
            Op::PatchEmbed {
                input,
                channels,
                height,
                width,
                patch,
                weights,
                add,
                out,
            } => {
                o.push(code::PATCH_EMBED);
                for w in [input, channels, height, width, patch] {
                    o.push(w);
                }
                o.weights(weights);
                o.push(add);
                o.mat(out);
            }
            Op::Embedding {
                ids,
                table,
                table_scale,
                add,
                out,
            } => {
                o.push(code::EMBEDDING);
                for w in [ids, table, table_scale.unwrap_or(NONE), add] {
                    o.push(w);
                }
                o.mat(out);
            }
            Op::LayerNorm {
                x,
                gamma,
                beta,
                eps,
                out,
            } => {
                o.push(code::LAYER_NORM);
                o.mat(x);
                for w in [gamma, beta, eps.to_bits()] {
                    o.push(w);
                }
                o.mat(out);
            }
            Op::Linear {
                x,
                weights,
                bias,
                act,
                out,
            } => {
                o.push(code::LINEAR);
                o.mat(x);
                o.weights(weights);
                o.push(bias.unwrap_or(NONE));
                o.push(act.code());
                o.mat(out);
            }
            Op::Attention {
                q,
                k,
                v,
                heads,
                head_dim,
                scale,
                precision,
                out,
            } => {
                o.push(match precision {
                    Precision::F32 => code::ATTENTION,
                    Precision::Bf16 => code::ATTENTION_BF16,
                });
                match q {
                    Query::Mat(m) => {
                        o.push(0);
                        o.mat(m);
                    }
                    Query::Const { tensor, rows } => {
                        o.push(1);
                        o.mat(Mat {
                            buf: tensor,
                            offset: 0,
                            rows,
                            cols: 0,
                            stride: 0,
                        });
                    }
                }
                o.mat(k);
                o.mat(v);
                for w in [heads, head_dim, scale.to_bits()] {
                    o.push(w);
                }
                o.mat(out);
            }
            Op::Add { a, b, out } => {
                o.push(code::ADD);
                o.mat(a);
                o.mat(b);
                o.mat(out);
            }
            Op::Activate { x, act } => {
                o.push(code::ACTIVATE);
                o.mat(x);
                o.push(act.code());
            }
        }
        o
    }

    /// Decodes one op from the front of `words`; returns it and the words it used.
    pub fn decode(words: &[u32]) -> Result<(Op, usize), FormatError> {
        let mut r = Reader { words, pos: 0 };
        let op = match r.next()? {
            code::PATCH_EMBED => Op::PatchEmbed {
                input: r.next()?,
                channels: r.next()?,
                height: r.next()?,
                width: r.next()?,
                patch: r.next()?,
                weights: r.weights()?,
                add: r.next()?,
                out: r.mat()?,
            },
            code::EMBEDDING => Op::Embedding {
                ids: r.next()?,
                table: r.next()?,
                table_scale: r.opt()?,
                add: r.next()?,
                out: r.mat()?,
            },
            code::LAYER_NORM => Op::LayerNorm {
                x: r.mat()?,
                gamma: r.next()?,
                beta: r.next()?,
                eps: f32::from_bits(r.next()?),
                out: r.mat()?,
            },
            code::LINEAR => Op::Linear {
                x: r.mat()?,
                weights: r.weights()?,
                bias: r.opt()?,
                act: Activation::from_code(r.next()?)?,
                out: r.mat()?,
            },
            opcode @ (code::ATTENTION | code::ATTENTION_BF16) => {
                let kind = r.next()?;
                let m = r.mat()?;
                let q = match kind {
                    0 => Query::Mat(m),
                    1 => Query::Const {
                        tensor: m.buf,
                        rows: m.rows,
                    },
                    _ => {
                        return Err(FormatError::BadField {
                            field: "query kind",
                        })
                    }
                };
                Op::Attention {
                    q,
                    k: r.mat()?,
                    v: r.mat()?,
                    heads: r.next()?,
                    head_dim: r.next()?,
                    scale: f32::from_bits(r.next()?),
                    precision: if opcode == code::ATTENTION {
                        Precision::F32
                    } else {
                        Precision::Bf16
                    },
                    out: r.mat()?,
                }
            }
            code::ADD => Op::Add {
                a: r.mat()?,
                b: r.mat()?,
                out: r.mat()?,
            },
            code::ACTIVATE => Op::Activate {
                x: r.mat()?,
                act: Activation::from_code(r.next()?)?,
            },
            _ => return Err(FormatError::BadField { field: "opcode" }),
        };
        Ok((op, r.pos))
    }

    /// A short name for messages and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::PatchEmbed { .. } => "patch_embed",
            Op::Embedding { .. } => "embedding",
            Op::LayerNorm { .. } => "layer_norm",
            Op::Linear { .. } => "linear",
            Op::Attention { .. } => "attention",
            Op::Add { .. } => "add",
            Op::Activate { .. } => "activate",
        }
    }

    /// The matrix this op writes.
    pub fn output(&self) -> Mat {
        match *self {
            Op::PatchEmbed { out, .. }
            | Op::Embedding { out, .. }
            | Op::LayerNorm { out, .. }
            | Op::Linear { out, .. }
            | Op::Attention { out, .. }
            | Op::Add { out, .. } => out,
            Op::Activate { x, .. } => x,
        }
    }

    /// Multiply-accumulates one run of this op performs (for benchmarks and reports).
    /// Saturating: an op read from an untrusted file can ask for more than u64 holds.
    pub fn macs(&self) -> u64 {
        let product = |xs: &[u32]| xs.iter().fold(1u64, |p, &x| p.saturating_mul(x as u64));
        match *self {
            Op::PatchEmbed {
                channels,
                patch,
                out,
                ..
            } => product(&[out.rows, out.cols, channels, patch, patch]),
            Op::Linear { x, out, .. } => product(&[x.rows, x.cols, out.cols]),
            Op::Attention {
                q,
                k,
                heads,
                head_dim,
                ..
            } => product(&[2, q.rows(), k.rows, heads, head_dim]),
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(buf: u32) -> Mat {
        Mat {
            buf,
            offset: 3,
            rows: 4,
            cols: 5,
            stride: 9,
        }
    }

    #[test]
    fn every_op_round_trips() {
        let i8w = Weights::I8 {
            w: 2,
            w_scale: 3,
            x_scale: 0.25,
            x_zero: -7,
        };
        let ops = [
            Op::PatchEmbed {
                input: 0,
                channels: 3,
                height: 32,
                width: 48,
                patch: 8,
                weights: i8w,
                add: 9,
                out: m(1),
            },
            Op::Embedding {
                ids: 0,
                table: 1,
                table_scale: Some(2),
                add: 3,
                out: m(1),
            },
            Op::Embedding {
                ids: 0,
                table: 1,
                table_scale: None,
                add: 3,
                out: m(1),
            },
            Op::LayerNorm {
                x: m(1),
                gamma: 4,
                beta: 5,
                eps: 1e-6,
                out: m(2),
            },
            Op::Linear {
                x: m(1),
                weights: Weights::F32 { w: 6 },
                bias: None,
                act: Activation::GeluTanh,
                out: m(2),
            },
            Op::Linear {
                x: m(1),
                weights: i8w,
                bias: Some(8),
                act: Activation::GeluErf,
                out: m(2),
            },
            Op::Attention {
                q: Query::Const { tensor: 7, rows: 1 },
                k: m(1),
                v: m(2),
                heads: 4,
                head_dim: 32,
                scale: 0.125,
                precision: Precision::F32,
                out: m(3),
            },
            Op::Attention {
                q: Query::Mat(m(0)),
                k: m(1),
                v: m(2),
                heads: 4,
                head_dim: 32,
                scale: 0.125,
                precision: Precision::Bf16,
                out: m(3),
            },
            Op::Add {
                a: m(1),
                b: m(2),
                out: m(3),
            },
            Op::Activate {
                x: m(1),
                act: Activation::None,
            },
        ];
        for op in ops {
            let words = op.encode();
            let (back, used) = Op::decode(words.as_slice()).unwrap();
            assert_eq!(back, op);
            assert_eq!(used, words.as_slice().len());
            // Every strict prefix is refused, never misread.
            for cut in 0..used {
                assert!(Op::decode(&words.as_slice()[..cut]).is_err());
            }
        }
    }
}
