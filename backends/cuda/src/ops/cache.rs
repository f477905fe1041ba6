//! KV cache appends, fp32 and int8. The position is read on the host (the backend's
//! stage brought it there), so a full cache is the CPU's own error before any launch.

use vlm_runtime::ops::{CacheAppend, CacheAppendI8, OpContext};

use super::{grid, run, Dev, Launch};

const BLOCK: u32 = 256;
/// The hardware's limit on a grid's height; the kernels step rows by it.
const MAX_GRID_Y: u32 = 65535;

pub(super) fn append(a: &CacheAppend, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let (x, c) = (a.x, a.cache);
    let pos = a.start(cx)?;
    if x.rows == 0 {
        return Ok(());
    }
    run(
        d,
        "vlm_cache_append",
        grid(x.cols as usize, BLOCK, x.rows.min(MAX_GRID_Y)),
        BLOCK,
        &[
            &d.mat(x),
            &(x.stride as i32),
            &d.mat(c),
            &(c.stride as i32),
            &(pos as i32),
            &(x.rows as i32),
            &(x.cols as i32),
        ],
    )
}

pub(super) fn append_i8(a: &CacheAppendI8, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let (x, c) = (a.x, a.cache);
    let pos = a.start(cx)?;
    if x.rows == 0 {
        return Ok(());
    }
    // A warp per head of a row.
    let heads = (x.cols / a.head_dim) as usize;
    run(
        d,
        "vlm_cache_append_i8",
        grid(heads * 32, BLOCK, x.rows.min(MAX_GRID_Y)),
        BLOCK,
        &[
            &d.mat(x),
            &(x.stride as i32),
            &(x.rows as i32),
            &(x.cols as i32),
            &(a.head_dim as i32),
            &d.mat(c),
            &(c.stride as i32),
            &(pos as i32),
        ],
    )
}
