//! Import: an exported SigLIP ONNX tower lowered to the runtime's own ops ([`Graph`]).
//!
//! torch.onnx writes a tower as hundreds of small nodes: shape arithmetic, layout changes,
//! and a transformer's arithmetic spelled out (GELU as a chain of Mul/Add/Tanh, attention
//! as MatMul/Softmax/MatMul). The runtime has seven coarse ops. Import bridges the two by
//! abstract interpretation: the nodes are walked in order with the input shape fixed, and
//! every ONNX value becomes one of
//!
//! - a **constant**: initializers, and every node whose inputs are all constant, folded
//!   here. All shape arithmetic lands here, since every activation's shape is known;
//! - a **view**: an activation held in a graph buffer, with an *index tensor* of the
//!   value's logical shape holding each element's offset in that buffer. Reshape,
//!   Transpose, Gather, Slice… of an activation only rewrite the index tensor; an op that
//!   reads a matrix checks that the index tensor is one (`offset + r·stride + c`). So q, k
//!   and v may be column ranges of one packed projection, heads are found wherever the
//!   exporter's reshapes put them, and no layout op ever costs a copy;
//! - a **pending form**: an element-wise expression over one view, identified (GELU, or a
//!   plain scaling) by evaluating it on probe points when something consumes it; or
//!   attention scores / probabilities waiting for the MatMul with the values.
//!
//! Whatever cannot be expressed this way is refused with an error naming the first node
//! that could not be lowered. Nothing is matched by node or initializer name: sizes,
//! depth, heads and layouts all come from the graph and the input shape.

use std::path::Path;

use tract_onnx::prelude::Framework;

use crate::graph::{Graph, Role, TowerInput};
use crate::{Error, Result};

/// Import-internal results: a message, to which the node loop adds the node.
type ImportResult<T> = std::result::Result<T, String>;

macro_rules! bail {
    ($($t:tt)*) => { return Err(format!($($t)*)) };
}

/// The most elements import creates for one array (folded constants, index tensors):
/// far above what a SigLIP tower needs, low enough that a file asking for a huge tensor
/// gets an error instead of exhausting memory.
const MAX_ELEMENTS: usize = 1 << 25;
/// The most multiply-adds constant folding spends on one MatMul (same reason).
const MAX_FOLD_MACS: u64 = 1 << 28;
/// The most operations a pending element-wise expression may hold (GELU needs ~12): it is
/// evaluated recursively, so its size must stay bounded whatever the file says.
const MAX_EXPR_OPS: usize = 256;

// `bail!` (above) is in scope in every module below.
//
// The data import works on: n-d arrays, layout changes, abstract values, element-wise
// expressions and what they compute.
mod expr;
mod expr_identify;
mod layout;
mod ndarray;
mod value;

// Reading the file, and folding what is constant.
mod fold;
mod onnx_proto;

// The importer, and what each kind of node lowers to.
mod importer;
mod lower;
mod lower_attention;
mod lower_elementwise;
mod lower_embedding;
mod lower_layer_norm;
mod lower_matmul;

#[cfg(test)]
mod tests;

pub(crate) use importer::import_model;

/// Lowers one ONNX tower. `input` fixes the input shape (batch 1):
/// [`TowerInput::Pixels`] for the vision tower (input f32 `[1, C, H, W]`),
/// [`TowerInput::Tokens`] for the text tower (input int64 `[1, len]`).
pub fn import_tower(path: &Path, kind: Role, input: TowerInput) -> Result<Graph> {
    if !path.exists() {
        return Err(Error::NotFound {
            path: path.to_owned(),
        });
    }
    let model = tract_onnx::onnx()
        .proto_model_for_path(path)
        .map_err(|e| Error::Onnx {
            path: path.to_owned(),
            msg: format!("{e:#}"),
        })?;
    import_model(&model, kind, input).map_err(|f| Error::Import {
        path: path.to_owned(),
        node: f.node,
        msg: f.msg,
    })
}

/// Why import stopped: the node (or "(model)") and what was wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Failure {
    pub node: String,
    pub msg: String,
}
