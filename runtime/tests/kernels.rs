//! The kernel battery: every ISA this CPU supports against the scalar reference, on
//! random shapes (odd sizes, inputs not a multiple of the group, outputs not a multiple
//! of the panel) and edge values (0, 255, −128, 127, NaN, ±∞). A new kernel joins by
//! being listed in `kernels::ALL`.

use proptest::prelude::*;
use vlm_runtime::format::{activation_limit, packed_index, packed_len, weight_limit};
use vlm_runtime::kernels::scalar::{self, q_stride, Epilogue, MatMut, MatRef, Panels, XQuant};
use vlm_runtime::kernels::{gemm_u8i8_spare_floats, ElementWise, Isa, ALL};
use vlm_runtime::ops::{Activation, Precision};

fn others() -> Vec<Isa> {
    ALL.into_iter()
        .filter(|i| *i != Isa::Scalar && i.supported())
        .collect()
}

fn pack(w: &[i8], n: usize, k: usize) -> Vec<i8> {
    let mut p = vec![0i8; packed_len(n, k)];
    for o in 0..n {
        for j in 0..k {
            p[packed_index(o, j, k)] = w[o * k + j];
        }
    }
    p
}

#[allow(clippy::too_many_arguments)]
fn run(
    isa: Isa,
    q: &[u8],
    k: usize,
    w: Panels,
    ep: &Epilogue,
    rows: usize,
    n: usize,
    stride: usize,
) -> Vec<f32> {
    let mut out = vec![f32::NAN; rows.saturating_sub(1) * stride + n];
    isa.gemm_u8i8(
        q,
        k,
        w,
        ep,
        MatMut {
            data: &mut out,
            rows,
            cols: n,
            stride,
        },
    );
    out
}

/// Activations with their ends: 0..=255, or 0..=127 for a layer with 7-bit activations
/// (AVX2's paired kernel rests on that bound, which the layer's quantizer keeps).
fn edge_u8(narrow_x: bool) -> BoxedStrategy<u8> {
    let top = activation_limit(narrow_x);
    prop_oneof![Just(0u8), Just(top), 0..=top].boxed()
}

/// The widths a layer may have: 8-bit, 7-bit weights, 7-bit weights and activations.
fn widths() -> impl Strategy<Value = (bool, bool)> {
    prop_oneof![
        Just((false, false)),
        Just((true, false)),
        Just((true, true))
    ]
}

/// Weights: symmetric, −127..=127 (the format's contract, checked at load; the AVX2 and
/// plain NEON kernels' exactness rests on it), with their ends; 7-bit layers keep to
/// −63..=63 (checked at load too: AVX2's narrow kernel rests on it).
fn edge_i8(narrow: bool) -> BoxedStrategy<i8> {
    let top = weight_limit(narrow);
    prop_oneof![Just(top), Just(-top), -top..=top].boxed()
}

type Case = (usize, usize, usize, usize, Vec<u8>, Vec<i8>, (bool, bool));

fn case() -> impl Strategy<Value = Case> {
    // One row often: a decoder step's, which ISAs may give a matrix–vector kernel of its own.
    let rows = prop_oneof![Just(1usize), 1usize..20];
    (rows, 1usize..300, 1usize..70, 0usize..5, widths()).prop_flat_map(
        |(rows, k, n, pad, (narrow, narrow_x))| {
            (
                Just(rows),
                Just(k),
                Just(n),
                Just(n + pad),
                prop::collection::vec(edge_u8(narrow_x), rows * q_stride(k)),
                prop::collection::vec(edge_i8(narrow), n * k),
                Just((narrow, narrow_x)),
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Integer results bit for bit: with unit scale and no bias the output *is* the
    /// accumulator (exact in f32 below 2^24, which these sizes stay under).
    #[test]
    fn gemm_accumulators_equal_the_reference((rows, k, n, stride, q, w, (narrow, narrow_x)) in case()) {
        let wp = pack(&w, n, k);
        let wp = Panels { w: &wp, narrow, narrow_x };
        let ones = vec![1.0f32; n];
        let ep = Epilogue { x_scale: 1.0, w_scale: &ones, bias: None, act: Activation::None };
        let want = run(Isa::Scalar, &q, k, wp, &ep, rows, n, stride);
        for isa in others() {
            let got = run(isa, &q, k, wp, &ep, rows, n, stride);
            for r in 0..rows {
                for o in 0..n {
                    let i = r * stride + o;
                    prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} at ({}, {})", isa.name(), r, o);
                }
            }
        }
    }

    /// The epilogue (scale, bias, GELU) is one formula on every ISA, operation for
    /// operation: bit for bit too.
    #[test]
    fn gemm_epilogue_matches((rows, k, n, stride, q, w, (narrow, narrow_x)) in case(),
                             xs in 1e-4f32..1.0, seed in any::<u64>(), gelu in any::<bool>()) {
        let wp = pack(&w, n, k);
        let wp = Panels { w: &wp, narrow, narrow_x };
        let mut s = seed;
        let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1); ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5 };
        let w_scale: Vec<f32> = (0..n).map(|_| 1e-3 + next().abs() * 1e-2).collect();
        let bias: Vec<f32> = (0..n).map(|_| next() * 4.0).collect();
        let act = if gelu { Activation::GeluTanh } else { Activation::None };
        let ep = Epilogue { x_scale: xs, w_scale: &w_scale, bias: Some(&bias), act };
        let want = run(Isa::Scalar, &q, k, wp, &ep, rows, n, stride);
        for isa in others() {
            let got = run(isa, &q, k, wp, &ep, rows, n, stride);
            for r in 0..rows {
                for o in 0..n {
                    let i = r * stride + o;
                    prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} at ({}, {}): {} vs {}",
                        isa.name(), r, o, got[i], want[i]);
                }
            }
        }
    }

    /// The threaded int8 GEMM gives one thread's bits: rows split into blocks, and a
    /// single row (a decoder step's) split by weight panels into column blocks, on every
    /// ISA, for outputs that are and are not a multiple of the panel pairs.
    #[test]
    fn gemm_u8i8_on_threads_matches_one_thread(rows in prop_oneof![Just(1usize), 1usize..20],
                                              k in 1usize..150, n in 60usize..400,
                                              threads in 2usize..6, seed in any::<u64>(),
                                              bias in any::<bool>(), (narrow, narrow_x) in widths()) {
        let mut s = seed;
        let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 33) as u32 };
        let q: Vec<u8> = (0..rows * q_stride(k)).map(|_| next() as u8 & activation_limit(narrow_x)).collect();
        let top = u32::from(weight_limit(narrow).unsigned_abs());
        let w: Vec<i8> = (0..n * k).map(|_| ((next() % (2 * top + 1)) as i32 - top as i32) as i8).collect();
        let w_scale: Vec<f32> = (0..n).map(|_| 1e-3 + (next() % 1000) as f32 * 1e-5).collect();
        let b: Vec<f32> = (0..n).map(|_| (next() % 2000) as f32 * 1e-3 - 1.0).collect();
        let ep = Epilogue { x_scale: 0.02, w_scale: &w_scale, bias: bias.then_some(&b[..]), act: Activation::GeluTanh };
        let wp = pack(&w, n, k);
        let wp = Panels { w: &wp, narrow, narrow_x };
        for isa in ALL.into_iter().filter(|i| i.supported()) {
            let want = run(isa, &q, k, wp, &ep, rows, n, n);
            let mut got = vec![f32::NAN; rows * n];
            let mut spare = vec![f32::NAN; gemm_u8i8_spare_floats(rows, n, threads)];
            isa.gemm_u8i8_threads(threads, &q, k, wp, &ep, MatMut { data: &mut got, rows, cols: n, stride: n }, &mut spare);
            prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} on {} threads, {} rows", isa.name(), threads, rows);
        }
    }

    /// Quantizing inside the threaded GEMM (each row block its own rows) gives one
    /// thread's bytes and bits: few rows quantized whole and split by panels, more split
    /// by rows, on every ISA.
    #[test]
    fn quantize_gemm_on_threads_matches_one_thread(rows in prop_oneof![1usize..20, 20usize..70],
                                                  k in 1usize..150, n in 60usize..200,
                                                  threads in 2usize..6, seed in any::<u64>(),
                                                  (narrow, narrow_x) in widths()) {
        let mut s = seed;
        let mut next = || { s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407); (s >> 33) as u32 };
        let x: Vec<f32> = (0..rows * k).map(|_| (next() % 4001) as f32 * 1e-3 - 2.0).collect();
        let x = MatRef { data: &x, rows, cols: k, stride: k };
        let top = u32::from(weight_limit(narrow).unsigned_abs());
        let w: Vec<i8> = (0..n * k).map(|_| ((next() % (2 * top + 1)) as i32 - top as i32) as i8).collect();
        let w_scale: Vec<f32> = (0..n).map(|_| 1e-3 + (next() % 1000) as f32 * 1e-5).collect();
        let ep = Epilogue { x_scale: 0.02, w_scale: &w_scale, bias: None, act: Activation::None };
        let wp = pack(&w, n, k);
        let wp = Panels { w: &wp, narrow, narrow_x };
        let xq = XQuant { scale: 0.02, zero: 7, top: activation_limit(narrow_x) };
        for isa in ALL.into_iter().filter(|i| i.supported()) {
            let mut q_want = vec![0u8; rows * q_stride(k)];
            isa.quantize_u8(x, xq.scale, xq.zero, xq.top, &mut q_want);
            let want = run(isa, &q_want, k, wp, &ep, rows, n, n);
            let mut q = vec![0xAAu8; rows * q_stride(k)];
            let mut got = vec![f32::NAN; rows * n];
            let mut spare = vec![f32::NAN; gemm_u8i8_spare_floats(rows, n, threads)];
            let out = MatMut { data: &mut got, rows, cols: n, stride: n };
            isa.quantize_gemm_u8i8_threads(threads, Some((x, xq)), &mut q, k, wp, &ep, out, &mut spare);
            for r in 0..rows {
                let row = r * q_stride(k)..r * q_stride(k) + k;
                prop_assert_eq!(&q[row.clone()], &q_want[row], "{} on {} threads, {} rows", isa.name(), threads, rows);
            }
            prop_assert!(got.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                "{} on {} threads, {} rows", isa.name(), threads, rows);
        }
    }

    /// Activation quantization: identical bytes, NaN and infinities included.
    #[test]
    fn quantize_equals_the_reference(rows in 1usize..6, cols in 1usize..100, scale in 1e-3f32..10.0,
                                     zero in 0i32..=255, narrow_x in any::<bool>(), vals in prop::collection::vec(
                                         prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY),
                                                     Just(0.5f32), Just(-0.5f32), -1e3f32..1e3], 600)) {
        let x = MatRef { data: &vals[..rows * cols], rows, cols, stride: cols };
        let mut want = vec![0u8; rows * q_stride(cols)];
        let (top, zero) = (activation_limit(narrow_x), zero.min(activation_limit(narrow_x).into()));
        scalar::quantize_u8(x, scale, zero, top, &mut want);
        prop_assert!(want.iter().all(|&b| b <= top));
        for isa in others() {
            let mut got = vec![0u8; rows * q_stride(cols)];
            isa.quantize_u8(x, scale, zero, top, &mut got);
            for r in 0..rows {
                let row = r * q_stride(cols)..r * q_stride(cols) + cols;
                prop_assert_eq!(&got[row.clone()], &want[row], "{}", isa.name());
            }
        }
    }
}

/// A named rule giving weight `i` of a row-major matrix.
type WeightPattern = (&'static str, fn(usize) -> i8);

/// Long inputs at the extremes, one row and a few: matrix–vector kernels may sum part
/// of a product in 16-bit lanes for a run of input groups (the AVX2 one sums weight
/// pairs, |·| ≤ 254, over 128 groups), so inputs past 512 with every weight at ±127 must
/// still give the reference's integers.
#[test]
fn long_inputs_at_the_extremes_stay_exact() {
    let n = 37;
    for k in [511usize, 512, 513, 515, 1027, 2051] {
        // The 7-bit layers' ends too (AVX2 multiplies them unflipped, 2·255·63 a pair).
        let weights: [(WeightPattern, bool); 6] = [
            (("+127", |_| 127), false),
            (("-127", |_| -127), false),
            (
                ("alternating", |i| if (i / 3) % 2 == 0 { 127 } else { -127 }),
                false,
            ),
            (("+63", |_| 63), true),
            (("-63", |_| -63), true),
            (
                (
                    "alternating 63",
                    |i| if (i / 3) % 2 == 0 { 63 } else { -63 },
                ),
                true,
            ),
        ];
        // 7-bit weights run with 7-bit activations too (AVX2 adds two pair sums of
        // 2·127·63 in 16 bits), at those activations' own ends.
        let with_x = weights.into_iter().flat_map(|(wf, narrow)| {
            core::iter::once((wf, narrow, false)).chain(narrow.then_some((wf, narrow, true)))
        });
        for ((wname, wf), narrow, narrow_x) in with_x {
            let w: Vec<i8> = (0..n * k).map(wf).collect();
            let wp = pack(&w, n, k);
            let wp = Panels {
                w: &wp,
                narrow,
                narrow_x,
            };
            let top = activation_limit(narrow_x);
            for (qname, qv) in [("top", top), ("0", 0), ("middle", top / 2 + 1)] {
                for rows in [1usize, 3, 5] {
                    let q = vec![qv; rows * q_stride(k)];
                    let ones = vec![1.0f32; n];
                    let ep = Epilogue {
                        x_scale: 1.0,
                        w_scale: &ones,
                        bias: None,
                        act: Activation::None,
                    };
                    let want = run(Isa::Scalar, &q, k, wp, &ep, rows, n, n);
                    for isa in others() {
                        let got = run(isa, &q, k, wp, &ep, rows, n, n);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "{}: k {k}, weights {wname}, activations {qname}, {rows} row(s)",
                            isa.name()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn this_cpu_runs_more_than_the_reference() {
    eprintln!(
        "kernels on this CPU: {:?} (chosen: {})",
        ALL.into_iter()
            .filter(|i| i.supported())
            .map(Isa::name)
            .collect::<Vec<_>>(),
        Isa::detect().name()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    /// fp32 GEMM: every ISA computes the reference's bits (one summation order, no fused
    /// multiply-add), every tile edge, strided rows, with and without bias, each
    /// activation; what makes calibration, and so artifacts, the same on every CPU.
    #[test]
    fn gemm_f32_equals_the_reference(rows in 1usize..40, k in 1usize..200, n in 1usize..20,
                        pad in 0usize..3, act in 0usize..3, with_bias in any::<bool>(),
                        vals in prop::collection::vec(-2.0f32..2.0, 40 * 202 + 20 * 200 + 20)) {
        let stride = k + pad;
        let x = &vals[..rows * stride];
        let w = &vals[rows * stride..rows * stride + n * k];
        let bias = with_bias.then(|| &vals[rows * stride + n * k..rows * stride + n * k + n]);
        let act = [Activation::None, Activation::GeluTanh, Activation::GeluErf][act];
        let xr = MatRef { data: x, rows, cols: k, stride };
        let mut want = vec![0.0f32; rows * n];
        scalar::linear_f32(xr, w, bias, act, MatMut { data: &mut want, rows, cols: n, stride: n });
        for isa in others() {
            let mut got = vec![0.0f32; rows * n];
            isa.gemm_f32(xr, w, bias, act, MatMut { data: &mut got, rows, cols: n, stride: n });
            for i in 0..rows * n {
                prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} {}: {} vs {}", isa.name(), i, got[i], want[i]);
            }
            let mut split = vec![0.0f32; rows * n];
            isa.gemm_f32_threads(3, xr, w, bias, act, MatMut { data: &mut split, rows, cols: n, stride: n });
            prop_assert!(split.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()), "{} threads", isa.name());
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// fp32 GEMM on layers deep and wide enough for the kernels' column blocks and their
    /// chunks of `k` (sums carried between chunks): still the reference's bits, on one
    /// thread and on three.
    #[test]
    fn gemm_f32_deep_layers_equal_the_reference(rows in 1usize..30,
                        k in prop_oneof![Just(1024usize), Just(1025), Just(2048), Just(2063), 1000usize..3200],
                        n in 1usize..90, with_bias in any::<bool>(), seed in any::<u64>()) {
        let mut state = seed | 1;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let x: Vec<f32> = (0..rows * k).map(|_| next()).collect();
        let w: Vec<f32> = (0..n * k).map(|_| next()).collect();
        let b: Vec<f32> = (0..n).map(|_| next()).collect();
        let bias = with_bias.then_some(&b[..]);
        let xr = MatRef { data: &x, rows, cols: k, stride: k };
        let mut want = vec![0.0f32; rows * n];
        scalar::linear_f32(xr, &w, bias, Activation::None, MatMut { data: &mut want, rows, cols: n, stride: n });
        for isa in others() {
            for threads in [1, 3] {
                let mut got = vec![0.0f32; rows * n];
                isa.gemm_f32_threads(threads, xr, &w, bias, Activation::None, MatMut { data: &mut got, rows, cols: n, stride: n });
                let bad = got.iter().zip(&want).position(|(a, b)| a.to_bits() != b.to_bits());
                prop_assert!(bad.is_none(), "{} on {} threads, output {:?}", isa.name(), threads, bad);
            }
        }
    }
}

/// Attention: the vectorised exp and another summation order. A logit `s` summed in
/// another order moves by a few f32 steps of its magnitude, and the output with it by
/// that much times |v|: so besides 1e-5 relative, 8·ε·(largest possible |logit|)·max|v|.
/// Tests draw `scale` as a multiple of 1/√dh, as models do, so logits stay model-sized.
const ATTENTION_TOLERANCE: f32 = 1e-5;

fn attention_tolerance(want: f32, scale: f32, dh: usize, max_abs: f32) -> f32 {
    let logit = scale * dh as f32 * max_abs * max_abs;
    ATTENTION_TOLERANCE * (1.0 + want.abs()) + 8.0 * f32::EPSILON * logit * max_abs
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn attention_matches(nq in 1usize..10, nk in 1usize..150, heads in 1usize..4, dh in 1usize..80,
                         extra in 0usize..3, scale in 0.2f32..2.0,
                         vals in prop::collection::vec(-3.0f32..3.0, 7000 + 150 * (3 * 80 + 2))) {
        let w = heads * dh;
        let stride = w + extra;
        let q = MatRef { data: &vals[..nq * stride], rows: nq, cols: w, stride };
        let k = MatRef { data: &vals[1000..1000 + nk * stride], rows: nk, cols: w, stride };
        let v = MatRef { data: &vals[7000..7000 + nk * stride], rows: nk, cols: w, stride };
        let scale = scale / (dh as f32).sqrt();
        let mut scratch = vec![0.0f32; Isa::attention_scratch_floats(dh, nk, Precision::F32)];
        let mut want = vec![0.0f32; nq * w];
        scalar::attention(q, k, v, heads, dh, scale, Precision::F32, MatMut { data: &mut want, rows: nq, cols: w, stride: w }, &mut scratch);
        for isa in others() {
            let mut got = vec![0.0f32; nq * w];
            isa.attention(q, k, v, heads, dh, scale, Precision::F32, MatMut { data: &mut got, rows: nq, cols: w, stride: w }, &mut scratch);
            for i in 0..nq * w {
                prop_assert!((got[i] - want[i]).abs() <= attention_tolerance(want[i], scale, dh, 3.0),
                    "{} {}: {} vs {}", isa.name(), i, got[i], want[i]);
            }
        }
    }
}

// bf16 attention against the scalar bf16 reference: `Precision::Bf16` fixes the
// rounding, the exponential and the order of every sum, so every ISA gives the same bits.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn attention_bf16_matches(nq in 1usize..10, nk in 1usize..110, heads in 1usize..4, dh in 1usize..80,
                              extra in 0usize..3, scale in 0.2f32..2.0, seed in any::<u64>(),
                              peaked in any::<bool>()) {
        let w = heads * dh;
        let stride = w + extra;
        let mut s = seed;
        let vals: Vec<f32> = (0..(nq + 2 * nk) * stride).map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        }).collect();
        let q = MatRef { data: &vals[..nq * stride], rows: nq, cols: w, stride };
        let k = MatRef { data: &vals[nq * stride..(nq + nk) * stride], rows: nk, cols: w, stride };
        let v = MatRef { data: &vals[(nq + nk) * stride..], rows: nk, cols: w, stride };
        // Peaked: logits hundreds apart, so most weights fall under the softmax floor.
        let scale = scale / (dh as f32).sqrt() * if peaked { 40.0 } else { 1.0 };
        let mut scratch = vec![0.0f32; Isa::attention_scratch_floats(dh, nk, Precision::Bf16)];
        let mut want = vec![0.0f32; nq * w];
        scalar::attention(q, k, v, heads, dh, scale, Precision::Bf16, MatMut { data: &mut want, rows: nq, cols: w, stride: w }, &mut scratch);
        // Every supported ISA, and on x86 the AVX-512 path for CPUs without bf16
        // instructions, which this CPU may not pick on its own.
        let mut runs: Vec<(&str, Vec<f32>)> = Vec::new();
        for isa in others() {
            let mut got = vec![0.0f32; nq * w];
            isa.attention(q, k, v, heads, dh, scale, Precision::Bf16, MatMut { data: &mut got, rows: nq, cols: w, stride: w }, &mut scratch);
            runs.push((isa.name(), got));
        }
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("fma") {
            let mut got = vec![0.0f32; nq * w];
            vlm_runtime::kernels::x86_avx512_attention_f32::attention_bf16(
                q, k, v, heads, dh, scale, MatMut { data: &mut got, rows: nq, cols: w, stride: w }, &mut scratch);
            runs.push(("x86-avx512 (bf16 emulated)", got));
        }
        for (name, got) in runs {
            for i in 0..nq * w {
                prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} {}: {} vs {}", name, i, got[i], want[i]);
            }
        }
    }
}

/// `rows × width` values stored as an int8 cache (`cache_append_i8`'s layout), as f32
/// words.
fn int8_cache(x: &[f32], rows: usize, width: usize, dh: usize) -> (Vec<f32>, usize) {
    let cols = scalar::i8_cache_cols(width, dh).expect("heads a multiple of 4 wide");
    let mut words = vec![0.0f32; rows * cols];
    for (r, row) in words.chunks_mut(cols).enumerate() {
        let bytes: &mut [u8] = bytemuck::cast_slice_mut(row);
        let (values, scales) = bytes.split_at_mut(width);
        let values: &mut [i8] = bytemuck::cast_slice_mut(values);
        for (h, qh) in values.chunks_mut(dh).enumerate() {
            let s = scalar::quantize_head_i8(&x[r * width + h * dh..][..dh], qh);
            scales[4 * h..4 * h + 4].copy_from_slice(&s.to_le_bytes());
        }
    }
    (words, cols)
}

/// Attention over an int8 cache, one query head at a time, on `isa`; and the fp32
/// reference over the same keys and values before quantization.
#[allow(clippy::too_many_arguments)]
fn int8_and_fp32(
    isa: Isa,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    nk: usize,
    kv: usize,
    group: usize,
    dh: usize,
    scale: f32,
) -> (Vec<f32>, Vec<f32>) {
    let (heads, width) = (kv * group, kv * dh);
    let (kw, cols) = int8_cache(k, nk, width, dh);
    let (vw, _) = int8_cache(v, nk, width, dh);
    fn view(w: &[f32], nk: usize, cols: usize, dh: usize) -> scalar::I8Rows<'_> {
        scalar::I8Rows::of(
            MatRef {
                data: w,
                rows: nk,
                cols,
                stride: cols,
            },
            dh,
        )
    }
    let mut scratch = vec![0.0f32; scalar::attention_i8kv_scratch(dh, nk)];
    let mut got = vec![0.0f32; heads * dh];
    for (h, o) in got.chunks_mut(dh).enumerate() {
        isa.attention_i8kv_head(
            &q[h * dh..][..dh],
            view(&kw, nk, cols, dh),
            view(&vw, nk, cols, dh),
            h / group,
            nk,
            scale,
            o,
            &mut scratch,
        );
    }
    let mut want = vec![0.0f32; heads * dh];
    let mut fs = vec![0.0f32; Isa::attention_scratch_floats(dh, nk, Precision::F32)];
    for (h, o) in want.chunks_mut(dh).enumerate() {
        let g = h / group;
        let col = |x: &[f32]| -> Vec<f32> {
            (0..nk)
                .flat_map(|t| x[t * width + g * dh..][..dh].to_vec())
                .collect()
        };
        let (kh, vh) = (col(k), col(v));
        fn m(d: &[f32], rows: usize) -> MatRef<'_> {
            MatRef {
                data: d,
                rows,
                cols: d.len() / rows,
                stride: d.len() / rows,
            }
        }
        scalar::attention(
            m(&q[h * dh..][..dh], 1),
            m(&kh, nk),
            m(&vh, nk),
            1,
            dh,
            scale,
            Precision::F32,
            MatMut {
                data: o,
                rows: 1,
                cols: dh,
                stride: dh,
            },
            &mut fs,
        );
    }
    (got, want)
}

// Attention over an int8 KV cache: exact integer q·k and sums in key order, so every ISA
// gives the reference's bits, edge values included (zero heads, one huge value, NaN);
// and within int8's error of fp32 attention over the unquantized keys and values.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(60))]

    #[test]
    fn attention_i8kv_matches(nk in 1usize..140, kv in 1usize..3, group in 1usize..4, dh4 in 1usize..20,
                              scale in 0.2f32..2.0, seed in any::<u64>(), edge in 0usize..4) {
        let dh = 4 * dh4;
        let width = kv * dh;
        let mut s = seed;
        let mut vals: Vec<f32> = (0..kv * group * dh + 2 * nk * width).map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        }).collect();
        let at = (s >> 7) as usize % vals.len();
        match edge {
            0 => vals[at..].iter_mut().take(dh).for_each(|x| *x = 0.0),
            1 => vals[at] = 1e30,
            2 => vals[at] = f32::NAN,
            _ => {}
        }
        let (q, rest) = vals.split_at(kv * group * dh);
        let (k, v) = rest.split_at(nk * width);
        let scale = scale / (dh as f32).sqrt();
        let (want, _) = int8_and_fp32(Isa::Scalar, q, k, v, nk, kv, group, dh, scale);
        for isa in others() {
            let (got, _) = int8_and_fp32(isa, q, k, v, nk, kv, group, dh, scale);
            for i in 0..got.len() {
                prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} {}: {} vs {}", isa.name(), i, got[i], want[i]);
            }
        }
    }

    #[test]
    fn attention_i8kv_is_near_fp32(nk in 1usize..140, kv in 1usize..3, group in 1usize..4, dh4 in 1usize..20,
                                   scale in 0.2f32..2.0, seed in any::<u64>()) {
        let dh = 4 * dh4;
        let width = kv * dh;
        let mut s = seed;
        let vals: Vec<f32> = (0..kv * group * dh + 2 * nk * width).map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 6.0
        }).collect();
        let (q, rest) = vals.split_at(kv * group * dh);
        let (k, v) = rest.split_at(nk * width);
        let scale = scale / (dh as f32).sqrt();
        let (got, want) = int8_and_fp32(Isa::Scalar, q, k, v, nk, kv, group, dh, scale);
        // Values within half a step (3/127 here) each, logits within about √dh such
        // steps: at most about 0.11 over 500 cases, the largest where logits reach ±150
        // and the softmax is nearly one-hot. A lost scale or a wrong head is off by ~1.
        let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
        prop_assert!(worst <= 0.25, "worst difference {worst}");
    }
}

/// The shared exponential within 3e-6 (relative) of 2^t over its whole range (absolute
/// for subnormal results), GELU-tanh and SiLU within 4e-6·|x| of their definitions (every SIMD
/// version is the scalar code bit for bit: `vector_math_equals_the_reference`).
#[test]
fn exp2_and_gelu_are_accurate() {
    let mut ts: Vec<f32> = (0..=200_000)
        .map(|i| -127.0 + 254.0 * i as f32 / 200_000.0)
        .collect();
    ts.extend([
        -0.5,
        0.5,
        -126.5,
        126.5,
        -1e9,
        1e9,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ]);
    for &t in &ts {
        let want = 2f64.powf((t as f64).clamp(-126.0, 126.0));
        let got = scalar::exp2_clamped(t) as f64;
        let err = (got - want).abs();
        assert!(
            err <= 3e-6 * want || err <= 2f64.powi(-149),
            "exp2({t}) = {got}, want {want}"
        );
    }
    assert_eq!(scalar::exp2_clamped(0.0), 1.0);
    let gelu = |x: f64| {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    };
    let xs: Vec<f32> = (0..=100_000)
        .map(|i| -20.0 + 40.0 * i as f32 / 100_000.0)
        .collect();
    for &x in &xs {
        let got = scalar::activate(x, Activation::GeluTanh) as f64;
        let want = gelu(x as f64);
        // Relative to the input's size: near the zero at x = 0 and for large negative x
        // the output is tiny next to the rounding of the exponent's argument.
        assert!(
            (got - want).abs() <= 4e-6 * (x as f64).abs().max(1e-3),
            "gelu({x}) = {got}, want {want}"
        );
        let got = scalar::activate(x, Activation::Silu) as f64;
        let want = x as f64 / (1.0 + (-x as f64).exp());
        assert!(
            (got - want).abs() <= 4e-6 * (x as f64).abs().max(1e-3),
            "silu({x}) = {got}, want {want}"
        );
    }
}

/// `f` over `x` in arrays of `N` lanes (the last one zero-padded), the first `x.len()`
/// results.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn by_lanes<const N: usize>(x: &[f32], f: impl Fn([f32; N]) -> [f32; N]) -> Vec<f32> {
    x.chunks(N)
        .flat_map(|c| {
            let mut lanes = [0.0f32; N];
            lanes[..c.len()].copy_from_slice(c);
            f(lanes).into_iter().take(c.len())
        })
        .collect()
}

/// One ISA's `element_wise`, on a slice.
type VectorMath = (&'static str, fn(ElementWise, &[f32]) -> Vec<f32>);

/// The vector math of every SIMD level this CPU can run.
fn vector_math() -> Vec<VectorMath> {
    #[allow(unused_mut)]
    let mut out: Vec<VectorMath> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use vlm_runtime::kernels::{x86_avx2_math, x86_avx512_math};
        // AVX-512F alone suffices: CPUs without VNNI or BF16 run this math in attention.
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("fma") {
            out.push(("x86-avx512", |f, x| {
                by_lanes(x, |l| x86_avx512_math::element_wise(f, l))
            }));
        }
        if Isa::X86Avx2.supported() {
            out.push(("x86-avx2", |f, x| {
                by_lanes(x, |l| x86_avx2_math::element_wise(f, l))
            }));
        }
    }
    #[cfg(target_arch = "aarch64")]
    out.push(("aarch64-neon", |f, x| {
        by_lanes(x, |l| {
            vlm_runtime::kernels::aarch64_neon_math::element_wise(f, l)
        })
    }));
    out
}

/// The exponential, the softmax weight, GELU-tanh and bf16 rounding of every SIMD level are
/// the scalar code bit for bit, over the exponential's range, GELU's useful range and
/// random bit patterns, edge values included (NaN only needs to stay NaN through GELU).
#[test]
fn vector_math_equals_the_reference() {
    let mut xs: Vec<f32> = (0..=200_000)
        .map(|i| -130.0 + 260.0 * i as f32 / 200_000.0)
        .chain((0..=100_000).map(|i| -20.0 + 40.0 * i as f32 / 100_000.0))
        .collect();
    let mut s = 0x9E37_79B9u32;
    xs.extend((0..8192).map(|_| {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        f32::from_bits(s)
    }));
    xs.extend([
        f32::NAN,
        -0.0,
        0.0,
        1e-40,
        -1e-40,
        f32::MAX,
        f32::MIN,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::from_bits(0x3F80_8000),
        f32::from_bits(0x3F81_8000),
        -126.5,
        126.5,
        // The softmax floor and its neighbours.
        -64.0,
        f32::from_bits((-64.0f32).to_bits() + 1),
        f32::from_bits((-64.0f32).to_bits() - 1),
        -100.0,
        -1e9,
        1e9,
    ]);
    // The softmax variant's domain: at most 126, or a quiet NaN (what arithmetic makes).
    // Signalling NaNs are left out: `fmaxnm` answers NaN for them where `vmaxps` answers
    // the number, in the scalar reference's own `max` too, so no ISA can promise them.
    let below: Vec<f32> = xs
        .iter()
        .map(|&x| {
            if x.is_nan() {
                f32::from_bits(x.to_bits() | 0x0040_0000)
            } else {
                x.min(126.0)
            }
        })
        .collect();
    let isas = vector_math();
    #[cfg(target_arch = "aarch64")]
    assert!(!isas.is_empty(), "NEON is in every AArch64 application CPU");
    for (name, f) in isas {
        let e = f(ElementWise::Exp2, &xs);
        let eb = f(ElementWise::SoftmaxWeight, &below);
        let g = f(ElementWise::GeluTanh, &xs);
        let b = f(ElementWise::Bf16Round, &xs);
        for (i, &x) in xs.iter().enumerate() {
            let want = scalar::exp2_clamped(x);
            assert_eq!(e[i].to_bits(), want.to_bits(), "{name} exp2({x:e})");
            let want = scalar::softmax_weight(below[i]);
            assert_eq!(
                eb[i].to_bits(),
                want.to_bits(),
                "{name} softmax weight ({:e})",
                below[i]
            );
            let want = scalar::activate(x, Activation::GeluTanh);
            assert!(
                g[i].to_bits() == want.to_bits() || (g[i].is_nan() && want.is_nan()),
                "{name} gelu({x:e}) = {}, want {want}",
                g[i]
            );
            let want = scalar::bf16_round(x);
            assert_eq!(
                b[i].to_bits(),
                want.to_bits(),
                "{name} bf16({:#010x})",
                x.to_bits()
            );
        }
    }
}

/// bf16 rounding: nearest, ties to even, denormals to signed zero, NaN kept (every SIMD
/// rounding is this bit for bit: `vector_math_equals_the_reference`).
#[test]
fn bf16_rounding() {
    let r = scalar::bf16_round;
    assert_eq!(r(1.0), 1.0);
    assert_eq!(r(f32::from_bits(0x3F80_8000)).to_bits(), 0x3F80_0000); // tie, even below
    assert_eq!(r(f32::from_bits(0x3F81_8000)).to_bits(), 0x3F82_0000); // tie, even above
    assert_eq!(r(f32::from_bits(0x3F80_8001)).to_bits(), 0x3F81_0000);
    assert_eq!(r(f32::from_bits(0x3F80_7FFF)).to_bits(), 0x3F80_0000);
    assert_eq!(r(f32::MAX), f32::INFINITY);
    assert_eq!(r(f32::INFINITY), f32::INFINITY);
    assert_eq!(r(-1e-40).to_bits(), 0x8000_0000);
    assert!(r(f32::NAN).is_nan());
}

// Layer norm: one summation order and no fused multiply-add on every ISA: bit for bit.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn layer_norm_matches(rows in 1usize..5, cols in 1usize..300, eps in 1e-7f32..1e-3,
                          vals in prop::collection::vec(-50.0f32..50.0, 5 * 300 + 600)) {
        let x = MatRef { data: &vals[..rows * cols], rows, cols, stride: cols };
        let (g, b) = (&vals[1500..1500 + cols], &vals[1800..1800 + cols]);
        let mut want = vec![0.0f32; rows * cols];
        scalar::layer_norm(x, g, b, eps, MatMut { data: &mut want, rows, cols, stride: cols });
        for isa in others() {
            let mut got = vec![0.0f32; rows * cols];
            isa.layer_norm(x, g, b, eps, MatMut { data: &mut got, rows, cols, stride: cols });
            for i in 0..rows * cols {
                prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} {}: {} vs {}", isa.name(), i, got[i], want[i]);
            }
        }
    }
}

// A decoder's vector ops (RMS norm, RoPE, the GLU gate): the reference's operations in
// its order on every ISA, so bit for bit. Widths cover rows shorter than a register, odd
// tails and several registers; values include large negative gates (the clamped
// exponential) and ±0.

proptest! {
    #![proptest_config(ProptestConfig::with_cases(100))]

    #[test]
    fn rms_norm_matches(rows in 1usize..5, cols in 1usize..300, eps in 1e-7f32..1e-3,
                        vals in prop::collection::vec(-50.0f32..50.0, 5 * 300 + 300)) {
        let x = MatRef { data: &vals[..rows * cols], rows, cols, stride: cols };
        let g = &vals[1500..1500 + cols];
        let mut want = vec![0.0f32; rows * cols];
        scalar::rms_norm(x, g, eps, MatMut { data: &mut want, rows, cols, stride: cols });
        for isa in others() {
            let mut got = vec![0.0f32; rows * cols];
            isa.rms_norm(x, g, eps, MatMut { data: &mut got, rows, cols, stride: cols });
            for i in 0..rows * cols {
                prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} {}: {} vs {}", isa.name(), i, got[i], want[i]);
            }
        }
    }

    #[test]
    fn rope_matches(rows in 1usize..4, heads in 1usize..4, half in 1usize..40, spare in 0usize..9,
                    first in 0usize..5,
                    vals in prop::collection::vec(-20.0f32..20.0, 3 * (3 * 80 + 8)),
                    angles in prop::collection::vec(-3.2f32..3.2, 8 * 40)) {
        let d = 2 * half;
        let cols = heads * d + spare;
        let x0 = &vals[..rows * cols];
        // Each position's row: cos of its angles, then sin.
        let table: Vec<f32> = (0..first + rows)
            .flat_map(|p| {
                let a = &angles[p * half..(p + 1) * half];
                a.iter().map(|t| t.cos()).chain(a.iter().map(|t| t.sin())).collect::<Vec<_>>()
            })
            .collect();
        let mut want = x0.to_vec();
        scalar::rope(MatMut { data: &mut want, rows, cols, stride: cols }, heads, d, &table, first);
        for isa in others() {
            let mut got = x0.to_vec();
            isa.rope(MatMut { data: &mut got, rows, cols, stride: cols }, heads, d, &table, first);
            for i in 0..rows * cols {
                prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} {}: {} vs {}", isa.name(), i, got[i], want[i]);
            }
        }
    }

    #[test]
    fn glu_matches(rows in 1usize..4, n in 1usize..200,
                   act in prop::sample::select(vec![Activation::None, Activation::Silu,
                                                    Activation::GeluTanh, Activation::GeluErf]),
                   vals in prop::collection::vec(prop_oneof![
                       8 => -12.0f32..12.0, 1 => -200.0f32..200.0, 1 => Just(0.0f32), 1 => Just(-0.0f32)
                   ], 3 * 400)) {
        let x = MatRef { data: &vals[..rows * 2 * n], rows, cols: 2 * n, stride: 2 * n };
        let mut want = vec![0.0f32; rows * n];
        scalar::glu(x, act, MatMut { data: &mut want, rows, cols: n, stride: n });
        for isa in others() {
            let mut got = vec![0.0f32; rows * n];
            isa.glu(x, act, MatMut { data: &mut got, rows, cols: n, stride: n });
            for i in 0..rows * n {
                prop_assert_eq!(got[i].to_bits(), want[i].to_bits(), "{} {:?} {}: {} vs {}", isa.name(), act, i, got[i], want[i]);
            }
        }
    }
}
