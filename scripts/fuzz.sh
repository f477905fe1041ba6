#!/usr/bin/env bash
# Fuzzes, for VLM_FUZZ_SECONDS seconds each (default 60), starting from committed seeds:
#   artifact  the artifact reader and executor (runtime/fuzz), seeds runtime/fuzz/seeds
#   image     image decoding and preprocessing, every format (host/fuzz), seeds
#             host/fuzz/seeds and the shipped example images
# VLM_FUZZ_TARGETS picks some ("image", "artifact image"). Installs what it needs
# (nightly, cargo-fuzz) on a fresh machine. Exits non-zero on a crash, a hang or an
# out-of-memory, and says where the input that caused it was saved.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
seconds="${VLM_FUZZ_SECONDS:-60}"
targets="${VLM_FUZZ_TARGETS:-artifact image}"
step() { printf '\n==> %s\n' "$*"; }

step "toolchain: nightly (sanitizers and coverage instrumentation need it)"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

# Both fuzz crates build into one target folder, so what they share (libFuzzer itself,
# the runtime's dependencies) builds once; and in 16 codegen units (cargo-fuzz's default
# is 1): on two cores the two builds took 245 s instead of about 380.
build_flags=(--target-dir "${CARGO_TARGET_DIR:-$root/target}/fuzz" --codegen-units 16)

# fuzz DIR TARGET REGRESSION_TEST SEED_DIR...
fuzz() {
  local dir=$1 target=$2 regression=$3
  shift 3
  cd "$root/$dir"
  # corpus/ is scratch (git-ignored): what the fuzzer learns stays for the next local
  # run. The seed folders are read-only to libFuzzer, being listed after it.
  mkdir -p "corpus/$target"
  local found="artifacts/$target"
  mkdir -p "$found"
  local before
  before="$(ls "$found")"

  step "fuzzing $target for ${seconds}s"
  local status=0
  # -timeout: each target skips inputs too large to handle quickly, so a slow input
  # is a bug.
  cargo +nightly fuzz run "${build_flags[@]}" "$target" "corpus/$target" "$@" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 || status=$?

  local new
  new="$(comm -13 <(printf '%s\n' "$before" | sort) <(ls "$found" | sort) | sed '/^$/d')"
  if [ "$status" -ne 0 ] || [ -n "$new" ]; then
    echo
    echo "fuzz $target: FAILED (exit $status). Input(s) saved:" >&2
    for f in $new; do
      echo "  $PWD/$found/$f" >&2
    done
    cat >&2 <<MSG
Reproduce:  (cd $dir && cargo +nightly fuzz run ${build_flags[*]} $target <input>)
Minimise:   (cd $dir && cargo +nightly fuzz tmin ${build_flags[*]} $target <input>)
Once fixed, commit the input under $dir/regressions/ ($regression runs every file
there).
MSG
    [ "$status" -ne 0 ] || status=1
    exit "$status"
  fi
  echo "fuzz $target: no crash in ${seconds}s"
}

# spec TARGET: "DIR TARGET REGRESSION_TEST SEED_DIR..."
spec() {
  case $1 in
    artifact) echo "runtime/fuzz artifact runtime/tests/hostile.rs seeds" ;;
    image) echo "host/fuzz image host/tests/images.rs seeds $root/models/demo/examples" ;;
    *) echo "unknown fuzz target $1 (artifact, image)" >&2; exit 2 ;;
  esac
}

# Built one after the other (each build uses every core), then fuzzed side by side: a
# libFuzzer run is one process on one core, so the targets' minutes overlap.
for t in $targets; do
  read -r dir target _ <<<"$(spec "$t")"
  step "building the $target fuzz target"
  (cd "$root/$dir" && cargo +nightly fuzz build "${build_flags[@]}" "$target")
done
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
pids=()
for t in $targets; do
  # shellcheck disable=SC2046 # the spec is words by design
  (fuzz $(spec "$t")) >"$logs/$t" 2>&1 &
  pids+=("$!")
done
status=0
i=0
for t in $targets; do
  s=0
  wait "${pids[$i]}" || s=$?
  i=$((i + 1))
  # The run's end: its final statistics, and on a failure where the input was saved.
  if [ "$s" -ne 0 ]; then
    tail -n 40 "$logs/$t"
    status=$s
  else
    tail -n 3 "$logs/$t"
  fi
done
exit "$status"
