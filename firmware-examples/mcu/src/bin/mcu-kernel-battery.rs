//! The kernel battery on the microcontroller itself: every int8 GEMM kernel the runtime
//! can run on this core (`arm-dsp` on the M7 and M55) against the scalar reference,
//! bit for bit, over a fixed sweep of shapes (depths and widths around every tile and
//! panel edge, one to five rows, padded output strides) with edge-heavy values and a
//! random epilogue (scale, bias, GELU). The host battery (`runtime/tests/kernels.rs`)
//! runs the same kernel under `qemu-arm` on an A-profile core; this runs it where it
//! ships, on M-profile Thumb. Exits 0 when every output matched.
#![no_std]
#![no_main]

use defmt::{error, info};
use vlm_firmware::board;
use vlm_runtime::format::{packed_index, packed_len};
use vlm_runtime::kernels::scalar::{q_stride, Epilogue, MatMut, Panels};
use vlm_runtime::kernels::{Isa, ALL};
use vlm_runtime::ops::Activation;

const DEPTHS: [usize; 18] = [
    1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 64, 65, 127, 128, 129, 255, 299,
];
const WIDTHS: [usize; 11] = [1, 2, 3, 4, 5, 7, 15, 16, 17, 33, 40];
const ROWS: [usize; 3] = [1, 2, 5];
const MAX_K: usize = 299;
const MAX_N: usize = 40;
const MAX_ROWS: usize = 5;
const PAD: usize = 3;
const MAX_Q: usize = MAX_ROWS * (MAX_K + 3);
const MAX_W: usize = MAX_N.div_ceil(16) * 16 * (MAX_K + 3);
const MAX_OUT: usize = MAX_ROWS * (MAX_N + PAD);

/// A 64-bit LCG: the sweep is the same on every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 32) as u32
    }
    /// Activations: the edges (0, 128, 255) a quarter of the time.
    fn act(&mut self) -> u8 {
        match self.next() % 8 {
            0 => 0,
            1 => 255,
            2 => 128,
            _ => self.next() as u8,
        }
    }
    /// Symmetric weights: ±127 a quarter of the time.
    fn weight(&mut self) -> i8 {
        match self.next() % 8 {
            0 => 127,
            1 => -127,
            _ => ((self.next() % 255) as i32 - 127) as i8,
        }
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 8) as f32 / (1u32 << 24) as f32
    }
}

#[cortex_m_rt::entry]
fn main() -> ! {
    board::finish(run())
}

fn run() -> Result<(), ()> {
    let mut rng = Lcg(0x5eed);
    let mut q = [0u8; MAX_Q];
    let mut w = [0i8; MAX_K * MAX_N];
    let mut wp = [0i8; MAX_W];
    let (mut want, mut got) = ([0f32; MAX_OUT], [0f32; MAX_OUT]);
    let (mut w_scale, mut bias) = ([0f32; MAX_N], [0f32; MAX_N]);
    let mut kernels = 0;
    for isa in ALL {
        if isa != Isa::Scalar && isa.supported() {
            kernels += 1;
            info!("checking {=str} against scalar", isa.name());
        }
    }
    if kernels == 0 {
        error!("no kernel but the reference runs here: nothing to check");
        return Err(());
    }
    let (mut cases, mut outputs, mut mismatches) = (0u32, 0u32, 0u32);
    for &k in &DEPTHS {
        for &n in &WIDTHS {
            for &rows in &ROWS {
                let stride = n + (cases as usize % (PAD + 1));
                let qs = q_stride(k);
                let q = &mut q[..rows * qs];
                for (i, v) in q.iter_mut().enumerate() {
                    // The padding of each row past k is zero, as the runtime writes it.
                    *v = if i % qs < k { rng.act() } else { 0 };
                }
                for v in &mut w[..n * k] {
                    *v = rng.weight();
                }
                let wp = &mut wp[..packed_len(n, k)];
                wp.fill(0);
                for o in 0..n {
                    for j in 0..k {
                        wp[packed_index(o, j, k)] = w[o * k + j];
                    }
                }
                for o in 0..n {
                    w_scale[o] = 1e-3 + rng.unit() * 1e-2;
                    bias[o] = (rng.unit() - 0.5) * 8.0;
                }
                // Every other case the plain accumulators (unit scale, no bias): the
                // integers themselves.
                let plain = cases % 2 == 0;
                let ones = [1.0f32; MAX_N];
                let ep = Epilogue {
                    x_scale: if plain { 1.0 } else { 1e-4 + rng.unit() },
                    w_scale: if plain { &ones[..n] } else { &w_scale[..n] },
                    bias: (!plain).then_some(&bias[..n]),
                    act: if cases % 4 == 1 {
                        Activation::GeluTanh
                    } else {
                        Activation::None
                    },
                };
                let len = (rows - 1) * stride + n;
                let gemm = |isa: Isa, out: &mut [f32]| {
                    out[..len].fill(f32::NAN);
                    let m = MatMut {
                        data: &mut out[..len],
                        rows,
                        cols: n,
                        stride,
                    };
                    isa.gemm_u8i8(q, k, Panels::full(wp), &ep, m);
                };
                gemm(Isa::Scalar, &mut want);
                for isa in ALL {
                    if isa == Isa::Scalar || !isa.supported() {
                        continue;
                    }
                    gemm(isa, &mut got);
                    for r in 0..rows {
                        for o in 0..n {
                            let i = r * stride + o;
                            outputs += 1;
                            if got[i].to_bits() != want[i].to_bits() {
                                if mismatches < 8 {
                                    error!(
                                        "{=str}: k {=usize} n {=usize} rows {=usize}: ({=usize}, {=usize}) {=f32} against {=f32}",
                                        isa.name(), k, n, rows, r, o, got[i], want[i]
                                    );
                                }
                                mismatches += 1;
                            }
                        }
                    }
                }
                cases += 1;
            }
        }
    }
    info!(
        "battery: {=u32} cases, {=u32} outputs, {=u32} mismatches",
        cases, outputs, mismatches
    );
    if mismatches == 0 {
        Ok(())
    } else {
        Err(())
    }
}
