#!/usr/bin/env bash
# The whole test suite, from a fresh machine: toolchain targets, the recipe's Python
# environment, formatting and lints, the no_std build for a Cortex-M target, the recipe
# in smoke mode (train a few steps, export, golden file), the recipe's own tests, and
# every Rust test (including base-size SigLIP / SigLIP 2 exports against onnxruntime).
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add thumbv7em-none-eabihf thumbv8m.main-none-eabihf >/dev/null

step "recipe python environment"
py="$(scripts/setup-python.sh)"
export VLM_PYTHON="$py" VLM_REQUIRE_PYTHON=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings

step "no_std build for Cortex-M targets"
targets/no-std-build.sh

step "recipe smoke run: train a few steps, package, golden file"
smoke="$(mktemp -d)"
trap 'rm -rf "$smoke"' EXIT
(cd models/recipes && "$py" -m vlm_recipes.train --smoke --out "$smoke/ckpt" >/dev/null \
  && "$py" -m vlm_recipes.package --checkpoint "$smoke/ckpt" --out "$smoke/model" \
       --eval-out "$smoke/eval" --per-pair 1 --per-count 2 >/dev/null)
export VLM_GOLDEN_MODELS="$smoke/model"

step "recipe tests (pytest)"
(cd models/recipes && "$py" -m pytest -q tests)

step "rust tests"
cargo test --workspace --quiet
