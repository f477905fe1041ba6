//! Arbitrary bytes through `Model::from_bytes` and, when they load, a whole inference.
//! Errors are fine; a panic, an out-of-bounds read or an abort is a bug: the reader
//! promises that a validated model cannot make the executor fail that way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vlm_runtime::format::{crc32, HEADER_SIZE, MAX_SECTIONS, SECTION_ENTRY_SIZE};
use vlm_runtime::model::Tower;
use vlm_runtime::{Model, Session, TowerKind};

/// Larger plans are valid but would make each run too slow to explore much: a few
/// hundred bytes can describe an attention over millions of rows.
const MAX_ARENA: usize = 64 << 20;
const MAX_WORK: u64 = 1 << 24;

fuzz_target!(|data: &[u8]| {
    // The reader wants 4-byte-aligned bytes (it refuses others); libFuzzer's buffer
    // has no such guarantee, so copy into u32 words.
    let mut words = vec![0u32; data.len().div_ceil(4)];
    let bytes = &mut bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..data.len()];
    bytes.copy_from_slice(data);
    // As given: exercises the size and checksum checks themselves.
    run(bytes);
    // Nearly every mutation breaks a CRC, so without this the fuzzer never gets past
    // them to the parsing and validation behind.
    if reseal(bytes) {
        run(bytes);
    }
});

fn run(bytes: &[u8]) {
    let Ok(model) = Model::from_bytes(bytes) else {
        return;
    };
    if model.arena_size() > MAX_ARENA {
        return;
    }
    let mut arena = vec![0u8; model.arena_size()];
    let Ok(mut session) = Session::new(&model, &mut arena) else {
        return;
    };
    let mut out = vec![0.0f32; model.meta.embed_dim];
    if let Some(t) = model
        .tower(TowerKind::Vision)
        .filter(|t| work(&model, t) <= MAX_WORK)
    {
        let pixels = vec![0.0f32; t.input_len];
        let _ = session.encode_image(&pixels, &mut out);
    }
    if let Some(t) = model
        .tower(TowerKind::Text)
        .filter(|t| work(&model, t) <= MAX_WORK)
    {
        let ids = vec![0u32; t.input_len];
        let _ = session.encode_text(&ids, &mut out);
    }
}

/// Roughly the arithmetic one run does: multiply-accumulates plus elements written.
fn work(model: &Model, tower: &Tower) -> u64 {
    let written = tower.ops(model).fold(0u64, |sum, (_, op)| {
        let out = op.output();
        sum.saturating_add(out.rows as u64 * out.cols as u64)
    });
    tower.macs(model).saturating_add(written)
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Rewrites the file size and every checksum that can be computed (FORMAT.md's order:
/// sections, then the table, then the header, which covers the table's CRC) so the
/// deeper checks see the mutation. Magic and version are left as they are. Returns
/// whether anything changed.
fn reseal(b: &mut [u8]) -> bool {
    if b.len() < HEADER_SIZE {
        return false;
    }
    let before = crc32(b);
    let len = b.len() as u64;
    b[16..24].copy_from_slice(&len.to_le_bytes());
    let count = le32(b, 24) as usize;
    let table_end = HEADER_SIZE + count.min(MAX_SECTIONS) * SECTION_ENTRY_SIZE;
    if count <= MAX_SECTIONS && table_end <= b.len() {
        for i in 0..count {
            let at = HEADER_SIZE + i * SECTION_ENTRY_SIZE;
            let (off, size) = (le64(b, at + 8), le64(b, at + 16));
            let end = off.saturating_add(size);
            if end <= b.len() as u64 {
                let crc = crc32(&b[off as usize..end as usize]);
                b[at + 24..at + 28].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let crc = crc32(&b[HEADER_SIZE..table_end]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32(&b[..36]);
    b[36..40].copy_from_slice(&crc.to_le_bytes());
    crc32(b) != before
}
