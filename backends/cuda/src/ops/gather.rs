//! Token embedding, last row, pixel shuffle, constant: values moved, and for the
//! embedding scaled and added, a thread per element.

use vlm_runtime::model::DType;
use vlm_runtime::ops::{Constant, Embedding, LastRow, OpContext, PixelShuffle};
use vlm_runtime::Error;

use super::{grid, run, Dev, Launch};

const BLOCK: u32 = 256;

/// The most blocks a grid's y may hold; the kernels step over rows beyond it.
const MAX_GRID_Y: u32 = 65535;

/// A grid of `cols` threads a row over `rows` rows.
pub(super) fn rows_grid(cols: u32, rows: u32) -> (u32, u32, u32) {
    grid(cols as usize, BLOCK, rows.min(MAX_GRID_Y))
}

/// The device address of a whole buffer (an input port, which no `Mat` names).
pub(super) fn buffer(d: &Dev, b: u32) -> u64 {
    d.arena + d.graph.buffer_range(b).start as u64
}

pub(super) fn embedding(e: &Embedding, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    // The CPU's checks, in its order and on the host's copies (the backend brought the
    // position and the ids there: `host_reads`), so that a run fails on the device as it
    // does there.
    let ids = cx.read_u32(e.ids)?;
    let table = cx.tensor(e.table)?;
    let add = cx.tensor(e.add)?;
    let scale = match e.table_scale {
        Some(s) => d.tensor(cx.tensor(s)?),
        None => 0u64,
    };
    let rows = e.out.rows as usize;
    let first = e.first_position(cx)?;
    let vocab = table.dims[0];
    for r in 0..rows {
        let id = *ids.get(r).ok_or_else(|| cx.bad())?;
        if id as usize >= vocab {
            return Err(Launch::Runtime(Error::TokenId { id, vocab }));
        }
    }
    let o = e.out;
    run(
        d,
        "vlm_embedding",
        rows_grid(o.cols, o.rows),
        BLOCK,
        &[
            &buffer(d, e.ids),
            &d.tensor(table),
            &i32::from(table.dtype != DType::F32),
            &scale,
            &(vocab as i32),
            &d.tensor(add),
            &(first as i32),
            &d.mat(o),
            &(o.stride as i32),
            &(o.rows as i32),
            &(o.cols as i32),
        ],
    )
}

pub(super) fn last_row(l: &LastRow, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let (x, o) = (l.x, l.out);
    let last = x.rows.checked_sub(1).ok_or_else(|| cx.bad())?;
    let from = d.mat(x) + 4 * u64::from(last) * u64::from(x.stride);
    copy_rows(d, from, 0, d.mat(o), o.stride, 1, o.cols)
}

pub(super) fn constant(c: &Constant, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let o = c.out;
    let t = d.tensor(cx.tensor(c.tensor)?);
    copy_rows(d, t, o.cols, d.mat(o), o.stride, o.rows, o.cols)
}

pub(super) fn pixel_shuffle(p: &PixelShuffle, d: &Dev) -> Result<(), Launch> {
    let (x, o) = (p.x, p.out);
    run(
        d,
        "vlm_pixel_shuffle",
        rows_grid(o.cols, o.rows),
        BLOCK,
        &[
            &d.mat(x),
            &(x.stride as i32),
            &(p.grid_w as i32),
            &(p.scale as i32),
            &(x.cols as i32),
            &d.mat(o),
            &(o.stride as i32),
            &(o.rows as i32),
            &(o.cols as i32),
        ],
    )
}

fn copy_rows(
    d: &Dev,
    x: u64,
    xstride: u32,
    out: u64,
    stride: u32,
    rows: u32,
    cols: u32,
) -> Result<(), Launch> {
    run(
        d,
        "vlm_copy_rows",
        rows_grid(cols, rows),
        BLOCK,
        &[
            &x,
            &(xstride as i32),
            &out,
            &(stride as i32),
            &(rows as i32),
            &(cols as i32),
        ],
    )
}
