//! Attention: fp32, bf16, and fp32 over an int8 KV cache, with GQA, the causal mask, a
//! past length and constant queries — every variant the CPU runs. A block per (query
//! row, head); its scores live in dynamic shared memory, or in the graph's scratch when
//! too many keys would not fit there (kernels/attention.cu).

use vlm_runtime::kernels::scalar::bf16_score_scale;
use vlm_runtime::model::DType;
use vlm_runtime::ops::{Attention, Mask, OpContext, OpSpec, Precision, Query};

use super::{run_shared, Dev, Launch};

/// Threads per block: the kernels' `VLM_ATTN_THREADS`.
const THREADS: u32 = 128;
/// Dynamic shared memory a slot may take: under the 48 KiB a launch gets without
/// opting in, less the kernels' few static bytes.
const SHARED_MAX: usize = 46 * 1024;
/// Blocks at most; they stride over the (row, head) items.
const MAX_BLOCKS: usize = 1 << 24;

pub(super) fn launch(a: &Attention, d: &Dev, cx: &OpContext) -> Result<(), Launch> {
    let o = a.out;
    let (q, qstride) = match a.q {
        Query::Mat(m) => (d.mat(m), m.stride),
        // A constant query is dense, `out.cols` wide (as run_cpu reads it).
        Query::Const { tensor, .. } => (d.tensor(cx.tensor(tensor)?), o.cols),
    };
    // The CPU's checks, in its order, so a device run fails as a CPU run would.
    let (past, keys) = a.keys(cx)?;
    let rows = a.q.rows() as usize;
    if rows == 0 {
        return Ok(());
    }
    let causal = a.mask == Mask::Causal;
    // The most keys any row sees: its last row's under the causal mask (at most
    // `capacity`: validation caps the rows, and `keys` was checked).
    let longest = if causal { past + rows } else { keys };
    let hd = a.head_dim as usize;
    // A slot: the query head, then the scores; whole 16-byte steps.
    let slot = (hd + longest).next_multiple_of(4);
    let items = rows * a.heads as usize;
    let (slots, blocks, shared) = if slot * 4 <= SHARED_MAX {
        (0u64, items, slot * 4)
    } else {
        // The scratch holds `scratch_bytes(1)`: for either precision more than one slot
        // (fp32: (head_dim + 6) score rows of the cache's length), so at least one block.
        let fit = a.scratch_bytes(1) / (slot * 4);
        if fit == 0 {
            return Err(cx.bad().into());
        }
        (d.scratch(), items.min(fit), 0)
    };
    let grid = (blocks.min(MAX_BLOCKS) as u32, 1, 1);
    let shared = shared as u32;
    let (k, v) = (a.k, a.v);
    let (kp, ks, vp, vs) = (d.mat(k), k.stride as i32, d.mat(v), v.stride as i32);
    let (qs, out, ostride) = (qstride as i32, d.mat(o), o.stride as i32);
    let (rows, heads, hd) = (rows as i32, a.heads as i32, hd as i32);
    let (keys, causal, past, slot) = (keys as i32, causal as i32, past as i32, slot as i32);
    if cx.is_state_of(k.buf, DType::I8) {
        // Rows as scalar::I8Rows sees them: `width` value bytes, then a scale per head.
        let kv_heads = k.cols / (a.head_dim / 4 + 1);
        let width = (kv_heads * a.head_dim) as i32;
        let group = (a.heads / kv_heads) as i32;
        return run_shared(
            d,
            "vlm_attention_i8kv",
            grid,
            THREADS,
            shared,
            &[
                &q, &qs, &kp, &ks, &vp, &vs, &width, &out, &ostride, &rows, &heads, &hd, &group,
                &a.scale, &keys, &causal, &past, &slots, &slot,
            ],
        );
    }
    let group = (a.heads / (k.cols / a.head_dim)) as i32;
    let (kernel, scale) = match a.precision {
        Precision::F32 => ("vlm_attention_f32", a.scale),
        Precision::Bf16 => ("vlm_attention_bf16", bf16_score_scale(a.scale)),
    };
    run_shared(
        d,
        kernel,
        grid,
        THREADS,
        shared,
        &[
            &q, &qs, &kp, &ks, &vp, &vs, &out, &ostride, &rows, &heads, &hd, &group, &scale, &keys,
            &causal, &past, &slots, &slot,
        ],
    )
}

#[cfg(test)]
mod tests {
    use crate::kernels::SOURCE;

    /// The block size the launch gives is the one the kernels were written for, and the
    /// constants the CUDA C spells by their bits are the reference's.
    #[test]
    fn the_launch_and_the_kernels_agree() {
        let threads = format!("#define VLM_ATTN_THREADS {}\n", super::THREADS);
        assert!(SOURCE.contains(&threads), "expected `{threads}`");
        for (name, v) in [
            ("VLM_LOG2E", core::f32::consts::LOG2_E),
            ("VLM_NEG_INF", f32::NEG_INFINITY),
        ] {
            let want = format!("#define {name} __int_as_float({:#010x})", v.to_bits());
            assert!(SOURCE.contains(&want), "{name}: expected `{want}`");
        }
    }
}
