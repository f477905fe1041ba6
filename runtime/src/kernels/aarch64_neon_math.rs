//! NEON element-wise kernels: activation quantization, the shared exponential, GELU-tanh,
//! bf16 rounding and the fixed-tree sum, each bit-exact with the scalar reference (the
//! same operations in the same order; NEON's FMA is the fused one `libm::fmaf` computes,
//! and AArch64 keeps denormals unless told otherwise).

use core::arch::aarch64::*;

use super::scalar::{
    q_stride, quantize_one, MatRef, EXP2_POLY, GELU_TANH_EXP2, GELU_TANH_EXP2_CUBE,
};
use super::simd::F32Simd;

/// A NEON register for the ISA-generic kernels.
#[derive(Clone, Copy)]
pub struct F32x4(float32x4_t);

impl F32Simd for F32x4 {
    const LANES: usize = 4;
    #[inline(always)]
    unsafe fn splat(x: f32) -> Self {
        F32x4(vdupq_n_f32(x))
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> Self {
        F32x4(vld1q_f32(p))
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut f32) {
        vst1q_f32(p, self.0)
    }
    #[inline(always)]
    unsafe fn prefetch(p: *const f32) {
        // `_prefetch` is not stable on AArch64; `prfm` is a hint that never faults.
        core::arch::asm!("prfm pldl1keep, [{0}]", in(reg) p, options(nostack, readonly, preserves_flags));
    }
    #[inline(always)]
    unsafe fn add(self, o: Self) -> Self {
        F32x4(vaddq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn sub(self, o: Self) -> Self {
        F32x4(vsubq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul(self, o: Self) -> Self {
        F32x4(vmulq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn mul_add(self, a: Self, b: Self) -> Self {
        F32x4(vfmaq_f32(self.0, a.0, b.0))
    }
    #[inline(always)]
    unsafe fn max_skip_nan(self, x: Self) -> Self {
        // `fmaxnm` returns the number where one operand is a quiet NaN.
        F32x4(vmaxnmq_f32(self.0, x.0))
    }
    #[inline(always)]
    unsafe fn reduce_max(self) -> f32 {
        vmaxnmvq_f32(self.0)
    }
    #[inline(always)]
    unsafe fn reduce_add(self) -> f32 {
        vaddvq_f32(self.0)
    }
    #[inline(always)]
    unsafe fn softmax_weight(self) -> Self {
        F32x4(softmax_weight(self.0))
    }
    #[inline(always)]
    unsafe fn div(self, o: Self) -> Self {
        F32x4(vdivq_f32(self.0, o.0))
    }
    #[inline(always)]
    unsafe fn exp2_clamped(self) -> Self {
        F32x4(exp2_clamped(self.0))
    }
    #[inline(always)]
    unsafe fn gelu_tanh(self) -> Self {
        F32x4(gelu_tanh(self.0))
    }
    #[inline(always)]
    unsafe fn bf16_round(self) -> Self {
        F32x4(bf16_round(self.0))
    }
    #[inline(always)]
    unsafe fn load_odd_even(p: *const f32) -> (Self, Self) {
        // `ld2` de-interleaves as it loads: even elements in the first register.
        let v = vld2q_f32(p);
        (F32x4(v.1), F32x4(v.0))
    }
    #[inline(always)]
    unsafe fn load_first(p: *const f32, n: usize) -> Self {
        // No masked loads on NEON: at most 3 lanes through a zeroed buffer.
        let mut buf = [0.0f32; 4];
        for (i, b) in buf.iter_mut().enumerate().take(n) {
            *b = *p.add(i);
        }
        F32x4(vld1q_f32(buf.as_ptr()))
    }
    #[inline(always)]
    unsafe fn store_first(self, p: *mut f32, n: usize) {
        let mut buf = [0.0f32; 4];
        vst1q_f32(buf.as_mut_ptr(), self.0);
        for (i, &b) in buf.iter().enumerate().take(n) {
            *p.add(i) = b;
        }
    }
}

/// [`super::scalar::sum16`] of 16 lanes held in four registers (lanes 0–3, 4–7, 8–11,
/// 12–15), by the same tree: +8, +4, +2, +1.
///
/// # Safety
/// NEON (every AArch64 application CPU).
#[inline(always)]
pub unsafe fn sum16(l: [float32x4_t; 4]) -> f32 {
    let a = vaddq_f32(vaddq_f32(l[0], l[2]), vaddq_f32(l[1], l[3]));
    let b = vadd_f32(vget_low_f32(a), vget_high_f32(a));
    vget_lane_f32::<0>(b) + vget_lane_f32::<1>(b)
}

/// [`super::scalar::quantize_u8`], 4 lanes at a time: the same multiply, round-half-even,
/// add and clamp (`fmaxnm` sends NaN to 0, as the scalar comparisons do), so the bytes
/// are identical.
pub fn quantize_u8(x: MatRef, scale: f32, zero: i32, top: u8, q: &mut [u8]) {
    let stride = q_stride(x.cols);
    assert!(x.rows == 0 || q.len() >= (x.rows - 1) * stride + x.cols);
    assert!(x.rows == 0 || x.data.len() >= (x.rows - 1) * x.stride + x.cols);
    let inv = 1.0 / scale;
    // SAFETY: NEON is in every AArch64 application target; every access stays within
    // the rows asserted above.
    unsafe {
        let (vinv, vzero) = (vdupq_n_f32(inv), vdupq_n_f32(zero as f32));
        let (lo, hi) = (vdupq_n_f32(0.0), vdupq_n_f32(f32::from(top)));
        for r in 0..x.rows {
            let src = x.data.as_ptr().add(r * x.stride);
            let dst = q.as_mut_ptr().add(r * stride);
            let mut c = 0;
            while c + 8 <= x.cols {
                let b = |o: usize| {
                    let t = vaddq_f32(
                        vrndnq_f32(vmulq_f32(vld1q_f32(src.add(c + o)), vinv)),
                        vzero,
                    );
                    vcvtq_u32_f32(vminnmq_f32(vmaxnmq_f32(t, lo), hi))
                };
                let h = vcombine_u16(vmovn_u32(b(0)), vmovn_u32(b(4)));
                vst1_u8(dst.add(c), vmovn_u16(h));
                c += 8;
            }
            for c in c..x.cols {
                *dst.add(c) = quantize_one(*src.add(c), inv, zero, top);
            }
        }
    }
}

/// 2^t for t ≤ 126 (a softmax's t ≤ 0), clamped below at −126 (a quiet NaN becomes −126,
/// as `f32::max` makes it; `fmaxnm` leaves a signalling one NaN, which no arithmetic
/// produces): [`super::scalar::exp2_clamped`]'s rounding to nearest even, fused
/// polynomial and product with 2^n built in the exponent bits, operation for operation.
///
/// # Safety
/// NEON.
#[inline(always)]
pub unsafe fn exp2_clamped_below(t: float32x4_t) -> float32x4_t {
    let t = vmaxnmq_f32(t, vdupq_n_f32(-126.0));
    let n = vrndnq_f32(t);
    let f = vsubq_f32(t, n);
    let [rest @ .., last] = EXP2_POLY;
    let mut p = vdupq_n_f32(last);
    for &c in rest.iter().rev() {
        p = vfmaq_f32(vdupq_n_f32(c), p, f);
    }
    let pow = vshlq_n_s32::<23>(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)));
    vmulq_f32(p, vreinterpretq_f32_s32(pow))
}

/// [`super::scalar::softmax_weight`] of 4 lanes at most 126 (or quiet NaN): 2^t, and 0
/// below the floor (an ordered compare: NaN too).
///
/// # Safety
/// NEON.
#[inline(always)]
pub unsafe fn softmax_weight(t: float32x4_t) -> float32x4_t {
    let keep = vcgeq_f32(t, vdupq_n_f32(super::scalar::SOFTMAX_FLOOR));
    vreinterpretq_f32_u32(vandq_u32(
        keep,
        vreinterpretq_u32_f32(exp2_clamped_below(t)),
    ))
}

/// [`super::scalar::exp2_clamped`] of 4 lanes: t clamped to [−126, 126] first.
///
/// # Safety
/// NEON.
#[inline(always)]
pub unsafe fn exp2_clamped(t: float32x4_t) -> float32x4_t {
    exp2_clamped_below(vminnmq_f32(
        vmaxnmq_f32(t, vdupq_n_f32(-126.0)),
        vdupq_n_f32(126.0),
    ))
}

/// [`super::scalar::bf16_round`] of 4 lanes, bit for bit: nearest bf16, ties to even,
/// denormals to signed zero, NaN kept (quietened).
///
/// # Safety
/// NEON.
#[inline(always)]
pub unsafe fn bf16_round(x: float32x4_t) -> float32x4_t {
    let b = vreinterpretq_u32_f32(x);
    let lsb = vandq_u32(vshrq_n_u32::<16>(b), vdupq_n_u32(1));
    let rounded = vandq_u32(
        vaddq_u32(vaddq_u32(b, vdupq_n_u32(0x7FFF)), lsb),
        vdupq_n_u32(0xFFFF_0000),
    );
    let normal = vtstq_u32(b, vdupq_n_u32(0x7F80_0000));
    let rounded = vbslq_u32(normal, rounded, vandq_u32(b, vdupq_n_u32(0x8000_0000)));
    let number = vceqq_f32(x, x);
    vreinterpretq_f32_u32(vbslq_u32(
        number,
        rounded,
        vorrq_u32(b, vdupq_n_u32(0x0040_0000)),
    ))
}

/// GELU-tanh of 4 lanes: `scalar::activate`'s x / (1 + 2^t), t = x·fma(x², b, a), with
/// the same fused multiply-add, exponential and true divide: the same bits.
///
/// # Safety
/// NEON.
#[inline(always)]
pub unsafe fn gelu_tanh(x: float32x4_t) -> float32x4_t {
    let t = vmulq_f32(
        x,
        vfmaq_f32(
            vdupq_n_f32(GELU_TANH_EXP2),
            vmulq_f32(x, x),
            vdupq_n_f32(GELU_TANH_EXP2_CUBE),
        ),
    );
    vdivq_f32(x, vaddq_f32(vdupq_n_f32(1.0), exp2_clamped(t)))
}

/// `f` on 4 lanes, for the test battery.
pub fn element_wise(f: super::ElementWise, x: [f32; 4]) -> [f32; 4] {
    use super::ElementWise::*;
    let mut out = [0.0f32; 4];
    // SAFETY: NEON is in every AArch64 application target; both arrays hold 4 floats.
    unsafe {
        let v = vld1q_f32(x.as_ptr());
        let y = match f {
            Exp2 => exp2_clamped(v),
            SoftmaxWeight => softmax_weight(v),
            GeluTanh => gelu_tanh(v),
            Bf16Round => bf16_round(v),
        };
        vst1q_f32(out.as_mut_ptr(), y);
    }
    out
}
