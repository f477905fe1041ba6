//! Layer norm for NEON (fp32): the reference's two passes (mean, then the biased variance
//! of the deviations) over 16 lanes held in four registers, so element c lands in lane
//! c mod 16 as in `scalar::layer_norm`, reduced by the same tree, with its separate
//! multiplies and adds: the same bits.

use core::arch::aarch64::*;

use super::aarch64_neon_math::sum16;
use super::scalar::{check_layer_norm_bounds, MatMut, MatRef};

const LANES: usize = 16;

pub fn layer_norm(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, out: MatMut) {
    check_layer_norm_bounds(&x, gamma, beta, &out);
    // SAFETY: NEON is in every AArch64 application target; bounds checked above.
    unsafe { impl_(x, gamma, beta, eps, out) }
}

/// Adds 16 values to the four lane registers.
#[inline(always)]
unsafe fn add16(acc: &mut [float32x4_t; 4], v: [float32x4_t; 4]) {
    for (a, v) in acc.iter_mut().zip(v) {
        *a = vaddq_f32(*a, v);
    }
}

#[inline(always)]
unsafe fn load16(p: *const f32) -> [float32x4_t; 4] {
    core::array::from_fn(|i| vld1q_f32(p.add(4 * i)))
}

unsafe fn impl_(x: MatRef, gamma: &[f32], beta: &[f32], eps: f32, out: MatMut) {
    let n = x.cols;
    let full = n - n % LANES;
    for r in 0..x.rows {
        let xr = x.data.as_ptr().add(r * x.stride);
        let mut s = [vdupq_n_f32(0.0); 4];
        for c in (0..full).step_by(LANES) {
            add16(&mut s, load16(xr.add(c)));
        }
        // The tail through a zero-padded copy: zeros leave the lane sums as they are.
        let mut tail = [0.0f32; LANES];
        tail[..n - full].copy_from_slice(core::slice::from_raw_parts(xr.add(full), n - full));
        add16(&mut s, load16(tail.as_ptr()));
        let mean = sum16(s) / n as f32;

        let vm = vdupq_n_f32(mean);
        let mut v = [vdupq_n_f32(0.0); 4];
        for c in (0..full).step_by(LANES) {
            let d = load16(xr.add(c)).map(|x| vsubq_f32(x, vm));
            add16(&mut v, d.map(|d| vmulq_f32(d, d)));
        }
        let mut dev = [0.0f32; LANES];
        for (d, &x) in dev.iter_mut().zip(&tail[..n - full]) {
            *d = x - mean;
        }
        add16(&mut v, load16(dev.as_ptr()).map(|d| vmulq_f32(d, d)));
        let inv = 1.0 / libm::sqrtf(sum16(v) / n as f32 + eps);

        let vinv = vdupq_n_f32(inv);
        let yr = out.data.as_ptr().add(r * out.stride) as *mut f32;
        let mut c = 0;
        while c + 4 <= n {
            let d = vsubq_f32(vld1q_f32(xr.add(c)), vm);
            let y = vaddq_f32(
                vmulq_f32(vmulq_f32(d, vinv), vld1q_f32(gamma.as_ptr().add(c))),
                vld1q_f32(beta.as_ptr().add(c)),
            );
            vst1q_f32(yr.add(c), y);
            c += 4;
        }
        for c in c..n {
            *yr.add(c) = (*xr.add(c) - mean) * inv * gamma[c] + beta[c];
        }
    }
}
