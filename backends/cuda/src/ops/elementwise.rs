//! Add, activation, GLU, RoPE.

use vlm_runtime::ops::{Activate, Add, Glu, OpContext, Rope};

use super::{grid, run, Dev, Launch};

const BLOCK: u32 = 256;

pub(super) fn add(a: &Add, d: &Dev) -> Result<(), Launch> {
    let o = a.out;
    run(
        d,
        "vlm_add",
        grid(o.cols as usize, BLOCK, o.rows),
        BLOCK,
        &[
            &d.mat(a.a),
            &(a.a.stride as i32),
            &d.mat(a.b),
            &(a.b.stride as i32),
            &d.mat(o),
            &(o.stride as i32),
            &(o.rows as i32),
            &(o.cols as i32),
        ],
    )
}

pub(super) fn activate(a: &Activate, d: &Dev) -> Result<(), Launch> {
    let x = a.x;
    run(
        d,
        "vlm_activate_in_place",
        grid(x.cols as usize, BLOCK, x.rows),
        BLOCK,
        &[
            &d.mat(x),
            &(x.stride as i32),
            &(x.rows as i32),
            &(x.cols as i32),
            &(a.act.code() as i32),
        ],
    )
}

pub(super) fn glu(g: &Glu, d: &Dev) -> Result<(), Launch> {
    let o = g.out;
    run(
        d,
        "vlm_glu",
        grid(o.cols as usize, BLOCK, o.rows),
        BLOCK,
        &[
            &d.mat(g.x),
            &(g.x.stride as i32),
            &(g.act.code() as i32),
            &d.mat(o),
            &(o.stride as i32),
            &(o.rows as i32),
            &(o.cols as i32),
        ],
    )
}

pub(super) fn rope(r: &Rope, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    // The position is on the host too (the backend's stage saw to it).
    let first = r.first_position(cx)?;
    let table = cx.tensor(r.table)?;
    let x = r.x;
    let pairs = (r.heads * (r.head_dim / 2)) as usize;
    run(
        d,
        "vlm_rope",
        grid(pairs, BLOCK, x.rows),
        BLOCK,
        &[
            &d.mat(x),
            &(x.stride as i32),
            &(x.rows as i32),
            &(r.heads as i32),
            &(r.head_dim as i32),
            &d.tensor(table),
            &(first as i32),
        ],
    )
}
