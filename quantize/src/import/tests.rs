use super::*;
use std::path::PathBuf;
use std::rc::Rc;

use tract_onnx::pb;
use vlm_runtime::ops::{Activation, Embedding, Linear, Op, Weights};

use super::expr::{BinaryFn, Expr, UnaryFn};
use super::expr_identify::{classify, erf, ExprKind};
use super::layout::slice_range;
use super::onnx_proto::data_type;

fn demo(file: &str) -> pb::ModelProto {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../models/demo")
        .join(file);
    tract_onnx::onnx().proto_model_for_path(path).unwrap()
}

const DEMO_PIXELS: TowerInput = TowerInput::Pixels {
    channels: 3,
    height: 64,
    width: 64,
};
const DEMO_TOKENS: TowerInput = TowerInput::Tokens { len: 16 };

fn f32s(name: &str, dims: &[i64], data: Vec<f32>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::FLOAT as i32,
        float_data: data,
        ..Default::default()
    }
}

fn i64s(name: &str, dims: &[i64], data: Vec<i64>) -> pb::TensorProto {
    pb::TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: data_type::INT64 as i32,
        int64_data: data,
        ..Default::default()
    }
}

fn ramp(n: usize, k: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * k)
        .collect()
}

fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str]) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.into(),
        name: name.into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn with_int(mut n: pb::NodeProto, name: &str, v: i64) -> pb::NodeProto {
    n.attribute.push(pb::AttributeProto {
        name: name.into(),
        r#type: 2,
        i: v,
        ..Default::default()
    });
    n
}

fn value(name: &str, elem: i64, dims: &[i64]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value as Dim, Dimension};
    pb::ValueInfoProto {
        name: name.into(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: elem as i32,
                shape: Some(pb::TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(Dim::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A text tower over 4 token ids of width 8: embedding (+ positions), then `body`
/// from value "h" ([1, 4, 8]) to "y" ([1, 4, 8]), then the last token as the output.
fn text_model(body: Vec<pb::NodeProto>, mut inits: Vec<pb::TensorProto>) -> pb::ModelProto {
    inits.extend([
        f32s("table", &[10, 8], ramp(80, 1.0)),
        f32s("pos", &[1, 4, 8], ramp(32, 0.1)),
        i64s("last", &[], vec![-1]),
        f32s("w", &[8, 8], ramp(64, 0.3)),
        f32s("b", &[8], ramp(8, 0.1)),
    ]);
    let mut nodes = vec![
        node("Gather", "/emb/Gather", &["table", "ids"], &["tok"]),
        node("Add", "/emb/Add", &["tok", "pos"], &["h"]),
    ];
    nodes.extend(body);
    nodes.push(with_int(
        node("Gather", "/pool/Gather", &["y", "last"], &["out"]),
        "axis",
        1,
    ));
    pb::ModelProto {
        ir_version: 8,
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 17,
        }],
        graph: Some(pb::GraphProto {
            node: nodes,
            initializer: inits,
            input: vec![value("ids", data_type::INT64, &[1, 4])],
            output: vec![value("out", data_type::FLOAT, &[1, 8])],
            ..Default::default()
        }),
        ..Default::default()
    }
}

const TOKENS4: TowerInput = TowerInput::Tokens { len: 4 };

fn failure(m: &pb::ModelProto) -> Failure {
    import_model(m, Role::TextEncoder, TOKENS4).expect_err("import should have failed")
}

#[test]
fn a_small_tower_lowers_and_folds() {
    let body = vec![
        node("MatMul", "/fc/MatMul", &["h", "w"], &["mm"]),
        node("Add", "/fc/Add", &["b", "mm"], &["y"]),
    ];
    let g = import_model(&text_model(body, vec![]), Role::TextEncoder, TOKENS4).unwrap();
    let kinds: Vec<&str> = g.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["embedding", "linear"]);
    let Op::Embedding(Embedding { add, .. }) = g.nodes[0].op else {
        unreachable!()
    };
    // The position table was folded into the embedding's `add`.
    assert_eq!(g.tensor(add).data.as_f32().unwrap(), &ramp(32, 0.1)[..]);
    let Op::Linear(Linear {
        bias: Some(b),
        weights: Weights::F32 { w },
        x,
        ..
    }) = g.nodes[1].op
    else {
        panic!("{:?}", g.nodes[1]);
    };
    assert_eq!(g.tensor(b).data.as_f32().unwrap(), &ramp(8, 0.1)[..]);
    // Stored [out, in]: the ONNX [in, out] matrix transposed.
    let wt = g.tensor(w).data.as_f32().unwrap();
    let w0 = ramp(64, 0.3);
    assert_eq!(wt[8 + 3], w0[3 * 8 + 1]);
    assert_eq!((x.rows, x.cols), (4, 8));
    assert_eq!((g.output.rows, g.output.cols, g.output.offset), (1, 8, 24));
}

#[test]
fn an_unsupported_op_is_refused_by_name() {
    let body = vec![node("Sin", "/text/bad/Sin", &["h"], &["y"])];
    let f = failure(&text_model(body, vec![]));
    assert_eq!(f.node, "/text/bad/Sin (Sin)");
    assert!(f.msg.contains("not supported"), "{}", f.msg);
    // The public error names it too.
    let e = Error::Import {
        path: "t.onnx".into(),
        node: f.node,
        msg: f.msg,
    };
    assert!(e.to_string().contains("/text/bad/Sin"), "{e}");
}

#[test]
fn an_activation_other_than_gelu_is_refused() {
    let body = vec![
        node("MatMul", "/fc1/MatMul", &["h", "w"], &["a"]),
        node("Tanh", "/act/Tanh", &["a"], &["t"]),
        node("MatMul", "/fc2/MatMul", &["t", "w"], &["y"]),
    ];
    let f = failure(&text_model(body, vec![]));
    assert_eq!(f.node, "/fc2/MatMul (MatMul)");
    assert!(
        f.msg.contains("/act/Tanh") && f.msg.contains("GELU"),
        "{}",
        f.msg
    );
}

#[test]
fn gelu_in_place_is_refused_while_its_input_is_still_needed() {
    // y = fc2(gelu(a)) + a: GELU cannot overwrite `a`, which the residual still reads.
    let half = f32s("half", &[], vec![0.5]);
    let one = f32s("one", &[], vec![1.0]);
    let k = f32s("k", &[], vec![std::f32::consts::FRAC_1_SQRT_2]);
    let body = vec![
        node("MatMul", "/fc1/MatMul", &["h", "w"], &["a"]),
        node("Mul", "/act/Mul", &["a", "k"], &["s"]),
        node("Erf", "/act/Erf", &["s"], &["e"]),
        node("Add", "/act/Add", &["e", "one"], &["e1"]),
        node("Mul", "/act/Mul_1", &["a", "e1"], &["p"]),
        node("Mul", "/act/Mul_2", &["p", "half"], &["g"]),
        node("MatMul", "/fc2/MatMul", &["g", "w"], &["f"]),
        node("Add", "/res/Add", &["f", "a"], &["y"]),
    ];
    let f = failure(&text_model(
        body.clone(),
        vec![half.clone(), one.clone(), k.clone()],
    ));
    assert_eq!(f.node, "/fc2/MatMul (MatMul)");
    assert!(f.msg.contains("still needs"), "{}", f.msg);
    // Without the residual it is fused into fc1 as exact GELU.
    let mut ok = body;
    ok.pop();
    ok.last_mut().unwrap().output = vec!["y".into()];
    let g = import_model(
        &text_model(ok, vec![half, one, k]),
        Role::TextEncoder,
        TOKENS4,
    )
    .unwrap();
    let acts: Vec<Activation> = g
        .nodes
        .iter()
        .filter_map(|n| match n.op {
            Op::Linear(Linear { act, .. }) => Some(act),
            _ => None,
        })
        .collect();
    assert_eq!(acts, [Activation::GeluErf, Activation::None]);
}

#[test]
fn attention_masks_are_refused() {
    let mut transpose = node("Transpose", "/k/Transpose", &["h"], &["kt"]);
    transpose.attribute.push(pb::AttributeProto {
        name: "perm".into(),
        r#type: 7,
        ints: vec![0, 2, 1],
        ..Default::default()
    });
    let mut body = vec![
        node("MatMul", "/q/MatMul", &["h", "w"], &["q"]),
        transpose,
        node("MatMul", "/attn/MatMul", &["q", "kt"], &["s"]),
        node("Add", "/attn/Add", &["s", "mask"], &["sm"]),
        node("Softmax", "/attn/Softmax", &["sm"], &["p"]),
        node("MatMul", "/attn/MatMul_1", &["p", "h"], &["y"]),
    ];
    let mask = f32s("mask", &[1, 4, 4], vec![0.0; 16]);
    let f = failure(&text_model(body.clone(), vec![mask]));
    assert_eq!(f.node, "/attn/Add (Add)");
    assert!(f.msg.contains("masks"), "{}", f.msg);
    // Without the mask it is one attention op over a single head.
    body.remove(3);
    body[3].input[0] = "s".into();
    let g = import_model(&text_model(body, vec![]), Role::TextEncoder, TOKENS4).unwrap();
    let kinds: Vec<&str> = g.nodes.iter().map(|n| n.op.kind()).collect();
    assert_eq!(kinds, ["embedding", "linear", "attention"]);
}

#[test]
fn wrong_inputs_are_refused_for_the_whole_model() {
    let m = text_model(vec![node("Identity", "/id", &["h"], &["y"])], vec![]);
    let f = import_model(&m, Role::TextEncoder, TowerInput::Tokens { len: 5 }).unwrap_err();
    assert_eq!(f.node, "(model)");
    assert!(
        f.msg.contains("[1, 4]") || f.msg.contains("1, 4"),
        "{}",
        f.msg
    );
    let f = import_model(&m, Role::ImageEncoder, DEMO_PIXELS).unwrap_err();
    assert_eq!(f.node, "(model)");
    let mut old = m.clone();
    old.opset_import[0].version = 11;
    assert!(import_model(&old, Role::TextEncoder, TOKENS4)
        .unwrap_err()
        .msg
        .contains("opset"));
    let mut empty = m;
    empty.graph = None;
    assert!(import_model(&empty, Role::TextEncoder, TOKENS4).is_err());
}

/// Random damage to the demo towers (attributes, constants, initializers, wiring) must
/// give errors or graphs, never a panic.
#[test]
fn damaged_models_never_panic() {
    let mut rnd = {
        let mut s = 0x5eed_u64;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as usize
        }
    };
    let wild = [
        -3i64,
        -1,
        0,
        1,
        2,
        3,
        7,
        64,
        1 << 20,
        1 << 40,
        i64::MAX,
        i64::MIN,
    ];
    let ops = [
        "Reshape",
        "Transpose",
        "Gather",
        "Softmax",
        "MatMul",
        "Add",
        "Mul",
        "Concat",
        "Slice",
        "Squeeze",
        "Unsqueeze",
        "Expand",
        "Tile",
        "Range",
        "ConstantOfShape",
        "Split",
        "Cast",
        "Where",
        "LayerNormalization",
        "Conv",
        "Gemm",
        "Div",
        "Mod",
        "Shape",
    ];
    let mut errors = 0;
    for (file, kind, input) in [
        ("vision.onnx", Role::ImageEncoder, DEMO_PIXELS),
        ("text.onnx", Role::TextEncoder, DEMO_TOKENS),
    ] {
        let base = demo(file);
        for _ in 0..60 {
            let mut m = base.clone();
            let g = m.graph.as_mut().unwrap();
            for _ in 0..1 + rnd() % 3 {
                let nn = g.node.len();
                let ni = g.initializer.len();
                let n = &mut g.node[rnd() % nn];
                match rnd() % 8 {
                    0 => {
                        if let Some(a) = n.attribute.first_mut() {
                            a.i = wild[rnd() % wild.len()];
                            for v in a.ints.iter_mut() {
                                *v = wild[rnd() % wild.len()];
                            }
                            a.f = [0.0, -1.0, f32::NAN, 1e30][rnd() % 4];
                        }
                    }
                    1 => {
                        if let Some(t) = n.attribute.iter_mut().find_map(|a| a.t.as_mut()) {
                            if t.raw_data.len() >= 8 {
                                let k = rnd() % (t.raw_data.len() / 8) * 8;
                                t.raw_data[k..k + 8]
                                    .copy_from_slice(&wild[rnd() % wild.len()].to_le_bytes());
                            } else {
                                t.dims.push(wild[rnd() % wild.len()]);
                            }
                        }
                    }
                    2 => n.op_type = ops[rnd() % ops.len()].into(),
                    3 => {
                        if n.input.len() > 1 {
                            n.input.swap(0, 1);
                        } else {
                            n.input.push(String::new());
                        }
                    }
                    4 => {
                        let k = rnd() % nn;
                        let other = g.node[k].output.first().cloned().unwrap_or_default();
                        let n = &mut g.node[rnd() % nn];
                        if let Some(i) = n.input.first_mut() {
                            *i = other;
                        }
                    }
                    5 => {
                        let t = &mut g.initializer[rnd() % ni];
                        match rnd() % 3 {
                            0 => t.raw_data.truncate(t.raw_data.len() / 2),
                            1 => t.dims.reverse(),
                            _ => t.dims.push(2),
                        }
                    }
                    6 => {
                        let k = rnd() % nn;
                        g.node.remove(k);
                    }
                    _ => n.attribute.clear(),
                }
            }
            match import_model(&m, kind, input) {
                Err(_) => errors += 1,
                Ok(g) => {
                    let x = vec![1.0f32; input.len()];
                    // What imports must be a graph the runtime accepts.
                    if let Err(e) = crate::runner::run_f32(&g, &x) {
                        panic!("a damaged {file} imported to a graph the runtime refuses: {e}");
                    }
                }
            }
        }
    }
    // Most damage is caught; some (a dead node, a harmless attribute) is not.
    assert!(
        errors > 30,
        "only {errors} of 120 damaged models were refused"
    );
}

#[test]
fn erf_is_accurate() {
    for (x, want) in [
        (0.0, 0.0),
        (0.5, 0.520_499_877_813_046_5),
        (1.0, 0.842_700_792_949_714_9),
        (2.0, 0.995_322_265_018_952_7),
        (2.9, 0.999_958_902_121_900_6),
        (3.0, 0.999_977_909_503_001_4),
        (4.0, 0.999_999_984_582_742_1),
        (-1.5, -0.966_105_146_475_310_7),
    ] {
        assert!(
            (erf(x) - want).abs() < 1e-12,
            "erf({x}) = {} vs {want}",
            erf(x)
        );
    }
}

#[test]
fn expressions_are_identified_by_what_they_compute() {
    let x = || Rc::new(Expr::Input);
    let c = |v: f64| Rc::new(Expr::Const(v));
    let bin = |op, a, b| Rc::new(Expr::Binary(op, a, b));
    let un = |op, a| Rc::new(Expr::Unary(op, a));
    // The exporter's GELU-tanh: 0.5·x·(1 + tanh(0.79788·(x + 0.044715·x·x·x))), f32 constants.
    let cube = bin(BinaryFn::Mul, x(), bin(BinaryFn::Mul, x(), x()));
    let inner = bin(
        BinaryFn::Add,
        x(),
        bin(BinaryFn::Mul, c(0.044714998453855515), cube),
    );
    let t = un(
        UnaryFn::Tanh,
        bin(BinaryFn::Mul, c(0.7978845834732056), inner),
    );
    let gelu = bin(
        BinaryFn::Mul,
        c(0.5),
        bin(BinaryFn::Mul, x(), bin(BinaryFn::Add, c(1.0), t)),
    );
    assert_eq!(classify(&gelu), ExprKind::Act(Activation::GeluTanh));
    // With Pow instead of x·x·x.
    let inner = bin(
        BinaryFn::Add,
        x(),
        bin(BinaryFn::Mul, c(0.044715), bin(BinaryFn::Pow, x(), c(3.0))),
    );
    let t = un(
        UnaryFn::Tanh,
        bin(BinaryFn::Mul, c(0.7978845834732056), inner),
    );
    let gelu = bin(
        BinaryFn::Mul,
        bin(BinaryFn::Mul, x(), bin(BinaryFn::Add, t, c(1.0))),
        c(0.5),
    );
    assert_eq!(classify(&gelu), ExprKind::Act(Activation::GeluTanh));
    // Exact GELU, as x·Φ(x) with a division by √2.
    let e = un(UnaryFn::Erf, bin(BinaryFn::Div, x(), c(1.4142135381698608)));
    let gelu = bin(
        BinaryFn::Div,
        bin(BinaryFn::Mul, x(), bin(BinaryFn::Add, e, c(1.0))),
        c(2.0),
    );
    assert_eq!(classify(&gelu), ExprKind::Act(Activation::GeluErf));
    // Quick GELU x·σ(1.702x) is close to neither.
    let quick = bin(
        BinaryFn::Mul,
        x(),
        un(UnaryFn::Sigmoid, bin(BinaryFn::Mul, c(1.702), x())),
    );
    assert_eq!(classify(&quick), ExprKind::Other);
    assert_eq!(
        classify(&bin(BinaryFn::Mul, x(), c(1.0))),
        ExprKind::Identity
    );
    assert_eq!(
        classify(&bin(BinaryFn::Mul, x(), c(0.25))),
        ExprKind::Scale(0.25)
    );
    assert_eq!(classify(&bin(BinaryFn::Add, x(), c(0.25))), ExprKind::Other);
}

#[test]
fn slices_follow_onnx() {
    assert_eq!(slice_range(10, 2, 8, 3).unwrap(), (2, 3, 2));
    assert_eq!(slice_range(10, -1, i64::MIN, -1).unwrap(), (9, -1, 10));
    assert_eq!(slice_range(10, 0, i64::MAX, 1).unwrap(), (0, 1, 10));
    assert_eq!(slice_range(10, 5, 2, 1).unwrap().2, 0);
    assert_eq!(slice_range(10, 20, 30, 1).unwrap().2, 0);
    assert_eq!(slice_range(10, 3, 4, i64::MAX).unwrap(), (3, 1, 1));
    assert!(slice_range(10, 0, 5, 0).is_err());
    assert!(slice_range(10, 5, 0, i64::MIN).is_err());
}
