//! The recipe's Python, for tests that export models with it: `VLM_PYTHON` names its
//! interpreter (default: the venv `scripts/setup-python.sh` makes). Without one a test
//! says so and passes, unless `VLM_REQUIRE_PYTHON` is set (CI sets it), where it fails.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn python() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("VLM_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let venv = std::env::var_os("VLM_VENV")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vlm-edge/venv"))
        })?;
    let p = venv.join("bin/python");
    p.exists().then_some(p)
}

/// The recipe Python, or None after saying `tag` is skipped (a failure if CI requires it).
pub fn python_or_skip(tag: &str) -> Option<PathBuf> {
    let py = python();
    if py.is_none() {
        assert!(
            std::env::var_os("VLM_REQUIRE_PYTHON").is_none(),
            "VLM_REQUIRE_PYTHON is set but no recipe Python was found"
        );
        eprintln!("SKIPPED {tag}: no recipe Python environment (see scripts/setup-python.sh)");
    }
    py
}

/// Runs the recipe's Python in models/recipes with `args`; fails the test if it fails.
pub fn recipe(py: &Path, args: &[&str]) {
    let out = Command::new(py)
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/recipes"))
        .output()
        .expect("running the recipe's python");
    assert!(
        out.status.success(),
        "{args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Captioners of the families not shipped, as the recipe trains them, with the prompt
/// each was trained on: `VLM_TRAINED_CAPTIONERS=DIR` holds `llava/`, `paligemma/` and
/// `idefics2/` as `python -m vlm_recipes.train_captioner --family F --out DIR/F` writes
/// them (for the ignored tests that compare them with PyTorch).
pub fn trained_captioners() -> Vec<(&'static str, PathBuf, &'static str)> {
    let root = PathBuf::from(
        std::env::var("VLM_TRAINED_CAPTIONERS").expect("VLM_TRAINED_CAPTIONERS=DIR is needed"),
    );
    [
        ("llava", "Caption:"),
        ("paligemma", "caption en"),
        ("idefics2", "Caption:"),
    ]
    .into_iter()
    .map(|(family, prompt)| (family, root.join(family), prompt))
    .collect()
}
