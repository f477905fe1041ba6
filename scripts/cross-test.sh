#!/usr/bin/env bash
# The runtime's tests for aarch64, on an x86 machine, under QEMU user-mode emulation:
#   -cpu cortex-a72  plain NEON (a Raspberry Pi 4, Jetson Nano's A57 alike): aarch64-neon
#   -cpu cortex-a76  dotprod, no i8mm: aarch64-dotprod is the chosen kernel
#   -cpu max         i8mm: aarch64-i8mm is the chosen kernel
# On each CPU every test target runs once with the kernel detection picks (the kernel
# battery compares every supported kernel with the scalar reference on its own), then
# the session-level targets run again with each other supported kernel forced through
# VLM_KERNELS. Fails if a CPU does not select the kernels it should.
#
# Installs what is missing: qemu-user, the aarch64 cross linker and libc (apt, when
# root or passwordless sudo is available) and the Rust target. Builds into its own
# target directory (CARGO_TARGET_DIR overrides it), so a run never holds the lock of,
# or waits on, the host build.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
start=$SECONDS

step "tools"
missing=()
command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null \
  || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
[[ -e $sysroot/lib/crt1.o ]] || missing+=(libc6-dev-arm64-cross)
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]]; then
    as_root=()
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    as_root=(sudo -n)
  else
    echo "missing ${missing[*]}: install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
  fi
  ${as_root[@]+"${as_root[@]}"} apt-get update -qq
  ${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
rustup target add "$target" >/dev/null
echo "$($qemu --version | head -n1); $(aarch64-linux-gnu-gcc --version | head -n1)"
cpus=$($qemu -cpu help || true) # it exits 1 after listing
for cpu in cortex-a72 cortex-a76 max; do
  if ! grep -qw -- "$cpu" <<<"$cpus"; then
    echo "$qemu has no -cpu $cpu: a newer QEMU is needed (Debian 12's 7.2 has it)" >&2
    exit 1
  fi
done

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/cross}"
: "${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:=aarch64-linux-gnu-gcc}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER
cargo_test=(cargo test --quiet --manifest-path runtime/Cargo.toml --target "$target" --features std)
# Doc tests do not run for a foreign target; these are the unit and integration tests.
all_targets=(--lib --tests)
# Every target but the batteries (kernels, ops), which already run each supported
# kernel set themselves.
session_targets=(--lib)
for f in runtime/tests/*.rs; do
  name=$(basename "$f" .rs)
  [[ $name == kernels || $name == ops ]] || session_targets+=(--test "$name")
done

step "build (without std too: the compile-time ISA choice)"
t=$SECONDS
cargo build --quiet --manifest-path runtime/Cargo.toml --target "$target" --lib
"${cargo_test[@]}" "${all_targets[@]}" --no-run
echo "built in $((SECONDS - t)) s"

on_cpu() {
  local cpu=$1
  shift
  CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="$qemu -cpu $cpu -L $sysroot" "$@"
}

# The line the battery prints: `kernels on this CPU: [...] (chosen: ...)`.
kernels_line() {
  on_cpu "$1" "${cargo_test[@]}" --test kernels this_cpu_runs_more_than_the_reference \
    -- --nocapture 2>&1 | grep '^kernels on this CPU'
}

for cpu in cortex-a72 cortex-a76 max; do
  case $cpu in
    cortex-a72) want=aarch64-neon unwanted=aarch64-dotprod ;;
    cortex-a76) want=aarch64-dotprod unwanted=aarch64-i8mm ;;
    max) want=aarch64-i8mm unwanted= ;;
  esac

  step "qemu -cpu $cpu: every test target"
  t=$SECONDS
  on_cpu "$cpu" "${cargo_test[@]}" "${all_targets[@]}"
  line=$(kernels_line "$cpu")
  echo "$cpu: $line ($((SECONDS - t)) s)"
  if [[ $line != *"(chosen: $want)"* || (-n $unwanted && $line == *"\"$unwanted\""*) ]]; then
    echo "qemu -cpu $cpu should choose $want${unwanted:+ and not support $unwanted}" >&2
    exit 1
  fi

  supported=$(sed -e 's/.*\[\(.*\)\].*/\1/' -e 's/[",]//g' <<<"$line")
  for isa in $supported; do
    [[ $isa == "$want" ]] && continue
    step "qemu -cpu $cpu: VLM_KERNELS=$isa"
    t=$SECONDS
    VLM_KERNELS=$isa on_cpu "$cpu" "${cargo_test[@]}" "${session_targets[@]}"
    line=$(VLM_KERNELS=$isa kernels_line "$cpu")
    echo "$cpu: $line ($((SECONDS - t)) s)"
    [[ $line == *"(chosen: $isa)"* ]] || { echo "VLM_KERNELS=$isa was not honoured" >&2; exit 1; }
  done
done

step "aarch64 cross tests passed in $((SECONDS - start)) s"
