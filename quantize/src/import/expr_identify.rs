//! Identifying element-wise expressions: erf, the two GELU forms, and what an expression
//! computes, judged on probe points.

use vlm_runtime::ops::Activation;

use super::expr::Expr;

/// erf to ~1e-13: a Maclaurin series near zero, a continued fraction for erfc beyond.
pub(super) fn erf(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    let a = x.abs();
    let two_over_sqrt_pi = 2.0 / std::f64::consts::PI.sqrt();
    let r = if a < 3.0 {
        let (a2, mut term, mut sum) = (a * a, a, a);
        for n in 1..200 {
            term *= -a2 / n as f64;
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 * sum.abs() {
                break;
            }
        }
        sum * two_over_sqrt_pi
    } else {
        // erfc(a) = e^(−a²)/√π · 1/(a + (1/2)/(a + 1/(a + (3/2)/(a + …))))
        let mut f = a;
        for k in (1..=60).rev() {
            f = a + (k as f64 / 2.0) / f;
        }
        1.0 - libm::exp(-a * a) / (std::f64::consts::PI.sqrt() * f)
    };
    r.copysign(x)
}

fn gelu_tanh(x: f64) -> f64 {
    let c = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + libm::tanh(c * (x + 0.044715 * x * x * x)))
}

fn gelu_erf(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ExprKind {
    Identity,
    Scale(f64),
    Act(Activation),
    Other,
}

/// What an expression computes, judged on probe points: exporters spell GELU many ways
/// (x·x·x or Pow, constants folded or not, erf(x/√2) or erf(x·0.7071)), all of which agree
/// with the definition to float rounding, while GELU-tanh and GELU-erf differ by ~1e-4.
pub(super) fn classify(ex: &Expr) -> ExprKind {
    let xs: Vec<f64> = (0..=200).map(|i| -8.0 + 0.08 * i as f64).collect();
    let ys: Vec<f64> = xs.iter().map(|&x| ex.eval(x)).collect();
    let matches = |f: &dyn Fn(f64) -> f64| {
        xs.iter().zip(&ys).all(|(&x, &y)| {
            let g = f(x);
            (y - g).abs() <= 1e-6 * (1.0 + g.abs())
        })
    };
    let s = ex.eval(1.0);
    if s.is_finite() && matches(&|x| s * x) {
        return if (s - 1.0).abs() <= 1e-6 {
            ExprKind::Identity
        } else {
            ExprKind::Scale(s)
        };
    }
    if matches(&gelu_tanh) {
        ExprKind::Act(Activation::GeluTanh)
    } else if matches(&gelu_erf) {
        ExprKind::Act(Activation::GeluErf)
    } else {
        ExprKind::Other
    }
}
