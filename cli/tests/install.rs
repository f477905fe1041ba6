//! An installed `vlm` works anywhere: `cargo install --path cli --root <tmp>`, then
//! `vlm classify` from another directory, with no `--model` and no source tree around,
//! classifies with the demo artifact compiled into the binary — and does so on the
//! runtime alone (the tract reference is never loaded for an artifact).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{root, tmp};

#[test]
fn an_installed_vlm_classifies_from_anywhere_with_the_built_in_demo() {
    let prefix = tmp("install");
    // The workspace's target folder (what the suite built is reused where it can be),
    // and the cheapest profile (Cargo.toml says why): what is checked is that an
    // installed binary finds its model, not its speed.
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "install",
            "--profile",
            "install-check",
            "--locked",
            "--quiet",
            "--path",
        ])
        .arg(root().join("cli"))
        .arg("--root")
        .arg(&prefix)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vlm = prefix.join("bin").join("vlm");
    let elsewhere = tmp("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let image = root()
        .join("models/demo/examples/red-circle.png")
        .canonicalize()
        .unwrap();
    std::fs::copy(&image, elsewhere.join("photo.png")).unwrap();
    let classify = |args: &[&str]| {
        let out = Command::new(&vlm)
            .arg("classify")
            .arg("photo.png")
            .args(args)
            .current_dir(&elsewhere)
            .env_remove("VLM_MODEL")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    // New labels: the built-in artifact's tokenizer and text encoder.
    let text = classify(&["--labels", "a blue star,a red circle,a green heart"]);
    let first = text.lines().nth(1).unwrap_or("");
    assert!(first.ends_with("a red circle"), "{text}");
    // No labels: the ones stored in the built-in artifact at quantize time.
    let text = classify(&[]);
    let first = text.lines().nth(1).unwrap_or("");
    assert!(first.ends_with("red circle"), "{text}");
}

/// Running an artifact needs no tract: the host crate does not depend on it, directly or
/// not (tract is the quantizer's fp32 reference and ONNX importer only).
#[test]
fn the_host_crate_does_not_depend_on_tract() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "tree",
            "--locked",
            "-p",
            "vlm-host",
            "-e",
            "normal,build",
            "--prefix",
            "none",
        ])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8(out.stdout).unwrap();
    assert!(tree.contains("vlm-runtime"), "{tree}");
    let tract: Vec<&str> = tree.lines().filter(|l| l.starts_with("tract")).collect();
    assert!(tract.is_empty(), "vlm-host depends on {tract:?}");
}
