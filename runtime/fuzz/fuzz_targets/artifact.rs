//! Arbitrary bytes through `Model::from_bytes` and, when they load, every graph run: a
//! decoder for several steps over its KV cache, then again after `reset_state`.
//! Errors are fine; a panic, an out-of-bounds read or an abort is a bug: the reader
//! promises that a validated model cannot make the executor fail that way.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vlm_runtime::format::{crc32, HEADER_SIZE, MAX_SECTIONS, SECTION_ENTRY_SIZE};
use vlm_runtime::model::DType;
use vlm_runtime::{Graph, Input, Model, Session};

/// Larger plans are valid but would make each run too slow to explore much: a few
/// hundred bytes can describe an attention over millions of rows.
const MAX_ARENA: usize = 64 << 20;
const MAX_WORK: u64 = 1 << 24;
/// Runs of a graph with state (a decoder) before its state is reset: past the seed
/// decoder's six-position cache, so a full cache is explored too.
const DECODER_STEPS: usize = 8;

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
    // A device prints stored token text for any id a graph emits, in range or not.
    if let Some(v) = model.vocab() {
        let ids: Vec<u32> = (0..=v.count as u32 + 1).chain([u32::MAX]).collect();
        std::hint::black_box(v.pieces(&ids).map(<[u8]>::len).sum::<usize>());
    }
    if let Some(p) = model.prompt_ids() {
        std::hint::black_box(p.len());
    }
    if model.arena_size() > MAX_ARENA {
        return;
    }
    let mut arena = vec![0u8; model.arena_size()];
    let Ok(mut session) = Session::new(&model, &mut arena) else {
        return;
    };
    for (g, graph) in model.graphs().enumerate() {
        if work(graph) > MAX_WORK {
            continue;
        }
        // Inputs: a constant pixel vector for f32 ports, token id 0 for u32 ports
        // (in every vocabulary); outputs of the sizes the ports say.
        let pixels: Vec<Vec<f32>> = graph.inputs().map(|p| vec![0.25; p.len()]).collect();
        let ids: Vec<Vec<u32>> = graph.inputs().map(|p| vec![0; p.len()]).collect();
        let inputs: Vec<Input> = graph
            .inputs()
            .zip(pixels.iter().zip(&ids))
            .map(|(p, (x, t))| match p.dtype {
                DType::U32 => Input::U32(t),
                _ => Input::F32(x),
            })
            .collect();
        let mut outputs: Vec<Vec<f32>> = graph.outputs().map(|p| vec![0.0; p.len()]).collect();
        let mut outs: Vec<&mut [f32]> = outputs.iter_mut().map(|o| &mut o[..]).collect();
        let steps = if graph.states().next().is_some() {
            DECODER_STEPS
        } else {
            1
        };
        // Every step, even after an error (a full cache must keep failing cleanly).
        for _ in 0..steps {
            let _ = session.run(g, &inputs, &mut outs, None);
        }
        // A new sequence from zeroed state.
        let _ = session.reset_state();
        let _ = session.run(g, &inputs, &mut outs, None);
    }
}

/// Roughly the arithmetic one run does: multiply-accumulates plus elements written.
fn work(graph: &Graph) -> u64 {
    let written = graph.ops().fold(0u64, |sum, (_, op)| {
        let out = op.output();
        sum.saturating_add(out.rows as u64 * out.cols as u64)
    });
    graph.macs().saturating_add(written)
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
