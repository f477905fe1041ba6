//! Attention over an int8 KV cache, `scalar::attention_i8kv_head` compiled for an ISA:
//! the body is the reference's, inlined into a function that enables the ISA's
//! features, so LLVM vectorises its integer q·k sums and its element-wise p·v loop
//! without changing a bit; the softmax's exponential, a libm-style polynomial LLVM
//! cannot vectorise, goes through the ISA's [`F32Simd::softmax_weight`], the
//! reference's bits. One head and query row a call: a decoder step reads each cached
//! key and value byte once per query head.

use super::simd::F32Simd;

/// `scalar::softmax_weight` of every weight in place (each at most 0, or NaN).
///
/// # Safety
/// `S`'s ISA is enabled.
#[inline(always)]
pub unsafe fn softmax_weights_in_place<S: F32Simd>(w: &mut [f32]) {
    let n = w.len();
    let p = w.as_mut_ptr();
    let mut i = 0;
    while i + S::LANES <= n {
        S::load(p.add(i)).softmax_weight().store(p.add(i));
        i += S::LANES;
    }
    if i < n {
        S::load_first(p.add(i), n - i)
            .softmax_weight()
            .store_first(p.add(i), n - i);
    }
}

/// An ISA's entry point: `attention_i8kv_head` with `$features` enabled.
macro_rules! entry_points {
    ($simd:ty, $features:literal) => {
        use $crate::kernels::scalar::I8Rows;

        /// `scalar::attention_i8kv_head`'s bits, vectorised.
        #[allow(clippy::too_many_arguments)]
        pub fn attention_i8kv_head(
            q: &[f32],
            k: I8Rows,
            v: I8Rows,
            head: usize,
            keys: usize,
            scale: f32,
            out: &mut [f32],
            scratch: &mut [f32],
        ) {
            // SAFETY: the dispatcher calls this only on CPUs with `$features`; the
            // body checks its bounds and indexes safely.
            unsafe { with_features(q, k, v, head, keys, scale, out, scratch) }
        }

        #[target_feature(enable = $features)]
        #[allow(clippy::too_many_arguments)]
        unsafe fn with_features(
            q: &[f32],
            k: I8Rows,
            v: I8Rows,
            head: usize,
            keys: usize,
            scale: f32,
            out: &mut [f32],
            scratch: &mut [f32],
        ) {
            $crate::kernels::scalar::attention_i8kv_head(
                q,
                k,
                v,
                head,
                keys,
                scale,
                out,
                scratch,
                // SAFETY: `$features` are enabled here.
                |w| unsafe {
                    $crate::kernels::simd_attention_i8kv::softmax_weights_in_place::<$simd>(w)
                },
            )
        }
    };
}
pub(crate) use entry_points;
