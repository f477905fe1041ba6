//! `cargo xtask`: one command to build for a board and one to test there (under QEMU),
//! from the board profiles in `targets/boards/*.toml`.
//!
//! Profiles are data, not code, so a new board is a new file: the triple, the CPU and
//! features to compile for, the cross linker and C library, the QEMU that stands in for
//! the board, and the kernel set the runtime must pick there.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use clap::{Parser, Subcommand};
use serde::Deserialize;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build and test vlm-edge for a board")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The boards there are profiles for.
    Boards,
    /// Build the `vlm` and `vlm-lite` binaries for a board (release, tuned for its CPU).
    Build {
        #[arg(long)]
        board: String,
    },
    /// Run the runtime's tests for a board under QEMU, compiled for its CPU, and check
    /// the runtime picks the board's kernel set.
    Test {
        #[arg(long)]
        board: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Board {
    name: String,
    description: String,
    kind: Kind,
    triple: String,
    target_cpu: String,
    target_features: String,
    /// Linux boards: the cross linker and the C library it links against.
    #[serde(default)]
    linker: String,
    #[serde(default)]
    sysroot: PathBuf,
    /// Linux boards: QEMU user-mode emulator and its arguments (`-cpu ...`), before
    /// `-L sysroot`. Microcontrollers: `qemu-system-arm` with the machine and CPU.
    qemu: Vec<String>,
    /// The kernel set `Isa::detect` must choose on the board.
    kernels: String,
    /// Debian packages that provide the linker, C library and QEMU.
    apt: Vec<String>,
    /// Microcontrollers: the part the budget is taken from, the QEMU board's memory map
    /// with the part's lengths (the firmware's linker script is made from these, by
    /// `firmware-examples/mcu/build.rs`), what the firmware needs beside the model (for
    /// `vlm quantize --target`), the core clock and the LED register.
    part: Option<String>,
    flash_origin: Option<u64>,
    flash_kib: Option<u64>,
    ram_origin: Option<u64>,
    ram_kib: Option<u64>,
    boot_origin: Option<u64>,
    firmware_flash_kib: Option<u64>,
    firmware_ram_kib: Option<u64>,
    clock_hz: Option<u64>,
    led_register: Option<u64>,
    /// The runtime's cargo features the firmware turns on for this core (`arm-mve`).
    #[serde(default)]
    runtime_features: Vec<String>,
}

/// A microcontroller's memory, from its profile.
#[derive(Debug, Clone, Copy)]
struct Memory {
    flash: (u64, u64),
    ram: (u64, u64),
    boot: Option<u64>,
}

impl Board {
    fn memory(&self) -> Result<Memory> {
        let need = |v: Option<u64>, what: &str| {
            v.with_context(|| {
                format!(
                    "board {}: a microcontroller profile needs {what}",
                    self.name
                )
            })
        };
        ensure!(
            self.part.is_some(),
            "board {}: a microcontroller profile needs part",
            self.name
        );
        for (v, what) in [
            (self.firmware_flash_kib, "firmware_flash_kib"),
            (self.firmware_ram_kib, "firmware_ram_kib"),
            (self.clock_hz, "clock_hz"),
            (self.led_register, "led_register"),
        ] {
            need(v, what)?;
        }
        Ok(Memory {
            flash: (
                need(self.flash_origin, "flash_origin")?,
                need(self.flash_kib, "flash_kib")? * 1024,
            ),
            ram: (
                need(self.ram_origin, "ram_origin")?,
                need(self.ram_kib, "ram_kib")? * 1024,
            ),
            boot: self.boot_origin,
        })
    }
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
enum Kind {
    Linux,
    Mcu,
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let root = workspace_root();
    let boards = load_boards(&root.join("targets/boards"))?;
    match cli.command {
        Cmd::Boards => {
            for b in boards.values() {
                println!(
                    "{:<12} {:<31} {:<12} {:<16} {}",
                    b.name, b.triple, b.target_cpu, b.kernels, b.description
                );
            }
            Ok(())
        }
        Cmd::Build { board } => build(&root, find(&boards, &board)?),
        Cmd::Test { board } => test(&root, find(&boards, &board)?),
    }
}

fn workspace_root() -> PathBuf {
    // targets/xtask → the workspace.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask lives two levels below the workspace root")
        .to_path_buf()
}

fn load_boards(dir: &Path) -> Result<BTreeMap<String, Board>> {
    let mut boards = BTreeMap::new();
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let board: Board =
            toml::from_str(&text).with_context(|| format!("board profile {}", path.display()))?;
        let stem = path.file_stem().unwrap_or_default().to_string_lossy();
        ensure!(
            board.name == stem,
            "board profile {}: its name is {:?}, its file says {stem:?}",
            path.display(),
            board.name
        );
        match board.kind {
            Kind::Linux => ensure!(
                !board.linker.is_empty() && !board.sysroot.as_os_str().is_empty(),
                "board profile {}: a Linux board needs linker and sysroot",
                path.display()
            ),
            Kind::Mcu => {
                board
                    .memory()
                    .with_context(|| format!("board profile {}", path.display()))?;
            }
        }
        boards.insert(board.name.clone(), board);
    }
    Ok(boards)
}

fn find<'b>(boards: &'b BTreeMap<String, Board>, name: &str) -> Result<&'b Board> {
    boards.get(name).with_context(|| {
        let known: Vec<&str> = boards.keys().map(String::as_str).collect();
        format!("no board {name:?}: the boards are {}", known.join(", "))
    })
}

/// `CARGO_TARGET_<TRIPLE>_<what>`.
fn target_var(triple: &str, what: &str) -> String {
    format!(
        "CARGO_TARGET_{}_{what}",
        triple.to_uppercase().replace(['-', '.'], "_")
    )
}

/// Cargo for the board: its target, its own target folder (the board's CPU flags would
/// otherwise rebuild the host's), its linker, tuned for its CPU.
fn cargo(root: &Path, b: &Board) -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root)
        .env("CARGO_TARGET_DIR", root.join("target/boards").join(&b.name))
        .env(target_var(&b.triple, "LINKER"), &b.linker);
    let mut flags = format!("-C target-cpu={}", b.target_cpu);
    if !b.target_features.is_empty() {
        flags += &format!(" -C target-feature={}", b.target_features);
    }
    c.env("CARGO_ENCODED_RUSTFLAGS", flags.replace(' ', "\u{1f}"));
    c
}

/// Says which of the board's tools are missing, and how to get them.
fn check_tools(b: &Board) -> Result<()> {
    let mut missing = Vec::new();
    let on_path = |tool: &str| {
        std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
            .unwrap_or(false)
    };
    if b.kind == Kind::Linux && !on_path(&b.linker) {
        missing.push(format!("the linker {}", b.linker));
    }
    if b.kind == Kind::Linux && !b.sysroot.join("lib").is_dir() {
        missing.push(format!("the C library in {}", b.sysroot.display()));
    }
    if let Some(q) = b.qemu.first() {
        if !on_path(q) {
            missing.push(q.clone());
        }
    }
    ensure!(
        missing.is_empty(),
        "board {}: missing {} (apt-get install {})",
        b.name,
        missing.join(", "),
        b.apt.join(" ")
    );
    let status = Command::new("rustup")
        .args(["target", "add", &b.triple])
        .stdout(std::process::Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() => Ok(()),
        // Without rustup the toolchain may still have the target (a distribution's).
        Err(_) => Ok(()),
        Ok(s) => bail!("rustup target add {} failed ({s})", b.triple),
    }
}

fn status(mut c: Command, what: &str) -> Result<()> {
    let s = c.status().with_context(|| format!("starting {what}"))?;
    ensure!(s.success(), "{what} failed ({s})");
    Ok(())
}

fn build(root: &Path, b: &Board) -> Result<()> {
    if b.kind == Kind::Mcu {
        return build_firmware(root, b);
    }
    check_tools(b)?;
    let t = Instant::now();
    let out = root.join("target/boards").join(&b.name).join(&b.triple);
    let mut c = cargo(root, b);
    c.args(["build", "--release", "--target", &b.triple, "-p", "vlm-cli"]);
    status(c, &format!("building vlm for {}", b.name))?;
    let mut c = cargo(root, b);
    c.args([
        "build",
        "--profile",
        "release-lite",
        "--target",
        &b.triple,
        "-p",
        "vlm-lite",
    ]);
    status(c, &format!("building vlm-lite for {}", b.name))?;
    println!(
        "built for {} ({}) in {:.0} s:",
        b.name,
        b.description,
        t.elapsed().as_secs_f64()
    );
    for bin in [out.join("release/vlm"), out.join("release-lite/vlm-lite")] {
        let len = std::fs::metadata(&bin)
            .with_context(|| format!("{} was not built", bin.display()))?
            .len();
        println!(
            "  {}  {:.1} MiB",
            bin.display(),
            len as f64 / (1 << 20) as f64
        );
    }
    println!("copy them to the board (scp) with models/demo.vlmq; README.md, \"On a board\".");
    Ok(())
}

fn test(root: &Path, b: &Board) -> Result<()> {
    if b.kind == Kind::Mcu {
        return test_firmware(root, b);
    }
    check_tools(b)?;
    let runner = format!("{} -L {}", b.qemu.join(" "), b.sysroot.display());
    let t = Instant::now();
    let tests = |extra: &[&str]| {
        let mut c = cargo(root, b);
        c.env(target_var(&b.triple, "RUNNER"), &runner).args([
            "test",
            "--quiet",
            "--manifest-path",
            "runtime/Cargo.toml",
            "--target",
            &b.triple,
            "--features",
            "std",
        ]);
        c.args(extra);
        c
    };
    status(
        tests(&["--lib", "--tests"]),
        &format!("the runtime's tests under {runner}"),
    )?;
    // The battery prints `kernels on this CPU: [...] (chosen: NAME)`.
    let out = tests(&[
        "--test",
        "kernels",
        "this_cpu_runs_more_than_the_reference",
        "--",
        "--nocapture",
    ])
    .output()
    .context("running the kernel battery's CPU check")?;
    let text = String::from_utf8_lossy(&out.stderr) + String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("kernels on this CPU"))
        .context("the kernel battery did not say which kernels it chose")?;
    ensure!(
        line.contains(&format!("(chosen: {})", b.kernels)),
        "board {}: the runtime should choose {} there; {line}",
        b.name,
        b.kernels
    );
    println!(
        "{}: the runtime's tests passed under {runner} in {:.0} s; {line}",
        b.name,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The firmware examples for a microcontroller: built into the folder the QEMU tests
/// use (`target/firmware`), their flash and RAM printed against the part's.
fn build_firmware(root: &Path, b: &Board) -> Result<()> {
    check_tools(b)?;
    let mem = b.memory()?;
    let t = Instant::now();
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root)
        .env("CARGO_TARGET_DIR", root.join("target/firmware"))
        // The same flags as the firmware's QEMU tests, so both share one build.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("-Ctarget-cpu={}", b.target_cpu),
        )
        .args(["build", "--release", "-p", "vlm-firmware", "--bins"])
        .args([
            "--features",
            &firmware_features(b, "firmware"),
            "--target",
            &b.triple,
        ]);
    status(c, &format!("building the firmware for {}", b.name))?;
    println!(
        "built for {} ({}) in {:.0} s:",
        b.name,
        b.description,
        t.elapsed().as_secs_f64()
    );
    let dir = root.join("target/firmware").join(&b.triple).join("release");
    for bin in ["mcu-zero-shot", "mcu-moderation", "mcu-kernel-battery"] {
        let path = dir.join(bin);
        let elf =
            std::fs::read(&path).with_context(|| format!("{} was not built", path.display()))?;
        let (flash, ram) = flash_and_ram(&elf, &mem).with_context(|| path.display().to_string())?;
        println!(
            "  {}  flash {} KiB of {} KiB, RAM {} KiB of {} KiB (static: buffers and arena; the stack has the rest)",
            path.display(),
            flash.div_ceil(1024),
            mem.flash.1 / 1024,
            ram.div_ceil(1024),
            mem.ram.1 / 1024
        );
        ensure!(
            flash <= mem.flash.1 && ram <= mem.ram.1,
            "{bin} does not fit {}",
            b.part.as_deref().unwrap_or(&b.name)
        );
    }
    println!(
        "run one under QEMU: {} -nographic -monitor none -serial none -semihosting-config enable=on,target=native -kernel {}/mcu-zero-shot (its stdout is defmt: cargo xtask test --board {} decodes it)",
        b.qemu.join(" "),
        dir.display(),
        b.name
    );
    Ok(())
}

/// `base` (the firmware crate's features) and the board's runtime features.
fn firmware_features(b: &Board, base: &str) -> String {
    std::iter::once(base.to_string())
        .chain(
            b.runtime_features
                .iter()
                .map(|f| format!("vlm-runtime/{f}")),
        )
        .collect::<Vec<_>>()
        .join(",")
}

/// The QEMU tests of the firmware examples for one board (`firmware-examples/mcu/tests/qemu.rs`).
fn test_firmware(root: &Path, b: &Board) -> Result<()> {
    check_tools(b)?;
    let t = Instant::now();
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(root)
        .env("VLM_REQUIRE_QEMU", "1")
        .args(["test", "-p", "vlm-firmware", "--test", "qemu"])
        .arg(format!("{}_", b.name.replace('-', "_")))
        .args(["--", "--nocapture", "--test-threads", "1"]);
    status(c, &format!("the firmware tests for {}", b.name))?;
    println!(
        "{}: the firmware examples passed under QEMU in {:.0} s",
        b.name,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Bytes of flash (everything loaded: code, read-only data, initial values) and of RAM
/// (everything allocated there: data, bss) in a 32-bit little-endian ELF, by address.
fn flash_and_ram(elf: &[u8], mem: &Memory) -> Result<(u64, u64)> {
    const SHF_ALLOC: u32 = 2;
    const SHT_NOBITS: u32 = 8;
    let u16_at = |o: usize| -> Result<u64> {
        let b = elf.get(o..o + 2).context("truncated ELF")?;
        Ok(u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |o: usize| -> Result<u64> {
        let b = elf.get(o..o + 4).context("truncated ELF")?;
        Ok(u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
    };
    ensure!(
        elf.starts_with(b"\x7fELF\x01\x01"),
        "not a 32-bit little-endian ELF"
    );
    let (shoff, shentsize, shnum) = (u32_at(0x20)?, u16_at(0x2e)?, u16_at(0x30)?);
    let within = |addr: u64, (start, len): (u64, u64)| addr >= start && addr < start + len;
    let (mut flash, mut ram) = (0, 0);
    for i in 0..shnum {
        let h = usize::try_from(shoff + i * shentsize)?;
        let (kind, flags, addr, size) = (
            u32_at(h + 4)?,
            u32_at(h + 8)?,
            u32_at(h + 12)?,
            u32_at(h + 20)?,
        );
        if flags & u64::from(SHF_ALLOC) == 0 || size == 0 {
            continue;
        }
        if within(addr, mem.ram) {
            ram += size;
            // Initial values of RAM data are stored in flash.
            if kind != u64::from(SHT_NOBITS) {
                flash += size;
            }
        } else if within(addr, mem.flash) || mem.boot == Some(addr) {
            flash += size;
        }
    }
    Ok((flash, ram))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every profile parses, is named after its file, and names a QEMU CPU; the boards
    /// the README promises are there.
    #[test]
    fn board_profiles_load() {
        let boards = load_boards(&workspace_root().join("targets/boards")).unwrap();
        for name in [
            "jetson-orin",
            "rpi5",
            "rpi4",
            "armv7",
            "cortex-m7",
            "cortex-m55",
        ] {
            let b = find(&boards, name).unwrap();
            assert!(b.qemu.iter().any(|a| a == "-cpu"), "{name}: no QEMU CPU");
            assert!(!b.apt.is_empty(), "{name}: no packages named");
            if b.kind == Kind::Mcu {
                let m = b.memory().unwrap();
                assert!(
                    m.flash.1 >= 1 << 20 && m.ram.1 >= 256 << 10,
                    "{name}: {m:?}"
                );
            }
        }
        let err = find(&boards, "pi6").unwrap_err().to_string();
        assert!(
            err.contains("no board \"pi6\"") && err.contains("rpi5"),
            "{err}"
        );
    }

    #[test]
    fn cargo_target_variables() {
        assert_eq!(
            target_var("armv7-unknown-linux-gnueabihf", "RUNNER"),
            "CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUNNER"
        );
    }

    #[test]
    fn a_profile_with_an_unknown_field_is_refused() {
        let dir = std::env::temp_dir().join(format!("xtask-boards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = std::fs::read_to_string(workspace_root().join("targets/boards/rpi5.toml"))
            .unwrap()
            .replace("rpi5", "bad")
            + "\nflash_kb = 1\n";
        std::fs::write(dir.join("bad.toml"), text).unwrap();
        let err = format!("{:#}", load_boards(&dir).unwrap_err());
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            err.contains("bad.toml") && err.contains("flash_kb"),
            "{err}"
        );
    }
}
