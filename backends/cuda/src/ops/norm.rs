//! Layer norm and RMS norm: 16 rows per 256-thread block.

use vlm_runtime::ops::{LayerNorm, OpContext, RmsNorm};

use super::{run, Dev, Launch};

const ROWS_PER_BLOCK: u32 = 16;

pub(super) fn layer_norm(n: &LayerNorm, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let (x, o) = (n.x, n.out);
    run(
        d,
        "vlm_layer_norm",
        (x.rows.div_ceil(ROWS_PER_BLOCK).max(1), 1, 1),
        256,
        &[
            &d.mat(x),
            &(x.stride as i32),
            &d.tensor(cx.tensor(n.gamma)?),
            &d.tensor(cx.tensor(n.beta)?),
            &n.eps,
            &d.mat(o),
            &(o.stride as i32),
            &(x.rows as i32),
            &(x.cols as i32),
        ],
    )
}

pub(super) fn rms_norm(n: &RmsNorm, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let (x, o) = (n.x, n.out);
    run(
        d,
        "vlm_rms_norm",
        (x.rows.div_ceil(ROWS_PER_BLOCK).max(1), 1, 1),
        256,
        &[
            &d.mat(x),
            &(x.stride as i32),
            &d.tensor(cx.tensor(n.gamma)?),
            &n.eps,
            &d.mat(o),
            &(o.stride as i32),
            &(x.rows as i32),
            &(x.cols as i32),
        ],
    )
}
