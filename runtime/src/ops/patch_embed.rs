//! Patch embedding: a convolution with stride equal to its kernel, as im2col + GEMM.

use super::linear::{linear_cpu, linear_scratch};
use super::{align, product, Buffers, Check, CpuKernels, Mat, OpContext, OpSpec, Reader, Weights};
use super::{Activation, Words};
use crate::exec::Observed;
use crate::kernels::scalar::{self as k, MatRef};
use crate::model::DType;
use crate::names::opcode;
use crate::Error;

/// Non-overlapping `patch × patch` tiles of a `[channels, height, width]` image (an f32
/// input port), each flattened in (channel, row, col) order and mapped by a linear layer:
/// `out[p] = W · tile(p) + add[p]`, patches in row-major grid order. `add` is a
/// `[patches, dim]` tensor (conv bias plus position embedding).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PatchEmbed {
    pub input: u32,
    pub channels: u32,
    pub height: u32,
    pub width: u32,
    pub patch: u32,
    pub weights: Weights,
    pub add: u32,
    pub out: Mat,
}

impl PatchEmbed {
    /// Inputs of one tile.
    fn tile(&self) -> usize {
        (self.channels as usize).saturating_mul((self.patch as usize).saturating_pow(2))
    }

    fn cols_bytes(&self) -> usize {
        align(
            (self.out.rows as usize)
                .saturating_mul(self.tile())
                .saturating_mul(4),
        )
    }
}

impl core::fmt::Display for PatchEmbed {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let (m, k, n) = self.gemm_shape().unwrap_or_default();
        write!(
            f,
            "patch embedding {m}×{k}→{n} {}",
            self.weights.precision()
        )
    }
}

impl OpSpec for PatchEmbed {
    const OPCODE: u32 = opcode::PATCH_EMBED;

    fn decode(r: &mut Reader) -> Result<Self, crate::FormatError> {
        Ok(Self {
            input: r.next()?,
            channels: r.next()?,
            height: r.next()?,
            width: r.next()?,
            patch: r.next()?,
            weights: Weights::decode(r)?,
            add: r.next()?,
            out: Mat::decode(r)?,
        })
    }

    fn encode(&self, o: &mut Words) {
        for w in [
            self.input,
            self.channels,
            self.height,
            self.width,
            self.patch,
        ] {
            o.push(w);
        }
        self.weights.encode(o);
        o.push(self.add);
        self.out.encode(o);
    }

    fn output(&self) -> Mat {
        self.out
    }

    fn visit_mats(&mut self, f: &mut dyn FnMut(&mut Mat)) {
        f(&mut self.out);
    }

    fn reads(&self) -> Buffers {
        Buffers::of(&[self.input])
    }

    fn validate(&self, c: &Check) -> Result<(), &'static str> {
        let (rows, cols) = (self.out.rows as usize, self.out.cols as usize);
        let (ch, h, w, p) = (
            self.channels as usize,
            self.height as usize,
            self.width as usize,
            self.patch as usize,
        );
        let len = c.input(self.input, DType::F32);
        if len.is_none() || ch.checked_mul(h).and_then(|x| x.checked_mul(w)) != len {
            return Err("patch embedding does not read an f32 image input of its size");
        }
        // Checked: with no channels the image is empty whatever its height and width, so
        // the grid size is not bounded by the input.
        // A side that is not whole patches leaves its last pixels unread, as a
        // convolution of stride `patch` does (SigLIP so400m: 384 px, patch 14).
        if p == 0 || (h / p).checked_mul(w / p) != Some(rows) {
            return Err("patch grid does not match the output rows");
        }
        let tile = ch
            .checked_mul(p)
            .and_then(|x| x.checked_mul(p))
            .ok_or("patch size overflows")?;
        c.weights(self.weights, cols, tile)?;
        if !c.f32_len(self.add, rows * cols) {
            return Err("patch embedding's added table has the wrong size");
        }
        c.disjoint(&[self.input], self.out)
    }

    fn scratch_bytes(&self, _threads: usize) -> usize {
        self.cols_bytes().saturating_add(linear_scratch(
            self.weights,
            self.out.rows as usize,
            self.tile(),
        ))
    }

    fn gemm_shape(&self) -> Option<(usize, usize, usize)> {
        Some((self.out.rows as usize, self.tile(), self.out.cols as usize))
    }

    fn macs(&self) -> u64 {
        product(&[
            self.out.rows,
            self.out.cols,
            self.channels,
            self.patch,
            self.patch,
        ])
    }

    fn visit_tensors(&mut self, f: &mut dyn FnMut(&mut u32)) {
        self.weights.visit_tensors(f);
        f(&mut self.add);
    }

    fn precision(&self) -> &'static str {
        self.weights.precision()
    }

    fn weights(&self) -> Option<Weights> {
        Some(self.weights)
    }

    fn run_cpu(&self, cx: &mut OpContext, cpu: CpuKernels) -> Result<(), Error> {
        let image = cx.read_f32(self.input)?;
        let add = cx.f32s(self.add)?;
        let tensors = cx.tensors;
        let (c, p, n, kk) = (
            self.channels as usize,
            self.patch as usize,
            self.out.rows as usize,
            self.tile(),
        );
        let cols_len = self.cols_bytes();
        let bad = cx.bad();
        let observer = cx.observer.as_deref_mut();
        let index = cx.index;
        let out_bytes = super::context::cast_mut(&mut *cx.out)?;
        let mut out = super::context::mat_mut(out_bytes, self.out).ok_or(bad)?;
        let (cols_bytes, qbytes) = cx.scratch.split_at_mut(cols_len.min(cx.scratch.len()));
        let cols: &mut [f32] =
            super::context::cast_mut(cols_bytes.get_mut(..4 * n * kk).ok_or(bad)?)?;
        k::im2col(image, c, self.height as usize, self.width as usize, p, cols);
        let x = MatRef {
            data: cols,
            rows: n,
            cols: kk,
            stride: kk,
        };
        if let Some(o) = observer {
            o.observe(index, Observed::LinearInput, x);
        }
        let cpu = CpuKernels {
            reuse_quantized: false,
            ..cpu
        };
        linear_cpu(
            cpu,
            tensors,
            x,
            self.weights,
            None,
            Activation::None,
            &mut out,
            qbytes,
        )
        .ok_or(bad)?;
        let w = out.cols;
        for r in 0..n {
            for (y, a) in out.row_mut(r).iter_mut().zip(&add[r * w..(r + 1) * w]) {
                *y += a;
            }
        }
        Ok(())
    }
}
