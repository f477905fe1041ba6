//! The artifact writer: memory plan, then every section laid out as `runtime/FORMAT.md`
//! says. The runtime owns the reader (`vlm_runtime::Model::from_bytes`); every artifact
//! written here is read back through it before it leaves this module.

use std::path::Path;

use vlm_runtime::exec::scratch_bytes;
use vlm_runtime::format::{self, crc32, dtype, section, ALIGN, HEADER_SIZE, MAGIC, VERSION};
use vlm_runtime::model::{Meta, TowerKind as RtTower, TOWER_HEADER_WORDS};
use vlm_runtime::ops::{Mat, Op, Query, Weights};
use vlm_runtime::Model;

use crate::graph::{Graph, TensorData, TowerKind};
use crate::{Error, Result};

/// Bytes with 64-byte alignment (a `Vec<u8>` guarantees none), as the reader wants them.
#[derive(Clone)]
pub struct AlignedBytes {
    words: Vec<[u64; 8]>,
    len: usize,
}

impl AlignedBytes {
    /// `len` zero bytes.
    fn zeroed(len: usize) -> Self {
        Self {
            words: vec![[0u64; 8]; len.div_ceil(64)],
            len,
        }
    }

    pub fn from_slice(bytes: &[u8]) -> Self {
        let mut b = Self::zeroed(bytes.len());
        b.as_bytes_mut().copy_from_slice(bytes);
        b
    }

    pub fn as_bytes(&self) -> &[u8] {
        &bytemuck::cast_slice::<[u64; 8], u8>(&self.words)[..self.len]
    }

    fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut::<[u64; 8], u8>(&mut self.words)[..self.len]
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads a file straight into aligned memory.
    pub fn read(path: &Path) -> Result<Self> {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
        let len = usize::try_from(len).map_err(|_| {
            Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::OutOfMemory, "file too large"),
            )
        })?;
        let mut b = Self::zeroed(len);
        f.read_exact(b.as_bytes_mut())
            .map_err(|e| Error::io(path, e))?;
        // A file that grew while being read would be cut short here: refuse it.
        if f.read(&mut [0u8; 1]).map_err(|e| Error::io(path, e))? != 0 {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidData, "file changed while read"),
            ));
        }
        Ok(b)
    }
}

/// Label embeddings to store (`--labels` at quantize time).
pub struct LabelSet<'a> {
    pub names: &'a [String],
    /// `[names.len(), dim]`, rows unit length.
    pub embeddings: &'a [f32],
}

/// Everything that goes into one artifact.
pub struct ArtifactParts<'a> {
    pub meta: Meta,
    pub towers: Vec<&'a Graph>,
    pub tokenizer_json: Option<&'a [u8]>,
    pub config_json: Option<&'a [u8]>,
    pub labels: Option<LabelSet<'a>>,
}

/// The buffers an op reads (its output is [`Op::output`]).
pub fn op_reads(op: &Op) -> Vec<u32> {
    match *op {
        Op::PatchEmbed { input, .. } => vec![input],
        Op::Embedding { ids, .. } => vec![ids],
        Op::LayerNorm { x, .. } | Op::Linear { x, .. } | Op::Activate { x, .. } => vec![x.buf],
        Op::Attention { q, k, v, .. } => {
            let mut r = vec![k.buf, v.buf];
            if let Query::Mat(q) = q {
                r.push(q.buf);
            }
            r
        }
        Op::Add { a, b, .. } => vec![a.buf, b.buf],
    }
}

/// Places every buffer in the arena: buffers whose lifetimes overlap get disjoint bytes,
/// the rest share (greedy, largest first). Returns byte offsets and the arena size
/// (buffers, then the largest scratch any op needs).
pub fn plan_memory(g: &Graph) -> (Vec<usize>, usize) {
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
        for b in op_reads(&node.op) {
            touch(b, i + 1);
        }
        touch(node.op.output().buf, i + 1);
    }
    touch(g.output.buf, end + 1);
    let mut order: Vec<usize> = (0..n).filter(|&b| first[b] != usize::MAX).collect();
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
        let mut at = 0;
        for (s, e) in clashes {
            if at + size <= s {
                break;
            }
            at = at.max(e);
        }
        offsets[b] = at;
        placed.push((b, at, at + size));
    }
    let buffers_end = placed.iter().map(|p| p.2).max().unwrap_or(0);
    let scratch = g
        .nodes
        .iter()
        .map(|n| scratch_bytes(&n.op))
        .max()
        .unwrap_or(0);
    (offsets, buffers_end + scratch.next_multiple_of(ALIGN))
}

struct Strings(Vec<u8>);

impl Strings {
    fn add(&mut self, s: &str) -> [u32; 2] {
        let off = self.0.len() as u32;
        self.0.extend_from_slice(s.as_bytes());
        [off, s.len() as u32]
    }
}

fn push_words(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// Tensor indices are per tower in the graph, global in the artifact.
fn shift(op: Op, base: u32) -> Op {
    let wt = |w: Weights| match w {
        Weights::F32 { w } => Weights::F32 { w: w + base },
        Weights::I8 {
            w,
            w_scale,
            x_scale,
            x_zero,
        } => Weights::I8 {
            w: w + base,
            w_scale: w_scale + base,
            x_scale,
            x_zero,
        },
    };
    match op {
        Op::PatchEmbed {
            input,
            channels,
            height,
            width,
            patch,
            weights,
            add,
            out,
        } => Op::PatchEmbed {
            input,
            channels,
            height,
            width,
            patch,
            weights: wt(weights),
            add: add + base,
            out,
        },
        Op::Embedding {
            ids,
            table,
            table_scale,
            add,
            out,
        } => Op::Embedding {
            ids,
            table: table + base,
            table_scale: table_scale.map(|s| s + base),
            add: add + base,
            out,
        },
        Op::LayerNorm {
            x,
            gamma,
            beta,
            eps,
            out,
        } => Op::LayerNorm {
            x,
            gamma: gamma + base,
            beta: beta + base,
            eps,
            out,
        },
        Op::Linear {
            x,
            weights,
            bias,
            act,
            out,
        } => Op::Linear {
            x,
            weights: wt(weights),
            bias: bias.map(|b| b + base),
            act,
            out,
        },
        Op::Attention {
            q,
            k,
            v,
            heads,
            head_dim,
            scale,
            precision,
            out,
        } => Op::Attention {
            q: match q {
                Query::Const { tensor, rows } => Query::Const {
                    tensor: tensor + base,
                    rows,
                },
                m => m,
            },
            k,
            v,
            heads,
            head_dim,
            scale,
            precision,
            out,
        },
        other => other,
    }
}

fn rt_kind(k: TowerKind) -> RtTower {
    match k {
        TowerKind::Vision => RtTower::Vision,
        TowerKind::Text => RtTower::Text,
    }
}

/// Serialises an artifact and checks that the runtime reads it back.
pub fn write_artifact(parts: &ArtifactParts) -> Result<AlignedBytes> {
    let mut strings = Strings(Vec::new());
    let mut table: Vec<u8> = Vec::new();
    let mut data: Vec<u8> = Vec::new();
    let mut towers: Vec<Vec<u8>> = Vec::new();
    let mut tensor_count = 0u32;
    push_words(&mut table, &[0, 0, 0, 0]);
    for g in &parts.towers {
        let base = tensor_count;
        for t in &g.tensors {
            let at = data.len().next_multiple_of(ALIGN);
            data.resize(at, 0);
            let (dt, nbytes) = match &t.data {
                TensorData::F32(v) => {
                    data.extend_from_slice(bytemuck::cast_slice(v));
                    (dtype::F32, v.len() * 4)
                }
                TensorData::I8(v) => {
                    data.extend_from_slice(bytemuck::cast_slice(v));
                    (dtype::I8, v.len())
                }
                TensorData::I8Panels(v) => {
                    data.extend_from_slice(bytemuck::cast_slice(v));
                    (dtype::I8_PANELS, v.len())
                }
            };
            if t.dims.len() > format::MAX_RANK {
                return Err(Error::Artifact(format!(
                    "tensor {} has rank {}",
                    t.name,
                    t.dims.len()
                )));
            }
            let mut dims = [1u32; 4];
            for (d, &v) in dims.iter_mut().zip(&t.dims) {
                *d = v as u32;
            }
            let name = strings.add(&t.name);
            push_words(&mut table, &[dt, t.dims.len() as u32]);
            push_words(&mut table, &dims);
            table.extend_from_slice(&(at as u64).to_le_bytes());
            table.extend_from_slice(&(nbytes as u64).to_le_bytes());
            push_words(&mut table, &name);
            tensor_count += 1;
        }
        let (offsets, arena) = plan_memory(g);
        let mut ops: Vec<u32> = Vec::new();
        let mut names: Vec<u32> = Vec::new();
        for node in &g.nodes {
            ops.extend_from_slice(shift(node.op, base).encode().as_slice());
            names.extend_from_slice(&strings.add(&node.name));
        }
        let o: Mat = g.output;
        let mut w: Vec<u32> = vec![
            rt_kind(g.kind).section_code(),
            g.input.len() as u32,
            g.input_buf,
            o.buf,
            o.offset,
            o.rows,
            o.cols,
            o.stride,
            g.buffers.len() as u32,
            g.nodes.len() as u32,
            u32::try_from(arena).map_err(|_| Error::Artifact("arena above 4 GiB".into()))?,
            ops.len() as u32,
        ];
        w.resize(TOWER_HEADER_WORDS, 0);
        for (b, &len) in g.buffers.iter().enumerate() {
            w.push(offsets[b] as u32);
            w.push(len as u32);
        }
        w.extend(names);
        w.extend(ops);
        let mut bytes = Vec::new();
        push_words(&mut bytes, &w);
        towers.push(bytes);
    }
    table[..4].copy_from_slice(&tensor_count.to_le_bytes());

    let mut sections: Vec<(u32, Vec<u8>)> = Vec::new();
    let mut meta = Vec::new();
    push_words(&mut meta, &parts.meta.to_words());
    sections.push((section::META, meta));
    sections.push((section::TENSORS, table));
    sections.push((section::DATA, data));
    for t in towers {
        sections.push((section::TOWER, t));
    }
    if let Some(l) = &parts.labels {
        let mut w = vec![l.names.len() as u32, parts.meta.embed_dim as u32, 0, 0];
        for n in l.names {
            w.extend_from_slice(&strings.add(n));
        }
        let mut bytes = Vec::new();
        push_words(&mut bytes, &w);
        bytes.extend_from_slice(bytemuck::cast_slice(l.embeddings));
        sections.push((section::LABELS, bytes));
    }
    if let Some(t) = parts.tokenizer_json {
        sections.push((section::TOKENIZER, t.to_vec()));
    }
    if let Some(c) = parts.config_json {
        sections.push((section::CONFIG_JSON, c.to_vec()));
    }
    sections.push((section::STRINGS, strings.0));

    let table_end = HEADER_SIZE + sections.len() * format::SECTION_ENTRY_SIZE;
    let mut at = table_end.next_multiple_of(ALIGN);
    let mut entries = Vec::new();
    for (kind, body) in &sections {
        push_words(&mut entries, &[*kind, 0]);
        entries.extend_from_slice(&(at as u64).to_le_bytes());
        entries.extend_from_slice(&(body.len() as u64).to_le_bytes());
        push_words(&mut entries, &[crc32(body), 0]);
        at = (at + body.len()).next_multiple_of(ALIGN);
    }
    let file_len = sections
        .last()
        .map(|_| at)
        .unwrap_or(table_end.next_multiple_of(ALIGN));
    let mut out = vec![0u8; file_len];
    out[..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
    out[16..24].copy_from_slice(&(file_len as u64).to_le_bytes());
    out[24..28].copy_from_slice(&(sections.len() as u32).to_le_bytes());
    out[32..36].copy_from_slice(&crc32(&entries).to_le_bytes());
    let hcrc = crc32(&out[..36]);
    out[36..40].copy_from_slice(&hcrc.to_le_bytes());
    out[HEADER_SIZE..table_end].copy_from_slice(&entries);
    let mut at = table_end.next_multiple_of(ALIGN);
    for (_, body) in &sections {
        out[at..at + body.len()].copy_from_slice(body);
        at = (at + body.len()).next_multiple_of(ALIGN);
    }
    let bytes = AlignedBytes::from_slice(&out);
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
