//! `Model::from_bytes`: the artifact read in place and validated once.
//!
//! After `from_bytes` succeeds, every op's operands are known to lie inside their buffers
//! and tensors and every buffer inside the arena, so executing the plan cannot index out
//! of bounds whatever the file said. Nothing is copied and nothing allocated: the model
//! borrows the caller's bytes (a memory map, or flash on a microcontroller).

use crate::format::{
    self, dtype, read_sections, section, slice, string, tower, FormatError, SectionEntry, ALIGN,
    MAX_ARENA, MAX_BUFFERS, MAX_DIM, MAX_I8_DEPTH, MAX_OPS, MAX_RANK, MAX_TENSORS, META_WORDS,
    TENSOR_ENTRY_SIZE,
};
use crate::ops::{Mat, Op, Query, Weights};

#[cfg(target_endian = "big")]
compile_error!(
    "the artifact is little-endian and read in place: big-endian targets are not supported"
);

/// Image resampling filter used before the vision tower (the processor's `resample`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resample {
    Nearest = 0,
    Bilinear = 1,
    Bicubic = 2,
    Lanczos = 3,
}

/// The model-level settings a device needs besides the towers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meta {
    pub embed_dim: usize,
    pub logit_scale: f32,
    pub logit_bias: f32,
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub resample: Resample,
    pub rescale: f64,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    pub convert_rgb: bool,
    pub max_length: usize,
    pub pad_id: u32,
    pub eos_id: u32,
    pub vocab_size: usize,
}

impl Meta {
    /// The META section's words (the writer uses this; the layout is in FORMAT.md).
    pub fn to_words(&self) -> [u32; META_WORDS] {
        let mut w = [0u32; META_WORDS];
        let r = self.rescale.to_bits();
        w[0] = self.embed_dim as u32;
        w[1] = self.logit_scale.to_bits();
        w[2] = self.logit_bias.to_bits();
        w[3] = self.channels as u32;
        w[4] = self.height as u32;
        w[5] = self.width as u32;
        w[6] = self.resample as u32;
        w[7] = r as u32;
        w[8] = (r >> 32) as u32;
        for i in 0..3 {
            w[9 + i] = self.mean[i].to_bits();
            w[12 + i] = self.std[i].to_bits();
        }
        w[15] = self.convert_rgb as u32;
        w[16] = self.max_length as u32;
        w[17] = self.pad_id;
        w[18] = self.eos_id;
        w[19] = self.vocab_size as u32;
        w
    }

    fn from_words(w: &[u32]) -> Result<Self, FormatError> {
        if w.len() < META_WORDS {
            return Err(FormatError::Truncated {
                what: "META section",
            });
        }
        let bad = |field| FormatError::BadField { field };
        let resample = match w[6] {
            0 => Resample::Nearest,
            1 => Resample::Bilinear,
            2 => Resample::Bicubic,
            3 => Resample::Lanczos,
            _ => return Err(bad("resample")),
        };
        let f = f32::from_bits;
        let meta = Meta {
            embed_dim: w[0] as usize,
            logit_scale: f(w[1]),
            logit_bias: f(w[2]),
            channels: w[3] as usize,
            height: w[4] as usize,
            width: w[5] as usize,
            resample,
            rescale: f64::from_bits(w[7] as u64 | ((w[8] as u64) << 32)),
            mean: [f(w[9]), f(w[10]), f(w[11])],
            std: [f(w[12]), f(w[13]), f(w[14])],
            convert_rgb: w[15] != 0,
            max_length: w[16] as usize,
            pad_id: w[17],
            eos_id: w[18],
            vocab_size: w[19] as usize,
        };
        if meta.embed_dim == 0 || meta.embed_dim > MAX_DIM {
            return Err(bad("embed_dim"));
        }
        if !meta.logit_scale.is_finite() || !meta.logit_bias.is_finite() {
            return Err(bad("logit scale or bias"));
        }
        if meta.std.iter().any(|s| !s.is_finite() || *s == 0.0)
            || meta.mean.iter().any(|m| !m.is_finite())
            || !meta.rescale.is_finite()
        {
            return Err(bad("image normalisation"));
        }
        Ok(meta)
    }
}

/// Which tower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TowerKind {
    Vision,
    Text,
}

impl TowerKind {
    pub fn name(self) -> &'static str {
        match self {
            TowerKind::Vision => "vision",
            TowerKind::Text => "text",
        }
    }

    fn code(self) -> u32 {
        match self {
            TowerKind::Vision => tower::VISION,
            TowerKind::Text => tower::TEXT,
        }
    }
}

/// Words before a tower's buffer table.
pub const TOWER_HEADER_WORDS: usize = 16;

/// One tower's plan: buffers placed in the arena, then its ops in order.
#[derive(Debug, Clone, Copy)]
pub struct Tower<'a> {
    pub kind: TowerKind,
    /// Elements of the input buffer.
    pub input_len: usize,
    pub input_buf: u32,
    pub output: Mat,
    /// Bytes of arena the tower needs (buffers, then scratch).
    pub arena_bytes: usize,
    /// Where scratch starts (after the last buffer).
    pub scratch_at: usize,
    buffers: &'a [u32],
    names: &'a [u32],
    ops: &'a [u32],
    op_count: usize,
}

/// The tensor element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    /// int8 `[out, in]` weights in GEMM panels (`format::packed_index`).
    I8Panels,
}

/// A constant, in place in the artifact.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub dtype: DType,
    pub rank: usize,
    pub dims: [usize; MAX_RANK],
    pub bytes: &'a [u8],
    pub name: &'a str,
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
            DType::I8 | DType::I8Panels => &[],
        }
    }

    pub fn i8s(&self) -> &'a [i8] {
        match self.dtype {
            DType::I8 | DType::I8Panels => bytemuck::cast_slice(self.bytes),
            DType::F32 => &[],
        }
    }
}

/// Label embeddings computed at quantize time, so a device can classify with the image
/// tower alone.
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
}

/// A validated artifact.
#[derive(Debug, Clone, Copy)]
pub struct Model<'a> {
    pub meta: Meta,
    tensor_table: &'a [u8],
    tensor_count: usize,
    data: &'a [u8],
    strings: &'a [u8],
    towers: [Option<Tower<'a>>; 2],
    tokenizer: Option<&'a [u8]>,
    labels: Option<Labels<'a>>,
    config_json: Option<&'a [u8]>,
}

fn words(bytes: &[u8]) -> Result<&[u32], FormatError> {
    bytemuck::try_cast_slice(bytes).map_err(|_| FormatError::Misaligned)
}

fn kind_name(kind: u32) -> &'static str {
    match kind {
        section::META => "META",
        section::TENSORS => "TENSORS",
        section::DATA => "DATA",
        section::STRINGS => "STRINGS",
        section::TOKENIZER => "TOKENIZER",
        section::LABELS => "LABELS",
        section::CONFIG_JSON => "CONFIG_JSON",
        _ => "TOWER",
    }
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
        let meta = Meta::from_words(words(need(section::META)?)?)?;
        let tensor_table = need(section::TENSORS)?;
        let data = need(section::DATA)?;
        let strings = need(section::STRINGS)?;
        let tensor_count = format::u32_at(tensor_table, 0, "tensor table")? as usize;
        if tensor_count > MAX_TENSORS {
            return Err(FormatError::TooLarge {
                what: "tensor count",
                limit: MAX_TENSORS,
            });
        }
        slice(
            tensor_table,
            16,
            tensor_count * TENSOR_ENTRY_SIZE,
            "tensor table",
        )?;
        let mut model = Model {
            meta,
            tensor_table,
            tensor_count,
            data,
            strings,
            towers: [None, None],
            tokenizer: find(section::TOKENIZER)?,
            labels: None,
            config_json: find(section::CONFIG_JSON)?,
        };
        for i in 0..tensor_count {
            model.read_tensor(i)?;
        }
        for e in entries.iter().filter(|e| e.kind == section::TOWER) {
            let t = model.read_tower(words(&bytes[e.offset..e.offset + e.size])?)?;
            let slot = &mut model.towers[t.kind as usize];
            if slot.is_some() {
                return Err(FormatError::DuplicateSection {
                    what: t.kind.name(),
                });
            }
            *slot = Some(t);
        }
        if model.towers.iter().all(Option::is_none) {
            return Err(FormatError::MissingSection { what: "TOWER" });
        }
        if let Some(l) = find(section::LABELS)? {
            model.labels = Some(model.read_labels(words(l)?)?);
        }
        Ok(model)
    }

    fn read_tensor(&self, i: usize) -> Result<TensorRef<'a>, FormatError> {
        let at = 16 + i * TENSOR_ENTRY_SIZE;
        let t = self.tensor_table;
        let bad = |why| FormatError::BadTensor { index: i, why };
        let w = |k: usize| format::u32_at(t, at + 4 * k, "tensor table");
        let dtype = match w(0)? {
            dtype::F32 => DType::F32,
            dtype::I8 => DType::I8,
            dtype::I8_PANELS => DType::I8Panels,
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
            DType::F32 => len.checked_mul(4),
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
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|o| slice(self.data, o, nbytes, "tensor").ok())
            .ok_or(bad("data runs past the DATA section"))?;
        let name = string(self.strings, w(10)?, w(11)?).map_err(|_| bad("bad name"))?;
        Ok(TensorRef {
            dtype,
            rank,
            dims,
            bytes,
            name,
        })
    }

    /// Tensor `i`; `None` when there is no such tensor.
    pub fn tensor(&self, i: u32) -> Option<TensorRef<'a>> {
        if (i as usize) < self.tensor_count {
            self.read_tensor(i as usize).ok()
        } else {
            None
        }
    }

    pub fn tensor_count(&self) -> usize {
        self.tensor_count
    }

    fn read_tower(&self, w: &'a [u32]) -> Result<Tower<'a>, FormatError> {
        if w.len() < TOWER_HEADER_WORDS {
            return Err(FormatError::Truncated {
                what: "tower header",
            });
        }
        let kind = match w[0] {
            tower::VISION => TowerKind::Vision,
            tower::TEXT => TowerKind::Text,
            _ => {
                return Err(FormatError::BadField {
                    field: "tower kind",
                })
            }
        };
        let buffer_count = w[8] as usize;
        let op_count = w[9] as usize;
        let arena_bytes = w[10] as usize;
        let op_words = w[11] as usize;
        if buffer_count > MAX_BUFFERS || op_count > MAX_OPS {
            return Err(FormatError::TooLarge {
                what: "tower buffers or ops",
                limit: MAX_OPS,
            });
        }
        let b0 = TOWER_HEADER_WORDS;
        let n0 = b0 + 2 * buffer_count;
        let o0 = n0 + 2 * op_count;
        // Checked: on a 32-bit target a huge op-word count would wrap `end` below `o0`.
        let end = o0
            .checked_add(op_words)
            .filter(|&end| end <= w.len())
            .ok_or(FormatError::Truncated { what: "tower" })?;
        let t = Tower {
            kind,
            input_len: w[1] as usize,
            input_buf: w[2],
            output: Mat {
                buf: w[3],
                offset: w[4],
                rows: w[5],
                cols: w[6],
                stride: w[7],
            },
            arena_bytes,
            scratch_at: 0,
            buffers: &w[b0..n0],
            names: &w[n0..o0],
            ops: &w[o0..end],
            op_count,
        };
        self.validate_tower(t)
    }

    fn validate_tower(&self, mut t: Tower<'a>) -> Result<Tower<'a>, FormatError> {
        let tname = t.kind.name();
        let bad_field = |field| FormatError::BadField { field };
        if t.arena_bytes > MAX_ARENA {
            return Err(FormatError::TooLarge {
                what: "arena",
                limit: MAX_ARENA,
            });
        }
        let mut scratch_at = 0usize;
        for b in 0..t.buffer_count() {
            let (off, len) = (t.buffers[2 * b] as usize, t.buffers[2 * b + 1] as usize);
            let end = len
                .checked_mul(4)
                .and_then(|n| n.checked_add(off))
                .ok_or(bad_field("buffer"))?;
            if off % ALIGN != 0 || end > t.arena_bytes {
                return Err(bad_field("buffer placement"));
            }
            let aligned = end
                .checked_next_multiple_of(ALIGN)
                .ok_or(bad_field("buffer"))?;
            scratch_at = scratch_at.max(aligned);
        }
        t.scratch_at = scratch_at;
        if t.input_buf as usize >= t.buffer_count() || t.buffer_len(t.input_buf) != t.input_len {
            return Err(bad_field("tower input buffer"));
        }
        match t.kind {
            TowerKind::Vision => {
                let m = &self.meta;
                if m.channels
                    .checked_mul(m.height)
                    .and_then(|x| x.checked_mul(m.width))
                    != Some(t.input_len)
                {
                    return Err(bad_field("vision input size"));
                }
            }
            TowerKind::Text => {
                if self.meta.max_length != t.input_len {
                    return Err(bad_field("text input length"));
                }
            }
        }
        if t.output.rows != 1
            || t.output.cols as usize != self.meta.embed_dim
            || !self.mat_fits(&t, t.output)
        {
            return Err(bad_field("tower output"));
        }
        let mut at = 0usize;
        let mut arena_need = t.arena_bytes.max(scratch_at);
        for index in 0..t.op_count {
            let bad = |why| FormatError::BadOp {
                tower: tname,
                index,
                why,
            };
            let (op, used) = Op::decode(&t.ops[at..])?;
            at += used;
            self.validate_op(&t, &op).map_err(bad)?;
            // Scratch is what *this* runtime's kernels need, not what the writer's did:
            // an artifact stays valid when kernels change.
            let need = scratch_at
                .checked_add(crate::exec::scratch_bytes(&op))
                .filter(|&n| n <= MAX_ARENA)
                .ok_or(bad("scratch overflows"))?;
            arena_need = arena_need.max(need);
            t.names
                .get(2 * index..2 * index + 2)
                .and_then(|w| string(self.strings, w[0], w[1]).ok())
                .ok_or(bad("bad name"))?;
        }
        if at != t.ops.len() {
            return Err(bad_field("tower op words"));
        }
        t.arena_bytes = arena_need;
        Ok(t)
    }

    fn mat_fits(&self, t: &Tower, m: Mat) -> bool {
        // An empty window spans nothing, so its rows would not be checked against the
        // buffer (kernels still index row r at r·stride), and with no columns its row
        // count would be unbounded work over no memory. No real layer has one.
        m.rows > 0
            && m.cols > 0
            && (m.buf as usize) < t.buffer_count()
            && (m.rows <= 1 || m.stride >= m.cols)
            && m.span().is_some_and(|s| s <= t.buffer_len(m.buf))
    }

    fn f32_len(&self, i: u32, len: usize) -> bool {
        self.tensor(i)
            .is_some_and(|t| t.dtype == DType::F32 && t.len() == len)
    }

    fn check_weights(&self, w: Weights, rows: usize, cols: usize) -> Result<(), &'static str> {
        let dims_ok = |i: u32, dt: DType| {
            self.tensor(i).is_some_and(|t| {
                t.dtype == dt && t.rank == 2 && t.dims[0] == rows && t.dims[1] == cols
            })
        };
        match w {
            Weights::F32 { w } => dims_ok(w, DType::F32)
                .then_some(())
                .ok_or("f32 weights do not match the layer's shape"),
            Weights::I8 {
                w,
                w_scale,
                x_scale,
                x_zero,
            } => {
                if !dims_ok(w, DType::I8Panels) {
                    return Err("int8 weights do not match the layer's shape");
                }
                if cols > MAX_I8_DEPTH {
                    return Err("int8 layer has too many inputs for a 32-bit accumulator");
                }
                if !self.f32_len(w_scale, rows) {
                    return Err("weight scales do not match the output channels");
                }
                if !(x_scale.is_finite() && x_scale > 0.0 && (0..=255).contains(&x_zero)) {
                    return Err("bad activation quantization parameters");
                }
                Ok(())
            }
        }
    }

    fn validate_op(&self, t: &Tower, op: &Op) -> Result<(), &'static str> {
        let fits = |m: Mat| self.mat_fits(t, m);
        let out = op.output();
        if !fits(out) {
            return Err("output window lies outside its buffer");
        }
        let (rows, cols) = (out.rows as usize, out.cols as usize);
        match *op {
            Op::PatchEmbed {
                input,
                channels,
                height,
                width,
                patch,
                weights,
                add,
                ..
            } => {
                let (c, h, w, p) = (
                    channels as usize,
                    height as usize,
                    width as usize,
                    patch as usize,
                );
                if input != t.input_buf
                    || c.checked_mul(h).and_then(|x| x.checked_mul(w)) != Some(t.input_len)
                {
                    return Err("patch embedding does not read the image input");
                }
                // Checked: with no channels the image is empty whatever its height and
                // width, so the grid size is not bounded by the input.
                if p == 0 || h % p != 0 || w % p != 0 || (h / p).checked_mul(w / p) != Some(rows) {
                    return Err("patch grid does not match the output rows");
                }
                let tile = c
                    .checked_mul(p)
                    .and_then(|x| x.checked_mul(p))
                    .ok_or("patch size overflows")?;
                self.check_weights(weights, cols, tile)?;
                if !self.f32_len(add, rows * cols) {
                    return Err("patch embedding's added table has the wrong size");
                }
                self.disjoint(t, &[t.input_buf], out)
            }
            Op::Embedding {
                ids,
                table,
                table_scale,
                add,
                ..
            } => {
                if ids != t.input_buf || t.input_len < rows {
                    return Err("embedding does not read the token input");
                }
                let tab = self.tensor(table).ok_or("missing embedding table")?;
                if tab.rank != 2 || tab.dims[1] != cols || tab.dims[0] == 0 {
                    return Err("embedding table does not match the output width");
                }
                match (tab.dtype, table_scale) {
                    (DType::F32, None) => {}
                    (DType::I8, Some(s)) if self.f32_len(s, tab.dims[0]) => {}
                    _ => return Err("embedding table type and scales disagree"),
                }
                if !self.f32_len(add, rows * cols) {
                    return Err("embedding's added table has the wrong size");
                }
                self.disjoint(t, &[ids], out)
            }
            Op::LayerNorm {
                x,
                gamma,
                beta,
                eps,
                ..
            } => {
                if !fits(x) || x.rows != out.rows || x.cols != out.cols || cols == 0 {
                    return Err("layer norm input and output shapes differ");
                }
                if !self.f32_len(gamma, cols) || !self.f32_len(beta, cols) {
                    return Err("layer norm parameters have the wrong size");
                }
                if !(eps.is_finite() && eps >= 0.0) {
                    return Err("bad layer norm epsilon");
                }
                self.disjoint(t, &[x.buf], out)
            }
            Op::Linear {
                x, weights, bias, ..
            } => {
                if !fits(x) || x.rows != out.rows || x.cols == 0 {
                    return Err("linear input window is invalid");
                }
                self.check_weights(weights, cols, x.cols as usize)?;
                if bias.is_some_and(|b| !self.f32_len(b, cols)) {
                    return Err("linear bias has the wrong size");
                }
                self.disjoint(t, &[x.buf], out)
            }
            Op::Attention {
                q,
                k,
                v,
                heads,
                head_dim,
                scale,
                ..
            } => {
                let width = (heads as usize).checked_mul(head_dim as usize);
                if heads == 0 || head_dim == 0 || width != Some(cols) {
                    return Err("heads × head size does not match the output width");
                }
                if !fits(k) || !fits(v) || k.cols != out.cols || v.cols != out.cols {
                    return Err("key or value window is invalid");
                }
                if k.rows != v.rows || k.rows == 0 {
                    return Err("keys and values differ in length");
                }
                if !scale.is_finite() {
                    return Err("bad attention scale");
                }
                match q {
                    Query::Mat(q) => {
                        if !fits(q) || q.cols != out.cols || q.rows != out.rows {
                            return Err("query window is invalid");
                        }
                        self.disjoint(t, &[q.buf, k.buf, v.buf], out)
                    }
                    Query::Const { tensor, rows: r } => {
                        if r != out.rows || !self.f32_len(tensor, rows * cols) {
                            return Err("constant query has the wrong size");
                        }
                        self.disjoint(t, &[k.buf, v.buf], out)
                    }
                }
            }
            Op::Add { a, b, .. } => {
                if !fits(a) || !fits(b) {
                    return Err("add input window is invalid");
                }
                if a.rows != out.rows
                    || b.rows != out.rows
                    || a.cols != out.cols
                    || b.cols != out.cols
                {
                    return Err("add operands differ in shape");
                }
                self.disjoint(t, &[a.buf, b.buf], out)
            }
            Op::Activate { .. } => Ok(()),
        }
    }

    /// An op's output must not share arena bytes with what it reads.
    fn disjoint(&self, t: &Tower, reads: &[u32], out: Mat) -> Result<(), &'static str> {
        let w = t.buffer_range(out.buf);
        for &r in reads {
            let r = t.buffer_range(r);
            if r.start < w.end && w.start < r.end {
                return Err("output overlaps an input in the arena");
            }
        }
        Ok(())
    }

    fn read_labels(&self, w: &'a [u32]) -> Result<Labels<'a>, FormatError> {
        let bad = FormatError::BadField { field: "labels" };
        let (count, dim) = (
            *w.first().ok_or(bad)? as usize,
            *w.get(1).ok_or(bad)? as usize,
        );
        if dim != self.meta.embed_dim || count > MAX_DIM {
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
            strings: self.strings,
            embeddings: bytemuck::cast_slice(&w[e0..end]),
        };
        for i in 0..count {
            let r = &labels.names[2 * i..2 * i + 2];
            string(self.strings, r[0], r[1])?;
        }
        Ok(labels)
    }

    pub fn tower(&self, kind: TowerKind) -> Option<&Tower<'a>> {
        self.towers[kind as usize].as_ref()
    }

    /// Bytes of arena a session needs for every tower (plus alignment slack).
    pub fn arena_size(&self) -> usize {
        self.towers
            .iter()
            .flatten()
            .map(|t| t.arena_bytes)
            .max()
            .unwrap_or(0)
            // Saturating: arena bytes reach u32::MAX, and a wrapped size on a 32-bit
            // target would let `Session::new` accept an arena too small for the plan.
            .saturating_add(ALIGN)
    }

    /// Bytes of arena a session needs to run attention on `threads` threads (each thread
    /// its own attention scratch; everything else is shared). `arena_size()` is this
    /// for one thread.
    pub fn arena_size_for_threads(&self, threads: usize) -> usize {
        let mut need = self.arena_size();
        for t in self.towers.iter().flatten() {
            for (_, op) in t.ops(self) {
                let s = crate::exec::scratch_bytes_for_threads(&op, threads);
                need = need.max(t.scratch_at.saturating_add(s).saturating_add(ALIGN));
            }
        }
        need
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

    pub fn scorer(&self) -> crate::Scorer {
        crate::Scorer {
            logit_scale: self.meta.logit_scale,
            logit_bias: self.meta.logit_bias,
        }
    }
}

impl<'a> Tower<'a> {
    pub fn buffer_count(&self) -> usize {
        self.buffers.len() / 2
    }

    /// Elements of buffer `b` (0 when there is no such buffer).
    pub fn buffer_len(&self, b: u32) -> usize {
        self.buffers.get(2 * b as usize + 1).copied().unwrap_or(0) as usize
    }

    /// Byte range of buffer `b` in the arena.
    pub fn buffer_range(&self, b: u32) -> core::ops::Range<usize> {
        let off = self.buffers.get(2 * b as usize).copied().unwrap_or(0) as usize;
        off..off + 4 * self.buffer_len(b)
    }

    pub fn op_count(&self) -> usize {
        self.op_count
    }

    /// The ops in order with their node names (all validated at load).
    pub fn ops(&self, strings_of: &Model<'a>) -> OpIter<'a> {
        OpIter {
            words: self.ops,
            names: self.names,
            strings: strings_of.strings,
            index: 0,
        }
    }

    /// Multiply-accumulates of one run.
    pub fn macs(&self, model: &Model<'a>) -> u64 {
        // Saturating: a plan's ops can add up past u64 (the file is untrusted).
        self.ops(model)
            .map(|(_, op)| op.macs())
            .fold(0, u64::saturating_add)
    }
}

/// Iterates a validated tower's ops.
pub struct OpIter<'a> {
    words: &'a [u32],
    names: &'a [u32],
    strings: &'a [u8],
    index: usize,
}

impl<'a> Iterator for OpIter<'a> {
    type Item = (&'a str, Op);

    fn next(&mut self) -> Option<Self::Item> {
        if self.words.is_empty() {
            return None;
        }
        let (op, used) = Op::decode(self.words).ok()?;
        self.words = &self.words[used..];
        let name = self
            .names
            .get(2 * self.index..2 * self.index + 2)
            .and_then(|w| string(self.strings, w[0], w[1]).ok())
            .unwrap_or("");
        self.index += 1;
        Some((name, op))
    }
}

impl TowerKind {
    /// The code the TOWER section stores (writer side).
    pub fn section_code(self) -> u32 {
        self.code()
    }
}
