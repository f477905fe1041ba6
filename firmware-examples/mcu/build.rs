//! For a firmware build (`--features firmware` for a Cortex-M board's triple): the
//! linker script's memory map from the board profile (`targets/boards/*.toml`, the same
//! file `vlm quantize --target` checks budgets against), and the model's buffer sizes
//! read from the artifact the firmware embeds, so its static arena is exactly what the
//! model needs. Host builds (the library and its tests) skip all of it.

use std::path::{Path, PathBuf};
use std::{env, fs};

#[derive(serde::Deserialize)]
struct Board {
    name: String,
    kind: String,
    triple: String,
    flash_origin: Option<u64>,
    flash_kib: Option<u64>,
    ram_origin: Option<u64>,
    ram_kib: Option<u64>,
    /// Where the core fetches its first stack pointer and reset vector, when that is not
    /// the flash (QEMU's AN547 boots from its ITCM at 0).
    boot_origin: Option<u64>,
    clock_hz: Option<u64>,
    led_register: Option<u64>,
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let boards = root.join("targets/boards");
    println!("cargo:rerun-if-changed={}", boards.display());
    println!("cargo:rerun-if-env-changed=VLM_MCU_ARTIFACT");
    if env::var_os("CARGO_FEATURE_FIRMWARE").is_none() {
        return;
    }
    let target = env::var("TARGET").expect("cargo sets TARGET");
    let board = find_board(&boards, &target).unwrap_or_else(|| {
        panic!(
            "no microcontroller profile in {} has triple {target}: build the firmware with `cargo xtask build --board cortex-m7` (or cortex-m55)",
            boards.display()
        )
    });
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), memory_x(&board)).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
    // Sections at their region's start with no page alignment: flash holds no padding.
    println!("cargo:rustc-link-arg=--nmagic");

    let artifact = env::var_os("VLM_MCU_ARTIFACT")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("models/demo-mcu.vlmq"));
    println!("cargo:rerun-if-changed={}", artifact.display());
    let bytes = fs::read(&artifact)
        .unwrap_or_else(|e| panic!("{}: cannot read the artifact: {e}", artifact.display()));
    // The reader needs the artifact 64-byte aligned, as it is in flash.
    let mut buf = vec![0u8; bytes.len() + 64];
    let at = buf.as_ptr().align_offset(64);
    buf[at..at + bytes.len()].copy_from_slice(&bytes);
    let model = vlm_runtime::Model::from_bytes(&buf[at..at + bytes.len()])
        .unwrap_or_else(|e| panic!("{}: {e}", artifact.display()));
    let meta = vlm_models::siglip::Meta::from_model(&model).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the examples classify with a SigLIP artifact",
            artifact.display()
        )
    });
    fs::copy(&artifact, out.join("model.vlmq")).expect("copy the artifact");
    fs::write(
        out.join("sizes.rs"),
        format!(
            "/// The board profile this firmware was built for.\n\
             pub const BOARD: &str = {:?};\n\
             /// Its core clock: SysTick ticks per second.\n\
             pub const CLOCK_HZ: u64 = {};\n\
             /// Bytes of arena the model's session needs.\n\
             pub const ARENA_BYTES: usize = {};\n\
             /// One RGB888 frame at the model's input size.\n\
             pub const FRAME_BYTES: usize = {};\n\
             /// The normalised planar input: 3 × height × width floats.\n\
             pub const PIXELS: usize = {};\n\
             pub const EMBED_DIM: usize = {};\n\
             /// The board's user-LED register.\n\
             pub const LED_REGISTER: usize = {:#x};\n",
            board.name,
            board.clock_hz.unwrap_or(0),
            model.arena_size(),
            meta.width * meta.height * 3,
            meta.width * meta.height * meta.channels,
            meta.embed_dim,
            board.led_register.unwrap_or(0),
        ),
    )
    .expect("write sizes.rs");
}

fn find_board(dir: &Path, target: &str) -> Option<Board> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .filter_map(|p| {
            let text = fs::read_to_string(p).ok()?;
            toml::from_str::<Board>(&text)
                .map_err(|e| panic!("{}: {e}", p.display()))
                .ok()
        })
        .find(|b| b.kind == "mcu" && b.triple == target)
}

fn memory_x(b: &Board) -> String {
    let need =
        |v: Option<u64>, what: &str| v.unwrap_or_else(|| panic!("board {} has no {what}", b.name));
    let mut s = format!(
        "/* Generated from targets/boards/{}.toml. */\nMEMORY\n{{\n  FLASH : ORIGIN = {:#010x}, LENGTH = {}K\n  RAM : ORIGIN = {:#010x}, LENGTH = {}K\n",
        b.name,
        need(b.flash_origin, "flash_origin"),
        need(b.flash_kib, "flash_kib"),
        need(b.ram_origin, "ram_origin"),
        need(b.ram_kib, "ram_kib"),
    );
    match b.boot_origin {
        Some(boot) if Some(boot) != b.flash_origin => {
            // The core boots from `boot`: a two-word table there (stack pointer, reset
            // handler) starts cortex-m-rt's reset handler in flash, which points VTOR at
            // the real vector table (its `set-vtor` feature).
            s += &format!(
                "  BOOT : ORIGIN = {boot:#010x}, LENGTH = 8\n}}\n\
                 SECTIONS\n{{\n  .boot_vectors ORIGIN(BOOT) :\n  {{\n    LONG(_stack_start & 0xFFFFFFF8);\n    LONG(Reset | 1);\n  }} > BOOT\n}} INSERT BEFORE .vector_table;\n"
            );
        }
        _ => s += "}\n",
    }
    s
}
