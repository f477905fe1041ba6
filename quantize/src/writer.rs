//! The artifact writer: memory plan, then every section laid out as `runtime/FORMAT.md`
//! says. The runtime owns the reader (`vlm_runtime::Model::from_bytes`); every artifact
//! written here is read back through it before it leaves this module.

use std::path::Path;

use vlm_runtime::encode::{
    container_into, container_len, meta_section, push_words, GraphSpec, PortSpec, Strings, Tensors,
};
use vlm_runtime::format::{self, ALIGN, META_HEADER_WORDS};
use vlm_runtime::model::DType;
use vlm_runtime::names::section;
use vlm_runtime::ops::{Mat, Op};
use vlm_runtime::{Model, PortKind};

use crate::graph::{Graph, Tensor, TensorData};
use crate::{Error, Result};
pub use vlm_host::bytes::AlignedBytes;

/// Label embeddings to store (`--labels` at quantize time).
#[derive(Clone, Copy)]
pub struct LabelSet<'a> {
    pub names: &'a [String],
    /// `[names.len(), dim]`, rows unit length.
    pub embeddings: &'a [f32],
}

/// Everything that goes into one artifact.
pub struct ArtifactParts<'a> {
    /// The META section's words: family, version, word count, 0, then the family's own
    /// (`siglip::Meta::to_words`, `captioner::Meta::to_words`).
    pub meta: Vec<u32>,
    pub graphs: Vec<&'a Graph>,
    pub tokenizer_json: Option<&'a [u8]>,
    pub config_json: Option<&'a [u8]>,
    pub labels: Option<LabelSet<'a>>,
    /// Each token's bytes, for devices (a captioner's).
    pub vocab: Option<&'a vlm_host::detokenize::TokenBytes>,
    /// A captioner's prompt as token ids, for devices.
    pub prompt_ids: Option<&'a [u32]>,
}

/// Places every buffer but the states in the arena from `base` on: buffers whose
/// lifetimes overlap get disjoint bytes, the rest share (greedy, largest first). Returns
/// byte offsets and the arena size (buffers, then the largest scratch any op needs).
pub fn plan_memory(g: &Graph, base: usize) -> (Vec<usize>, usize) {
    let n = g.buffers.len();
    let end = g.nodes.len();
    // Live interval [first, last] in op steps; the input is written before op 0 (step 0
    // here, ops at 1..), the output stays live to the end.
    let mut first = vec![usize::MAX; n];
    let mut last = vec![0usize; n];
    let mut touch = |b: u32, step: usize| {
        let b = b as usize;
        first[b] = first[b].min(step);
        last[b] = last[b].max(step);
    };
    touch(g.input_buf, 0);
    for (i, node) in g.nodes.iter().enumerate() {
        for &b in node.op.reads().as_slice() {
            touch(b, i + 1);
        }
        touch(node.op.output().buf, i + 1);
    }
    touch(g.output.buf, end + 1);
    let mut order: Vec<usize> = (0..n)
        .filter(|&b| first[b] != usize::MAX && !g.is_state(b as u32))
        .collect();
    order.sort_by_key(|&b| std::cmp::Reverse(g.buffers[b]));
    let mut offsets = vec![0usize; n];
    let mut placed: Vec<(usize, usize, usize)> = Vec::new(); // (buffer, start, end bytes)
    for b in order {
        let size = (4 * g.buffers[b]).next_multiple_of(ALIGN).max(ALIGN);
        let mut clashes: Vec<(usize, usize)> = placed
            .iter()
            .filter(|&&(o, _, _)| first[o] <= last[b] && first[b] <= last[o])
            .map(|&(_, s, e)| (s, e))
            .collect();
        clashes.sort();
        let mut at = base;
        for (s, e) in clashes {
            if at + size <= s {
                break;
            }
            at = at.max(e);
        }
        offsets[b] = at;
        placed.push((b, at, at + size));
    }
    let buffers_end = placed.iter().map(|p| p.2).max().unwrap_or(base);
    let scratch = g
        .nodes
        .iter()
        .map(|n| n.op.scratch_bytes())
        .max()
        .unwrap_or(0);
    (offsets, buffers_end + scratch.next_multiple_of(ALIGN))
}

/// Tensor indices are per graph in the host, global in the artifact.
fn remap(mut op: Op, global: &[u32]) -> Op {
    op.visit_tensors(&mut |t| *t = global[*t as usize]);
    op
}

/// Byte offsets of every graph's state buffers in the one state region all graphs share,
/// and the region's size. States of the same name and length in several graphs are one
/// buffer: a prefill graph and a decoder step share their KV caches and position.
/// Each graph's `(state buffer, byte offset)` pairs.
type StatePlan = Vec<Vec<(u32, usize)>>;

fn plan_states(graphs: &[&Graph]) -> Result<(StatePlan, usize)> {
    let mut at = 0usize;
    let mut named: Vec<(&str, usize, DType, usize)> = Vec::new();
    let mut placed = Vec::new();
    for g in graphs {
        let mut mine = Vec::new();
        for s in &g.states {
            let len = g.buffers[s.buf as usize];
            let off = match named.iter().find(|n| n.0 == s.name) {
                Some(&(_, l, d, off)) if l == len && d == s.dtype => off,
                Some(_) => {
                    return Err(Error::Artifact(format!(
                        "state {} differs in size or type between graphs",
                        s.name
                    )))
                }
                None => {
                    let off = at;
                    at += (4 * len).next_multiple_of(ALIGN).max(ALIGN);
                    named.push((&s.name, len, s.dtype, off));
                    off
                }
            };
            mine.push((s.buf, off));
        }
        placed.push(mine);
    }
    Ok((placed, at))
}

/// Whether two tensors hold the same values; shared data (one checkpoint tensor in
/// several graphs) without comparing GBs element by element.
fn same(a: &Tensor, b: &Tensor) -> bool {
    match (&a.data, &b.data) {
        (TensorData::F32(x), TensorData::F32(y)) if std::sync::Arc::ptr_eq(x, y) => {
            a.dims == b.dims
        }
        _ => a == b,
    }
}

/// Serialises an artifact and checks that the runtime reads it back.
pub fn write_artifact(parts: &ArtifactParts) -> Result<AlignedBytes> {
    let mut strings = Strings::default();
    let mut tensors = Tensors::default();
    let mut graphs: Vec<Vec<u8>> = Vec::new();
    let (state_offsets, state_bytes) = plan_states(&parts.graphs)?;
    let mut stored: std::collections::HashMap<&str, Vec<(&Tensor, u32)>> = Default::default();
    for (g, states) in parts.graphs.iter().zip(&state_offsets) {
        // A tensor another graph already stored under the same name, with the same
        // shape and values, is stored once: a decoder's prefill and step graphs hold
        // the same weights.
        let mut global = Vec::with_capacity(g.tensors.len());
        for t in &g.tensors {
            if t.dims.len() > format::MAX_RANK {
                return Err(Error::Artifact(format!(
                    "tensor {} has rank {}",
                    t.name,
                    t.dims.len()
                )));
            }
            if let Some(&(_, i)) = stored
                .get(t.name.as_str())
                .and_then(|v: &Vec<(&Tensor, u32)>| v.iter().find(|(u, _)| same(u, t)))
            {
                global.push(i);
                continue;
            }
            let (dtype, bytes): (DType, &[u8]) = match &t.data {
                TensorData::F32(v) => (DType::F32, bytemuck::cast_slice(v.as_slice())),
                TensorData::I8(v) => (DType::I8, bytemuck::cast_slice(v)),
                TensorData::I8Panels(v) => (DType::I8Panels, bytemuck::cast_slice(v)),
            };
            let name = strings.add(&t.name);
            let i = tensors.push(dtype, &t.dims, bytes, name);
            stored.entry(t.name.as_str()).or_default().push((t, i));
            global.push(i);
        }
        let (mut offsets, arena) = plan_memory(g, state_bytes);
        for &(buf, off) in states {
            offsets[buf as usize] = off;
        }
        let input = Mat::dense(g.input_buf, 1, g.input.len() as u32);
        let mut ports = vec![
            PortSpec {
                kind: PortKind::Input,
                dtype: g.input.dtype(),
                mat: input,
                name: g.input.name(),
            },
            PortSpec {
                kind: PortKind::Output,
                dtype: DType::F32,
                mat: g.output,
                name: "embedding",
            },
        ];
        for s in &g.states {
            let len = g.buffers[s.buf as usize] as u32;
            ports.push(PortSpec {
                kind: PortKind::State,
                dtype: s.dtype,
                mat: Mat::dense(s.buf, 1, len),
                name: &s.name,
            });
        }
        let spec = GraphSpec {
            role: g.role,
            name: g.role.name(),
            ports,
            buffers: offsets
                .iter()
                .copied()
                .zip(g.buffers.iter().copied())
                .collect(),
            ops: g
                .nodes
                .iter()
                .map(|n| (n.name.as_str(), remap(n.op, &global)))
                .collect(),
            arena_bytes: u32::try_from(arena)
                .map_err(|_| Error::Artifact("arena above 4 GiB".into()))?,
            state_bytes: state_bytes as u32,
            rows: g.rows as u32,
        };
        graphs.push(spec.encode(&mut strings));
    }
    let (table, data) = tensors.finish();

    let mut sections: Vec<(u32, Vec<u8>)> = Vec::new();
    let meta = &parts.meta;
    if meta.len() < META_HEADER_WORDS {
        return Err(Error::Artifact("metadata words are missing".into()));
    }
    sections.push((
        section::META,
        meta_section(meta[0], meta[1], &meta[META_HEADER_WORDS..]),
    ));
    sections.push((section::TENSORS, table));
    sections.push((section::DATA, data));
    for g in graphs {
        sections.push((section::GRAPH, g));
    }
    if let Some(l) = &parts.labels {
        let dim = l.embeddings.len() / l.names.len().max(1);
        let mut w = vec![l.names.len() as u32, dim as u32, 0, 0];
        for n in l.names {
            w.extend_from_slice(&strings.add(n));
        }
        let mut bytes = Vec::new();
        push_words(&mut bytes, &w);
        bytes.extend_from_slice(bytemuck::cast_slice(l.embeddings));
        sections.push((section::LABELS, bytes));
    }
    if let Some(v) = parts.vocab {
        let count = u32::try_from(v.tokens.len())
            .map_err(|_| Error::Artifact("vocabulary above 2^32 tokens".into()))?;
        let mut w = vec![count, u32::from(v.strips_leading_space), 0, 0];
        let mut at = 0u32;
        w.push(0);
        for t in &v.tokens {
            at = u32::try_from(t.len())
                .ok()
                .and_then(|n| at.checked_add(n))
                .ok_or_else(|| Error::Artifact("token text above 4 GiB".into()))?;
            w.push(at);
        }
        let mut bytes = Vec::new();
        push_words(&mut bytes, &w);
        bytes.extend(v.tokens.iter().flatten());
        sections.push((section::VOCAB, bytes));
    }
    if let Some(p) = parts.prompt_ids {
        let mut bytes = Vec::new();
        push_words(&mut bytes, p);
        sections.push((section::PROMPT, bytes));
    }
    if let Some(t) = parts.tokenizer_json {
        sections.push((section::TOKENIZER, t.to_vec()));
    }
    if let Some(c) = parts.config_json {
        sections.push((section::CONFIG_JSON, c.to_vec()));
    }
    sections.push((section::STRINGS, strings.0));
    // Straight into the aligned buffer: a model of GBs is then held twice at most here
    // (its sections and the file), not three times.
    let mut bytes = AlignedBytes::zeroed(container_len(&sections));
    container_into(&sections, bytes.as_bytes_mut());
    drop(sections);
    Model::from_bytes(bytes.as_bytes())
        .map_err(|e| Error::Artifact(format!("the written artifact does not read back: {e}")))?;
    Ok(bytes)
}

/// Writes bytes to `path` atomically: a temporary file beside it, then a rename, so a
/// failure never leaves a half-written artifact.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, path));
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(
            dir.map(|d| d.to_path_buf())
                .unwrap_or_else(|| path.to_owned()),
            e,
        ));
    }
    Ok(())
}
