//! The firmware examples on every Cortex-M board profile: each is built for the board
//! (`--features firmware`), run in `qemu-system-arm` with semihosting, and its defmt log
//! decoded. Checked: the exit code; the label of every shipped frame; the probability's
//! and the embedding's bits equal to the same classifier on this host (the artifact's
//! int8 products and bf16 attention fix every operation, so a Cortex-M computes the
//! x86 bits; `scripts/lite-check.sh` does the same for aarch64 and armv7); the LED pin
//! set on exactly the flagged frames; a camera fault (asked for on the command line)
//! ending the run non-zero; and the
//! int8 kernel battery run on the core itself.
//!
//! Needs `qemu-system-arm` and the boards' Rust targets: without them the tests say so
//! and pass, except under CI (`CI` set) or `cargo xtask test --board` (`VLM_REQUIRE_QEMU`
//! set), where a missing tool fails them.

use std::path::{Path, PathBuf};
use std::process::Command;

use vlm_firmware::classify::Classifier;
use vlm_firmware::policy::{Moderator, Policy, Rule};
use vlm_firmware::{ppm_pixels, FRAMES};

#[derive(serde::Deserialize)]
struct Board {
    name: String,
    kind: String,
    triple: String,
    target_cpu: String,
    qemu: Vec<String>,
    clock_hz: u64,
    /// The kernel set the runtime must pick there.
    kernels: String,
    /// The runtime's features the firmware turns on for the core.
    #[serde(default)]
    runtime_features: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn board(name: &str) -> Board {
    let path = root().join(format!("targets/boards/{name}.toml"));
    let b: Board = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(b.kind, "mcu");
    b
}

/// Whether the tools are here; a missing one fails under CI and skips elsewhere.
fn tools_present(b: &Board) -> bool {
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
    };
    let mut missing = Vec::new();
    if !on_path(&b.qemu[0]) {
        missing.push(format!("{} (apt-get install qemu-system-arm)", b.qemu[0]));
    }
    let sysroot = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", &b.triple])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    if !sysroot.is_some_and(|d| has_core(&d)) {
        missing.push(format!("the Rust target (rustup target add {})", b.triple));
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("board {}: missing {}", b.name, missing.join(", "));
    assert!(
        std::env::var_os("CI").is_none() && std::env::var_os("VLM_REQUIRE_QEMU").is_none(),
        "{msg}"
    );
    eprintln!("SKIPPED: {msg}");
    false
}

fn has_core(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut d| {
        d.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libcore-")))
    })
}

/// Builds the board's firmware binaries, once per test run and board, and returns a
/// folder holding copies of them that no later build touches. The lock makes the
/// first test of a board build while the others wait.
fn build(b: &Board) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let target_dir = root().join("target/firmware");
    let kept = target_dir.join("qemu-tests").join(&b.name);
    if built.contains(&b.name) {
        return kept;
    }
    let mut features = String::from("firmware");
    for f in &b.runtime_features {
        features += &format!(",vlm-runtime/{f}");
    }
    let status = Command::new(env!("CARGO"))
        .current_dir(root())
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTFLAGS")
        // Compiled for the core, as `cargo xtask build --board` does: the Armv8-M DSP
        // instructions are accepted only with the core named.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("-Ctarget-cpu={}", b.target_cpu),
        )
        .args(["build", "--release", "-p", "vlm-firmware", "--bins"])
        .args(["--features", &features, "--target", &b.triple])
        .status()
        .expect("cargo runs");
    assert!(status.success(), "building the firmware for {}", b.name);
    std::fs::create_dir_all(&kept).unwrap();
    for bin in ["mcu-zero-shot", "mcu-moderation", "mcu-kernel-battery"] {
        let from = target_dir.join(&b.triple).join("release").join(bin);
        std::fs::copy(from, kept.join(bin)).unwrap();
    }
    built.push(b.name.clone());
    kept
}

/// Runs `elf` on the board's QEMU (one instruction per virtual nanosecond, so the
/// firmware's SysTick counts instructions); returns the exit code and the decoded log.
fn run(b: &Board, elf: &Path) -> (i32, Vec<String>) {
    run_with(b, elf, "")
}

/// [`run`] with `append` as the program's command line (semihosting).
fn run_with(b: &Board, elf: &Path, append: &str) -> (i32, Vec<String>) {
    let out = Command::new(&b.qemu[0])
        .args(&b.qemu[1..])
        .args(["-nographic", "-monitor", "none", "-serial", "none"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0"])
        .args(["-append", append])
        .arg("-kernel")
        .arg(elf)
        .output()
        .expect("qemu runs");
    let elf_bytes = std::fs::read(elf).unwrap();
    let table = defmt_decoder::Table::parse(&elf_bytes)
        .unwrap()
        .expect("the firmware has defmt data");
    let mut decoder = table.new_stream_decoder();
    decoder.received(&out.stdout);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => lines.push(frame.display_message().to_string()),
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => panic!("a malformed defmt frame"),
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "qemu: {stderr}");
    (out.status.code().unwrap_or(-1), lines)
}

/// One `frame N: ...` line's fields.
#[derive(Debug)]
struct FrameLine {
    index: usize,
    label: String,
    bits: u32,
    embedding: u64,
    pin: Option<bool>,
    ticks: u64,
}

fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split(' ').next()
}

fn frames(lines: &[String]) -> Vec<FrameLine> {
    lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("frame ")?;
            let (index, rest) = rest.split_once(": ")?;
            let label = rest.split(" p=").next()?.to_string();
            let hex = |k| field(l, k).map(|v| v.trim_start_matches("0x").to_string());
            Some(FrameLine {
                index: index.parse().ok()?,
                label,
                bits: u32::from_str_radix(&hex("bits")?, 16).ok()?,
                embedding: u64::from_str_radix(&hex("embedding")?, 16).ok()?,
                pin: field(l, "pin").map(|v| v == "true"),
                ticks: field(l, "ticks")?.parse().ok()?,
            })
        })
        .collect()
}

/// The artifact the firmware embeds, at the reader's alignment.
fn artifact() -> Vec<u8> {
    std::fs::read(root().join("models/demo-mcu.vlmq")).unwrap()
}

/// What this host's classifier computes for `rgb`, with the kernels it picks here.
fn host_scores(c: &Classifier, rgb: &[u8]) -> vlm_firmware::classify::Scores {
    let mut pixels = vec![0.0f32; rgb.len()];
    let mut arena = vec![0u8; c.arena_size()];
    let mut embedding = vec![0.0f32; vlm_firmware::classify::MAX_DIM];
    c.classify(rgb, &mut pixels, &mut arena, &mut embedding)
        .unwrap()
}

fn with_classifier<T>(f: impl FnOnce(&Classifier) -> T) -> T {
    let bytes = artifact();
    let mut buf = vec![0u8; bytes.len() + 64];
    let at = buf.as_ptr().align_offset(64);
    buf[at..at + bytes.len()].copy_from_slice(&bytes);
    let c = Classifier::new(&buf[at..at + bytes.len()]).unwrap();
    f(&c)
}

fn pixels_of(frame: usize) -> &'static [u8] {
    ppm_pixels(FRAMES[frame].1).unwrap().0
}

fn report_counts(b: &Board, example: &str, rows: &[FrameLine]) {
    let ticks: Vec<u64> = rows.iter().map(|r| r.ticks).collect();
    let mean = ticks.iter().sum::<u64>() / ticks.len().max(1) as u64;
    eprintln!(
        "{} {example}: {} frames, {} SysTick ticks per frame at {} Hz = {:.1} M instructions per frame under -icount shift=0",
        b.name,
        rows.len(),
        mean,
        b.clock_hz,
        mean as f64 * 1e9 / b.clock_hz as f64 / 1e6
    );
}

fn zero_shot(name: &str) {
    let b = board(name);
    if !tools_present(&b) {
        return;
    }
    let dir = build(&b);
    let (code, lines) = run(&b, &dir.join("mcu-zero-shot"));
    assert_eq!(code, 0, "{}: {lines:#?}", b.name);
    assert!(
        lines[0].starts_with(&format!("board {}:", b.name)),
        "{lines:#?}"
    );
    let rows = frames(&lines);
    assert_eq!(rows.len(), FRAMES.len(), "{lines:#?}");
    with_classifier(|c| {
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(row.index, i);
            assert_eq!(
                row.label,
                format!("a {}", FRAMES[i].0),
                "{}: frame {i}",
                b.name
            );
            let host = host_scores(c, pixels_of(i));
            assert_eq!(c.labels().name(host.best), row.label);
            assert_eq!(
                (row.bits, row.embedding),
                (host.probability(host.best).to_bits(), host.embedding_hash),
                "{}: frame {i}: the probability or the embedding differs from this host's bits",
                b.name
            );
        }
    });
    assert_eq!(lines.last().map(String::as_str), Some("done: 8 frames"));
    report_counts(&b, "mcu-zero-shot", &rows);
}

fn moderation(name: &str) {
    let b = board(name);
    if !tools_present(&b) {
        return;
    }
    let dir = build(&b);
    let (code, lines) = run(&b, &dir.join("mcu-moderation"));
    assert_eq!(code, 0, "{}: {lines:#?}", b.name);
    assert!(
        lines[0].starts_with(&format!("board {}: kernels {},", b.name, b.kernels)),
        "{lines:#?}"
    );
    let rows = frames(&lines);
    // The shipped sequence (mcu-moderation.rs): star frames at 1, 3, 4, 5 and 7. One
    // star does not flag, two in a row do (at 4); one quiet frame (6) keeps the flag, a
    // star resets the quiet count, two quiet frames (8, 9) clear it at 9.
    let pins: Vec<bool> = rows.iter().map(|r| r.pin.expect("pin state")).collect();
    let flagged: Vec<usize> = (0..pins.len()).filter(|&i| pins[i]).collect();
    assert_eq!(flagged, [4, 5, 6, 7, 8], "{}: {lines:#?}", b.name);
    assert!(lines
        .iter()
        .any(|l| l.starts_with("event frame 4: flagged")));
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("event frame 9: cleared")),
        "{lines:#?}"
    );
    assert_eq!(lines.iter().filter(|l| l.starts_with("event ")).count(), 2);
    // The same policy over this host's probabilities gives the same pin, frame by frame,
    // and the probabilities are the same bits.
    const SEQUENCE: [usize; 10] = [0, 4, 0, 4, 6, 7, 1, 4, 2, 5];
    with_classifier(|c| {
        let star = (0..c.labels().count)
            .find(|&i| c.labels().name(i) == "a blue star")
            .unwrap();
        let mut m: Moderator<1, 4> = Moderator::new(Policy {
            rules: [Rule {
                label: star,
                flag_at: 0.5,
                clear_below: 0.3,
            }],
            hits_to_flag: 2,
            quiet_to_clear: 2,
        });
        for (row, &frame) in rows.iter().zip(&SEQUENCE) {
            let s = host_scores(c, pixels_of(frame));
            m.observe(&s.probs[..s.labels]);
            assert_eq!(
                row.bits,
                s.probability(star).to_bits(),
                "{}: frame {}",
                b.name,
                row.index
            );
            assert_eq!(row.embedding, s.embedding_hash);
            assert_eq!(row.pin, Some(m.flagged()));
        }
    });
    report_counts(&b, "mcu-moderation", &rows);
}

fn forced_failure(name: &str) {
    let b = board(name);
    if !tools_present(&b) {
        return;
    }
    let dir = build(&b);
    for example in ["mcu-zero-shot", "mcu-moderation"] {
        let (code, lines) = run_with(&b, &dir.join(example), "forced-failure");
        assert_eq!(
            code, 1,
            "{} {example}: a camera fault must end the run with 1: {lines:#?}",
            b.name
        );
        assert!(
            lines.iter().any(|l| l.starts_with("frame 2: camera: Size")),
            "{} {example}: the camera error is named: {lines:#?}",
            b.name
        );
        assert!(!lines.iter().any(|l| l.starts_with("done")));
    }
}

/// The kernel battery on the core: every int8 GEMM the runtime runs there against the
/// scalar reference, bit for bit.
fn kernel_battery(name: &str) {
    let b = board(name);
    if !tools_present(&b) {
        return;
    }
    let dir = build(&b);
    let (code, lines) = run(&b, &dir.join("mcu-kernel-battery"));
    assert_eq!(code, 0, "{}: {lines:#?}", b.name);
    assert!(
        lines.contains(&format!("checking {} against scalar", b.kernels)),
        "{lines:#?}"
    );
    let summary = lines.last().expect("a summary");
    assert!(
        summary.starts_with("battery: 594 cases,") && summary.ends_with(" 0 mismatches"),
        "{summary}"
    );
    eprintln!("{} {summary}", b.name);
}

#[test]
fn cortex_m7_kernel_battery() {
    kernel_battery("cortex-m7");
}

#[test]
fn cortex_m55_kernel_battery() {
    kernel_battery("cortex-m55");
}

#[test]
fn cortex_m7_zero_shot() {
    zero_shot("cortex-m7");
}

#[test]
fn cortex_m55_zero_shot() {
    zero_shot("cortex-m55");
}

#[test]
fn cortex_m7_moderation() {
    moderation("cortex-m7");
}

#[test]
fn cortex_m55_moderation() {
    moderation("cortex-m55");
}

#[test]
fn cortex_m7_forced_failure() {
    forced_failure("cortex-m7");
}

#[test]
fn cortex_m55_forced_failure() {
    forced_failure("cortex-m55");
}
