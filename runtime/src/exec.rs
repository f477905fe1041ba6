//! The executor: runs a validated tower's plan over a caller-provided arena.
//!
//! No allocation: every activation lives at the arena offset the plan gave it, scratch
//! after the last buffer. The model was validated at load, so the lookups here cannot
//! fail on a loaded model; they still return errors rather than panic.

use core::ops::Range;

use crate::format::{FormatError, ALIGN};
use crate::kernels::scalar::{self as k, MatMut, MatRef};
use crate::kernels::Isa;
use crate::model::{Model, Tower, TowerKind};
use crate::ops::{Mat, Op, Precision, Query, Weights};
use crate::Error;

/// What an [`Observer`] is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The fp32 matrix a linear layer (or patch embedding, after gathering its tiles) is
    /// about to quantize or multiply: what calibration measures.
    LinearInput,
    /// An op's result.
    Output,
}

/// Sees intermediate values as the plan runs (calibration, per-layer error reports).
pub trait Observer {
    fn observe(&mut self, node: usize, what: Observed, x: MatRef<'_>);
}

fn align(n: usize) -> usize {
    n.checked_next_multiple_of(ALIGN).unwrap_or(usize::MAX)
}

/// Scratch bytes an op needs beyond its buffers (the memory plan reserves the largest).
///
/// Saturating: ops come from untrusted files, and even a validated one can need more
/// than a 32-bit usize holds (a buffer may hold 2^30 floats); an overflow must come out
/// as "too large for the arena", never wrap to a small size (nor panic).
pub fn scratch_bytes(op: &Op) -> usize {
    match *op {
        Op::PatchEmbed {
            channels,
            patch,
            weights,
            out,
            ..
        } => {
            let n = (out.rows as usize)
                .saturating_mul(channels as usize)
                .saturating_mul((patch as usize).saturating_pow(2));
            align(n.saturating_mul(4)).saturating_add(match weights {
                Weights::I8 { .. } => align((out.rows as usize).saturating_mul(k::q_stride(
                    (channels as usize).saturating_mul((patch as usize).saturating_pow(2)),
                ))),
                Weights::F32 { .. } => 0,
            })
        }
        Op::Linear {
            x,
            weights: Weights::I8 { .. },
            ..
        } => align((x.rows as usize).saturating_mul(k::q_stride(x.cols as usize))),
        Op::Attention {
            k,
            head_dim,
            precision,
            ..
        } => align(
            Isa::attention_scratch_floats(head_dim as usize, k.rows as usize, precision)
                .saturating_mul(4),
        ),
        _ => 0,
    }
}

/// Scratch bytes for `op` when its work is split across `threads` threads: attention
/// gives each thread its own transposed keys and score rows.
pub fn scratch_bytes_for_threads(op: &Op, threads: usize) -> usize {
    match op {
        Op::Attention { .. } => scratch_bytes(op).saturating_mul(threads.max(1)),
        _ => scratch_bytes(op),
    }
}

/// The input of a tower run.
#[derive(Debug, Clone, Copy)]
pub enum Input<'i> {
    /// `[channels, height, width]` normalised pixel values.
    Pixels(&'i [f32]),
    /// Token ids, exactly the model's `max_length` of them.
    Tokens(&'i [u32]),
}

/// A session: one model, one arena. Runs one tower at a time.
pub struct Session<'m, 'a> {
    model: Model<'m>,
    arena: &'a mut [u8],
    isa: Isa,
    threads: usize,
    /// fp32 attention through the scalar reference (see [`Session::set_reproducible`]).
    reproducible: bool,
    /// The input window, scale bits and zero point whose u8 quantization the scratch
    /// holds, after an int8 linear layer: q, k and v projections read one input, and
    /// quantize it once.
    quantized: Option<(Mat, u32, i32)>,
}

impl<'m, 'a> Session<'m, 'a> {
    /// `arena` must hold at least `model.arena_size()` bytes; it need not be aligned.
    pub fn new(model: &Model<'m>, arena: &'a mut [u8]) -> Result<Self, Error> {
        Self::with_isa(model, arena, Isa::detect())
    }

    /// A session on chosen kernels (an unsupported ISA falls back to scalar).
    pub fn with_isa(model: &Model<'m>, arena: &'a mut [u8], isa: Isa) -> Result<Self, Error> {
        let need = model.arena_size();
        if arena.len() < need {
            return Err(Error::ArenaTooSmall {
                need,
                got: arena.len(),
            });
        }
        let skip = arena.as_ptr().align_offset(ALIGN).min(ALIGN);
        let arena = &mut arena[skip..];
        Ok(Self {
            model: *model,
            arena,
            isa: if isa.supported() { isa } else { Isa::Scalar },
            threads: 1,
            reproducible: false,
            quantized: None,
        })
    }

    pub fn model(&self) -> &Model<'m> {
        &self.model
    }

    /// Splits the large GEMMs across `n` threads (std only; 1, the default, spawns none
    /// and allocates nothing).
    #[cfg(feature = "std")]
    pub fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }

    /// With `true`, every op computes the scalar reference's bits on any CPU: fp32
    /// attention (the one float kernel whose SIMD versions are only within a tolerance of
    /// the reference: their exponential and sum order differ) runs the reference. Every
    /// other op already does (int8 GEMMs are exact; fp32 GEMM, layer norm, bf16
    /// attention and activation quantization fix their operations and order). What
    /// calibration and label embeddings run on, so an artifact is the same file whichever
    /// CPU wrote it.
    pub fn set_reproducible(&mut self, on: bool) {
        self.reproducible = on;
    }

    /// The kernels this session runs.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The image embedding (not normalised) of `[C, H, W]` pixel values.
    pub fn encode_image(&mut self, pixels: &[f32], out: &mut [f32]) -> Result<(), Error> {
        self.run(TowerKind::Vision, Input::Pixels(pixels), out, None)
    }

    /// The text embedding (not normalised) of `max_length` token ids.
    pub fn encode_text(&mut self, ids: &[u32], out: &mut [f32]) -> Result<(), Error> {
        self.run(TowerKind::Text, Input::Tokens(ids), out, None)
    }

    /// Runs one tower, showing intermediate values to `observer`.
    pub fn run(
        &mut self,
        kind: TowerKind,
        input: Input<'_>,
        out: &mut [f32],
        mut observer: Option<&mut dyn Observer>,
    ) -> Result<(), Error> {
        let model = self.model;
        let tower = *model
            .tower(kind)
            .ok_or(Error::NoTower { tower: kind.name() })?;
        if out.len() != model.meta.embed_dim {
            return Err(Error::BufferSize {
                what: "embedding output",
                got: out.len(),
                expected: model.meta.embed_dim,
            });
        }
        let input_bytes = tower.buffer_range(tower.input_buf);
        let dst = &mut self.arena[input_bytes];
        match (kind, input) {
            (TowerKind::Vision, Input::Pixels(p)) => {
                if p.len() != tower.input_len {
                    return Err(Error::BufferSize {
                        what: "pixel values",
                        got: p.len(),
                        expected: tower.input_len,
                    });
                }
                dst.copy_from_slice(bytemuck::cast_slice(p));
            }
            (TowerKind::Text, Input::Tokens(ids)) => {
                if ids.len() != tower.input_len {
                    return Err(Error::BufferSize {
                        what: "token ids",
                        got: ids.len(),
                        expected: tower.input_len,
                    });
                }
                let vocab = model.meta.vocab_size;
                if let Some(&id) = ids.iter().find(|&&i| i as usize >= vocab) {
                    return Err(Error::TokenId { id, vocab });
                }
                dst.copy_from_slice(bytemuck::cast_slice(ids));
            }
            _ => return Err(Error::NoTower { tower: kind.name() }),
        }
        self.quantized = None;
        for (index, (_, op)) in tower.ops(&model).enumerate() {
            let obs: Option<&mut dyn Observer> = match &mut observer {
                Some(o) => Some(&mut **o),
                None => None,
            };
            self.step(&tower, index, &op, obs)?;
        }
        let o = tower.output;
        let all: &[f32] = cast(&self.arena[tower.buffer_range(o.buf)])?;
        let start = o.offset as usize;
        out.copy_from_slice(
            all.get(start..start + o.cols as usize)
                .ok_or(bad_op(kind, 0))?,
        );
        Ok(())
    }

    fn step(
        &mut self,
        t: &Tower<'m>,
        index: usize,
        op: &Op,
        mut obs: Option<&mut dyn Observer>,
    ) -> Result<(), Error> {
        let model = self.model;
        let isa = self.isa;
        let threads = self.threads;
        // Only the op right after the layer that quantized an input may reuse it: that
        // layer wrote nothing but its own output (never its input) and the scratch.
        let quantizes = match *op {
            Op::Linear {
                x,
                weights: Weights::I8 {
                    x_scale, x_zero, ..
                },
                ..
            } => Some((x, x_scale.to_bits(), x_zero)),
            _ => None,
        };
        let reuse = quantizes.is_some() && quantizes == self.quantized;
        self.quantized = None;
        let bad = || bad_op(t.kind, index);
        let out_mat = op.output();
        // Attention may use whatever scratch the arena has beyond one thread's: more
        // threads when the caller sized the arena for them (`arena_size_for_threads`).
        let scratch = match op {
            Op::Attention { .. } => t.scratch_at..self.arena.len().max(t.scratch_at),
            _ => t.scratch_at..t.scratch_at + scratch_bytes(op),
        };
        let (reads, out_bytes, scratch) =
            carve(self.arena, t.buffer_range(out_mat.buf), scratch).ok_or_else(bad)?;
        let mut out = mat_mut(cast_mut(out_bytes)?, out_mat).ok_or_else(bad)?;
        let f32s = |i: u32| model.tensor(i).map(|t| t.f32s()).ok_or_else(bad);
        let buffer = |b: u32| reads.get(t.buffer_range(b)).ok_or_else(bad);
        let read =
            |m: Mat| -> Result<MatRef, Error> { mat_ref(cast(buffer(m.buf)?)?, m).ok_or_else(bad) };
        match *op {
            Op::PatchEmbed {
                input,
                channels,
                height,
                width,
                patch,
                weights,
                add,
                ..
            } => {
                let image: &[f32] = cast(buffer(input)?)?;
                let (c, p) = (channels as usize, patch as usize);
                let kk = c * p * p;
                let n = out.rows;
                let (cols_bytes, qbytes) = scratch.split_at_mut(align(4 * n * kk));
                let cols: &mut [f32] = cast_mut(&mut cols_bytes[..4 * n * kk])?;
                k::im2col(image, c, height as usize, width as usize, p, cols);
                let x = MatRef {
                    data: cols,
                    rows: n,
                    cols: kk,
                    stride: kk,
                };
                if let Some(o) = obs.as_deref_mut() {
                    o.observe(index, Observed::LinearInput, x);
                }
                linear(
                    (isa, threads),
                    &model,
                    x,
                    weights,
                    None,
                    crate::ops::Activation::None,
                    &mut out,
                    (qbytes, false),
                )
                .ok_or_else(bad)?;
                let add = f32s(add)?;
                for r in 0..n {
                    let w = out.cols;
                    for (y, a) in out.row_mut(r).iter_mut().zip(&add[r * w..(r + 1) * w]) {
                        *y += a;
                    }
                }
            }
            Op::Embedding {
                ids,
                table,
                table_scale,
                add,
                ..
            } => {
                let ids: &[u32] = cast(buffer(ids)?)?;
                let tab = model.tensor(table).ok_or_else(bad)?;
                let add = f32s(add)?;
                let d = out.cols;
                for r in 0..out.rows {
                    let id = ids[r] as usize;
                    if id >= tab.dims[0] {
                        return Err(Error::TokenId {
                            id: ids[r],
                            vocab: tab.dims[0],
                        });
                    }
                    let a = &add[r * d..(r + 1) * d];
                    let y = out.row_mut(r);
                    match table_scale {
                        None => {
                            let row = &tab.f32s()[id * d..(id + 1) * d];
                            for c in 0..d {
                                y[c] = row[c] + a[c];
                            }
                        }
                        Some(s) => {
                            let s = f32s(s)?[id];
                            let row = &tab.i8s()[id * d..(id + 1) * d];
                            for c in 0..d {
                                y[c] = row[c] as f32 * s + a[c];
                            }
                        }
                    }
                }
            }
            Op::LayerNorm {
                x,
                gamma,
                beta,
                eps,
                ..
            } => {
                let x = read(x)?;
                isa.layer_norm(x, f32s(gamma)?, f32s(beta)?, eps, out.reborrow());
            }
            Op::Linear {
                x,
                weights,
                bias,
                act,
                ..
            } => {
                let x = read(x)?;
                if let Some(o) = obs.as_deref_mut() {
                    o.observe(index, Observed::LinearInput, x);
                }
                let bias = match bias {
                    Some(b) => Some(f32s(b)?),
                    None => None,
                };
                linear(
                    (isa, threads),
                    &model,
                    x,
                    weights,
                    bias,
                    act,
                    &mut out,
                    (scratch, reuse),
                )
                .ok_or_else(bad)?;
            }
            Op::Attention {
                q,
                k: km,
                v,
                heads,
                head_dim,
                scale,
                precision,
                ..
            } => {
                let q = match q {
                    Query::Mat(m) => read(m)?,
                    Query::Const { tensor, rows } => {
                        let data = f32s(tensor)?;
                        MatRef {
                            data,
                            rows: rows as usize,
                            cols: out.cols,
                            stride: out.cols,
                        }
                    }
                };
                let (km, v) = (read(km)?, read(v)?);
                let scores: &mut [f32] = cast_mut(scratch)?;
                let isa = match precision {
                    Precision::F32 if self.reproducible => Isa::Scalar,
                    _ => isa,
                };
                #[cfg(feature = "std")]
                isa.attention_threads(
                    threads,
                    q,
                    km,
                    v,
                    heads as usize,
                    head_dim as usize,
                    scale,
                    precision,
                    out.reborrow(),
                    scores,
                );
                #[cfg(not(feature = "std"))]
                isa.attention(
                    q,
                    km,
                    v,
                    heads as usize,
                    head_dim as usize,
                    scale,
                    precision,
                    out.reborrow(),
                    scores,
                );
            }
            Op::Add { a, b, .. } => {
                let (a, b) = (read(a)?, read(b)?);
                k::add(a, b, out.reborrow());
            }
            Op::Activate { act, .. } => k::activate_in_place(out.reborrow(), act),
        }
        if let Some(o) = obs {
            o.observe(index, Observed::Output, out.as_ref());
        }
        self.quantized = quantizes;
        Ok(())
    }
}

/// A linear layer in whichever precision its weights are; `None` on a missing tensor.
/// With `quantized`, the scratch already holds this input's u8 quantization.
#[allow(clippy::too_many_arguments)]
fn linear(
    (isa, threads): (Isa, usize),
    model: &Model,
    x: MatRef,
    weights: Weights,
    bias: Option<&[f32]>,
    act: crate::ops::Activation,
    out: &mut MatMut,
    (scratch, quantized): (&mut [u8], bool),
) -> Option<()> {
    match weights {
        Weights::F32 { w } => {
            let w = model.tensor(w)?.f32s();
            #[cfg(feature = "std")]
            isa.gemm_f32_threads(threads, x, w, bias, act, out.reborrow());
            #[cfg(not(feature = "std"))]
            isa.gemm_f32(x, w, bias, act, out.reborrow());
        }
        Weights::I8 {
            w,
            w_scale,
            x_scale,
            x_zero,
        } => {
            let q = scratch.get_mut(..x.rows * k::q_stride(x.cols))?;
            if !quantized {
                isa.quantize_u8(x, x_scale, x_zero, q);
            }
            let ep = k::Epilogue {
                x_scale,
                w_scale: model.tensor(w_scale)?.f32s(),
                bias,
                act,
            };
            let w = model.tensor(w)?.i8s();
            #[cfg(feature = "std")]
            isa.gemm_u8i8_threads(threads, q, x.cols, w, &ep, out.reborrow());
            #[cfg(not(feature = "std"))]
            {
                let _ = threads;
                isa.gemm_u8i8(q, x.cols, w, &ep, out.reborrow());
            }
        }
    }
    Some(())
}

fn bad_op(kind: TowerKind, index: usize) -> Error {
    Error::Format(FormatError::BadOp {
        tower: kind.name(),
        index,
        why: "operand outside the arena",
    })
}

fn cast<T: bytemuck::Pod>(b: &[u8]) -> Result<&[T], Error> {
    bytemuck::try_cast_slice(b).map_err(|_| Error::Format(FormatError::Misaligned))
}

fn cast_mut<T: bytemuck::Pod>(b: &mut [u8]) -> Result<&mut [T], Error> {
    bytemuck::try_cast_slice_mut(b).map_err(|_| Error::Format(FormatError::Misaligned))
}

fn mat_ref(buf: &[f32], m: Mat) -> Option<MatRef<'_>> {
    let span = m.span()?;
    Some(MatRef {
        data: buf.get(m.offset as usize..span)?,
        rows: m.rows as usize,
        cols: m.cols as usize,
        stride: m.stride as usize,
    })
}

fn mat_mut(buf: &mut [f32], m: Mat) -> Option<MatMut<'_>> {
    let span = m.span()?;
    Some(MatMut {
        data: buf.get_mut(m.offset as usize..span)?,
        rows: m.rows as usize,
        cols: m.cols as usize,
        stride: m.stride as usize,
    })
}

/// The arena outside one op's output buffer and scratch: what the op may read.
#[derive(Clone, Copy)]
struct Reads<'a> {
    before: &'a [u8],
    between: &'a [u8],
    between_at: usize,
}

impl<'a> Reads<'a> {
    /// A buffer that lies wholly before or wholly after the output.
    fn get(&self, r: Range<usize>) -> Option<&'a [u8]> {
        if r.end <= self.before.len() {
            self.before.get(r)
        } else if r.start >= self.between_at {
            self.between
                .get(r.start - self.between_at..r.end - self.between_at)
        } else {
            None
        }
    }
}

/// Cuts the arena around one op's output buffer and scratch, so inputs can be read while
/// the output is written (safe Rust: disjoint borrows from `split_at_mut`).
fn carve(
    arena: &mut [u8],
    out: Range<usize>,
    scratch: Range<usize>,
) -> Option<(Reads<'_>, &mut [u8], &mut [u8])> {
    if out.end > scratch.start || scratch.end > arena.len() || out.start > out.end {
        return None;
    }
    let (head, tail) = arena.split_at_mut(scratch.start);
    let scratch = &mut tail[..scratch.end - scratch.start];
    let (before, rest) = head.split_at_mut(out.start);
    let (out_bytes, between) = rest.split_at_mut(out.end - out.start);
    Some((
        Reads {
            before,
            between,
            between_at: out.end,
        },
        out_bytes,
        scratch,
    ))
}
