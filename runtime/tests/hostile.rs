//! `Model::from_bytes` on hostile bytes: FORMAT.md promises an error, never a panic or an
//! out-of-bounds read, and a model that loads must run without panicking.
//!
//! The inputs are the fuzzer's committed seeds (`fuzz/seeds/`, written by the real writer:
//! `cargo test --workspace --test fuzz_seeds -- --ignored` regenerates them) and the
//! crashing inputs it once found (`fuzz/regressions/`). Most corruptions are made with
//! the checksums recomputed afterwards, so the check under test is the one that refuses
//! and not the CRC in front of it.

use std::path::{Path, PathBuf};

use vlm_runtime::format::{
    crc32, section, FormatError, GRAPH_HEADER_WORDS, HEADER_SIZE, MAGIC, MAX_GRAPHS, MAX_PORTS,
    MAX_SECTIONS, META_HEADER_WORDS, PORT_WORDS, SECTION_ENTRY_SIZE, TENSOR_ENTRY_SIZE, VERSION,
};
use vlm_runtime::model::DType;
use vlm_runtime::names::{self, dtype, port, role};
use vlm_runtime::ops::{
    Activation, Advance, Attention, CacheAppend, CacheAppendI8, Embedding, Linear, Mask, Mat, Op,
    PatchEmbed, Precision, Query, Weights,
};
use vlm_runtime::{Error, Graph, Input, Model, Role, Session};

fn fuzz_dir(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(sub)
}

fn files(sub: &str) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(fuzz_dir(sub))
        .unwrap_or_else(|e| panic!("{sub}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

fn seeds() -> Vec<(String, Art)> {
    let seeds: Vec<_> = files("seeds")
        .into_iter()
        .filter(|(name, _)| name.ends_with(".vlmq"))
        .map(|(name, bytes)| (name, Art::new(&bytes)))
        .collect();
    assert!(seeds.len() >= 7, "the seed corpus is missing");
    seeds
}

fn seed(name: &str) -> Art {
    seeds()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no seed {name}"))
        .1
}

/// A role's name, as `BadGraph` and `BadOp` carry it.
fn role_name(code: u32) -> &'static str {
    names::name_of(names::ROLES, code)
}

/// Artifact bytes in 4-byte-aligned memory (the reader refuses anything else), with the
/// little edits the tests make.
#[derive(Clone)]
struct Art {
    words: Vec<u32>,
    len: usize,
}

/// Where the parts of one GRAPH section are (byte offsets into the file).
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The section's first byte: header word `w` is at `at + 4·w`.
    at: usize,
    /// Byte offset just past the section.
    end: usize,
    role: u32,
    ports: usize,
    buffers: usize,
    ops: usize,
}

impl Plan {
    fn word(&self, w: usize) -> usize {
        self.at + 4 * w
    }

    /// Byte offset of port `i`'s entry (kind, dtype, buf, offset, rows, cols, stride,
    /// name offset, name length, 0).
    fn port(&self, i: usize) -> usize {
        assert!(i < self.ports, "no port {i}");
        self.word(GRAPH_HEADER_WORDS + PORT_WORDS * i)
    }

    /// Byte offset of buffer `b`'s entry (arena byte offset, length in elements).
    fn buffer(&self, b: u32) -> usize {
        assert!((b as usize) < self.buffers, "no buffer {b}");
        self.word(GRAPH_HEADER_WORDS + PORT_WORDS * self.ports + 2 * b as usize)
    }

    /// Byte offset of the first op word.
    fn first_op(&self) -> usize {
        self.word(GRAPH_HEADER_WORDS + PORT_WORDS * self.ports + 2 * self.buffers + 2 * self.ops)
    }

    fn bad(&self, why: &'static str) -> FormatError {
        FormatError::BadGraph {
            graph: role_name(self.role),
            why,
        }
    }
}

impl Art {
    fn new(bytes: &[u8]) -> Self {
        let mut words = vec![0u32; bytes.len().div_ceil(4)];
        bytemuck::cast_slice_mut::<u32, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
        Self {
            words,
            len: bytes.len(),
        }
    }

    /// A new artifact of these sections, in this order, laid out as the writer does
    /// (each section on a 64-byte boundary after the table), sealed.
    fn build(version: u32, sections: &[(u32, Vec<u8>)]) -> Self {
        let table_end = HEADER_SIZE + sections.len() * SECTION_ENTRY_SIZE;
        let mut out = vec![0u8; table_end.next_multiple_of(64)];
        out[..8].copy_from_slice(&MAGIC);
        out[8..12].copy_from_slice(&version.to_le_bytes());
        out[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        out[24..28].copy_from_slice(&(sections.len() as u32).to_le_bytes());
        for (i, (kind, body)) in sections.iter().enumerate() {
            let at = out.len();
            let e = Self::entry(i);
            out[e..e + 4].copy_from_slice(&kind.to_le_bytes());
            out[e + 8..e + 16].copy_from_slice(&(at as u64).to_le_bytes());
            out[e + 16..e + 24].copy_from_slice(&(body.len() as u64).to_le_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().next_multiple_of(64), 0);
        }
        Self::new(&out).resealed()
    }

    /// Every section: (kind, bytes), in table order.
    fn sections(&self) -> Vec<(u32, Vec<u8>)> {
        (0..self.u32(24) as usize)
            .map(|i| {
                let off = self.u64(Self::entry(i) + 8) as usize;
                let size = self.u64(Self::entry(i) + 16) as usize;
                (
                    self.u32(Self::entry(i)),
                    self.bytes()[off..off + size].to_vec(),
                )
            })
            .collect()
    }

    fn bytes(&self) -> &[u8] {
        &bytemuck::cast_slice(&self.words)[..self.len]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        &mut bytemuck::cast_slice_mut(&mut self.words)[..self.len]
    }

    fn load(&self) -> Result<Model<'_>, FormatError> {
        Model::from_bytes(self.bytes())
    }

    fn u32(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.bytes()[at..at + 4].try_into().unwrap())
    }

    fn u64(&self, at: usize) -> u64 {
        u64::from_le_bytes(self.bytes()[at..at + 8].try_into().unwrap())
    }

    fn set_u32(&mut self, at: usize, v: u32) {
        self.bytes_mut()[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    fn set_u64(&mut self, at: usize, v: u64) {
        self.bytes_mut()[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn truncated(&self, len: usize) -> Self {
        Self::new(&self.bytes()[..len])
    }

    /// Byte offset of section-table entry `i`.
    fn entry(i: usize) -> usize {
        HEADER_SIZE + i * SECTION_ENTRY_SIZE
    }

    /// (table index, byte offset) of the first section of `kind` (and, when `first` is
    /// given, whose first word is `first`: for GRAPH sections, the role code).
    fn section(&self, kind: u32, first: Option<u32>) -> (usize, usize) {
        self.sections_of(kind)
            .into_iter()
            .find(|&(_, off)| first.is_none_or(|f| self.u32(off) == f))
            .unwrap_or_else(|| panic!("no section of kind {kind} (first word {first:?})"))
    }

    /// (table index, byte offset) of every section of `kind`.
    fn sections_of(&self, kind: u32) -> Vec<(usize, usize)> {
        (0..self.u32(24) as usize)
            .filter(|&i| self.u32(Self::entry(i)) == kind)
            .map(|i| (i, self.u64(Self::entry(i) + 8) as usize))
            .collect()
    }

    /// Byte offset of tensor `i`'s table entry.
    fn tensor(&self, i: usize) -> usize {
        self.section(section::TENSORS, None).1 + 16 + i * TENSOR_ENTRY_SIZE
    }

    /// The layout of the GRAPH section at table index `i`.
    fn plan_at(&self, i: usize) -> Plan {
        let at = self.u64(Self::entry(i) + 8) as usize;
        let end = at + self.u64(Self::entry(i) + 16) as usize;
        let w = |k: usize| self.u32(at + 4 * k) as usize;
        Plan {
            at,
            end,
            role: w(0) as u32,
            ports: w(1) + w(2) + w(3),
            buffers: w(4),
            ops: w(5),
        }
    }

    /// The layout of the first graph with this role.
    fn plan(&self, role: u32) -> Plan {
        self.plan_at(self.section(section::GRAPH, Some(role)).0)
    }

    /// Every GRAPH section's layout, in file order.
    fn plans(&self) -> Vec<Plan> {
        self.sections_of(section::GRAPH)
            .into_iter()
            .map(|(i, _)| self.plan_at(i))
            .collect()
    }

    /// Byte offset of the image encoder's GRAPH section, and of its first op.
    fn vision(&self) -> (usize, usize) {
        let p = self.plan(role::IMAGE_ENCODER);
        (p.at, p.first_op())
    }

    /// Byte offset of the image encoder's op `index`.
    fn vision_op(&self, index: usize) -> usize {
        self.ops(&self.plan(role::IMAGE_ENCODER))[index].0
    }

    /// Every op of a graph: (byte offset, decoded op).
    fn ops(&self, p: &Plan) -> Vec<(usize, Op)> {
        let first = p.first_op();
        let words: &[u32] = bytemuck::cast_slice(&self.bytes()[first..p.end]);
        let (mut at, mut out) = (0, Vec::new());
        for _ in 0..p.ops {
            let (op, used) = Op::decode(&words[at..]).unwrap();
            out.push((first + 4 * at, op));
            at += used;
        }
        out
    }

    /// Overwrites the op at byte offset `at` with `op` (of the same kind, so of the same
    /// length).
    fn set_op(&mut self, at: usize, op: Op) {
        for (k, &w) in op.encode().as_slice().iter().enumerate() {
            self.set_u32(at + 4 * k, w);
        }
    }

    /// What FORMAT.md's checksums and file size must say about the current bytes, in its
    /// order: sections, then the table, then the header (which covers the table's CRC).
    /// Entries that point outside the file keep their old CRC (the reader refuses them
    /// before it looks).
    fn reseal(&mut self) {
        let len = self.len;
        if len < HEADER_SIZE {
            return;
        }
        self.set_u64(16, len as u64);
        let count = self.u32(24) as usize;
        let table_end = Self::entry(count.min(MAX_SECTIONS));
        if count <= MAX_SECTIONS && table_end <= len {
            for i in 0..count {
                let (off, size) = (self.u64(Self::entry(i) + 8), self.u64(Self::entry(i) + 16));
                let end = off.saturating_add(size);
                if end <= len as u64 {
                    let crc = crc32(&self.bytes()[off as usize..end as usize]);
                    self.set_u32(Self::entry(i) + 24, crc);
                }
            }
            let crc = crc32(&self.bytes()[HEADER_SIZE..table_end]);
            self.set_u32(32, crc);
        }
        let crc = crc32(&self.bytes()[..36]);
        self.set_u32(36, crc);
    }

    fn resealed(mut self) -> Self {
        self.reseal();
        self
    }

    /// A copy with `f` applied, resealed.
    fn edited(&self, f: impl FnOnce(&mut Art)) -> Self {
        let mut a = self.clone();
        f(&mut a);
        a.resealed()
    }
}

/// A graph input, owned.
enum Feed {
    F32(Vec<f32>),
    U32(Vec<u32>),
}

/// What `run` feeds a graph: a constant pixel vector to f32 ports, token `id` to u32
/// ports; and zeroed outputs of the right sizes.
fn feed(graph: &Graph, id: u32) -> (Vec<Feed>, Vec<Vec<f32>>) {
    let inputs = graph
        .inputs()
        .map(|p| match p.dtype {
            DType::U32 => Feed::U32(vec![id; p.len()]),
            _ => Feed::F32(vec![0.25; p.len()]),
        })
        .collect();
    let outputs = graph.outputs().map(|p| vec![0.0; p.len()]).collect();
    (inputs, outputs)
}

/// Runs graph `g` of the session's model `steps` times on `feed`'s inputs; its outputs.
fn run_graph(
    session: &mut Session,
    g: usize,
    id: u32,
    steps: usize,
) -> Result<Vec<Vec<f32>>, Error> {
    let model = *session.model();
    let graph = model.graph_at(g).ok_or(Error::NoGraph { what: "such" })?;
    let (inputs, mut outputs) = feed(graph, id);
    let inputs: Vec<Input> = inputs
        .iter()
        .map(|f| match f {
            Feed::F32(x) => Input::F32(x),
            Feed::U32(x) => Input::U32(x),
        })
        .collect();
    {
        let mut outs: Vec<&mut [f32]> = outputs.iter_mut().map(|o| &mut o[..]).collect();
        for _ in 0..steps {
            session.run(g, &inputs, &mut outs, None)?;
        }
    }
    Ok(outputs)
}

/// Steps `run` takes through a graph with state (a decoder): fewer than the seed
/// decoder's cache holds (6).
const DECODER_STEPS: usize = 3;

/// Roughly the arithmetic one run does: multiply-accumulates plus elements written.
fn work(graph: &Graph) -> u64 {
    let written = graph.ops().fold(0u64, |sum, (_, op)| {
        let out = op.output();
        sum.saturating_add(out.rows as u64 * out.cols as u64)
    });
    graph.macs().saturating_add(written)
}

/// Runs every graph of a model that loaded, as the fuzz target does (a decoder for a few
/// steps, then once more after `reset_state`), each one even when another failed; `Ok`
/// only if every graph ran, else the first error. Plans too large to run quickly in a
/// debug build are skipped (`Ok`).
fn run(model: &Model) -> Result<(), Error> {
    const MAX_ARENA: usize = 1 << 20;
    const MAX_WORK: u64 = 1 << 20;
    if model.arena_size() > MAX_ARENA {
        return Ok(());
    }
    let mut arena = vec![0u8; model.arena_size()];
    let mut session = Session::new(model, &mut arena)?;
    let mut result = Ok(());
    for (g, graph) in model.graphs().enumerate() {
        if work(graph) > MAX_WORK {
            continue;
        }
        if graph.states().next().is_some() {
            let r = run_graph(&mut session, g, 0, DECODER_STEPS);
            result = result.and(r.map(|_| ()));
            session.reset_state().unwrap();
        }
        result = result.and(run_graph(&mut session, g, 0, 1).map(|_| ()));
    }
    result
}

/// Loads and, if that succeeds, runs; panics are the only failure.
fn survive(art: &Art) {
    if let Ok(model) = art.load() {
        let _ = run(&model);
    }
}

#[track_caller]
fn expect(art: &Art, want: FormatError, what: &str) {
    match art.load() {
        Err(e) => assert_eq!(e, want, "{what}"),
        Ok(_) => panic!("{what}: loaded; expected {want:?}"),
    }
}

#[track_caller]
fn bad_op(art: &Art, what: &str) {
    match art.load() {
        Err(FormatError::BadOp { .. }) => {}
        other => panic!("{what}: {:?}; expected a BadOp", other.map(|_| ())),
    }
}

/// A `BadOp` with exactly this reason (any graph, any index).
#[track_caller]
fn bad_op_why(art: &Art, why: &str, what: &str) {
    match art.load() {
        Err(FormatError::BadOp { why: got, .. }) if got == why => {}
        other => panic!("{what}: {:?}; expected a BadOp: {why}", other.map(|_| ())),
    }
}

#[test]
fn every_seed_loads_and_runs() {
    let roles = |names: &[Role]| names.to_vec();
    let expected = [
        ("decoder.vlmq", roles(&[Role::Decoder])),
        (
            "encoder_decoder.vlmq",
            roles(&[Role::ImageEncoder, Role::Decoder]),
        ),
        ("full.vlmq", roles(&[Role::ImageEncoder, Role::TextEncoder])),
        ("text_f32_table.vlmq", roles(&[Role::TextEncoder])),
        ("text_i8_table.vlmq", roles(&[Role::TextEncoder])),
        ("vision_f32_patch.vlmq", roles(&[Role::ImageEncoder])),
        ("vision_i8_patch.vlmq", roles(&[Role::ImageEncoder])),
    ];
    for (name, art) in seeds() {
        let model = art.load().unwrap_or_else(|e| panic!("{name}: {e}"));
        let got: Vec<Role> = model.graphs().map(|g| g.role).collect();
        if let Some((_, want)) = expected.iter().find(|(n, _)| *n == name) {
            assert_eq!(&got, want, "{name}: graphs");
        }
        assert!(!got.is_empty(), "{name}: no graph");
        run(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
        // And to finite outputs.
        let mut arena = vec![0u8; model.arena_size()];
        let mut session = Session::new(&model, &mut arena).unwrap();
        for (g, graph) in model.graphs().enumerate() {
            assert!(graph.macs() > 0, "{name}: graph {g} does no work");
            let steps = if graph.states().next().is_some() {
                DECODER_STEPS
            } else {
                1
            };
            let outs = run_graph(&mut session, g, 2, steps).unwrap();
            assert!(
                outs.iter().flatten().all(|v| v.is_finite()),
                "{name}: graph {g}: {outs:?}"
            );
        }
    }
    // Between them the seeds hold every optional section.
    let model_art = seed("full.vlmq");
    let model = model_art.load().unwrap();
    assert!(model
        .labels()
        .is_some_and(|l| l.count == 2 && l.name(1) == "a dog"));
    assert!(model.tokenizer_json().is_some() && model.config_json().is_some());
    // And every port kind: the decoder keeps its position and KV cache in state.
    let dec_art = seed("decoder.vlmq");
    let dec = dec_art.load().unwrap();
    let g = dec.graph(Role::Decoder).unwrap();
    let states: Vec<_> = g.states().map(|p| (p.dtype, p.len())).collect();
    assert_eq!(states.len(), 3, "{states:?}");
    assert_eq!(states[0], (DType::U32, 1), "position");
    assert!(dec.state_bytes() > 0);
}

#[test]
fn every_truncation_is_refused() {
    for (name, art) in seeds() {
        // The last section may end before the padding that closes the file: cutting only
        // padding leaves a valid file once the size is restated.
        let body_end = (0..art.u32(24) as usize)
            .map(|i| art.u64(Art::entry(i) + 8) + art.u64(Art::entry(i) + 16))
            .max()
            .unwrap() as usize;
        for len in 0..art.len {
            let cut = art.truncated(len);
            let want = if len < HEADER_SIZE {
                FormatError::Truncated { what: "header" }
            } else {
                FormatError::FileSize {
                    stated: art.len as u64,
                    actual: len,
                }
            };
            expect(&cut, want, &format!("{name} cut to {len}"));
            // Restated size and checksums: the section bounds must catch it instead.
            let cut = cut.resealed();
            if len < body_end {
                assert!(
                    cut.load().is_err(),
                    "{name} cut to {len} and resealed loaded"
                );
            } else {
                survive(&cut);
            }
        }
    }
}

#[test]
fn header_and_table_corruption_names_the_fault() {
    for (name, art) in seeds() {
        let edit = |f: &dyn Fn(&mut Art)| {
            let mut a = art.clone();
            f(&mut a);
            a
        };
        let sealed = |f: &dyn Fn(&mut Art)| edit(f).resealed();

        let a = edit(&|a| a.bytes_mut()[3] = b'q');
        expect(&a, FormatError::BadMagic, &format!("{name}: magic"));
        let a = edit(&|a| a.bytes_mut()[4] = b'\n');
        expect(
            &a.truncated(20),
            FormatError::BadMagic,
            &format!("{name}: short, magic"),
        );
        for v in [0, VERSION + 1, u32::MAX] {
            let a = sealed(&|a| a.set_u32(8, v));
            let want = FormatError::Version {
                found: v,
                supported: VERSION,
            };
            expect(&a, want, &format!("{name}: version {v}"));
        }

        let a = edit(&|a| a.bytes_mut()[36] ^= 1);
        let want = FormatError::Checksum { what: "header" };
        expect(&a, want, &format!("{name}: header CRC"));
        let a = edit(&|a| a.bytes_mut()[20] ^= 1);
        expect(&a, want, &format!("{name}: header byte"));
        let a = edit(&|a| {
            let at = Art::entry(0) + 28;
            a.bytes_mut()[at] ^= 1;
        });
        let want = FormatError::Checksum {
            what: "section table",
        };
        expect(&a, want, &format!("{name}: table byte"));
        let (_, data) = art.section(section::DATA, None);
        let a = edit(&|a| a.bytes_mut()[data] ^= 0x40);
        let want = FormatError::Checksum { what: "a section" };
        expect(&a, want, &format!("{name}: section byte"));
        let (_, graph) = art.section(section::GRAPH, None);
        let a = edit(&|a| a.bytes_mut()[graph + 4] ^= 1);
        expect(&a, want, &format!("{name}: graph byte"));

        let a = sealed(&|a| a.set_u32(12, 128));
        let want = FormatError::BadField {
            field: "header size",
        };
        expect(&a, want, &format!("{name}: header size"));
        let a = edit(&|a| {
            a.set_u64(16, a.len as u64 + 64);
            let crc = crc32(&a.bytes()[..36]);
            a.set_u32(36, crc);
        });
        let want = FormatError::FileSize {
            stated: art.len as u64 + 64,
            actual: art.len,
        };
        expect(&a, want, &format!("{name}: stated size"));
        let a = sealed(&|a| a.set_u32(24, MAX_SECTIONS as u32 + 1));
        let want = FormatError::TooLarge {
            what: "section count",
            limit: MAX_SECTIONS,
        };
        expect(&a, want, &format!("{name}: section count"));
        let want = FormatError::Truncated {
            what: "section table",
        };
        let a = art.truncated(128).resealed();
        expect(&a, want, &format!("{name}: section table past the end"));

        // Offsets and sizes in the table.
        for kind in [section::DATA, section::GRAPH] {
            let (i, _) = art.section(kind, None);
            let bounds = FormatError::SectionBounds { index: i, kind };
            for (what, at, v) in [
                ("offset past the end", 8, art.len as u64 + 64),
                ("misaligned offset", 8, art.u64(Art::entry(i) + 8) + 4),
                ("offset into the table", 8, 0),
                ("size past the end", 16, art.len as u64),
                ("offset + size overflows", 16, u64::MAX - 63),
                ("offset above usize", 8, u64::MAX - 63),
            ] {
                let a = sealed(&|a| a.set_u64(Art::entry(i) + at, v));
                expect(&a, bounds, &format!("{name}: section {kind}: {what}"));
            }
        }

        // Required and duplicate sections.
        let (meta, m) = art.section(section::META, None);
        let a = sealed(&|a| a.set_u32(Art::entry(meta), 99));
        let want = FormatError::MissingSection { what: "META" };
        expect(
            &a,
            want,
            &format!("{name}: no META (unknown kinds are skipped)"),
        );
        let (tensors, _) = art.section(section::TENSORS, None);
        let a = sealed(&|a| a.set_u32(Art::entry(tensors), section::META));
        let want = FormatError::DuplicateSection { what: "META" };
        expect(&a, want, &format!("{name}: two META"));
        let graphs = art.sections_of(section::GRAPH);
        let a = sealed(&|a| {
            for &(i, _) in &graphs {
                a.set_u32(Art::entry(i), 99);
            }
        });
        let want = FormatError::MissingSection { what: "GRAPH" };
        expect(&a, want, &format!("{name}: no graph"));

        // META: family, version, word count, 0, then the family's words, which the
        // runtime carries without reading; the count must stay inside the section.
        let meta_words = art.u64(Art::entry(meta) + 16) as usize / 4;
        let family_words = meta_words - META_HEADER_WORDS;
        let truncated = FormatError::Truncated {
            what: "META section",
        };
        for n in [family_words as u32 + 1, u32::MAX] {
            let a = sealed(&|a| a.set_u32(m + 8, n));
            expect(&a, truncated, &format!("{name}: META word count {n}"));
        }
        let a = sealed(&|a| a.set_u64(Art::entry(meta) + 16, 12));
        expect(
            &a,
            truncated,
            &format!("{name}: META shorter than its header"),
        );
        // Up to the section's end is fine, and what the runtime hands the family.
        let a = sealed(&|a| a.set_u32(m + 8, family_words as u32));
        let loaded = a
            .load()
            .unwrap_or_else(|e| panic!("{name}: whole META: {e}"));
        assert_eq!(loaded.meta.words.len(), family_words, "{name}");
        let a = sealed(&|a| a.set_u32(m + 8, 0));
        let loaded = a
            .load()
            .unwrap_or_else(|e| panic!("{name}: empty META: {e}"));
        assert!(loaded.meta.words.is_empty(), "{name}");
        // Word sections (META, GRAPH, LABELS) that are not whole words: the file's fault,
        // said as such (not `Misaligned`, which blames the caller's buffer).
        for kind in [
            section::META,
            section::GRAPH,
            section::LABELS,
            section::PROMPT,
        ] {
            let Some(&(i, _)) = art.sections_of(kind).first() else {
                continue;
            };
            let size = art.u64(Art::entry(i) + 16);
            let a = sealed(&|a| a.set_u64(Art::entry(i) + 16, size - 2));
            expect(
                &a,
                FormatError::BadField {
                    field: "section size (not whole words)",
                },
                &format!("{name}: section {kind} of {} bytes", size - 2),
            );
        }
    }

    // LABELS: the label count must stay inside the section.
    let art = seed("full.vlmq");
    let (_, l) = art.section(section::LABELS, None);
    let a = art.edited(|a| a.set_u32(l, 3));
    expect(
        &a,
        FormatError::Truncated { what: "labels" },
        "a third label",
    );
    let a = art.edited(|a| a.set_u32(l, u32::MAX));
    expect(&a, FormatError::BadField { field: "labels" }, "2^32 labels");
    let a = art.edited(|a| a.set_u32(l + 4, 0));
    expect(
        &a,
        FormatError::BadField { field: "labels" },
        "labels of no dimension",
    );

    // VOCAB: count, flags, 0, 0, count + 1 non-decreasing offsets from 0, then bytes.
    let (i, v) = art.section(section::VOCAB, None);
    let size = art.u64(Art::entry(i) + 16) as usize;
    let loaded = art.load().unwrap();
    let vocab = loaded.vocab().expect("the full seed stores a vocab");
    assert_eq!(vocab.token(3), b" cat");
    assert_eq!(vocab.token(99), b"");
    let text: Vec<u8> = vocab.pieces(&[0, 3, 4]).flatten().copied().collect();
    assert_eq!(text, b"cat dog", "the leading space is stripped once");
    assert_eq!(loaded.prompt_ids(), Some(&[2u32, 3][..]));
    let bad = FormatError::BadField { field: "vocab" };
    let count = art.u32(v);
    let offsets = v + 16;
    for (what, edit) in [
        ("2^24 + 1 tokens", (v, (1 << 24) + 1)),
        ("unknown flags", (v + 4, 2)),
        ("a first offset past 0", (offsets, 1)),
        ("decreasing offsets", (offsets + 4 * 4, 0)),
        (
            "text past the section",
            (offsets + 4 * count as usize, size as u32),
        ),
    ] {
        let a = art.edited(|a| a.set_u32(edit.0, edit.1));
        expect(&a, bad, &format!("VOCAB: {what}"));
    }
    // More offsets than the section holds.
    let a = art.edited(|a| a.set_u32(v, (size / 4) as u32));
    expect(
        &a,
        FormatError::Truncated { what: "vocab" },
        "VOCAB: too many tokens",
    );
    let a = art.edited(|a| a.set_u64(Art::entry(i) + 16, 12));
    expect(
        &a,
        FormatError::Truncated { what: "vocab" },
        "VOCAB: no header",
    );
}

/// Version 2 changed the meaning of existing bytes (towers became graphs with ports):
/// a version-1 file is refused by its version, before anything in it is read.
#[test]
fn version_1_is_refused() {
    let want = FormatError::Version {
        found: 1,
        supported: 2,
    };
    assert_eq!(VERSION, 2);
    for (name, art) in seeds() {
        let a = art.edited(|a| a.set_u32(8, 1));
        expect(&a, want, &format!("{name} marked version 1"));
    }
    // A real version-1 file (the fuzzer's regressions predate version 2).
    let mut real = 0;
    for (name, bytes) in files("regressions") {
        let art = Art::new(&bytes);
        if art.len >= HEADER_SIZE && art.bytes()[..8] == MAGIC && art.u32(8) == 1 {
            expect(&art, want, &name);
            expect(&art.resealed(), want, &format!("{name}, resealed"));
            real += 1;
        }
    }
    assert!(real > 0, "no version-1 file in fuzz/regressions");
}

/// Symmetric int8 weights never hold −128; the AVX2 and plain NEON GEMMs would sum
/// other numbers if they did (16-bit pairs), so a file with one is refused at load.
#[test]
fn int8_weights_at_minus_128_are_refused() {
    let mut checked = 0;
    for (name, art) in seeds() {
        let (_, data) = art.section(section::DATA, None);
        for i in 0..art.u32(art.section(section::TENSORS, None).1) as usize {
            let entry = art.tensor(i);
            if art.u32(entry) != dtype::I8_PANELS || art.u64(entry + 32) == 0 {
                continue;
            }
            let at = data + art.u64(entry + 24) as usize;
            let a = art.edited(|a| a.bytes_mut()[at] = 0x80);
            bad_op_why(
                &a,
                "int8 weights hold -128 (symmetric weights are -127..127)",
                &format!("{name}: tensor {i}"),
            );
            checked += 1;
        }
    }
    assert!(checked >= 3, "{checked} int8 weight tensors in the seeds");
}

/// Every int8 linear layer of every seed, its weights edited by `edit`, must be refused
/// with `why`.
fn int8_linears_refused_after(edit: impl Fn(&mut Weights), why: &str) {
    let mut checked = 0;
    for (name, art) in seeds() {
        for p in art.plans() {
            for (at, op) in art.ops(&p) {
                let Op::Linear(mut l) = op else { continue };
                if !matches!(l.weights, Weights::I8 { .. }) {
                    continue;
                }
                edit(&mut l.weights);
                let a = art.edited(|a| a.set_op(at, Op::Linear(l)));
                bad_op_why(&a, why, &format!("{name}: op at {at}"));
                checked += 1;
            }
        }
    }
    assert!(checked >= 3, "{checked} int8 linear layers in the seeds");
}

/// A layer marked 7-bit must keep to −63..63: AVX2 multiplies such weights without the
/// flip, and a wider one would saturate a pair sum there and nowhere else.
#[test]
fn seven_bit_weights_outside_their_range_are_refused() {
    int8_linears_refused_after(
        |w| {
            if let Weights::I8 { narrow, .. } = w {
                *narrow = true;
            }
        },
        "7-bit int8 weights hold a value outside -63..63",
    );
}

/// A layer with 7-bit activations quantizes them to 0..=127, so its zero point must lie
/// there: AVX2 adds two pair sums of such activations in 16 bits, and a zero point above
/// 127 would put values past it and saturate there and nowhere else.
#[test]
fn seven_bit_activations_with_a_wider_zero_point_are_refused() {
    int8_linears_refused_after(
        |w| {
            if let Weights::I8 {
                narrow,
                narrow_x,
                x_zero,
                ..
            } = w
            {
                (*narrow, *narrow_x, *x_zero) = (true, true, 128);
            }
        },
        "7-bit int8 activations have a zero point above 127",
    );
}

#[test]
fn graph_count_duplicates_and_state_regions() {
    // Graphs are told apart by role and name: two with both the same are refused.
    for name in ["full.vlmq", "encoder_decoder.vlmq"] {
        let art = seed(name);
        let plans = art.plans();
        assert!(plans.len() >= 2, "{name}");
        let (first, second) = (plans[0], plans[1]);
        let a = art.edited(|a| {
            a.set_u32(second.word(0), first.role);
            a.set_u32(second.word(9), a.u32(first.word(9)));
            a.set_u32(second.word(10), a.u32(first.word(10)));
        });
        let want = FormatError::DuplicateSection {
            what: role_name(first.role),
        };
        expect(
            &a,
            want,
            &format!("{name}: two graphs of one role and name"),
        );
        // The same role under another name is a second graph of that role.
        let a = art.edited(|a| a.set_u32(second.word(0), first.role));
        let m = a
            .load()
            .unwrap_or_else(|e| panic!("{name}: second graph of a role: {e}"));
        assert_eq!(m.graphs().count(), 2);
    }

    // Every graph sees one state region: graphs that disagree on its size are refused.
    let art = seed("encoder_decoder.vlmq");
    let vision = art.plan(role::IMAGE_ENCODER);
    assert!(
        art.u32(vision.word(8)) > 0,
        "the encoder shares the decoder's state region"
    );
    let a = art.edited(|a| a.set_u32(vision.word(8), 0));
    let want = FormatError::BadField {
        field: "state region (graphs disagree)",
    };
    expect(&a, want, "an encoder with no state region beside a decoder");

    // At most MAX_GRAPHS graphs: copies of the image encoder, each under its own name
    // (prefixes of "image encoder" in STRINGS).
    let art = seed("vision_f32_patch.vlmq");
    let sections = art.sections();
    let g = art.section(section::GRAPH, None).0;
    let with_graphs = |n: usize| {
        let mut out = Vec::new();
        for (i, (kind, body)) in sections.iter().enumerate() {
            if i != g {
                out.push((*kind, body.clone()));
                continue;
            }
            for k in 0..n {
                let mut body = body.clone();
                body[40..44].copy_from_slice(&(k as u32 + 1).to_le_bytes());
                out.push((*kind, body));
            }
        }
        Art::build(VERSION, &out)
    };
    assert!(with_graphs(1).load().is_ok(), "rebuilt seed does not load");
    let full = with_graphs(MAX_GRAPHS);
    let m = full
        .load()
        .unwrap_or_else(|e| panic!("{MAX_GRAPHS} graphs: {e}"));
    assert_eq!(m.graphs().count(), MAX_GRAPHS);
    run(&m).unwrap();
    let want = FormatError::TooLarge {
        what: "graph count",
        limit: MAX_GRAPHS,
    };
    expect(&with_graphs(MAX_GRAPHS + 1), want, "one graph too many");
}

#[test]
fn graph_role_codes_out_of_range_are_refused() {
    let want = FormatError::BadField {
        field: "graph role",
    };
    for (name, art) in seeds() {
        for p in art.plans() {
            for code in [0, role::PREFILL + 1, 99, u32::MAX] {
                let a = art.edited(|a| a.set_u32(p.word(0), code));
                expect(&a, want, &format!("{name}: role {code}"));
            }
        }
    }
}

#[test]
fn absurd_shapes_are_refused() {
    for (name, art) in seeds() {
        let sealed = |f: &dyn Fn(&mut Art)| art.edited(f);
        let (_, tensors) = art.section(section::TENSORS, None);
        let t0 = art.tensor(0);
        let tensor = |why| FormatError::BadTensor { index: 0, why };
        for (what, at, v, why) in [
            ("dtype", 0, 99, "unknown element type"),
            // u32 is a port type; constants are f32 or int8.
            ("dtype u32", 0, dtype::U32, "unknown element type"),
            ("rank", 4, 5, "rank above 4"),
            ("dimension", 8, (1 << 24) + 1, "dimension too large"),
            ("dimension", 8, 33, "byte size does not match its shape"),
            ("data offset", 24, 1, "data is not 64-byte aligned"),
            (
                "data offset",
                24,
                1 << 30,
                "data runs past the DATA section",
            ),
            ("name", 40, u32::MAX, "bad name"),
        ] {
            let a = sealed(&|a| a.set_u32(t0 + at, v));
            expect(&a, tensor(why), &format!("{name}: tensor {what}"));
        }
        // Four dimensions at the limit overflow the element count on any target.
        let a = sealed(&|a| {
            a.set_u32(t0 + 4, 4);
            for d in 0..4 {
                a.set_u32(t0 + 8 + 4 * d, 1 << 24);
            }
        });
        expect(
            &a,
            tensor("size overflows"),
            &format!("{name}: 2^96 elements"),
        );
        let a = sealed(&|a| a.set_u64(t0 + 32, u64::MAX));
        let why = if usize::BITS < 64 {
            "size overflows"
        } else {
            "byte size does not match its shape"
        };
        expect(&a, tensor(why), &format!("{name}: tensor byte size"));
        let a = sealed(&|a| a.set_u32(tensors, (1 << 16) + 1));
        let want = FormatError::TooLarge {
            what: "tensor count",
            limit: 1 << 16,
        };
        expect(&a, want, &format!("{name}: tensor count"));
        let a = sealed(&|a| a.set_u32(tensors, 1 << 16));
        let want = FormatError::Truncated {
            what: "tensor table",
        };
        expect(&a, want, &format!("{name}: tensor table past its section"));

        // Graph plans: header words 1-3 port counts, 4 buffers, 5 ops, 6 arena bytes,
        // 7 op words, 8 state bytes, 9-10 name.
        for p in art.plans() {
            let state = art.u32(p.word(8));
            let ports = FormatError::TooLarge {
                what: "graph ports",
                limit: MAX_PORTS,
            };
            let too_large = FormatError::TooLarge {
                what: "graph buffers or ops",
                limit: 1 << 16,
            };
            let truncated = FormatError::Truncated { what: "graph" };
            let region = p.bad("arena or state region size is invalid");
            let placement = p.bad("buffer placement is outside the arena");
            for (what, word, v, want) in [
                ("input count", 1, MAX_PORTS as u32, ports),
                ("output count", 2, u32::MAX, ports),
                ("state count", 3, MAX_PORTS as u32, ports),
                ("buffer count", 4, (1 << 14) + 1, too_large),
                ("op count", 5, (1 << 16) + 1, too_large),
                ("op words", 7, u32::MAX, truncated),
                ("buffer count", 4, 1 << 14, truncated),
                ("op count", 5, 1 << 16, truncated),
                ("arena", 6, 0, if state > 0 { region } else { placement }),
                ("state region misaligned", 8, state + 4, region),
                ("state region past the arena", 8, 0xFFFF_FFC0, region),
                ("name", 9, u32::MAX, p.bad("bad name")),
                ("name length", 10, u32::MAX, p.bad("bad name")),
            ] {
                let a = sealed(&|a| a.set_u32(p.word(word), v));
                expect(&a, want, &format!("{name}: graph {what}"));
            }
            // Too few op words for the ops: the last op runs past them.
            let a = sealed(&|a| a.set_u32(p.word(7), a.u32(p.word(7)) - 1));
            assert!(a.load().is_err(), "{name}: one op word short");
            let b0 = p.buffer(0);
            let a = sealed(&|a| a.set_u32(b0, a.u32(b0) + 4));
            expect(&a, placement, &format!("{name}: misaligned buffer"));
            let a = sealed(&|a| a.set_u32(b0, 0xFFFF_FFC0));
            // On 32 bits the buffer's end (offset + 4 · length) overflows before it can
            // be compared with the arena: refused as such.
            let end = 0xFFFF_FFC0u64 + 4 * u64::from(art.u32(b0 + 4));
            let why = if end > usize::MAX as u64 {
                p.bad("buffer size overflows")
            } else {
                placement
            };
            expect(&a, why, &format!("{name}: buffer past the arena"));
            let a = sealed(&|a| a.set_u32(b0 + 4, u32::MAX));
            let why = if usize::BITS < 64 {
                p.bad("buffer size overflows")
            } else {
                placement
            };
            expect(&a, why, &format!("{name}: 2^32-element buffer"));
        }
    }
}

/// Ports: inputs, then outputs, then states; inputs and states whole f32 or u32 buffers,
/// outputs f32 windows; state buffers inside the state region, every other buffer after
/// it; no two states sharing bytes.
#[test]
fn corrupt_ports_are_refused() {
    let mut states_seen = 0;
    for (name, art) in seeds() {
        for p in art.plans() {
            let sealed = |f: &dyn Fn(&mut Art)| art.edited(f);
            let bad_port = p.bad("bad port");
            let window = p.bad("port kind or window is invalid");
            let shape = p.bad("port type or shape is invalid");
            let what = |w: &str| format!("{name}, {} graph: {w}", role_name(p.role));
            let (input, output) = (p.port(0), p.port(1));
            assert_eq!(art.u32(input), port::INPUT, "{}", what("port 0"));
            assert_eq!(art.u32(output), port::OUTPUT, "{}", what("port 1"));
            let in_len = art.u32(input + 4 * 5);
            let out_buf = art.u32(output + 4 * 2);
            let out_buf_len = art.u32(p.buffer(out_buf) + 4);
            // (what, port entry, word of it, value, error).
            for (w, at, k, v, want) in [
                ("unknown port kind", input, 0, 99, bad_port),
                ("unknown port type", input, 1, 99, bad_port),
                ("port name", input, 7, u32::MAX, bad_port),
                ("output name", output, 8, u32::MAX, bad_port),
                (
                    "an output where the inputs are",
                    input,
                    0,
                    port::OUTPUT,
                    window,
                ),
                (
                    "a state where the inputs are",
                    input,
                    0,
                    port::STATE,
                    window,
                ),
                (
                    "an input where the outputs are",
                    output,
                    0,
                    port::INPUT,
                    window,
                ),
                ("int8 input", input, 1, dtype::I8, shape),
                ("panel input", input, 1, dtype::I8_PANELS, shape),
                ("u32 output", output, 1, dtype::U32, shape),
                ("int8 output", output, 1, dtype::I8, shape),
                ("input buffer missing", input, 2, 1 << 14, window),
                ("input window past its buffer", input, 4, 2, window),
                ("input offset", input, 3, 1, window),
                ("empty input", input, 5, 0, window),
                ("input with no rows", input, 4, 0, window),
                ("output buffer missing", output, 2, u32::MAX, window),
                ("output past its buffer", output, 3, out_buf_len, window),
                ("output rows past its buffer", output, 4, 1 << 20, window),
                ("empty output", output, 5, 0, window),
                ("output rows overlap", output, 4, 2, window),
            ] {
                // "Rows overlap": two rows one element apart (stride below the columns).
                let a = sealed(&|a| {
                    a.set_u32(at + 4 * k, v);
                    if w == "output rows overlap" {
                        a.set_u32(output + 4 * 6, 1);
                    }
                });
                expect(&a, want, &what(w));
            }
            if in_len > 1 {
                // A window of the input buffer: the caller writes whole buffers.
                let a = sealed(&|a| a.set_u32(input + 4 * 5, in_len - 1));
                expect(&a, shape, &what("input short of its buffer"));
            }
            // Port counts that disagree with the kinds in order.
            let a = sealed(&|a| {
                a.set_u32(p.word(1), 0);
                a.set_u32(p.word(2), 2);
            });
            expect(&a, window, &what("no inputs, two outputs"));

            let states: Vec<usize> = (0..p.ports)
                .map(|i| p.port(i))
                .filter(|&at| art.u32(at) == port::STATE)
                .collect();
            if states.is_empty() {
                continue;
            }
            states_seen += 1;
            let region = art.u32(p.word(8));
            let arena = art.u32(p.word(6));
            let wrong_side = p.bad("a buffer is on the wrong side of the state region");
            let buf = |at: usize| art.u32(at + 4 * 2);
            let (first, last) = (states[0], *states.last().unwrap());
            // A state buffer moved out of the state region, to its first byte past it.
            let moved = buf(last);
            let len = art.u32(p.buffer(moved) + 4);
            assert!(
                region + 4 * len <= arena,
                "{}",
                what("no room to move a state")
            );
            let a = sealed(&|a| a.set_u32(p.buffer(moved), region));
            expect(&a, wrong_side, &what("state buffer after the state region"));
            // Straddling its end.
            let a = sealed(&|a| a.set_u32(p.buffer(moved), region - 64));
            expect(
                &a,
                wrong_side,
                &what("state buffer across the region's end"),
            );
            // A plain buffer (the input's) inside the state region.
            let a = sealed(&|a| a.set_u32(p.buffer(buf(input)), 0));
            expect(&a, wrong_side, &what("input buffer in the state region"));
            // An input port's buffer marked as state: it is outside the region.
            let a = sealed(&|a| a.set_u32(first + 4 * 2, buf(input)));
            expect(&a, wrong_side, &what("input buffer as a state"));
            // Two states on the same bytes.
            let a = sealed(&|a| a.set_u32(p.buffer(buf(last)), a.u32(p.buffer(buf(first)))));
            expect(
                &a,
                p.bad("two state buffers overlap"),
                &what("states overlap"),
            );
            // The input on a state buffer of its size: each run's input would overwrite
            // what the last run left there.
            if let Some(&st) = states.iter().find(|&&at| art.u32(at + 4 * 5) == in_len) {
                let a = sealed(&|a| a.set_u32(input + 4 * 2, buf(st)));
                expect(
                    &a,
                    p.bad("an input port is a state buffer"),
                    &what("input on a state buffer"),
                );
            }
            // State ports: whole buffers, last in order; f32 and u32, or i8 for an int8
            // cache. Retyped, the state is refused by the op that reads it.
            let other = match art.u32(last + 4) {
                dtype::I8 => dtype::F32,
                _ => dtype::I8,
            };
            let a = sealed(&|a| a.set_u32(last + 4, other));
            bad_op(&a, &what("a state of another type"));
            let a = sealed(&|a| a.set_u32(last + 4, dtype::I8_PANELS));
            expect(&a, shape, &what("a state of GEMM panels"));
            let a = sealed(&|a| a.set_u32(last + 4 * 5, a.u32(last + 4 * 5) - 1));
            expect(&a, shape, &what("state short of its buffer"));
            let a = sealed(&|a| a.set_u32(last, port::OUTPUT));
            expect(&a, window, &what("an output where the states are"));
            let a = sealed(&|a| a.set_u32(last, 99));
            expect(&a, bad_port, &what("unknown kind of state"));
            let a = sealed(&|a| a.set_u32(last + 4 * 2, 1 << 14));
            expect(&a, window, &what("state buffer missing"));
        }
    }
    assert!(states_seen >= 2, "the decoder seeds have no state ports");
}

/// A decoder's position, cache and past length must be state buffers of the right type
/// and size; anything else lets one run's work land where the next run reads.
#[test]
fn decoder_operands_must_be_states() {
    for name in ["decoder.vlmq", "encoder_decoder.vlmq"] {
        let art = seed(name);
        let p = art.plan(role::DECODER);
        let ops = art.ops(&p);
        let find = |code: u32| {
            ops.iter()
                .copied()
                .find(|(_, op)| op.opcode() == code)
                .unwrap_or_else(|| panic!("{name}: no op {code}"))
        };
        let (embed_at, embed) = match find(names::opcode::EMBEDDING) {
            (at, Op::Embedding(e)) => (at, e),
            _ => unreachable!(),
        };
        let (append_at, append) = match find(names::opcode::CACHE_APPEND) {
            (at, Op::CacheAppend(c)) => (at, c),
            _ => unreachable!(),
        };
        let (attn_at, attn) = match find(names::opcode::ATTENTION) {
            (at, Op::Attention(a)) => (at, a),
            _ => unreachable!(),
        };
        let (advance_at, advance) = match find(names::opcode::ADVANCE) {
            (at, Op::Advance(a)) => (at, a),
            _ => unreachable!(),
        };
        let pos = embed
            .position
            .expect("the decoder's embedding reads its position");
        assert_eq!(attn.past, Some(pos), "{name}");
        assert_eq!(attn.mask, Mask::Causal, "{name}");
        let keys = append.cache.buf;
        let ids = embed.ids;
        let x = embed.out.buf;
        let with = |at: usize, op: Op| art.edited(|a| a.set_op(at, op));

        // Not a one-element u32 state: the token input (u32, one element, but an input),
        // the key cache (a state, but f32 and long), an activation, no buffer at all.
        let not_pos = [
            (ids, "the token input"),
            (keys, "the key cache"),
            (x, "an activation"),
            (999, "no buffer"),
        ];
        for (b, what) in not_pos {
            let why = "embedding position is not a one-element u32 state";
            let a = with(
                embed_at,
                Op::Embedding(Embedding {
                    position: Some(b),
                    ..embed
                }),
            );
            bad_op_why(&a, why, &format!("{name}: embedding position in {what}"));
            let why = "attention's past length is not a one-element u32 state";
            let a = with(
                attn_at,
                Op::Attention(Attention {
                    past: Some(b),
                    ..attn
                }),
            );
            bad_op_why(&a, why, &format!("{name}: attention past in {what}"));
            let why = "cache position is not a one-element u32 state";
            let a = with(
                append_at,
                Op::CacheAppend(CacheAppend {
                    position: b,
                    ..append
                }),
            );
            bad_op_why(&a, why, &format!("{name}: cache position in {what}"));
            let why = "advanced position is not a one-element u32 state";
            let a = with(
                advance_at,
                Op::Advance(Advance {
                    position: b,
                    ..advance
                }),
            );
            if b == 999 {
                bad_op_why(
                    &a,
                    "output window lies outside its buffer",
                    &format!("{name}: advance no buffer"),
                );
            } else {
                bad_op_why(&a, why, &format!("{name}: advanced position in {what}"));
            }
        }
        // A u32 state, but of two elements: the position port and buffer widened (the
        // embedding, the first op to read it, is refused).
        let pos_port = (0..p.ports)
            .map(|i| p.port(i))
            .find(|&at| art.u32(at) == port::STATE && art.u32(at + 8) == pos)
            .expect("the position is a state port");
        let a = art.edited(|a| {
            a.set_u32(p.buffer(pos) + 4, 2);
            a.set_u32(pos_port + 4 * 5, 2);
            a.set_u32(pos_port + 4 * 6, 2);
        });
        bad_op_why(
            &a,
            "embedding position is not a one-element u32 state",
            &format!("{name}: a two-element position"),
        );
        // A cache in a plain buffer (an activation of one row, so the window fits).
        let cache = Mat::dense(x, 1, append.cache.cols);
        let a = with(append_at, Op::CacheAppend(CacheAppend { cache, ..append }));
        bad_op_why(
            &a,
            "cache is not an f32 state buffer",
            &format!("{name}: cache in an activation"),
        );
        // A cache in the position counter: a state, but the op's position too.
        let cache = Mat::dense(pos, 1, 1);
        let a = with(append_at, Op::CacheAppend(CacheAppend { cache, ..append }));
        bad_op(&a, &format!("{name}: cache in the position"));
        // Appended rows of another width.
        let cache = Mat {
            cols: append.cache.cols / 2,
            stride: append.cache.cols / 2,
            ..append.cache
        };
        let a = with(append_at, Op::CacheAppend(CacheAppend { cache, ..append }));
        bad_op(&a, &format!("{name}: half-width cache"));
        // An unknown mask code.
        let none = Op::Attention(Attention {
            mask: Mask::None,
            ..attn
        })
        .encode();
        let causal = Op::Attention(attn).encode();
        let k = (0..causal.as_slice().len())
            .find(|&k| none.as_slice()[k] != causal.as_slice()[k])
            .unwrap();
        let a = art.edited(|a| a.set_u32(attn_at + 4 * k, 2));
        expect(
            &a,
            FormatError::BadField {
                field: "attention mask",
            },
            &format!("{name}: mask 2"),
        );

        // Valid, if odd, plans load and run (errors allowed, panics not): a causal
        // attention over the whole cache with no past length, a position that never
        // moves, one that jumps to the end of u32 (the next step is out of range).
        let a = with(attn_at, Op::Attention(Attention { past: None, ..attn }));
        let m = a
            .load()
            .unwrap_or_else(|e| panic!("{name}: causal, no past: {e}"));
        run(&m).unwrap_or_else(|e| panic!("{name}: causal, no past: {e}"));
        let a = with(advance_at, Op::Advance(Advance { by: 0, ..advance }));
        let m = a
            .load()
            .unwrap_or_else(|e| panic!("{name}: advance by 0: {e}"));
        run(&m).unwrap_or_else(|e| panic!("{name}: advance by 0: {e}"));
        let a = with(
            advance_at,
            Op::Advance(Advance {
                by: u32::MAX,
                ..advance
            }),
        );
        let m = a
            .load()
            .unwrap_or_else(|e| panic!("{name}: advance by 2^32-1: {e}"));
        let mut arena = vec![0u8; m.arena_size()];
        let mut s = Session::new(&m, &mut arena).unwrap();
        let g = m.graph_index(Role::Decoder).unwrap();
        run_graph(&mut s, g, 0, 1).unwrap();
        match run_graph(&mut s, g, 0, 1) {
            Err(Error::PositionOutOfRange { position, .. }) => {
                assert_eq!(position, u32::MAX as usize, "{name}")
            }
            other => panic!("{name}: step at position 2^32-1: {:?}", other.map(|_| ())),
        }
        s.reset_state().unwrap();
        run_graph(&mut s, g, 0, 1).unwrap();
    }
}

/// A decoder run past its cache stops with an error, not a wrap or a write past the
/// cache, and keeps stopping until `reset_state` starts a new sequence.
#[test]
fn a_full_cache_is_an_error() {
    for name in ["decoder.vlmq", "decoder_i8kv.vlmq"] {
        a_full_cache_is_an_error_in(name);
    }
}

fn a_full_cache_is_an_error_in(name: &str) {
    let art = seed(name);
    let model = art.load().unwrap();
    let g = model.graph_index(Role::Decoder).unwrap();
    let capacity = {
        let p = art.plan(role::DECODER);
        art.ops(&p)
            .into_iter()
            .find_map(|(_, op)| match op {
                Op::CacheAppend(c) => Some(c.cache.rows as usize),
                Op::CacheAppendI8(c) => Some(c.cache.rows as usize),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name}: no cache append"))
    };
    let mut arena = vec![0u8; model.arena_size()];
    let mut s = Session::new(&model, &mut arena).unwrap();
    let first = run_graph(&mut s, g, 3, 1).unwrap();
    run_graph(&mut s, g, 3, capacity - 1).unwrap();
    for _ in 0..2 {
        match run_graph(&mut s, g, 3, 1) {
            Err(Error::CacheFull { need, capacity: c }) => {
                assert_eq!((need, c), (capacity + 1, capacity))
            }
            other => panic!(
                "step {} of {capacity}: {:?}",
                capacity + 1,
                other.map(|_| ())
            ),
        }
    }
    s.reset_state().unwrap();
    let again = run_graph(&mut s, g, 3, 1).unwrap();
    assert_eq!(first, again, "a reset does not restart the sequence");
}

/// What a caller passes is checked too: the graph, the number and types of inputs and
/// outputs, their lengths, token ids against the vocabulary, the arena's size.
#[test]
fn hostile_inputs_are_refused() {
    let art = seed("full.vlmq");
    let model = art.load().unwrap();
    let mut small = vec![0u8; model.arena_size() - 1];
    match Session::new(&model, &mut small) {
        Err(Error::ArenaTooSmall { need, got }) => {
            assert_eq!((need, got), (model.arena_size(), model.arena_size() - 1))
        }
        other => panic!("small arena: {:?}", other.map(|_| ())),
    }
    let mut arena = vec![0u8; model.arena_size()];
    let mut s = Session::new(&model, &mut arena).unwrap();
    let img = model.graph_index(Role::ImageEncoder).unwrap();
    let text = model.graph_index(Role::TextEncoder).unwrap();
    let (pixels, ids) = {
        let g = model.graph_at(img).unwrap();
        let t = model.graph_at(text).unwrap();
        (
            vec![0.25f32; g.inputs().next().unwrap().len()],
            vec![0u32; t.inputs().next().unwrap().len()],
        )
    };
    let out_len = model.graph_at(img).unwrap().outputs().next().unwrap().len();
    let mut out = vec![0.0f32; out_len];

    assert_eq!(
        s.run(7, &[Input::F32(&pixels)], &mut [&mut out], None),
        Err(Error::NoGraph { what: "such" })
    );
    assert_eq!(
        s.run(img, &[], &mut [&mut out], None),
        Err(Error::PortCount {
            graph: "image encoder",
            what: "inputs",
            got: 0,
            expected: 1
        })
    );
    assert_eq!(
        s.run(img, &[Input::F32(&pixels)], &mut [], None),
        Err(Error::PortCount {
            graph: "image encoder",
            what: "outputs",
            got: 0,
            expected: 1
        })
    );
    let as_ids = vec![0u32; pixels.len()];
    assert_eq!(
        s.run(img, &[Input::U32(&as_ids)], &mut [&mut out], None),
        Err(Error::InputType {
            name: "input values",
            got: "u32",
            expected: "f32"
        })
    );
    assert_eq!(
        s.run(img, &[Input::F32(&pixels[1..])], &mut [&mut out], None),
        Err(Error::BufferSize {
            what: "input values",
            got: pixels.len() - 1,
            expected: pixels.len()
        })
    );
    assert_eq!(
        s.run(img, &[Input::F32(&pixels)], &mut [&mut out[1..]], None),
        Err(Error::BufferSize {
            what: "graph output",
            got: out_len - 1,
            expected: out_len
        })
    );
    assert_eq!(
        s.encode_text(&ids[1..], &mut out),
        Err(Error::BufferSize {
            what: "token ids",
            got: ids.len() - 1,
            expected: ids.len()
        })
    );
    // Token ids at and far past the vocabulary (16 in the seeds).
    for id in [16, u32::MAX] {
        let mut bad = ids.clone();
        bad[1] = id;
        assert_eq!(
            s.encode_text(&bad, &mut out),
            Err(Error::TokenId { id, vocab: 16 })
        );
    }
    s.encode_image(&pixels, &mut out).unwrap();
    s.encode_text(&ids, &mut out).unwrap();

    // A model without the graph asked for.
    let art = seed("vision_f32_patch.vlmq");
    let model = art.load().unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut s = Session::new(&model, &mut arena).unwrap();
    assert_eq!(
        s.encode_text(&[0; 4], &mut out),
        Err(Error::NoGraph {
            what: "text encoder"
        })
    );

    // The decoder: token ids against its vocabulary, every step.
    let art = seed("decoder.vlmq");
    let model = art.load().unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut s = Session::new(&model, &mut arena).unwrap();
    let g = model.graph_index(Role::Decoder).unwrap();
    match run_graph(&mut s, g, u32::MAX, 1) {
        Err(Error::TokenId { id, .. }) => assert_eq!(id, u32::MAX),
        other => panic!("decoder token 2^32-1: {:?}", other.map(|_| ())),
    }
    run_graph(&mut s, g, 0, 2).unwrap();
}

#[test]
fn ops_that_leave_their_operands_are_refused() {
    let art = seed("vision_f32_patch.vlmq");
    let p = art.plan(role::IMAGE_ENCODER);
    let (_, op) = art.vision();
    let sealed = |f: &dyn Fn(&mut Art)| art.edited(f);
    // The first op is the patch embedding: opcode, input, channels, height, width,
    // patch, weights (5), add, out (5).
    assert_eq!(art.u32(op), names::opcode::PATCH_EMBED);
    let word = |w: usize| op + 4 * w;
    let a = sealed(&|a| a.set_u32(word(0), 99));
    expect(
        &a,
        FormatError::BadField { field: "opcode" },
        "unknown opcode",
    );
    let input = art.u32(word(1));
    let out = art.u32(word(12));
    for (what, w, v) in [
        ("output past its buffer", 12 + 2, 5),
        ("output offset", 12 + 1, 1),
        ("output buffer", 12, 999),
        ("output rows overlap", 12 + 4, 4),
        ("empty output (no columns)", 12 + 3, 0),
        ("empty output (no rows)", 12 + 2, 0),
        ("patch", 5, 3),
        ("patch 0", 5, 0),
        ("channels", 2, 2),
        ("input not an input port", 1, out),
        ("input buffer missing", 1, 999),
        ("output over its input", 12, input),
        ("weights tensor", 7, 999),
        ("weights tensor of another shape", 7, 1),
        ("weights kind int8 without scales", 6, 1),
        ("weights kind", 6, 4),
        ("added table", 11, 0),
    ] {
        let a = sealed(&|a| a.set_u32(word(w), v));
        if w == 6 && v == 4 {
            expect(
                &a,
                FormatError::BadField {
                    field: "weights kind",
                },
                what,
            );
        } else {
            bad_op(&a, what);
        }
    }

    // No channels: an empty image whatever its height and width, so the patch grid
    // (height/patch · width/patch) is not bounded by the input: its product overflows a
    // 32-bit usize, where the reader once panicked (debug) or wrapped (release). In
    // version 2 an input port cannot be empty (below), so the op's own size check
    // refuses it first; the grid's checked product stays behind it.
    let a = sealed(&|a| {
        for (w, v) in [(2, 0), (3, u32::MAX), (4, u32::MAX), (5, 1)] {
            a.set_u32(word(w), v);
        }
    });
    bad_op(&a, "no channels, a 2^32 × 2^32 grid");
    // An image with no rows and one 2^32-pixel-wide patch column: an empty grid, and
    // c·p·p passes u64. An empty output window, once accepted, let it through to that
    // product.
    let a = sealed(&|a| {
        for (w, v) in [(3, 0), (4, u32::MAX), (5, u32::MAX), (12 + 2, 0)] {
            a.set_u32(word(w), v);
        }
    });
    bad_op(&a, "2^32-pixel patches over an empty grid");
    // The empty image those needed: an input port (and buffer) of no elements.
    let a = sealed(&|a| {
        a.set_u32(p.port(0) + 4 * 5, 0);
        a.set_u32(p.buffer(input) + 4, 0);
    });
    expect(
        &a,
        p.bad("port kind or window is invalid"),
        "an empty image input",
    );
}

/// An empty window (no columns) spans no elements, so it once fitted any buffer with any
/// row count, and the in-place activation then indexed row r at r·stride of an empty
/// slice. The fuzzer's first find (`fuzz/regressions/empty-window-rows.vlmq`).
#[test]
fn empty_windows_are_refused() {
    let mut checked = 0;
    for (name, art) in seeds() {
        if !art
            .sections_of(section::GRAPH)
            .iter()
            .any(|&(_, off)| art.u32(off) == role::IMAGE_ENCODER)
        {
            continue;
        }
        // The seeds' vision op 6 is the in-place GELU: opcode, x (5), activation.
        let op = art.vision_op(6);
        assert_eq!(
            art.u32(op),
            names::opcode::ACTIVATE,
            "{name}: op 6 is not the activation"
        );
        for (rows, cols) in [(4100, 0), (0, 16), (0, 0)] {
            let mut a = art.clone();
            a.set_u32(op + 4 * 3, rows);
            a.set_u32(op + 4 * 4, cols);
            bad_op(&a.resealed(), &format!("{name}: {rows} × {cols} window"));
        }
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} seeds with an image encoder");
}

/// Byte flips and interesting words at random places, checksums recomputed, never panic.
#[test]
fn random_corruption_never_panics() {
    let seeds = seeds();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let interesting = [
        0,
        1,
        2,
        3,
        4,
        63,
        64,
        65,
        255,
        1 << 16,
        1 << 24,
        i32::MAX as u32,
        u32::MAX,
    ];
    let (mut loaded, mut cases, mut ran) = (0, 0, 0);
    for _ in 0..4000 {
        let (_, seed) = &seeds[next() as usize % seeds.len()];
        let mut a = seed.clone();
        for _ in 0..1 + next() % 3 {
            let r = next();
            if r % 2 == 0 {
                let at = (next() as usize % a.len) & !3;
                a.set_u32(at, interesting[(r >> 8) as usize % interesting.len()]);
            } else {
                let at = next() as usize % a.len;
                a.bytes_mut()[at] ^= 1 << ((r >> 8) % 8);
            }
        }
        a.reseal();
        cases += 1;
        if let Ok(model) = a.load() {
            loaded += 1;
            ran += run(&model).is_ok() as usize;
        }
    }
    // Most flips land in weights and names, which load: the executor saw many files.
    assert!(
        loaded > cases / 10,
        "only {loaded} of {cases} corrupted files loaded"
    );
    assert!(ran > loaded / 2, "only {ran} of {loaded} loaded files ran");
}

#[test]
fn fuzzer_regressions_do_not_panic() {
    let regressions = files("regressions");
    assert!(!regressions.is_empty());
    for (name, bytes) in regressions {
        let art = Art::new(&bytes);
        survive(&art);
        let sealed = art.resealed();
        survive(&sealed);
        // Each one was a plan the reader accepted and the executor could not run (those
        // from before version 2 are now refused by their version).
        assert!(sealed.load().is_err(), "{name} loads again");
    }
}

/// Ops straight from a file reach `scratch_bytes` and `macs` before (or without) being
/// validated; absurd sizes must saturate, not wrap or panic.
#[test]
fn op_sizes_saturate() {
    let huge = Mat {
        buf: 0,
        offset: u32::MAX,
        rows: u32::MAX,
        cols: u32::MAX,
        stride: u32::MAX,
    };
    let i8w = Weights::I8 {
        w: 0,
        w_scale: 0,
        x_scale: 1.0,
        x_zero: 0,
        narrow: false,
        narrow_x: false,
    };
    let attention = Attention {
        q: Query::Mat(huge),
        k: huge,
        v: huge,
        heads: u32::MAX,
        head_dim: u32::MAX,
        scale: 1.0,
        precision: Precision::Bf16,
        mask: Mask::None,
        past: None,
        out: huge,
    };
    let ops = [
        Op::PatchEmbed(PatchEmbed {
            input: 0,
            channels: u32::MAX,
            height: u32::MAX,
            width: u32::MAX,
            patch: u32::MAX,
            weights: i8w,
            add: 0,
            out: huge,
        }),
        Op::Linear(Linear {
            x: huge,
            weights: i8w,
            bias: None,
            act: Activation::GeluErf,
            out: huge,
        }),
        Op::Attention(attention),
        Op::Attention(Attention {
            precision: Precision::F32,
            mask: Mask::Causal,
            past: Some(u32::MAX),
            ..attention
        }),
    ];
    let m = u32::MAX as u128;
    // The bytes each op's scratch holds, in exact arithmetic.
    let exact = [m.pow(4).saturating_mul(4), m * m, 4 * m, 4 * m];
    for (op, exact) in ops.iter().zip(exact) {
        let got = op.scratch_bytes() as u128;
        assert!(got >= exact.min(usize::MAX as u128), "{op:?}: {got}");
        for threads in [2, 64, usize::MAX] {
            let more = op.scratch_bytes_for_threads(threads) as u128;
            assert!(more >= got, "{op:?} on {threads} threads: {more} < {got}");
        }
        assert_eq!(op.macs(), u64::MAX, "{op:?}");
    }
    // The decoder's own ops need no scratch and do no multiplications, whatever their
    // sizes.
    let small = [
        Op::Embedding(Embedding {
            ids: u32::MAX,
            table: u32::MAX,
            // u32::MAX is "absent" (names::NONE): the largest operand present is one less.
            table_scale: Some(u32::MAX - 1),
            add: u32::MAX,
            position: Some(u32::MAX - 1),
            out: huge,
        }),
        Op::CacheAppend(CacheAppend {
            x: huge,
            position: u32::MAX,
            cache: huge,
        }),
        Op::Advance(Advance {
            position: u32::MAX,
            by: u32::MAX,
        }),
    ];
    for op in small {
        assert_eq!(op.scratch_bytes_for_threads(usize::MAX), 0, "{op:?}");
        assert_eq!(op.macs(), 0, "{op:?}");
        // And their encoding round-trips, huge operands included.
        assert_eq!(
            Op::decode(op.encode().as_slice()),
            Ok((op, op.encode().as_slice().len()))
        );
    }
}

/// An int8 cache is an i8 state whose rows hold whole heads and their scales; its
/// attention reads keys and values of one type, in fp32. Anything else is refused at
/// load, before a run could read scales from values or values past a row.
#[test]
fn int8_cache_operands_are_checked() {
    let art = seed("decoder_i8kv.vlmq");
    let p = art.plan(role::DECODER);
    let ops = art.ops(&p);
    let (append_at, append) = ops
        .iter()
        .find_map(|&(at, op)| match op {
            Op::CacheAppendI8(c) => Some((at, c)),
            _ => None,
        })
        .expect("an int8 cache append");
    let (attn_at, attn) = ops
        .iter()
        .find_map(|&(at, op)| match op {
            Op::Attention(a) => Some((at, a)),
            _ => None,
        })
        .expect("an attention");
    let with = |at: usize, op: Op| art.edited(|a| a.set_op(at, op));
    let append_with = |c: CacheAppendI8| with(append_at, Op::CacheAppendI8(c));
    let attn_with = |a: Attention| with(attn_at, Op::Attention(a));

    // The cache in the position counter: a state, but u32.
    let a = append_with(CacheAppendI8 {
        cache: Mat::dense(append.position, 1, 1),
        ..append
    });
    bad_op(&a, "int8 cache in the position");
    // Heads of another size: the scales would land among the values.
    for head_dim in [0, 2, 3, 8] {
        let a = append_with(CacheAppendI8 { head_dim, ..append });
        bad_op_why(
            &a,
            "appended rows do not match the int8 cache's row",
            &format!("heads of {head_dim}"),
        );
    }
    // A row one word short of its heads and scales.
    let cols = append.cache.cols - 1;
    let a = append_with(CacheAppendI8 {
        cache: Mat {
            cols,
            stride: cols,
            ..append.cache
        },
        ..append
    });
    bad_op_why(
        &a,
        "appended rows do not match the int8 cache's row",
        "a short int8 row",
    );
    // bf16 over int8 keys and values.
    let a = attn_with(Attention {
        precision: Precision::Bf16,
        ..attn
    });
    bad_op_why(
        &a,
        "attention over an int8 cache is not fp32",
        "bf16 over int8",
    );
    // Values in an f32 buffer beside int8 keys (the attention's own input, so it fits).
    let a = attn_with(Attention {
        v: Mat {
            buf: attn.out.buf,
            offset: 0,
            rows: 1,
            cols: attn.k.cols,
            stride: attn.k.cols,
        },
        k: Mat { rows: 1, ..attn.k },
        ..attn
    });
    bad_op(&a, "int8 keys beside f32 values");
    // And it runs: a few steps to finite logits.
    let model = art.load().unwrap();
    let g = model.graph_index(Role::Decoder).unwrap();
    let mut arena = vec![0u8; model.arena_size()];
    let mut s = Session::new(&model, &mut arena).unwrap();
    for step in 0..3 {
        let logits = run_graph(&mut s, g, step, 1).unwrap();
        assert!(
            logits.iter().flatten().all(|v| v.is_finite()),
            "step {step}"
        );
    }
}
