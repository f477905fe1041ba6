//! What every `vlm` end-to-end test needs: the binary, the repository root, a scratch
//! folder, and the check that a failure is one clean line.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `vlm` with `args` and no model or kernel choice inherited from the environment, for
/// a test to add its own.
pub fn vlm_command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vlm"));
    c.args(args)
        .env_remove("VLM_MODEL")
        .env_remove("VLM_KERNELS");
    c
}

/// Runs [`vlm_command`].
pub fn vlm(args: &[&str]) -> Output {
    vlm_command(args).output().unwrap()
}

/// Runs `vlm` as [`vlm`] does, requires success, and parses its stdout as JSON.
pub fn vlm_json(args: &[&str]) -> serde_json::Value {
    let out = vlm(args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A path in this test binary's own scratch folder, under the build's target directory
/// (cargo's tmp folder for integration tests), so runs leave nothing in the system's.
pub fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "vlm-{}-{}",
        env!("CARGO_CRATE_NAME"),
        std::process::id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Exit code 2, stdout empty, stderr one line that contains `needle`.
pub fn assert_clean_failure(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(
        stderr.contains(needle),
        "{stderr:?} does not name {needle:?}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
