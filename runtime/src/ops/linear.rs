//! Linear layer `out = act(x · Wᵀ + bias)`, fp32 or int8 weights.

use super::{align, product, Activation, Buffers, Check, CpuKernels, Mat, OpContext, OpSpec};
use super::{operands, Reader, Weights, Words};
use crate::exec::Observed;
use crate::format::activation_limit;
use crate::kernels::scalar::{self as k, MatMut, MatRef};
use crate::model::Tensors;
use crate::names::opcode;
use crate::Error;

/// `out = act(x · Wᵀ + bias)`; `bias` is `[out]` or absent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Linear {
    pub x: Mat,
    pub weights: Weights,
    pub bias: Option<u32>,
    pub act: Activation,
    pub out: Mat,
}

impl core::fmt::Display for Linear {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (x, o) = (self.x, self.out);
        write!(
            f,
            "linear {}×{}→{} {}{}",
            x.rows,
            x.cols,
            o.cols,
            self.weights.precision(),
            self.act.suffix()
        )
    }
}

impl OpSpec for Linear {
    const OPCODE: u32 = opcode::LINEAR;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            x: Mat::decode(r)?,
            weights: Weights::decode(r)?,
            bias: operands::decode_opt(r)?,
            act: Activation::from_code(r.next()?)?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        self.x.encode(o);
        self.weights.encode(o);
        operands::encode_opt(o, self.bias);
        o.push(self.act.code());
        self.out.encode(o);
    }

    fn output(&self) -> Mat {
        self.out
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.x);
        f(&mut self.out);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[self.x.buf])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let (x, out) = (self.x, self.out);
        if !c.fits(x) || x.rows != out.rows || x.cols == 0 {
            return Err("linear input window is invalid");
        }
        c.weights(self.weights, out.cols as usize, x.cols as usize)?;
        if self.bias.is_some_and(|b| !c.f32_len(b, out.cols as usize)) {
            return Err("linear bias has the wrong size");
        }
        c.disjoint(&[x.buf], out)
    }

    fn scratch_bytes(&self, threads: usize) -> usize {
        let (rows, cols) = (self.x.rows as usize, self.x.cols as usize);
        linear_scratch(self.weights, rows, cols).saturating_add(linear_spare(
            self.weights,
            rows,
            self.out.cols as usize,
            threads,
        ))
    }

    fn gemm_shape(&self) -> Option<(usize, usize, usize)> {
        let (x, o) = (self.x, self.out);
        Some((x.rows as usize, x.cols as usize, o.cols as usize))
    }

    fn macs(&self) -> u64 {
        product(&[self.x.rows, self.x.cols, self.out.cols])
    }

    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        self.weights.visit_tensors(f);
        if let Some(b) = &mut self.bias {
            f(b);
        }
    }

    fn precision(&self) -> &'static str {
        self.weights.precision()
    }

    fn weights(&self) -> Option<Weights> {
        Some(self.weights)
    }

    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        let x = cx.read(self.x)?;
        cx.observe(Observed::LinearInput, x);
        let bias = match self.bias {
            Some(b) => Some(cx.f32s(b)?),
            None => None,
        };
        let tensors = cx.tensors;
        let bad = cx.bad();
        let (mut out, scratch) = cx.out_and_scratch(self.out)?;
        linear_cpu(
            cpu,
            tensors,
            x,
            self.weights,
            bias,
            self.act,
            &mut out,
            scratch,
        )
        .ok_or(bad)
    }
}

/// Scratch of a linear map over `rows × cols` inputs: their u8 quantization, for int8.
pub(super) fn linear_scratch(weights: Weights, rows: usize, cols: usize) -> usize {
    match weights {
        Weights::I8 { .. } => align(rows.saturating_mul(k::q_stride(cols))),
        Weights::F32 { .. } => 0,
    }
}

/// Scratch after [`linear_scratch`] that lets an int8 product of few rows split by
/// weight panels across `threads` (see `Isa::gemm_u8i8_threads`).
pub(super) fn linear_spare(
    weights: Weights,
    rows: usize,
    out_cols: usize,
    threads: usize,
) -> usize {
    match weights {
        Weights::I8 { .. } => {
            align(crate::kernels::gemm_u8i8_spare_floats(rows, out_cols, threads).saturating_mul(4))
        }
        Weights::F32 { .. } => 0,
    }
}

/// A linear map in whichever precision its weights are; `None` on a missing tensor.
/// With `cpu.reuse_quantized`, the scratch already holds this input's u8 quantization.
#[allow(clippy::too_many_arguments)]
pub(super) fn linear_cpu(
    cpu: CpuKernels,
    tensors: Tensors,
    x: MatRef,
    weights: Weights,
    bias: Option<&[f32]>,
    act: Activation,
    out: &mut MatMut,
    scratch: &mut [u8],
) -> Option<()> {
    let (isa, threads) = (cpu.isa, cpu.threads);
    match weights {
        Weights::F32 { w } => {
            let w = tensors.get(w)?.f32s();
            #[cfg(feature = "std")]
            isa.gemm_f32_threads(threads, x, w, bias, act, out.reborrow());
            #[cfg(not(feature = "std"))]
            {
                let _ = threads;
                isa.gemm_f32(x, w, bias, act, out.reborrow());
            }
        }
        Weights::I8 {
            w,
            w_scale,
            x_scale,
            x_zero,
            narrow,
            narrow_x,
        } => {
            let qn = x.rows * k::q_stride(x.cols);
            let (q, rest) = scratch.split_at_mut_checked(qn)?;
            let xq = k::XQuant {
                scale: x_scale,
                zero: x_zero,
                top: activation_limit(narrow_x),
            };
            let quantize = (!cpu.reuse_quantized).then_some((x, xq));
            let ep = k::Epilogue {
                x_scale,
                w_scale: tensors.get(w_scale)?.f32s(),
                bias,
                act,
            };
            let w = k::Panels {
                w: tensors.get(w)?.i8s(),
                narrow,
                narrow_x,
            };
            #[cfg(feature = "std")]
            {
                // No spare (an arena sized for fewer threads): the rows are split instead.
                let spare = rest.get_mut(align(qn) - qn..).unwrap_or_default();
                let whole = spare.len() / 4 * 4;
                let spare: &mut [f32] =
                    bytemuck::try_cast_slice_mut(&mut spare[..whole]).unwrap_or_default();
                let o = out.reborrow();
                isa.quantize_gemm_u8i8_threads(threads, quantize, q, x.cols, w, &ep, o, spare);
            }
            #[cfg(not(feature = "std"))]
            {
                let _ = (threads, rest);
                if let Some((x, p)) = quantize {
                    isa.quantize_u8(x, p.scale, p.zero, p.top, q);
                }
                isa.gemm_u8i8(q, x.cols, w, &ep, out.reborrow());
            }
        }
    }
    Some(())
}
