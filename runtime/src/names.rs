//! Every code the artifact stores, in one place: section kinds, element types, graph
//! roles, port kinds, opcodes, operand codes and model families.
//!
//! The reader, the writer, the importer, the reports and `runtime/FORMAT.md` all take their
//! numbers and names from here (a test checks FORMAT.md's tables against these lists), so
//! a code cannot mean one thing to the writer and another to the reader.

/// `(code, name)` pairs, as FORMAT.md's tables list them.
pub type Codes = &'static [(u32, &'static str)];

/// The name of `code` in `codes`, or `"unknown"`.
pub fn name_of(codes: Codes, code: u32) -> &'static str {
    codes
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("unknown", |(_, n)| n)
}

/// Section kinds (the `kind` word of a section-table entry).
pub mod section {
    pub const META: u32 = 1;
    pub const TENSORS: u32 = 2;
    pub const DATA: u32 = 3;
    pub const STRINGS: u32 = 4;
    pub const GRAPH: u32 = 5;
    pub const TOKENIZER: u32 = 6;
    pub const LABELS: u32 = 7;
    pub const CONFIG_JSON: u32 = 8;
    pub const VOCAB: u32 = 9;
    pub const PROMPT: u32 = 10;
}

pub const SECTIONS: Codes = &[
    (section::META, "META"),
    (section::TENSORS, "TENSORS"),
    (section::DATA, "DATA"),
    (section::STRINGS, "STRINGS"),
    (section::GRAPH, "GRAPH"),
    (section::TOKENIZER, "TOKENIZER"),
    (section::LABELS, "LABELS"),
    (section::CONFIG_JSON, "CONFIG_JSON"),
    (section::VOCAB, "VOCAB"),
    (section::PROMPT, "PROMPT"),
];

/// Element types of tensors (constants) and ports (a graph's inputs, outputs and state).
pub mod dtype {
    pub const F32: u32 = 1;
    pub const I8: u32 = 2;
    /// int8 `[out, in]` weights in GEMM panels: see `format::packed_index`.
    pub const I8_PANELS: u32 = 3;
    /// Unsigned 32-bit integers: token ids, positions.
    pub const U32: u32 = 4;
}

pub const DTYPES: Codes = &[
    (dtype::F32, "f32"),
    (dtype::I8, "i8"),
    (dtype::I8_PANELS, "i8 panels"),
    (dtype::U32, "u32"),
];

/// What a graph is for (first word of a GRAPH section).
pub mod role {
    pub const IMAGE_ENCODER: u32 = 1;
    pub const TEXT_ENCODER: u32 = 2;
    pub const PROJECTOR: u32 = 3;
    pub const DECODER: u32 = 4;
    pub const TOKEN_EMBEDDING: u32 = 5;
    pub const PREFILL: u32 = 6;
}

pub const ROLES: Codes = &[
    (role::IMAGE_ENCODER, "image encoder"),
    (role::TEXT_ENCODER, "text encoder"),
    (role::PROJECTOR, "projector"),
    (role::DECODER, "decoder"),
    (role::TOKEN_EMBEDDING, "token embedding"),
    (role::PREFILL, "prefill"),
];

/// What a graph's port is.
pub mod port {
    /// Written by the caller before each run.
    pub const INPUT: u32 = 1;
    /// Read by the caller after each run.
    pub const OUTPUT: u32 = 2;
    /// Kept in the arena from one run to the next (a KV cache, a position counter),
    /// zeroed by `Session::reset_state`.
    pub const STATE: u32 = 3;
}

pub const PORTS: Codes = &[
    (port::INPUT, "input"),
    (port::OUTPUT, "output"),
    (port::STATE, "state"),
];

/// Opcodes, the first word of every encoded op.
pub mod opcode {
    pub const PATCH_EMBED: u32 = 1;
    pub const EMBEDDING: u32 = 2;
    pub const LAYER_NORM: u32 = 3;
    pub const LINEAR: u32 = 4;
    pub const ATTENTION: u32 = 5;
    pub const ADD: u32 = 6;
    pub const ACTIVATE: u32 = 7;
    pub const CACHE_APPEND: u32 = 8;
    pub const ADVANCE: u32 = 9;
    pub const RMS_NORM: u32 = 10;
    pub const ROPE: u32 = 11;
    pub const GLU: u32 = 12;
    pub const PIXEL_SHUFFLE: u32 = 13;
    pub const CONSTANT: u32 = 14;
    pub const LAST_ROW: u32 = 15;
    pub const CACHE_APPEND_I8: u32 = 16;
}

pub const OPCODES: Codes = &[
    (opcode::PATCH_EMBED, "patch_embed"),
    (opcode::EMBEDDING, "embedding"),
    (opcode::LAYER_NORM, "layer_norm"),
    (opcode::LINEAR, "linear"),
    (opcode::ATTENTION, "attention"),
    (opcode::ADD, "add"),
    (opcode::ACTIVATE, "activate"),
    (opcode::CACHE_APPEND, "cache_append"),
    (opcode::ADVANCE, "advance"),
    (opcode::RMS_NORM, "rms_norm"),
    (opcode::ROPE, "rope"),
    (opcode::GLU, "glu"),
    (opcode::PIXEL_SHUFFLE, "pixel_shuffle"),
    (opcode::CONSTANT, "constant"),
    (opcode::LAST_ROW, "last_row"),
    (opcode::CACHE_APPEND_I8, "cache_append_i8"),
];

/// Activation functions (fused after a linear layer, or applied in place).
pub mod activation {
    pub const NONE: u32 = 0;
    pub const GELU_TANH: u32 = 1;
    pub const GELU_ERF: u32 = 2;
    pub const SILU: u32 = 3;
}

pub const ACTIVATIONS: Codes = &[
    (activation::NONE, "none"),
    (activation::GELU_TANH, "gelu_tanh"),
    (activation::GELU_ERF, "gelu_erf"),
    (activation::SILU, "silu"),
];

/// How a linear map's weights are stored.
pub mod weights {
    pub const F32: u32 = 0;
    pub const I8: u32 = 1;
    /// int8 storage, every weight within −63..=63.
    pub const I8_NARROW: u32 = 2;
    /// int8 storage, every weight within −63..=63, activations quantized to 0..=127.
    pub const I8_NARROW_X: u32 = 3;
}

pub const WEIGHTS: Codes = &[
    (weights::F32, "fp32"),
    (weights::I8, "int8"),
    (weights::I8_NARROW, "int8, 7-bit"),
    (weights::I8_NARROW_X, "int8, 7-bit weights and activations"),
];

/// What attention's two matrix products multiply.
pub mod precision {
    pub const F32: u32 = 0;
    pub const BF16: u32 = 1;
}

pub const PRECISIONS: Codes = &[(precision::F32, "fp32"), (precision::BF16, "bf16")];

/// Which keys each query of an attention may see.
pub mod mask {
    pub const NONE: u32 = 0;
    /// Query `i` sees keys `0 ..= past + i`.
    pub const CAUSAL: u32 = 1;
}

pub const MASKS: Codes = &[(mask::NONE, "none"), (mask::CAUSAL, "causal")];

/// Where an attention's queries come from.
pub mod query {
    pub const MAT: u32 = 0;
    pub const CONST: u32 = 1;
}

pub const QUERIES: Codes = &[(query::MAT, "computed"), (query::CONST, "constant")];

/// Model families: the first word of the META section, which says how the family's own
/// code (`vlm-models`) reads the rest. The runtime only carries that section.
pub mod family {
    pub const SIGLIP: u32 = 1;
    /// Image encoder, projector and language-model decoder (`vlm_models::captioner`).
    pub const CAPTIONER: u32 = 2;
}

pub const FAMILIES: Codes = &[(family::SIGLIP, "siglip"), (family::CAPTIONER, "captioner")];

/// `0xFFFFFFFF` marks an absent optional operand.
pub const NONE: u32 = u32::MAX;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_list_has_distinct_codes_and_names() {
        for codes in [
            SECTIONS,
            DTYPES,
            ROLES,
            PORTS,
            OPCODES,
            ACTIVATIONS,
            WEIGHTS,
            PRECISIONS,
            MASKS,
            QUERIES,
            FAMILIES,
        ] {
            for (i, (c, n)) in codes.iter().enumerate() {
                for (c2, n2) in &codes[i + 1..] {
                    assert!(c != c2 && n != n2, "{c} {n} repeated");
                }
            }
        }
        assert_eq!(name_of(OPCODES, opcode::ATTENTION), "attention");
        assert_eq!(name_of(OPCODES, 999), "unknown");
    }
}
