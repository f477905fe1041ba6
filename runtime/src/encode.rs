//! The writer's side of the container (std): sections, the tensor table, graph
//! sections, the header and its checksums — the exact mirror of what `format`, `model`
//! and `graph` read, kept beside them. `vlm-quantize`'s writer decides *what* goes in
//! (memory plan, tensors, labels); this decides the bytes. The op battery
//! ([`crate::harness`]) builds its one-op artifacts with it too.

use std::vec::Vec;

use crate::format::{
    crc32, ALIGN, GRAPH_HEADER_WORDS, HEADER_SIZE, MAGIC, META_HEADER_WORDS, PORT_WORDS,
    SECTION_ENTRY_SIZE, VERSION,
};
use crate::graph::{PortKind, Role};
use crate::model::DType;
use crate::ops::{Mat, Op};

/// Appends little-endian words.
pub fn push_words(out: &mut Vec<u8>, words: &[u32]) {
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

/// The STRINGS section being built: names become (offset, length) pairs.
#[derive(Default)]
pub struct Strings(pub Vec<u8>);

impl Strings {
    pub fn add(&mut self, s: &str) -> [u32; 2] {
        let off = self.0.len() as u32;
        self.0.extend_from_slice(s.as_bytes());
        [off, s.len() as u32]
    }
}

/// The TENSORS and DATA sections being built.
pub struct Tensors {
    table: Vec<u8>,
    data: Vec<u8>,
    count: u32,
}

impl Default for Tensors {
    fn default() -> Self {
        let mut table = Vec::new();
        push_words(&mut table, &[0, 0, 0, 0]);
        Self {
            table,
            data: Vec::new(),
            count: 0,
        }
    }
}

impl Tensors {
    /// Adds a tensor (data 64-byte aligned); returns its index. `dims` has at most
    /// `MAX_RANK` entries (the caller checks).
    pub fn push(&mut self, dtype: DType, dims: &[usize], bytes: &[u8], name: [u32; 2]) -> u32 {
        let at = self.data.len().next_multiple_of(ALIGN);
        self.data.resize(at, 0);
        self.data.extend_from_slice(bytes);
        let mut d = [1u32; 4];
        for (x, &v) in d.iter_mut().zip(dims) {
            *x = v as u32;
        }
        push_words(&mut self.table, &[dtype.code(), dims.len() as u32]);
        push_words(&mut self.table, &d);
        self.table.extend_from_slice(&(at as u64).to_le_bytes());
        self.table
            .extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        push_words(&mut self.table, &name);
        self.count += 1;
        self.count - 1
    }

    pub fn len(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The TENSORS and DATA sections.
    pub fn finish(mut self) -> (Vec<u8>, Vec<u8>) {
        self.table[..4].copy_from_slice(&self.count.to_le_bytes());
        (self.table, self.data)
    }
}

/// A port as written: kind, element type, window, name.
pub struct PortSpec<'s> {
    pub kind: PortKind,
    pub dtype: DType,
    pub mat: Mat,
    pub name: &'s str,
}

/// One GRAPH section's content, placed: buffers have their arena offsets.
pub struct GraphSpec<'s> {
    pub role: Role,
    pub name: &'s str,
    /// Inputs, then outputs, then states.
    pub ports: Vec<PortSpec<'s>>,
    /// (byte offset in the arena, length in 4-byte elements) per buffer.
    pub buffers: Vec<(usize, usize)>,
    /// Each op with the source node it came from.
    pub ops: Vec<(&'s str, Op)>,
    pub arena_bytes: u32,
    pub state_bytes: u32,
    /// A prefill's row capacity (0 otherwise).
    pub rows: u32,
}

impl GraphSpec<'_> {
    pub fn encode(&self, strings: &mut Strings) -> Vec<u8> {
        let count = |k: PortKind| self.ports.iter().filter(|p| p.kind == k).count() as u32;
        let mut ops: Vec<u32> = Vec::new();
        let mut names: Vec<u32> = Vec::new();
        for (name, op) in &self.ops {
            ops.extend_from_slice(op.encode().as_slice());
            names.extend_from_slice(&strings.add(name));
        }
        let name = strings.add(self.name);
        let mut w: Vec<u32> = Vec::from([
            self.role.code(),
            count(PortKind::Input),
            count(PortKind::Output),
            count(PortKind::State),
            self.buffers.len() as u32,
            self.ops.len() as u32,
            self.arena_bytes,
            ops.len() as u32,
            self.state_bytes,
            name[0],
            name[1],
            self.rows,
        ]);
        w.resize(GRAPH_HEADER_WORDS, 0);
        for p in &self.ports {
            let m = p.mat;
            let n = strings.add(p.name);
            let mut pw = [0u32; PORT_WORDS];
            pw[..9].copy_from_slice(&[
                p.kind.code(),
                p.dtype.code(),
                m.buf,
                m.offset,
                m.rows,
                m.cols,
                m.stride,
                n[0],
                n[1],
            ]);
            w.extend_from_slice(&pw);
        }
        for &(off, len) in &self.buffers {
            w.push(off as u32);
            w.push(len as u32);
        }
        w.extend(names);
        w.extend(ops);
        let mut bytes = Vec::new();
        push_words(&mut bytes, &w);
        bytes
    }
}

/// The META section: family, version, word count, 0, then the family's words.
pub fn meta_section(family: u32, version: u32, words: &[u32]) -> Vec<u8> {
    let mut b = Vec::new();
    let mut head = [0u32; META_HEADER_WORDS];
    head[..3].copy_from_slice(&[family, version, words.len() as u32]);
    push_words(&mut b, &head);
    push_words(&mut b, words);
    b
}

/// The whole file: header, section table, then each section at the next 64-byte
/// boundary, every checksum filled in.
pub fn container(sections: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = std::vec![0u8; container_len(sections)];
    container_into(sections, &mut out);
    out
}

/// The length [`container`] gives `sections`.
pub fn container_len(sections: &[(u32, Vec<u8>)]) -> usize {
    let table_end = HEADER_SIZE + sections.len() * SECTION_ENTRY_SIZE;
    sections
        .iter()
        .fold(table_end.next_multiple_of(ALIGN), |at, (_, body)| {
            (at + body.len()).next_multiple_of(ALIGN)
        })
}

/// [`container`] written into `out`: zeroed, [`container_len`] bytes (a writer that
/// wants the file in its own, aligned, buffer without a second copy of GBs of weights).
pub fn container_into(sections: &[(u32, Vec<u8>)], out: &mut [u8]) {
    let table_end = HEADER_SIZE + sections.len() * SECTION_ENTRY_SIZE;
    let mut at = table_end.next_multiple_of(ALIGN);
    let mut entries = Vec::new();
    for (kind, body) in sections {
        push_words(&mut entries, &[*kind, 0]);
        entries.extend_from_slice(&(at as u64).to_le_bytes());
        entries.extend_from_slice(&(body.len() as u64).to_le_bytes());
        push_words(&mut entries, &[crc32(body), 0]);
        at = (at + body.len()).next_multiple_of(ALIGN);
    }
    let file_len = at;
    assert_eq!(out.len(), file_len, "container_into: wrong buffer length");
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
    for (_, body) in sections {
        out[at..at + body.len()].copy_from_slice(body);
        at = (at + body.len()).next_multiple_of(ALIGN);
    }
}
