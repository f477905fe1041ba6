#!/usr/bin/env bash
# The same artifact from every CPU: `vlm quantize` of the shipped demo model (the flags
# below, calibrated on the first 16 images of models/demo-calib: emulation is slow) on
# this x86 machine, and the aarch64 build of `vlm` under QEMU user-mode emulation on
# `-cpu cortex-a76` (dotprod) and `-cpu max` (i8mm, SVE), must write byte-identical files,
# equal to the hash committed here. Prints each run's sha256. (The host's other kernel
# sets are compared by cli/tests/quantize.rs; the three Arm levels share their float
# kernels, and their int8 GEMMs are exact.)
#
# A change that moves the quantizer's numbers on purpose changes the hash: update
# EXPECTED with the printed one, and say why in the commit.
#
# Needs what scripts/cross-test.sh installs (qemu-user, the aarch64 cross gcc and libc).
# Builds into <target>/cross (shared with the cross tests); uses $VLM, else
# target/debug/vlm (built if missing), on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

# Demo model v2 (retrained, calibrated t and b) moved the hash from plan v2's
# b636a734…466c.
EXPECTED=ac138e491eec3d5101a6b70e755bfcb82aa89215e84ef9c017a150596aab5da4

target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
main_target=${CARGO_TARGET_DIR:-$PWD/target}
cross_target=$main_target/cross
work=$cross_target/repro
start=$SECONDS
mkdir -p "$work"

qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
if [[ -z $qemu ]] || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  echo "qemu-aarch64 and aarch64-linux-gnu-gcc are needed (scripts/cross-test.sh installs them)" >&2
  exit 1
fi

# The `quick` profile (Cargo.toml): unoptimised dependencies build in a third of the
# time; the runtime and quantizer, where the run spends it, stay optimised.
step "build vlm for $target"
t=$SECONDS
# tokenizers (onig) and the JPEG decoder (libjpeg-turbo) are C: the cross compiler
# builds them.
CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc} \
  CC_aarch64_unknown_linux_gnu=${CC_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-gcc} \
  AR_aarch64_unknown_linux_gnu=${AR_aarch64_unknown_linux_gnu:-aarch64-linux-gnu-ar} \
  cargo build --quiet -p vlm-cli --profile quick --target "$target" --target-dir "$cross_target"
arm_vlm=$cross_target/$target/quick/vlm
echo "built in $((SECONDS - t)) s"

host_vlm=${VLM:-$main_target/debug/vlm}
[[ -x $host_vlm ]] || cargo build --quiet -p vlm-cli

calib=$work/calib
rm -rf "$calib" && mkdir -p "$calib"
cp models/demo-calib/prompts.txt "$calib/"
find models/demo-calib -name '*.png' | sort | head -n 16 | xargs -I{} cp {} "$calib/"
quantize=(quantize --model models/demo --calib "$calib"
  --labels "red circle,blue star" --template "a {}")
# The runs go side by side (the emulated ones leave a core idle much of the time) and
# are reported in order.
runs=(x86 cortex-a76 max)
for run in "${runs[@]}"; do
  rm -f "$work/$run.done"
  cpu=${run%%+*} kernels=
  [[ $run == *+* ]] && kernels=${run#*+}
  case $cpu in
    x86) cmd=("$host_vlm") ;;
    *) cmd=("$qemu" -cpu "$cpu" -L "$sysroot" "$arm_vlm") ;;
  esac
  [[ -n $kernels ]] && cmd=(env VLM_KERNELS="$kernels" "${cmd[@]}")
  (
    t=$SECONDS
    status=0
    "${cmd[@]}" "${quantize[@]}" --out "$work/$run.vlmq" >"$work/$run.log" 2>&1 || status=$?
    echo "$status $((SECONDS - t))" >"$work/$run.done"
  ) &
done
wait
failed=0
for run in "${runs[@]}"; do
  cpu=${run%%+*} kernels=
  [[ $run == *+* ]] && kernels=${run#*+}
  step "quantize the demo model: $cpu${kernels:+, VLM_KERNELS=$kernels}"
  read -r status took <"$work/$run.done"
  if [[ $status != 0 ]]; then
    cat "$work/$run.log" >&2
    exit 1
  fi
  hash=$(sha256sum "$work/$run.vlmq" | cut -d' ' -f1)
  printf 'demo artifact sha256 %s  (%s%s, %s s)' "$hash" "$cpu" "${kernels:+ $kernels}" "$took"
  if [[ $hash != "$EXPECTED" ]]; then
    printf '  FAIL: want %s' "$EXPECTED"
    failed=1
  fi
  echo
done

if ((failed)); then
  echo "quantize wrote different artifacts on different CPUs, or another one than the committed hash (files in $work)" >&2
  exit 1
fi
step "the same demo artifact on every CPU ($EXPECTED), in $((SECONDS - start)) s"
