//! `Model::from_bytes`: the artifact read in place and validated once.
//!
//! After `from_bytes` succeeds, every op's operands are known to lie inside their buffers
//! and tensors and every buffer inside the arena, so executing a plan cannot index out of
//! bounds whatever the file said. Nothing is copied and nothing allocated: the model
//! borrows the caller's bytes (a memory map, or flash on a microcontroller).

use crate::format::{
    self, read_sections, slice, string, FormatError, SectionEntry, ALIGN, MAX_DIM, MAX_GRAPHS,
    MAX_RANK, MAX_TENSORS, META_HEADER_WORDS, TENSOR_ENTRY_SIZE,
};
use crate::graph::{Graph, Role};
use crate::names::{self, dtype, section};

#[cfg(target_endian = "big")]
compile_error!(
    "the artifact is little-endian and read in place: big-endian targets are not supported"
);

/// The model family's own settings (SigLIP's logit scale and preprocessing, a decoder's
/// special tokens…): carried, not read, by the runtime. The family's code in `vlm-models`
/// interprets `words` according to `family` and `version`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FamilyMeta<'a> {
    /// `names::family`.
    pub family: u32,
    /// The layout version of `words`, per family.
    pub version: u32,
    pub words: &'a [u32],
}

/// Element types (`names::dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    /// int8 `[out, in]` weights in GEMM panels (`format::packed_index`).
    I8Panels,
    U32,
}

impl DType {
    pub fn code(self) -> u32 {
        match self {
            DType::F32 => dtype::F32,
            DType::I8 => dtype::I8,
            DType::I8Panels => dtype::I8_PANELS,
            DType::U32 => dtype::U32,
        }
    }

    pub fn from_code(code: u32) -> Option<DType> {
        [DType::F32, DType::I8, DType::I8Panels, DType::U32]
            .into_iter()
            .find(|d| d.code() == code)
    }

    pub fn name(self) -> &'static str {
        names::name_of(names::DTYPES, self.code())
    }
}

/// A constant, in place in the artifact.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub rank: usize,
    pub dims: [usize; MAX_RANK],
    pub bytes: &'a [u8],
}

impl<'a> TensorRef<'a> {
    pub fn len(&self) -> usize {
        self.dims[..self.rank].iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The elements as f32 (empty if the tensor is not f32; checked at load).
    pub fn f32s(&self) -> &'a [f32] {
        match self.dtype {
            DType::F32 => bytemuck::try_cast_slice(self.bytes).unwrap_or(&[]),
            _ => &[],
        }
    }

    pub fn i8s(&self) -> &'a [i8] {
        match self.dtype {
            DType::I8 | DType::I8Panels => bytemuck::cast_slice(self.bytes),
            _ => &[],
        }
    }
}

/// The tensor table, every entry checked at load: reading one afterwards is an indexed
/// load of its words with no further checks (no name, no UTF-8, no bounds arithmetic
/// beyond the slice), which is what the executor does per op.
#[derive(Debug, Clone, Copy)]
pub struct Tensors<'a> {
    table: &'a [u8],
    count: usize,
    data: &'a [u8],
    strings: &'a [u8],
}

impl<'a> Tensors<'a> {
    fn word(&self, i: usize, k: usize) -> u32 {
        let at = 16 + i * TENSOR_ENTRY_SIZE + 4 * k;
        format::u32_at(self.table, at, "tensor table").unwrap_or(0)
    }

    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Tensor `i`; `None` when there is no such tensor.
    pub fn get(&self, i: u32) -> Option<TensorRef<'a>> {
        let i = i as usize;
        if i >= self.count {
            return None;
        }
        let rank = self.word(i, 1) as usize;
        let mut dims = [1usize; MAX_RANK];
        for (k, d) in dims.iter_mut().enumerate().take(rank.min(MAX_RANK)) {
            *d = self.word(i, 2 + k) as usize;
        }
        let off = self.word(i, 6) as usize | ((self.word(i, 7) as usize) << 16 << 16);
        let len = self.word(i, 8) as usize | ((self.word(i, 9) as usize) << 16 << 16);
        Some(TensorRef {
            dtype: DType::from_code(self.word(i, 0))?,
            rank,
            dims,
            bytes: self.data.get(off..off.checked_add(len)?)?,
        })
    }

    /// The bytes every tensor lies in: what a device backend uploads once, finding
    /// each tensor at its `bytes`' offset in them.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Tensor `i`'s name (reports, the writer's checks).
    pub fn name(&self, i: u32) -> &'a str {
        if i as usize >= self.count {
            return "";
        }
        string(
            self.strings,
            self.word(i as usize, 10),
            self.word(i as usize, 11),
        )
        .unwrap_or("")
    }

    fn check(&self, i: usize) -> Result<(), FormatError> {
        let at = 16 + i * TENSOR_ENTRY_SIZE;
        let t = self.table;
        let bad = |why| FormatError::BadTensor { index: i, why };
        let w = |k: usize| format::u32_at(t, at + 4 * k, "tensor table");
        let dtype = match DType::from_code(w(0)?) {
            Some(d @ (DType::F32 | DType::I8 | DType::I8Panels)) => d,
            _ => return Err(bad("unknown element type")),
        };
        let rank = w(1)? as usize;
        if rank > MAX_RANK {
            return Err(bad("rank above 4"));
        }
        let mut dims = [1usize; MAX_RANK];
        let mut len = 1usize;
        for (k, d) in dims.iter_mut().enumerate().take(rank) {
            *d = w(2 + k)? as usize;
            if *d > MAX_DIM {
                return Err(bad("dimension too large"));
            }
            len = len.checked_mul(*d).ok_or(bad("size overflows"))?;
        }
        let offset = format::u64_at(t, at + 24, "tensor table")?;
        let nbytes = format::u64_at(t, at + 32, "tensor table")?;
        let expected = match dtype {
            DType::F32 | DType::U32 => len.checked_mul(4),
            DType::I8 => Some(len),
            DType::I8Panels if rank == 2 => {
                // Padding can at most double a dimension (plus a panel): no overflow
                // within MAX_DIM² on 64-bit; checked anyway for 32-bit targets.
                dims[0]
                    .div_ceil(format::PANEL_N)
                    .checked_mul(format::PANEL_N)
                    .and_then(|r| r.checked_mul(dims[1].div_ceil(format::PANEL_K)))
                    .and_then(|r| r.checked_mul(format::PANEL_K))
            }
            DType::I8Panels => return Err(bad("panel-packed weights must have rank 2")),
        };
        // try_from: on a 32-bit target `as` would drop the high word and let a size
        // that disagrees with the shape through.
        let nbytes = usize::try_from(nbytes).map_err(|_| bad("size overflows"))?;
        if expected != Some(nbytes) {
            return Err(bad("byte size does not match its shape"));
        }
        if offset % ALIGN as u64 != 0 {
            return Err(bad("data is not 64-byte aligned"));
        }
        usize::try_from(offset)
            .ok()
            .and_then(|o| slice(self.data, o, nbytes, "tensor").ok())
            .ok_or(bad("data runs past the DATA section"))?;
        string(self.strings, w(10)?, w(11)?).map_err(|_| bad("bad name"))?;
        Ok(())
    }
}

/// Label embeddings computed at quantize time, so a device can classify with the image
/// encoder alone.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    pub count: usize,
    pub dim: usize,
    names: &'a [u32],
    strings: &'a [u8],
    /// `[count, dim]`, each row unit length.
    pub embeddings: &'a [f32],
}

impl<'a> Labels<'a> {
    pub fn name(&self, i: usize) -> &'a str {
        self.names
            .get(2 * i..2 * i + 2)
            .and_then(|w| string(self.strings, w[0], w[1]).ok())
            .unwrap_or("")
    }

    pub fn embedding(&self, i: usize) -> &'a [f32] {
        self.embeddings
            .get(i * self.dim..(i + 1) * self.dim)
            .unwrap_or(&[])
    }

    fn read(w: &'a [u32], strings: &'a [u8]) -> Result<Self, FormatError> {
        let bad = FormatError::BadField { field: "labels" };
        let (count, dim) = (
            *w.first().ok_or(bad)? as usize,
            *w.get(1).ok_or(bad)? as usize,
        );
        if dim == 0 || dim > MAX_DIM || count > MAX_DIM {
            return Err(bad);
        }
        let n0 = 4;
        let e0 = n0 + 2 * count;
        // Checked: count · dim can pass usize on a 32-bit target.
        let end = count
            .checked_mul(dim)
            .and_then(|n| n.checked_add(e0))
            .filter(|&end| end <= w.len())
            .ok_or(FormatError::Truncated { what: "labels" })?;
        let labels = Labels {
            count,
            dim,
            names: &w[n0..e0],
            strings,
            embeddings: bytemuck::cast_slice(&w[e0..end]),
        };
        for i in 0..count {
            let r = &labels.names[2 * i..2 * i + 2];
            string(strings, r[0], r[1])?;
        }
        Ok(labels)
    }
}

/// Each token's bytes in generated text, so a device turns token ids into text without
/// a tokenizer: text is the tokens' bytes in order (special tokens have none), less one
/// leading space where the source tokenizer's decoder strips it.
#[derive(Debug, Clone, Copy)]
pub struct Vocab<'a> {
    pub count: usize,
    strips_leading_space: bool,
    /// `count + 1` non-decreasing byte offsets into `bytes`.
    offsets: &'a [u32],
    bytes: &'a [u8],
}

impl<'a> Vocab<'a> {
    /// Token `id`'s bytes; none for an id outside the table.
    pub fn token(&self, id: u32) -> &'a [u8] {
        let i = id as usize;
        match (self.offsets.get(i), self.offsets.get(i + 1)) {
            (Some(&a), Some(&b)) => self.bytes.get(a as usize..b as usize).unwrap_or(&[]),
            _ => &[],
        }
    }

    pub fn strips_leading_space(&self) -> bool {
        self.strips_leading_space
    }

    /// The text of `ids` as byte pieces, in order (UTF-8 once concatenated, where the
    /// tokens make whole characters).
    pub fn pieces<'i>(&self, ids: &'i [u32]) -> impl Iterator<Item = &'a [u8]> + 'i
    where
        'a: 'i,
    {
        let vocab = *self;
        let mut strip = self.strips_leading_space;
        ids.iter().map(move |&id| {
            let mut piece = vocab.token(id);
            if strip && !piece.is_empty() {
                strip = false;
                if let Some(rest) = piece.strip_prefix(b" ") {
                    piece = rest;
                }
            }
            piece
        })
    }

    fn read(section: &'a [u8]) -> Result<Self, FormatError> {
        let bad = FormatError::BadField { field: "vocab" };
        let head = words(
            section
                .get(..16)
                .ok_or(FormatError::Truncated { what: "vocab" })?,
        )?;
        let (count, flags) = (head[0] as usize, head[1]);
        if count > MAX_DIM || flags > 1 {
            return Err(bad);
        }
        let end = 16 + (count + 1) * 4;
        let offsets = words(
            section
                .get(16..end)
                .ok_or(FormatError::Truncated { what: "vocab" })?,
        )?;
        let bytes = &section[end..];
        if offsets[0] != 0
            || offsets.windows(2).any(|w| w[0] > w[1])
            || offsets[count] as usize > bytes.len()
        {
            return Err(bad);
        }
        Ok(Self {
            count,
            strips_leading_space: flags == 1,
            offsets,
            bytes,
        })
    }
}

/// A validated artifact.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    pub meta: FamilyMeta<'a>,
    tensors: Tensors<'a>,
    graphs: [Option<Graph<'a>>; MAX_GRAPHS],
    graph_count: usize,
    tokenizer: Option<&'a [u8]>,
    labels: Option<Labels<'a>>,
    config_json: Option<&'a [u8]>,
    vocab: Option<Vocab<'a>>,
    prompt: Option<&'a [u32]>,
}

/// A section as words. A size that is not whole words is the file's fault; a start that
/// is not 4-byte aligned is the caller's (every section starts 64-byte aligned in a file
/// loaded at an aligned address).
fn words(bytes: &[u8]) -> Result<&[u32], FormatError> {
    if !bytes.len().is_multiple_of(4) {
        return Err(FormatError::BadField {
            field: "section size (not whole words)",
        });
    }
    bytemuck::try_cast_slice(bytes).map_err(|_| FormatError::Misaligned)
}

fn kind_name(kind: u32) -> &'static str {
    names::name_of(names::SECTIONS, kind)
}

impl<'a> Model<'a> {
    /// Reads and validates an artifact in place. `bytes` must start on a 4-byte boundary
    /// (a memory map, a `Vec<u32>`'s bytes, or a linker-aligned flash blob).
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let (entries, count) = read_sections(bytes)?;
        if bytes.as_ptr().align_offset(4) != 0 {
            return Err(FormatError::Misaligned);
        }
        let entries = &entries[..count];
        let find = |kind: u32| -> Result<Option<&'a [u8]>, FormatError> {
            let mut found: Option<&SectionEntry> = None;
            for e in entries.iter().filter(|e| e.kind == kind) {
                if found.is_some() {
                    return Err(FormatError::DuplicateSection {
                        what: kind_name(kind),
                    });
                }
                found = Some(e);
            }
            Ok(found.map(|e| &bytes[e.offset..e.offset + e.size]))
        };
        let need = |kind: u32| {
            find(kind)?.ok_or(FormatError::MissingSection {
                what: kind_name(kind),
            })
        };
        let meta = read_meta(words(need(section::META)?)?)?;
        let table = need(section::TENSORS)?;
        let strings = need(section::STRINGS)?;
        let tensor_count = format::u32_at(table, 0, "tensor table")? as usize;
        if tensor_count > MAX_TENSORS {
            return Err(FormatError::TooLarge {
                what: "tensor count",
                limit: MAX_TENSORS,
            });
        }
        slice(table, 16, tensor_count * TENSOR_ENTRY_SIZE, "tensor table")?;
        let tensors = Tensors {
            table,
            count: tensor_count,
            data: need(section::DATA)?,
            strings,
        };
        for i in 0..tensor_count {
            tensors.check(i)?;
        }
        let mut model = Model {
            meta,
            tensors,
            graphs: [None; MAX_GRAPHS],
            graph_count: 0,
            tokenizer: find(section::TOKENIZER)?,
            labels: None,
            config_json: find(section::CONFIG_JSON)?,
            vocab: find(section::VOCAB)?.map(Vocab::read).transpose()?,
            prompt: find(section::PROMPT)?.map(words).transpose()?,
        };
        for e in entries.iter().filter(|e| e.kind == section::GRAPH) {
            if model.graph_count == MAX_GRAPHS {
                return Err(FormatError::TooLarge {
                    what: "graph count",
                    limit: MAX_GRAPHS,
                });
            }
            let g = Graph::read(
                words(&bytes[e.offset..e.offset + e.size])?,
                strings,
                &tensors,
            )?;
            if model.graphs().any(|h| h.role == g.role && h.name == g.name) {
                return Err(FormatError::DuplicateSection {
                    what: g.role.name(),
                });
            }
            if model.graphs().any(|h| h.state_bytes != g.state_bytes) {
                return Err(FormatError::BadField {
                    field: "state region (graphs disagree)",
                });
            }
            model.graphs[model.graph_count] = Some(g);
            model.graph_count += 1;
        }
        if model.graph_count == 0 {
            return Err(FormatError::MissingSection { what: "GRAPH" });
        }
        if let Some(l) = find(section::LABELS)? {
            model.labels = Some(Labels::read(words(l)?, strings)?);
        }
        Ok(model)
    }

    /// The tensor table.
    pub fn tensors(&self) -> Tensors<'a> {
        self.tensors
    }

    /// Tensor `i`; `None` when there is no such tensor.
    pub fn tensor(&self, i: u32) -> Option<TensorRef<'a>> {
        self.tensors.get(i)
    }

    pub fn tensor_count(&self) -> usize {
        self.tensors.count
    }

    /// Every graph, in file order.
    pub fn graphs(&self) -> impl Iterator<Item = &Graph<'a>> + '_ {
        self.graphs[..self.graph_count].iter().flatten()
    }

    /// Graph `i` in file order.
    pub fn graph_at(&self, i: usize) -> Option<&Graph<'a>> {
        self.graphs.get(i)?.as_ref()
    }

    /// The first graph with this role.
    pub fn graph(&self, role: Role) -> Option<&Graph<'a>> {
        self.graphs().find(|g| g.role == role)
    }

    /// The index of the first graph with this role.
    pub fn graph_index(&self, role: Role) -> Option<usize> {
        self.graphs().position(|g| g.role == role)
    }

    /// Bytes of the state region every graph shares.
    pub fn state_bytes(&self) -> usize {
        self.graphs().map(|g| g.state_bytes).next().unwrap_or(0)
    }

    /// Bytes of arena a session needs for every graph (plus alignment slack).
    pub fn arena_size(&self) -> usize {
        self.arena_size_for_threads(1)
    }

    /// Bytes of arena a session needs to run attention on `threads` threads (each thread
    /// its own attention scratch; everything else is shared).
    pub fn arena_size_for_threads(&self, threads: usize) -> usize {
        self.graphs()
            .map(|g| g.arena_bytes_for_threads(threads))
            .max()
            .unwrap_or(0)
            // Saturating: arena bytes reach u32::MAX, and a wrapped size on a 32-bit
            // target would let `Session::new` accept an arena too small for the plan.
            .saturating_add(ALIGN)
    }

    /// The Hugging Face `tokenizer.json` stored at quantize time, if any.
    pub fn tokenizer_json(&self) -> Option<&'a [u8]> {
        self.tokenizer
    }

    /// The source model's `config.json`, if stored.
    pub fn config_json(&self) -> Option<&'a [u8]> {
        self.config_json
    }

    pub fn labels(&self) -> Option<&Labels<'a>> {
        self.labels.as_ref()
    }

    /// Token text for devices (a captioner's), if stored.
    pub fn vocab(&self) -> Option<&Vocab<'a>> {
        self.vocab.as_ref()
    }

    /// The prompt's token ids a captioner was quantized with, laid out as its family's
    /// processor lays them out (image tokens included), if stored.
    pub fn prompt_ids(&self) -> Option<&'a [u32]> {
        self.prompt
    }
}

/// META: family, version, word count, 0, then the family's words.
fn read_meta(w: &[u32]) -> Result<FamilyMeta<'_>, FormatError> {
    let truncated = FormatError::Truncated {
        what: "META section",
    };
    let head = w.get(..META_HEADER_WORDS).ok_or(truncated)?;
    let n = head[2] as usize;
    let words = w
        .get(META_HEADER_WORDS..)
        .and_then(|rest| rest.get(..n))
        .ok_or(truncated)?;
    Ok(FamilyMeta {
        family: head[0],
        version: head[1],
        words,
    })
}
