//! Reading the protobuf: ONNX data types, node attributes, tensors and node names.

use tract_onnx::data_resolver::FopenDataResolver;
use tract_onnx::pb;

use super::ndarray::NdArray;
use super::value::Constant;
use super::ImportResult;

/// ONNX TensorProto data types used here.
pub(super) mod data_type {
    pub const FLOAT: i64 = 1;
    pub const UINT8: i64 = 2;
    pub const INT8: i64 = 3;
    pub const UINT16: i64 = 4;
    pub const INT16: i64 = 5;
    pub const INT32: i64 = 6;
    pub const INT64: i64 = 7;
    pub const BOOL: i64 = 9;
    pub const DOUBLE: i64 = 11;
    pub const UINT32: i64 = 12;
    pub const UINT64: i64 = 13;
}

fn attr<'a>(n: &'a pb::NodeProto, name: &str) -> Option<&'a pb::AttributeProto> {
    n.attribute.iter().find(|a| a.name == name)
}

/// An attribute's value, checking its declared type (0: an old exporter left it unset).
pub(super) fn typed<'a>(
    n: &'a pb::NodeProto,
    name: &str,
    ty: i32,
) -> ImportResult<Option<&'a pb::AttributeProto>> {
    match attr(n, name) {
        Some(a) if a.r#type == ty || a.r#type == 0 => Ok(Some(a)),
        Some(a) => bail!("attribute {name} has type {}, expected {ty}", a.r#type),
        None => Ok(None),
    }
}

pub(super) fn attr_i(n: &pb::NodeProto, name: &str, default: i64) -> ImportResult<i64> {
    Ok(typed(n, name, 2)?.map_or(default, |a| a.i))
}

pub(super) fn attr_f(n: &pb::NodeProto, name: &str, default: f32) -> ImportResult<f32> {
    Ok(typed(n, name, 1)?.map_or(default, |a| a.f))
}

pub(super) fn attr_ints(n: &pb::NodeProto, name: &str) -> ImportResult<Option<Vec<i64>>> {
    Ok(typed(n, name, 7)?.map(|a| a.ints.clone()))
}

pub(super) fn attr_s(n: &pb::NodeProto, name: &str) -> ImportResult<Option<String>> {
    Ok(typed(n, name, 3)?.map(|a| String::from_utf8_lossy(&a.s).into_owned()))
}

pub(super) fn attr_t<'a>(
    n: &'a pb::NodeProto,
    name: &str,
) -> ImportResult<Option<&'a pb::TensorProto>> {
    match typed(n, name, 4)? {
        Some(a) => match &a.t {
            Some(t) => Ok(Some(t)),
            None => bail!("attribute {name} holds no tensor"),
        },
        None => Ok(None),
    }
}

fn le<const N: usize, T>(raw: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    raw.chunks_exact(N)
        .map(|c| {
            let mut b = [0u8; N];
            b.copy_from_slice(c);
            f(b)
        })
        .collect()
}

/// A TensorProto's values (raw little-endian bytes or typed fields), checked against its
/// dims; only what SigLIP exports use.
pub(super) fn decode_tensor(t: &pb::TensorProto) -> ImportResult<Constant> {
    if t.data_location == Some(pb::tensor_proto::DataLocation::External as i32) {
        bail!(
            "tensor {:?} keeps its data in an external file, which import does not read \
             (export the model with its weights inside the .onnx file)",
            t.name
        );
    }
    if t.segment.is_some() {
        bail!(
            "tensor {:?} is segmented, which import does not read",
            t.name
        );
    }
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("tensor {:?} has dimension {d}", t.name)))
        .collect::<ImportResult<Vec<usize>>>()?;
    let raw = &t.raw_data;
    let ints =
        |w: usize, f: &dyn Fn(&[u8]) -> i64| -> Vec<i64> { raw.chunks_exact(w).map(f).collect() };
    let sized = |w: usize| -> ImportResult<()> {
        if !raw.len().is_multiple_of(w) {
            bail!(
                "tensor {:?} has {} raw bytes, not a multiple of {w}",
                t.name,
                raw.len()
            );
        }
        Ok(())
    };
    let ty = i64::from(t.data_type);
    let arr = match ty {
        data_type::FLOAT | data_type::DOUBLE => {
            let data: Vec<f32> = if !raw.is_empty() {
                if ty == data_type::FLOAT {
                    sized(4)?;
                    if shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
                        != Some(raw.len() / 4)
                    {
                        bail!(
                            "tensor {:?} has {} values for shape {shape:?}",
                            t.name,
                            raw.len() / 4
                        );
                    }
                    // tract's loader copies the bytes in optimised code; a per-element loop
                    // here costs seconds on a base-size tower in a debug build. The checks
                    // above keep it on a path that cannot fail.
                    let loaded = tract_onnx::tensor::load_tensor(&FopenDataResolver, t, None)
                        .map_err(|e| format!("tensor {:?}: {e}", t.name))?;
                    let plain = loaded
                        .try_as_plain_ram()
                        .map_err(|e| format!("tensor {:?}: {e}", t.name))?;
                    plain
                        .as_slice::<f32>()
                        .map_err(|e| format!("tensor {:?}: {e}", t.name))?
                        .to_vec()
                } else {
                    sized(8)?;
                    le::<8, f32>(raw, |b| f64::from_le_bytes(b) as f32)
                }
            } else if ty == data_type::FLOAT {
                t.float_data.clone()
            } else {
                t.double_data.iter().map(|&v| v as f32).collect()
            };
            Constant::Float(
                NdArray::new(shape, data).map_err(|e| format!("tensor {:?}: {e}", t.name))?,
            )
        }
        data_type::INT64
        | data_type::INT32
        | data_type::INT16
        | data_type::INT8
        | data_type::UINT8
        | data_type::UINT16
        | data_type::BOOL
        | data_type::UINT32
        | data_type::UINT64 => {
            let data: Vec<i64> = if !raw.is_empty() {
                let w = match ty {
                    data_type::INT64 | data_type::UINT64 => 8,
                    data_type::INT32 | data_type::UINT32 => 4,
                    data_type::INT16 | data_type::UINT16 => 2,
                    _ => 1,
                };
                sized(w)?;
                match ty {
                    data_type::INT64 | data_type::UINT64 => le::<8, i64>(raw, i64::from_le_bytes),
                    data_type::INT32 => le::<4, i64>(raw, |b| i64::from(i32::from_le_bytes(b))),
                    data_type::UINT32 => le::<4, i64>(raw, |b| i64::from(u32::from_le_bytes(b))),
                    data_type::INT16 => le::<2, i64>(raw, |b| i64::from(i16::from_le_bytes(b))),
                    data_type::UINT16 => le::<2, i64>(raw, |b| i64::from(u16::from_le_bytes(b))),
                    data_type::INT8 => ints(1, &|c| i64::from(c[0] as i8)),
                    _ => ints(1, &|c| i64::from(c[0])),
                }
            } else {
                match ty {
                    data_type::INT64 => t.int64_data.clone(),
                    data_type::UINT32 | data_type::UINT64 => {
                        t.uint64_data.iter().map(|&v| v as i64).collect()
                    }
                    _ => t.int32_data.iter().map(|&v| i64::from(v)).collect(),
                }
            };
            Constant::Int(
                NdArray::new(shape, data).map_err(|e| format!("tensor {:?}: {e}", t.name))?,
            )
        }
        other => bail!(
            "tensor {:?} has data type {other}, which import does not read",
            t.name
        ),
    };
    Ok(arr)
}

pub(super) fn node_name(n: &pb::NodeProto) -> String {
    if !n.name.is_empty() {
        n.name.clone()
    } else {
        format!(
            "<{} producing {}>",
            n.op_type,
            n.output.first().map_or("nothing", |s| s)
        )
    }
}

pub(super) fn node_label(n: &pb::NodeProto) -> String {
    format!("{} ({})", node_name(n), n.op_type)
}
