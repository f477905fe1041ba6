//! The CPU backend: the ops' own CPU code over one kernel set.

use super::Backend;
use crate::kernels::Isa;
use crate::ops::{CpuKernels, Mat, Op, OpContext};
use crate::Error;

/// Runs ops with one ISA's kernels, on one or more threads.
#[derive(Debug, Clone, Copy)]
pub struct Cpu {
    pub isa: Isa,
    pub threads: usize,
    /// fp32 attention through the scalar reference (see `Session::set_reproducible`).
    pub reproducible: bool,
    /// The input window, scale bits and zero point whose u8 quantization the scratch
    /// holds, after an int8 linear layer: q, k and v projections read one input, and
    /// quantize it once.
    quantized: Option<(Mat, u32, i32, bool)>,
}

impl Cpu {
    /// `isa`, or the scalar reference where this CPU cannot run it.
    pub fn new(isa: Isa) -> Self {
        Self {
            isa: if isa.supported() { isa } else { Isa::Scalar },
            threads: 1,
            reproducible: false,
            quantized: None,
        }
    }
}

impl Backend for Cpu {
    fn name(&self) -> &'static str {
        self.isa.name()
    }

    fn begin(&mut self) {
        self.quantized = None;
    }

    fn on_pool(&self) -> usize {
        if self.threads > 1 {
            self.threads
        } else {
            0
        }
    }

    fn scratch_bytes(&self, op: &Op) -> usize {
        op.scratch_bytes_for_threads(self.threads)
    }

    fn execute(&mut self, op: &Op, cx: &mut OpContext) -> Result<(), Error> {
        // Only the op right after the layer that quantized an input may reuse it: that
        // layer wrote nothing but its own output (never its input) and the scratch.
        let quantizes = op.quantized_input();
        let reuse = quantizes.is_some() && quantizes == self.quantized;
        self.quantized = None;
        op.run_cpu(
            cx,
            CpuKernels {
                isa: self.isa,
                threads: self.threads,
                reproducible: self.reproducible,
                reuse_quantized: reuse,
            },
        )?;
        self.quantized = quantizes;
        Ok(())
    }
}
