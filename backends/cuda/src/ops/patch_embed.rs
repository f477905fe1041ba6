//! Patch embedding as the CPU runs it: the tiles gathered into a matrix in the scratch
//! (im2col), the linear layer's own kernels on that matrix, then the added table. The
//! scratch is laid out as the CPU's — the gathered matrix, then the u8 rows — so the
//! sizes the op asks for hold on the device too.

use vlm_runtime::format::ALIGN;
use vlm_runtime::ops::{OpContext, PatchEmbed};

use super::gather::{buffer, rows_grid};
use super::linear::{product, Rows};
use super::{run, Dev, Launch};

const BLOCK: u32 = 256;

/// The most rows the GEMM kernels take (they put a row per block on the grid's y).
const MAX_ROWS: u32 = 65535;

/// Whether the device runs `p`: a grid's height bounds the rows `gemm` launches.
pub(super) fn fits(p: &PatchEmbed) -> bool {
    p.out.rows <= MAX_ROWS
}

pub(super) fn launch(p: &PatchEmbed, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let o = p.out;
    let add = d.tensor(cx.tensor(p.add)?);
    // Validated at load: the tile's size does not overflow, and the patch is not 0.
    let k = p.channels as usize * (p.patch as usize).pow(2);
    let n = o.rows as usize;
    let cols = d.scratch();
    run(
        d,
        "vlm_im2col",
        rows_grid(k as u32, o.rows),
        BLOCK,
        &[
            &buffer(d, p.input),
            &(p.height as i32),
            &(p.width as i32),
            &(p.patch as i32),
            &((p.width / p.patch) as i32),
            &cols,
            &(o.rows as i32),
            &(k as i32),
        ],
    )?;
    let q = cols + (4 * n * k).next_multiple_of(ALIGN) as u64;
    // No bias and no activation: the reference's `+ 0.0` is the kernels' own.
    let tiles = Rows {
        at: cols,
        stride: k as i32,
        rows: o.rows,
        cols: k,
    };
    product(d, cx, tiles, p.weights, 0, 0, q, o)?;
    run(
        d,
        "vlm_add_rows_in_place",
        rows_grid(o.cols, o.rows),
        BLOCK,
        &[
            &d.mat(o),
            &(o.stride as i32),
            &add,
            &(o.rows as i32),
            &(o.cols as i32),
        ],
    )
}
