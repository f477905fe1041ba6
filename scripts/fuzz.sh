#!/usr/bin/env bash
# Fuzzes the artifact reader and executor (runtime/fuzz, target `artifact`) for
# VLM_FUZZ_SECONDS seconds (default 60), starting from the committed seeds. Installs what
# it needs (nightly, cargo-fuzz) on a fresh machine. Exits non-zero on a crash, a hang or
# an out-of-memory, and says where the input that caused it was saved.
set -euo pipefail
cd "$(dirname "$0")/../runtime/fuzz"
seconds="${VLM_FUZZ_SECONDS:-60}"
step() { printf '\n==> %s\n' "$*"; }

step "toolchain: nightly (sanitizers and coverage instrumentation need it)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# corpus/ is scratch (git-ignored): what the fuzzer learns stays for the next local run.
# seeds/ is read-only to libFuzzer, being listed second.
mkdir -p corpus/artifact
found="artifacts/artifact"
mkdir -p "$found"
before="$(ls "$found")"

step "fuzzing for ${seconds}s"
status=0
# -timeout: the target skips plans too large to run quickly, so a slow input is a bug.
cargo +nightly fuzz run artifact corpus/artifact seeds -- \
  -max_total_time="$seconds" -timeout=30 -print_final_stats=1 || status=$?

new="$(comm -13 <(printf '%s\n' "$before" | sort) <(ls "$found" | sort) | sed '/^$/d')"
if [ "$status" -ne 0 ] || [ -n "$new" ]; then
  echo
  echo "fuzz: FAILED (exit $status). Input(s) saved:" >&2
  for f in $new; do
    echo "  $PWD/$found/$f" >&2
  done
  cat >&2 <<EOF
Reproduce:  (cd runtime/fuzz && cargo +nightly fuzz run artifact <input>)
Minimise:   (cd runtime/fuzz && cargo +nightly fuzz tmin artifact <input>)
Once fixed, commit the input under runtime/fuzz/regressions/ (runtime/tests/hostile.rs
runs every file there).
EOF
  [ "$status" -ne 0 ] || status=1
  exit "$status"
fi
echo "fuzz: no crash in ${seconds}s"
