//! The language-model ops against their definitions, written here the way the Hugging
//! Face modelling code states them (f64): RMS norm, rotary embedding ("rotate half"),
//! the gated unit, Idefics3's pixel shuffle (its view / permute / reshape sequence) and
//! grouped-query attention (keys and values repeated per group, as `repeat_kv`).

use vlm_runtime::harness::Rng;
use vlm_runtime::kernels::scalar::{self, MatMut, MatRef};
use vlm_runtime::kernels::{Isa, ALL};
use vlm_runtime::ops::{Activation, Precision};

fn mat(data: &[f32], rows: usize, cols: usize) -> MatRef<'_> {
    MatRef {
        data,
        rows,
        cols,
        stride: cols,
    }
}

fn mat_mut(data: &mut [f32], rows: usize, cols: usize) -> MatMut<'_> {
    MatMut {
        data,
        rows,
        cols,
        stride: cols,
    }
}

fn close(got: &[f32], want: &[f64], tol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn rms_norm_is_llamas() {
    let (rows, cols) = (4, 37);
    let x = Rng(1).f32s(rows * cols, 3.0);
    let g = Rng(2).f32s(cols, 1.0);
    let mut out = vec![0.0; rows * cols];
    scalar::rms_norm(mat(&x, rows, cols), &g, 1e-5, mat_mut(&mut out, rows, cols));
    let mut want = Vec::new();
    for r in 0..rows {
        let row = &x[r * cols..(r + 1) * cols];
        let ms = row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / cols as f64;
        let inv = 1.0 / (ms + 1e-5).sqrt();
        want.extend(row.iter().zip(&g).map(|(&v, &w)| v as f64 * inv * w as f64));
    }
    close(&out, &want, 1e-6, "rms norm");
}

#[test]
fn rope_rotates_half_by_position() {
    let (rows, heads, d, theta, first) = (3, 2, 8, 10000.0f64, 5);
    let x = Rng(3).f32s(rows * heads * d, 1.0);
    let positions = first + rows;
    let mut table = vec![0.0f32; positions * d];
    for p in 0..positions {
        for i in 0..d / 2 {
            let a = p as f64 / theta.powf(2.0 * i as f64 / d as f64);
            table[p * d + i] = a.cos() as f32;
            table[p * d + d / 2 + i] = a.sin() as f32;
        }
    }
    let mut got = x.clone();
    scalar::rope(mat_mut(&mut got, rows, heads * d), heads, d, &table, first);
    // q·cos + rotate_half(q)·sin, rotate_half(q) = cat(−q2, q1), cos/sin = cat(f, f).
    let mut want = Vec::new();
    for r in 0..rows {
        for h in 0..heads {
            let q = &x[(r * heads + h) * d..(r * heads + h + 1) * d];
            for j in 0..d {
                let i = j % (d / 2);
                let a = (first + r) as f64 / theta.powf(2.0 * i as f64 / d as f64);
                let rot = if j < d / 2 {
                    -q[j + d / 2]
                } else {
                    q[j - d / 2]
                } as f64;
                want.push(q[j] as f64 * a.cos() + rot * a.sin());
            }
        }
    }
    close(&got, &want, 1e-6, "rope");
}

#[test]
fn glu_is_act_gate_times_up() {
    let (rows, n) = (2, 13);
    let x = Rng(4).f32s(rows * 2 * n, 4.0);
    for act in [Activation::Silu, Activation::GeluTanh] {
        let mut out = vec![0.0; rows * n];
        scalar::glu(mat(&x, rows, 2 * n), act, mat_mut(&mut out, rows, n));
        let mut want = Vec::new();
        for r in 0..rows {
            for c in 0..n {
                let (g, u) = (x[r * 2 * n + c] as f64, x[r * 2 * n + n + c] as f64);
                let a = match act {
                    Activation::Silu => g / (1.0 + (-g).exp()),
                    _ => {
                        let k = (2.0 / std::f64::consts::PI).sqrt();
                        0.5 * g * (1.0 + (k * (g + 0.044715 * g * g * g)).tanh())
                    }
                };
                want.push(a * u);
            }
        }
        close(&out, &want, 1e-5, act.name());
    }
}

/// Idefics3's `pixel_shuffle`, step by step on index arrays: view [h, w, d] →
/// [h, w/s, d·s] → permute → [w/s, h, d·s] → reshape [w/s, h/s, d·s²] → permute →
/// [h/s, w/s, d·s²].
fn hf_pixel_shuffle(x: &[f32], h: usize, w: usize, d: usize, s: usize) -> Vec<f32> {
    // Element (a, b, c) of a row-major [A, B, C] array is a·B·C + b·C + c; each step
    // below only reinterprets or permutes, so track flat indices.
    let idx: Vec<usize> = (0..h * w * d).collect();
    // [h, w/s, d·s] is the same memory; permute(1, 0, 2) → [w/s, h, d·s].
    let (b1, c1) = (w / s, d * s);
    let mut p1 = Vec::with_capacity(idx.len());
    for j in 0..b1 {
        for i in 0..h {
            for c in 0..c1 {
                p1.push(idx[i * b1 * c1 + j * c1 + c]);
            }
        }
    }
    // reshape → [w/s, h/s, d·s²] (same memory), permute(1, 0, 2) → [h/s, w/s, d·s²].
    let (a2, b2, c2) = (w / s, h / s, d * s * s);
    let mut p2 = Vec::with_capacity(idx.len());
    for i in 0..b2 {
        for j in 0..a2 {
            for c in 0..c2 {
                p2.push(p1[j * b2 * c2 + i * c2 + c]);
            }
        }
    }
    p2.into_iter().map(|k| x[k]).collect()
}

#[test]
fn pixel_shuffle_is_idefics3s() {
    for (h, w, d, s) in [(4, 4, 3, 2), (6, 4, 5, 2), (8, 8, 2, 4), (3, 6, 4, 3)] {
        let x = Rng(5).f32s(h * w * d, 1.0);
        let mut out = vec![0.0; h * w * d];
        scalar::pixel_shuffle(
            mat(&x, h * w, d),
            w,
            s,
            mat_mut(&mut out, h * w / (s * s), d * s * s),
        );
        assert_eq!(out, hf_pixel_shuffle(&x, h, w, d, s), "{h}×{w}×{d} by {s}");
    }
}

#[test]
fn grouped_query_attention_repeats_key_heads() {
    // The op's grouped path runs each query head alone against its group's key head
    // (`ops/attention.rs`); that equals multi-head attention over repeated keys, on
    // every kernel set.
    let (heads, kv, d, nk) = (6, 2, 8, 11);
    let q = Rng(6).f32s(heads * d, 1.0);
    let k = Rng(7).f32s(nk * kv * d, 1.0);
    let v = Rng(8).f32s(nk * kv * d, 1.0);
    let rep = |m: &[f32]| -> Vec<f32> {
        let mut o = Vec::new();
        for r in 0..nk {
            for h in 0..heads {
                let g = h / (heads / kv);
                o.extend_from_slice(&m[(r * kv + g) * d..(r * kv + g + 1) * d]);
            }
        }
        o
    };
    let (kr, vr) = (rep(&k), rep(&v));
    let mut scratch = vec![0.0; 4096];
    let mut want = vec![0.0; heads * d];
    Isa::Scalar.attention(
        mat(&q, 1, heads * d),
        mat(&kr, nk, heads * d),
        mat(&vr, nk, heads * d),
        heads,
        d,
        0.3,
        Precision::F32,
        mat_mut(&mut want, 1, heads * d),
        &mut scratch,
    );
    for isa in ALL.into_iter().filter(|i| i.supported()) {
        let mut got = vec![0.0; heads * d];
        for h in 0..heads {
            let g = h / (heads / kv);
            let kh = MatRef {
                data: &k[g * d..],
                rows: nk,
                cols: d,
                stride: kv * d,
            };
            let vh = MatRef {
                data: &v[g * d..],
                ..kh
            };
            isa.attention(
                mat(&q[h * d..(h + 1) * d], 1, d),
                kh,
                vh,
                1,
                d,
                0.3,
                Precision::F32,
                mat_mut(&mut got[h * d..(h + 1) * d], 1, d),
                &mut scratch,
            );
        }
        let want64: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        close(&got, &want64, 2e-5, isa.name());
    }
}
