//! The `.vlmq` artifact's container: header, section table, section kinds, limits.
//!
//! `runtime/FORMAT.md` is the specification; this file is its reader-side constants and
//! the low-level checks (bounds, alignment, checksums). Everything is little-endian and
//! every section starts on a 64-byte boundary so tensors can be used in place.

/// The first eight bytes. The `\r\n` and `\x1a` catch text-mode transfers (as PNG does).
pub const MAGIC: [u8; 8] = *b"VLMQ\r\n\x1a\n";
/// The format version this reader understands.
pub const VERSION: u32 = 2;
pub const HEADER_SIZE: usize = 64;
pub const SECTION_ENTRY_SIZE: usize = 32;
pub const TENSOR_ENTRY_SIZE: usize = 48;
pub const ALIGN: usize = 64;

/// Limits that keep a hostile file from asking for absurd work or memory.
pub const MAX_SECTIONS: usize = 64;
pub const MAX_TENSORS: usize = 1 << 16;
pub const MAX_RANK: usize = 4;
pub const MAX_DIM: usize = 1 << 24;
pub const MAX_BUFFERS: usize = 1 << 14;
pub const MAX_OPS: usize = 1 << 16;
/// 4 GiB: offsets in the plan are u32 byte offsets.
pub const MAX_ARENA: usize = u32::MAX as usize;
/// The most inputs an int8 layer may have: its i32 accumulator cannot then overflow
/// whatever the weights and activations (|q − zero| ≤ 255, |w| ≤ 128).
pub const MAX_I8_DEPTH: usize = i32::MAX as usize / (255 * 128);

/// The largest weight magnitude an int8 layer holds: 127, or 63 in a 7-bit one
/// (`Weights::I8::narrow`). The one place the two widths are written down.
pub const fn weight_limit(narrow: bool) -> i8 {
    if narrow {
        63
    } else {
        127
    }
}

/// The largest quantized activation an int8 layer's input takes: 255, or 127 where the
/// layer's activations are 7-bit too (`Weights::I8::narrow_x`, only with 7-bit weights).
/// Then four products sum within 16 bits (4·127·63 < 2¹⁵), which AVX2 exploits.
pub const fn activation_limit(narrow_x: bool) -> u8 {
    if narrow_x {
        127
    } else {
        255
    }
}

/// Output channels per weight panel, and inputs per group: the layout every int8 GEMM
/// kernel reads (a 64-byte AVX-512 register, four 16-byte NEON registers, one `sdot`
/// or `vpdpbusd` group of 4).
pub const PANEL_N: usize = 16;
pub const PANEL_K: usize = 4;

/// Bytes of a `[rows, cols]` panel-packed int8 tensor (both sides padded with zeros).
pub const fn packed_len(rows: usize, cols: usize) -> usize {
    rows.div_ceil(PANEL_N) * PANEL_N * cols.div_ceil(PANEL_K) * PANEL_K
}

/// Where weight `(o, k)` of a `[rows, cols]` panel-packed tensor lives:
/// panel `o / 16`, then group `k / 4`, then 16 outputs × 4 inputs.
#[inline]
pub const fn packed_index(o: usize, k: usize, cols: usize) -> usize {
    ((o / PANEL_N) * cols.div_ceil(PANEL_K) + k / PANEL_K) * (PANEL_N * PANEL_K)
        + (o % PANEL_N) * PANEL_K
        + k % PANEL_K
}

pub use crate::names::{dtype, section};

/// Words before a graph's ports (FORMAT.md, `GRAPH`).
pub const GRAPH_HEADER_WORDS: usize = 16;
/// Words of one port entry.
pub const PORT_WORDS: usize = 10;
/// The most graphs an artifact holds (a fixed array: the reader does not allocate).
pub const MAX_GRAPHS: usize = 8;
/// The most ports (inputs, outputs and state together) of one graph.
pub const MAX_PORTS: usize = 64;
/// Words of the META section before the family's own words: family, version, count, 0.
pub const META_HEADER_WORDS: usize = 4;

/// Why an artifact was refused. Every variant names the part of the file at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("artifact is truncated: {what} runs past the end")]
    Truncated { what: &'static str },
    #[error("not a vlm-edge artifact (wrong magic bytes)")]
    BadMagic,
    #[error(
        "artifact format version {found} is not supported (this runtime reads version {supported}); quantize the model again with this release"
    )]
    Version { found: u32, supported: u32 },
    #[error("artifact header says the file is {stated} bytes, but it is {actual}")]
    FileSize { stated: u64, actual: usize },
    #[error("checksum mismatch in {what}: the artifact is corrupt")]
    Checksum { what: &'static str },
    #[error("section {index} (kind {kind}) is out of bounds or misaligned")]
    SectionBounds { index: usize, kind: u32 },
    #[error("artifact has no {what} section")]
    MissingSection { what: &'static str },
    #[error("{graph} graph: {why}")]
    BadGraph {
        graph: &'static str,
        why: &'static str,
    },
    #[error("artifact has a second {what} section")]
    DuplicateSection { what: &'static str },
    #[error("invalid {field} in the artifact")]
    BadField { field: &'static str },
    #[error("tensor {index} is invalid: {why}")]
    BadTensor { index: usize, why: &'static str },
    #[error("{graph} graph, op {index}: {why}")]
    BadOp {
        graph: &'static str,
        index: usize,
        why: &'static str,
    },
    #[error("{what} exceeds the limit of {limit}")]
    TooLarge { what: &'static str, limit: usize },
    #[error("artifact bytes are not 4-byte aligned in memory; load them into aligned memory")]
    Misaligned,
}

/// Little-endian readers over a byte slice, with bounds checks.
pub(crate) fn u32_at(bytes: &[u8], at: usize, what: &'static str) -> Result<u32, FormatError> {
    let b = at
        .checked_add(4)
        .and_then(|end| bytes.get(at..end))
        .ok_or(FormatError::Truncated { what })?;
    Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub(crate) fn u64_at(bytes: &[u8], at: usize, what: &'static str) -> Result<u64, FormatError> {
    let lo = u32_at(bytes, at, what)? as u64;
    let hi = u32_at(bytes, at + 4, what)? as u64;
    Ok(lo | (hi << 32))
}

/// CRC-32 (IEEE), the checksum of every section.
pub fn crc32(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(bytes);
    h.finalize()
}

/// A section-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionEntry {
    pub kind: u32,
    pub offset: usize,
    pub size: usize,
    pub crc: u32,
}

/// Checks the header and section table and returns the entries (at most
/// [`MAX_SECTIONS`], in a fixed array: the reader does not allocate).
pub(crate) fn read_sections(
    bytes: &[u8],
) -> Result<([SectionEntry; MAX_SECTIONS], usize), FormatError> {
    if bytes.len() < HEADER_SIZE {
        if bytes.len() >= 8 && bytes[..8] != MAGIC {
            return Err(FormatError::BadMagic);
        }
        return Err(FormatError::Truncated { what: "header" });
    }
    if bytes[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = u32_at(bytes, 8, "header")?;
    if version != VERSION {
        return Err(FormatError::Version {
            found: version,
            supported: VERSION,
        });
    }
    if crc32(&bytes[..36]) != u32_at(bytes, 36, "header")? {
        return Err(FormatError::Checksum { what: "header" });
    }
    if u32_at(bytes, 12, "header")? as usize != HEADER_SIZE {
        return Err(FormatError::BadField {
            field: "header size",
        });
    }
    let stated = u64_at(bytes, 16, "header")?;
    if stated != bytes.len() as u64 {
        return Err(FormatError::FileSize {
            stated,
            actual: bytes.len(),
        });
    }
    let count = u32_at(bytes, 24, "header")? as usize;
    if count > MAX_SECTIONS {
        return Err(FormatError::TooLarge {
            what: "section count",
            limit: MAX_SECTIONS,
        });
    }
    let table_end = HEADER_SIZE + count * SECTION_ENTRY_SIZE;
    let table = bytes
        .get(HEADER_SIZE..table_end)
        .ok_or(FormatError::Truncated {
            what: "section table",
        })?;
    if crc32(table) != u32_at(bytes, 32, "header")? {
        return Err(FormatError::Checksum {
            what: "section table",
        });
    }
    let mut out = [SectionEntry {
        kind: 0,
        offset: 0,
        size: 0,
        crc: 0,
    }; MAX_SECTIONS];
    for (i, slot) in out.iter_mut().enumerate().take(count) {
        let at = HEADER_SIZE + i * SECTION_ENTRY_SIZE;
        let kind = u32_at(bytes, at, "section table")?;
        let offset = u64_at(bytes, at + 8, "section table")?;
        let size = u64_at(bytes, at + 16, "section table")?;
        let crc = u32_at(bytes, at + 24, "section table")?;
        let bad = FormatError::SectionBounds { index: i, kind };
        let offset = usize::try_from(offset).map_err(|_| bad)?;
        let size = usize::try_from(size).map_err(|_| bad)?;
        let end = offset.checked_add(size).ok_or(bad)?;
        if offset % ALIGN != 0 || offset < table_end || end > bytes.len() {
            return Err(bad);
        }
        if crc32(&bytes[offset..end]) != crc {
            return Err(FormatError::Checksum { what: "a section" });
        }
        *slot = SectionEntry {
            kind,
            offset,
            size,
            crc,
        };
    }
    Ok((out, count))
}

/// The `len` bytes at `at` of a section, or a truncation error naming it.
pub(crate) fn slice<'a>(
    bytes: &'a [u8],
    at: usize,
    len: usize,
    what: &'static str,
) -> Result<&'a [u8], FormatError> {
    at.checked_add(len)
        .and_then(|end| bytes.get(at..end))
        .ok_or(FormatError::Truncated { what })
}

/// A name stored in the STRINGS section.
pub(crate) fn string(strings: &[u8], off: u32, len: u32) -> Result<&str, FormatError> {
    let b = slice(strings, off as usize, len as usize, "string")?;
    core::str::from_utf8(b).map_err(|_| FormatError::BadField { field: "string" })
}
