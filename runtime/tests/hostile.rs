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
    crc32, section, FormatError, HEADER_SIZE, MAX_SECTIONS, SECTION_ENTRY_SIZE, TENSOR_ENTRY_SIZE,
};
use vlm_runtime::model::{Tower, TOWER_HEADER_WORDS};
use vlm_runtime::ops::{Activation, Mat, Op, Precision, Query, Weights};
use vlm_runtime::{Model, Session, TowerKind};

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
    assert!(seeds.len() >= 5, "the seed corpus is missing");
    seeds
}

/// Artifact bytes in 4-byte-aligned memory (the reader refuses anything else), with the
/// little edits the tests make.
#[derive(Clone)]
struct Art {
    words: Vec<u32>,
    len: usize,
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

    /// (table index, byte offset) of the first section of `kind` (and, for towers,
    /// whose first word is `tower`).
    fn section(&self, kind: u32, tower: Option<u32>) -> (usize, usize) {
        (0..self.u32(24) as usize)
            .map(|i| (i, self.u64(Self::entry(i) + 8) as usize))
            .find(|&(i, off)| {
                self.u32(Self::entry(i)) == kind && tower.is_none_or(|t| self.u32(off) == t)
            })
            .unwrap_or_else(|| panic!("no section of kind {kind}"))
    }

    /// Byte offset of tensor `i`'s table entry.
    fn tensor(&self, i: usize) -> usize {
        self.section(section::TENSORS, None).1 + 16 + i * TENSOR_ENTRY_SIZE
    }

    /// Byte offset of the vision tower's word `w`, and of its first op.
    fn vision(&self) -> (usize, usize) {
        let (_, t) = self.section(section::TOWER, Some(1));
        let (buffers, ops) = (self.u32(t + 32) as usize, self.u32(t + 36) as usize);
        (t, t + 4 * (TOWER_HEADER_WORDS + 2 * buffers + 2 * ops))
    }

    /// Byte offset of the vision tower's op `index`.
    fn vision_op(&self, index: usize) -> usize {
        let (t, first) = self.vision();
        let end = t + self.u64(Self::entry(self.section(section::TOWER, Some(1)).0) + 16) as usize;
        let words: &[u32] = bytemuck::cast_slice(&self.bytes()[first..end]);
        let mut at = 0;
        for _ in 0..index {
            at += Op::decode(&words[at..]).unwrap().1;
        }
        first + 4 * at
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
}

/// Runs every tower of a model that loaded, as the fuzz target does; `Ok` only if every
/// tower ran. Plans too large to run quickly in a debug build are skipped (`Ok`).
fn run(model: &Model) -> Result<(), vlm_runtime::Error> {
    const MAX_ARENA: usize = 1 << 20;
    const MAX_WORK: u64 = 1 << 20;
    if model.arena_size() > MAX_ARENA {
        return Ok(());
    }
    let mut arena = vec![0u8; model.arena_size()];
    let mut session = Session::new(model, &mut arena)?;
    let mut out = vec![0.0f32; model.meta.embed_dim];
    let small = |t: &&Tower| t.macs(model) <= MAX_WORK;
    if let Some(t) = model.tower(TowerKind::Vision).filter(small) {
        session.encode_image(&vec![0.0; t.input_len], &mut out)?;
    }
    if let Some(t) = model.tower(TowerKind::Text).filter(small) {
        session.encode_text(&vec![0; t.input_len], &mut out)?;
    }
    Ok(())
}

/// Loads and, if that succeeds, runs; panics are the only failure.
fn survive(art: &Art) {
    if let Ok(model) = art.load() {
        let _ = run(&model);
    }
}

fn expect(art: &Art, want: FormatError, what: &str) {
    match art.load() {
        Err(e) => assert_eq!(e, want, "{what}"),
        Ok(_) => panic!("{what}: loaded; expected {want:?}"),
    }
}

fn bad_op(art: &Art, what: &str) {
    match art.load() {
        Err(FormatError::BadOp { .. }) => {}
        other => panic!("{what}: {:?}; expected a BadOp", other.map(|_| ())),
    }
}

#[test]
fn every_seed_loads_and_runs() {
    for (name, art) in seeds() {
        let model = art.load().unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(model.tower(TowerKind::Vision).is_some() || model.tower(TowerKind::Text).is_some());
        run(&model).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Between them the seeds hold every optional section.
    let full = seeds()
        .into_iter()
        .find(|(n, _)| n == "full.vlmq")
        .unwrap()
        .1;
    let model = full.load().unwrap();
    assert!(model
        .labels()
        .is_some_and(|l| l.count == 2 && l.name(1) == "a dog"));
    assert!(model.tokenizer_json().is_some() && model.config_json().is_some());
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
        let a = sealed(&|a| a.set_u32(8, 2));
        let want = FormatError::Version {
            found: 2,
            supported: 1,
        };
        expect(&a, want, &format!("{name}: version"));

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
        let (i, _) = art.section(section::DATA, None);
        let kind = section::DATA;
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
            expect(&a, bounds, &format!("{name}: {what}"));
        }

        // Required and duplicate sections.
        let (meta, _) = art.section(section::META, None);
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
        let towers = (0..art.u32(24) as usize)
            .filter(|&i| art.u32(Art::entry(i)) == section::TOWER)
            .collect::<Vec<_>>();
        let a = sealed(&|a| {
            for &t in &towers {
                a.set_u32(Art::entry(t), 99);
            }
        });
        let want = FormatError::MissingSection { what: "TOWER" };
        expect(&a, want, &format!("{name}: no tower"));

        // META.
        let (_, m) = art.section(section::META, None);
        let bad = |field| FormatError::BadField { field };
        let a = sealed(&|a| a.set_u32(m, 0));
        expect(&a, bad("embed_dim"), &format!("{name}: embed_dim 0"));
        let a = sealed(&|a| a.set_u32(m + 6 * 4, 4));
        expect(&a, bad("resample"), &format!("{name}: resample"));
        let a = sealed(&|a| a.set_u32(m + 12 * 4, 0));
        expect(&a, bad("image normalisation"), &format!("{name}: std 0"));
        let a = sealed(&|a| a.set_u32(m + 4, f32::NAN.to_bits()));
        expect(
            &a,
            bad("logit scale or bias"),
            &format!("{name}: NaN scale"),
        );
    }
}

#[test]
fn absurd_shapes_are_refused() {
    for (name, art) in seeds() {
        let sealed = |f: &dyn Fn(&mut Art)| {
            let mut a = art.clone();
            f(&mut a);
            a.resealed()
        };
        let (_, tensors) = art.section(section::TENSORS, None);
        let t0 = art.tensor(0);
        let tensor = |why| FormatError::BadTensor { index: 0, why };
        for (what, at, v, why) in [
            ("dtype", 0, 99, "unknown element type"),
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

        // Tower plan.
        let (_, tw) = art.section(section::TOWER, None);
        let too_large = FormatError::TooLarge {
            what: "tower buffers or ops",
            limit: 1 << 16,
        };
        let truncated = FormatError::Truncated { what: "tower" };
        let field = |field| FormatError::BadField { field };
        for (what, word, v, want) in [
            ("buffer count", 8, (1 << 14) + 1, too_large),
            ("op count", 9, (1 << 16) + 1, too_large),
            ("op words", 11, u32::MAX, truncated),
            ("buffer count", 8, 1 << 14, truncated),
            ("arena", 10, 0, field("buffer placement")),
            ("kind", 0, 7, field("tower kind")),
            ("input buffer", 2, 1 << 14, field("tower input buffer")),
            ("output columns", 6, 9, field("tower output")),
            ("output rows", 5, 2, field("tower output")),
        ] {
            let a = sealed(&|a| a.set_u32(tw + 4 * word, v));
            expect(&a, want, &format!("{name}: tower {what}"));
        }
        let a = sealed(&|a| a.set_u32(tw + 4 * 16, 4));
        let want = FormatError::BadField {
            field: "buffer placement",
        };
        expect(&a, want, &format!("{name}: misaligned buffer"));
    }
}

#[test]
fn ops_that_leave_their_operands_are_refused() {
    let art = seeds()
        .into_iter()
        .find(|(n, _)| n == "vision_f32_patch.vlmq")
        .unwrap()
        .1;
    let (tw, op) = art.vision();
    let sealed = |f: &dyn Fn(&mut Art)| {
        let mut a = art.clone();
        f(&mut a);
        a.resealed()
    };
    // The first op is the patch embedding: opcode, input, channels, height, width,
    // patch, weights (5), add, out (5).
    assert_eq!(art.u32(op), 1);
    let word = |w: usize| op + 4 * w;
    let a = sealed(&|a| a.set_u32(word(0), 99));
    expect(
        &a,
        FormatError::BadField { field: "opcode" },
        "unknown opcode",
    );
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
        ("weights tensor", 7, 999),
        ("weights tensor of another shape", 7, 1),
        ("weights kind int8 without scales", 6, 1),
        ("weights kind", 6, 2),
        ("added table", 11, 0),
    ] {
        let a = sealed(&|a| a.set_u32(word(w), v));
        if w == 6 && v == 2 {
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
    // 32-bit usize, where the reader once panicked (debug) or wrapped (release).
    let a = sealed(&|a| {
        let (_, m) = a.section(section::META, None);
        a.set_u32(m + 12, 0);
        a.set_u32(tw + 4, 0);
        a.set_u32(tw + 4 * (TOWER_HEADER_WORDS + 1), 0);
        for (w, v) in [(2, 0), (3, u32::MAX), (4, u32::MAX), (5, 1)] {
            a.set_u32(word(w), v);
        }
    });
    bad_op(&a, "no channels, a 2^32 × 2^32 grid");
    // An image with no rows and one 2^32-pixel-wide patch column: an empty grid, and
    // c·p·p passes u64. An empty output window, once accepted, let it through to that
    // product.
    let a = sealed(&|a| {
        let (_, m) = a.section(section::META, None);
        a.set_u32(m + 16, 0);
        a.set_u32(tw + 4, 0);
        a.set_u32(tw + 4 * (TOWER_HEADER_WORDS + 1), 0);
        for (w, v) in [(3, 0), (4, u32::MAX), (5, u32::MAX), (12 + 2, 0)] {
            a.set_u32(word(w), v);
        }
    });
    bad_op(&a, "2^32-pixel patches over an empty grid");
}

/// An empty window (no columns) spans no elements, so it once fitted any buffer with any
/// row count, and the in-place activation then indexed row r at r·stride of an empty
/// slice. The fuzzer's first find (`fuzz/regressions/empty-window-rows.vlmq`).
#[test]
fn empty_windows_are_refused() {
    for (name, art) in seeds() {
        if !name.starts_with("vision") {
            continue;
        }
        // The seeds' vision op 6 is the in-place GELU: opcode, x (5), activation.
        let op = art.vision_op(6);
        assert_eq!(art.u32(op), 7, "{name}: op 6 is not the activation");
        for (rows, cols) in [(4100, 0), (0, 16), (0, 0)] {
            let mut a = art.clone();
            a.set_u32(op + 4 * 3, rows);
            a.set_u32(op + 4 * 4, cols);
            bad_op(&a.resealed(), &format!("{name}: {rows} × {cols} window"));
        }
    }
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
    let (mut loaded, mut cases) = (0, 0);
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
            let _ = run(&model);
        }
    }
    // Most flips land in weights and names, which load: the executor saw many files.
    assert!(
        loaded > cases / 10,
        "only {loaded} of {cases} corrupted files loaded"
    );
}

#[test]
fn fuzzer_regressions_do_not_panic() {
    for (name, bytes) in files("regressions") {
        let art = Art::new(&bytes);
        survive(&art);
        let sealed = art.resealed();
        survive(&sealed);
        // Each one was a plan the reader accepted and the executor could not run.
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
    };
    let ops = [
        Op::PatchEmbed {
            input: 0,
            channels: u32::MAX,
            height: u32::MAX,
            width: u32::MAX,
            patch: u32::MAX,
            weights: i8w,
            add: 0,
            out: huge,
        },
        Op::Linear {
            x: huge,
            weights: i8w,
            bias: None,
            act: Activation::GeluErf,
            out: huge,
        },
        Op::Attention {
            q: Query::Mat(huge),
            k: huge,
            v: huge,
            heads: u32::MAX,
            head_dim: u32::MAX,
            scale: 1.0,
            precision: Precision::Bf16,
            out: huge,
        },
    ];
    let m = u32::MAX as u128;
    // The bytes each op's scratch holds, in exact arithmetic.
    let exact = [m.pow(4).saturating_mul(4), m * m, 4 * m];
    for (op, exact) in ops.iter().zip(exact) {
        let got = vlm_runtime::exec::scratch_bytes(op) as u128;
        assert!(got >= exact.min(usize::MAX as u128), "{op:?}: {got}");
        assert_eq!(op.macs(), u64::MAX, "{op:?}");
    }
}
