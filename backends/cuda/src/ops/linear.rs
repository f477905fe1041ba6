//! Linear layers. int8: the input quantized to u8 rows in the scratch (as the CPU's, so
//! the sums are the same integers), then the product — on tensor cores (sm_80 and up,
//! 128 × 64 per block), with dp4a (64 × 64 per block) before them, or a warp per output
//! for a single row — with the reference's requantization. fp32: the reference's
//! dot-product order, a thread per output.

use vlm_runtime::format::{activation_limit, PANEL_K, PANEL_N};
use vlm_runtime::kernels::scalar::q_stride;
use vlm_runtime::ops::{Linear, Mat, OpContext, Weights};

use super::{grid, run, Dev, Launch};

pub(super) fn launch(l: &Linear, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let x = l.x;
    let bias = match l.bias {
        Some(b) => d.tensor(cx.tensor(b)?),
        None => 0u64,
    };
    let input = Rows {
        at: d.mat(x),
        stride: x.stride as i32,
        rows: x.rows,
        cols: x.cols as usize,
    };
    product(
        d,
        cx,
        input,
        l.weights,
        bias,
        l.act.code() as i32,
        d.scratch(),
        l.out,
    )
}

/// A matrix product's input rows on the device.
pub(super) struct Rows {
    pub at: u64,
    pub stride: i32,
    pub rows: u32,
    pub cols: usize,
}

/// `out = act(x · Wᵀ + bias)` over `x`'s rows into `out`'s columns (`bias` 0: none),
/// quantizing int8 layers' input into `q` (device scratch) first. Shared with the
/// patch embedding, whose gathered tiles are such rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn product(
    d: &Dev,
    cx: &OpContext,
    x: Rows,
    weights: Weights,
    bias: u64,
    act: i32,
    q: u64,
    o: Mat,
) -> Result<(), Launch> {
    let (out, rows, cols, stride) = (d.mat(o), x.rows as i32, o.cols as i32, o.stride as i32);
    match weights {
        Weights::F32 { w } => run(
            d,
            "vlm_linear_f32",
            grid(o.cols as usize, 128, x.rows),
            128,
            &[
                &x.at,
                &x.stride,
                &(x.cols as i32),
                &d.tensor(cx.tensor(w)?),
                &bias,
                &act,
                &out,
                &rows,
                &cols,
                &stride,
            ],
        ),
        Weights::I8 {
            w,
            w_scale,
            x_scale,
            x_zero,
            narrow_x,
            ..
        } => {
            let qs = q_stride(x.cols);
            // The CPU's reciprocal, so both round the same quotient.
            let inv = 1.0f32 / x_scale;
            run(
                d,
                "vlm_quantize_u8",
                grid(qs, 256, x.rows),
                256,
                &[
                    &x.at,
                    &rows,
                    &(x.cols as i32),
                    &x.stride,
                    &inv,
                    &x_zero,
                    &(activation_limit(narrow_x) as i32),
                    &q,
                    &(qs as i32),
                ],
            )?;
            // A row of q is k4 words.
            let k4 = (qs / PANEL_K) as i32;
            let w = d.tensor(cx.tensor(w)?);
            let ws = d.tensor(cx.tensor(w_scale)?);
            let panels = (o.cols as usize).div_ceil(PANEL_N) as i32;
            if x.rows == 1 {
                let warps_per_block = 8u32;
                return run(
                    d,
                    "vlm_gemv_u8i8_dp4a",
                    (o.cols.div_ceil(warps_per_block), 1, 1),
                    32 * warps_per_block,
                    &[
                        &q, &k4, &k4, &w, &ws, &x_scale, &bias, &act, &out, &rows, &cols, &stride,
                    ],
                );
            }
            let (kernel, tile_rows, threads) = if d.gpu.capability() >= (8, 0) {
                ("vlm_gemm_u8i8_mma_128x64", 128, 128)
            } else {
                ("vlm_gemm_u8i8_dp4a_64x64", 64, 256)
            };
            run(
                d,
                kernel,
                (o.cols.div_ceil(64), x.rows.div_ceil(tile_rows), 1),
                threads,
                &[
                    &q, &k4, &k4, &w, &panels, &ws, &x_scale, &bias, &act, &out, &rows, &cols,
                    &stride,
                ],
            )
        }
    }
}
