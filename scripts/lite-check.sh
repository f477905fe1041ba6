#!/usr/bin/env bash
# vlm-lite, the runtime-only device binary, end to end on x86, on aarch64 and on armv7
# under QEMU:
#   - builds it for the host, for aarch64-unknown-linux-gnu and for
#     armv7-unknown-linux-gnueabihf (profile release-lite) and fails if the stripped
#     aarch64 binary is over 2 MiB: it is what a board ships;
#   - quantizes the demo model with labels, runs the binary on the committed PPM fixtures
#     on x86 (and with the AVX2 and AVX-VNNI kernels forced where the CPU has them),
#     `qemu -cpu cortex-a72` (plain NEON),
#     `qemu -cpu cortex-a76` (dotprod) and
#     `qemu -cpu max` (i8mm, and with the NEON kernels forced) and
#     `qemu-arm -cpu cortex-a7` (32-bit armv7: NEON, and the Cortex-M DSP kernel forced), checks the top
#     label of each, and fails unless every other run's image embedding is bit-identical to
#     the x86 one (its cosine is printed): the same artifact must compute the same
#     thing on every ISA;
#   - runs the microcontroller artifact (models/demo-mcu.vlmq) on the firmware examples'
#     frames everywhere above: the same embedding bits as x86;
#   - quantizes the demo captioner and captions every fixture (the two above, and
#     demo-captions-*.ppm: images of models/demo-captions, seen and held-out objects,
#     one to two objects) on every run above:
#     the token ids and the hash of the last logits' bits must be identical to the x86
#     ones (bf16 attention and exact int8 fix every bit), and for the demo-captions
#     fixtures (at the captioner's input size, so no resize) the x86 text the same as
#     the host `vlm caption` prints for that artifact (the stored prompt and token table
#     stand in for the tokenizer).
# The kernels are whatever `Isa::detect()` picks on each CPU (VLM_KERNELS forces one);
# the ISA each run used is printed. The fixtures are committed PPMs (made once from
# models/demo/examples with Pillow), so this needs no Python.
#
# Builds into its own target directory, <target>/lite, so it never waits on the lock of
# the host build. Uses $VLM, else target/release/vlm, else target/debug/vlm (built if missing) to quantize.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*"; }

target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
target32=armv7-unknown-linux-gnueabihf
sysroot32=/usr/arm-linux-gnueabihf
max_bytes=$((2 * 1024 * 1024))
main_target=${CARGO_TARGET_DIR:-$PWD/target}
lite_target=$main_target/lite
work=$lite_target/check
start=$SECONDS

step "tools"
missing=()
command -v qemu-aarch64 >/dev/null || command -v qemu-aarch64-static >/dev/null \
  || missing+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
command -v aarch64-linux-gnu-strip >/dev/null || missing+=(binutils-aarch64-linux-gnu)
[[ -e $sysroot/lib/crt1.o ]] || missing+=(libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || missing+=(gcc-arm-linux-gnueabihf)
[[ -e $sysroot32/lib/crt1.o ]] || missing+=(libc6-dev-armhf-cross)
if ((${#missing[@]})); then
  echo "missing ${missing[*]}: apt-get install ${missing[*]} (or run scripts/cross-test.sh, which installs them)" >&2
  exit 1
fi
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static)
qemu32=$(command -v qemu-arm || command -v qemu-arm-static)
rustup target add "$target" "$target32" >/dev/null 2>&1
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER:-aarch64-linux-gnu-gcc}"
export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER="${CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_LINKER:-arm-linux-gnueabihf-gcc}"
mkdir -p "$work"

step "build vlm-lite (release-lite) for the host, $target and $target32"
t=$SECONDS
# One cargo for the three: release-lite links each in one codegen unit, one core apiece,
# so the targets build side by side (31 s instead of 50 on two cores).
host=$(rustc -vV | sed -n 's/^host: //p')
cargo build --quiet --manifest-path targets/vlm-lite/Cargo.toml --profile release-lite \
  --target-dir "$lite_target" --target "$host" --target "$target" --target "$target32"
host_bin=$lite_target/$host/release-lite/vlm-lite
arm_bin=$work/vlm-lite-aarch64
aarch64-linux-gnu-strip -o "$arm_bin" "$lite_target/$target/release-lite/vlm-lite"
arm32_bin=$work/vlm-lite-armv7
arm-linux-gnueabihf-strip -o "$arm32_bin" "$lite_target/$target32/release-lite/vlm-lite"
size=$(stat -c %s "$arm_bin")
echo "built in $((SECONDS - t)) s"
echo "aarch64 stripped size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }') MiB; limit $max_bytes)"
echo "armv7 stripped size: $(stat -c %s "$arm32_bin") bytes"
if ((size > max_bytes)); then
  echo "vlm-lite for $target is $size bytes, over the $max_bytes-byte budget" >&2
  exit 1
fi

step "quantize the demo model with labels"
# Any `vlm` will do (the artifact is the same): a release build if there is one, else the
# dev build the test suite already made (its runtime and quantize crates are optimised),
# so CI does not pay for a second, release, build of tract.
vlm=${VLM:-$main_target/release/vlm}
if [[ ! -x $vlm ]]; then
  vlm=$main_target/debug/vlm
  [[ -x $vlm ]] || cargo build --quiet --workspace
fi
artifact=$work/demo.vlmq
"$vlm" quantize --model models/demo --calib models/demo-calib \
  --labels "red circle,blue star,yellow triangle" --template "a {}" --out "$artifact" >/dev/null
echo "$artifact ($(stat -c %s "$artifact") bytes)"

step "errors are one line and exit status 2"
set +e
"$host_bin" "$artifact" Cargo.toml 2>"$work/err.txt" >/dev/null
rc=$?
set -e
if [[ $rc != 2 || $(wc -l <"$work/err.txt") != 1 ]] || ! grep -q '^vlm-lite: error: Cargo.toml: ' "$work/err.txt"; then
  echo "a bad PPM should give one 'vlm-lite: error: Cargo.toml: ...' line and status 2; got $rc:" >&2
  cat "$work/err.txt" >&2
  exit 1
fi
cat "$work/err.txt"

# cosine A B: of two `[x, y, ...]` embedding lines, in double precision.
cosine() {
  paste -d' ' <(tr -d '[] \n' <"$1" | tr ',' '\n') <(tr -d '[] \n' <"$2" | tr ',' '\n') \
    | awk 'NF != 2 { bad = 1 } { d += $1 * $2; na += $1 * $1; nb += $2 * $2; n++ }
           END { if (bad || n == 0 || na == 0 || nb == 0) { print "nan"; exit }
                 printf "%.9f\n", d / sqrt(na * nb) }'
}

fixtures=(red-circle:"a red circle" two-blue-stars:"a blue star")
# A run is a CPU, optionally +kernels forced through VLM_KERNELS: the lower levels'
# own float kernels (AVX2; NEON on a CPU that would pick i8mm) must agree too.
runs=(x86 cortex-a72 cortex-a76 max max+aarch64-neon armv7 armv7+arm-dsp)
if grep -qw avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  runs+=(x86+x86-avx2)
  if grep -qw avx_vnni /proc/cpuinfo; then runs+=(x86+x86-avxvnni); fi
fi
# use_run RUN: sets cpu, kernels and cmd (the binary, under qemu for an Arm CPU, with
# VLM_KERNELS set when the run forces a kernel set).
use_run() {
  cpu=${1%%+*} kernels=
  [[ $1 == *+* ]] && kernels=${1#*+}
  case $cpu in
    x86) cmd=("$host_bin") ;;
    armv7) cmd=("$qemu32" -cpu cortex-a7 -L "$sysroot32" "$arm32_bin") ;;
    *) cmd=("$qemu" -cpu "$cpu" -L "$sysroot" "$arm_bin") ;;
  esac
  if [[ -n $kernels ]]; then cmd=(env VLM_KERNELS="$kernels" "${cmd[@]}"); fi
}

failed=0
for run in "${runs[@]}"; do
  use_run "$run"
  step "run: $cpu${kernels:+, VLM_KERNELS=$kernels}"
  for f in "${fixtures[@]}"; do
    name=${f%%:*} want=${f#*:}
    ppm=targets/vlm-lite/fixtures/$name.ppm
    out=$work/$run-$name
    t=$SECONDS
    if ! "${cmd[@]}" "$artifact" "$ppm" 2>"$out.err" >"$out.txt" \
      || ! "${cmd[@]}" "$artifact" "$ppm" --embedding 2>>"$out.err" >"$out.emb"; then
      echo "vlm-lite failed on $run with $ppm:" >&2
      cat "$out.err" >&2
      exit 1
    fi
    isa=$(sed -n 's/^vlm-lite: isa \([^,]*\),.*/\1/p' "$out.err" | head -n1)
    top=$(head -n1 "$out.txt" | sed 's/^[0-9.]*  //')
    printf '%-15s isa %-16s top: %s (%s)' "$name" "$isa" "$(head -n1 "$out.txt")" "$((SECONDS - t)) s"
    if [[ $top != "$want" ]]; then
      printf '  FAIL: want "%s"' "$want"
      failed=1
    fi
    if [[ -n $kernels && $isa != "$kernels" ]]; then
      printf '  FAIL: VLM_KERNELS=%s not honoured' "$kernels"
      failed=1
    fi
    if [[ $run != x86 ]]; then
      c=$(cosine "$work/x86-$name.emb" "$out.emb")
      printf '  cosine vs x86 %s' "$c"
      # The artifact (int8 GEMMs, bf16 attention) fixes every operation and its order,
      # so every ISA must produce the same bits; the cosine shows how far off if not.
      if cmp -s "$work/x86-$name.emb" "$out.emb"; then
        printf ' (bit-identical)'
      else
        printf '  FAIL: want bit-identical embeddings'
        failed=1
      fi
    fi
    echo
  done
done

# The microcontroller artifact the firmware examples embed, on the frames their
# simulated camera streams: the same embedding bits on every CPU here, as the firmware
# tests (firmware-examples/mcu/tests/qemu.rs) hold the Cortex-M7 and M55 to the x86 bits.
mcu_artifact=models/demo-mcu.vlmq
for run in "${runs[@]}"; do
  use_run "$run"
  step "microcontroller artifact on the firmware frames: $cpu${kernels:+, VLM_KERNELS=$kernels}"
  same=0 frames=0
  for ppm in firmware-examples/frames/*.ppm; do
    name=mcu-$(basename "$ppm" .ppm)
    out=$work/$run-$name
    if ! "${cmd[@]}" "$mcu_artifact" "$ppm" --embedding 2>"$out.err" >"$out.emb"; then
      echo "vlm-lite failed on $run with $ppm:" >&2
      cat "$out.err" >&2
      exit 1
    fi
    frames=$((frames + 1))
    if [[ $run == x86 ]] || cmp -s "$work/x86-$name.emb" "$out.emb"; then
      same=$((same + 1))
    else
      echo "$ppm: FAIL: the embedding differs from x86's (cosine $(cosine "$work/x86-$name.emb" "$out.emb"))"
      failed=1
    fi
  done
  echo "$same of $frames frames bit-identical to x86"
done

step "quantize the demo captioner"
captioner=$work/captioner.vlmq
"$vlm" quantize --model models/demo-captioner --calib models/demo-calib --out "$captioner" >/dev/null
echo "$captioner ($(stat -c %s "$captioner") bytes)"

for run in "${runs[@]}"; do
  use_run "$run"
  step "caption: $cpu${kernels:+, VLM_KERNELS=$kernels}"
  for ppm in targets/vlm-lite/fixtures/*.ppm; do
    name=$(basename "$ppm" .ppm)
    out=$work/caption-$run-$name
    t=$SECONDS
    if ! "${cmd[@]}" "$captioner" "$ppm" --tokens 2>"$out.err" >"$out.ids"; then
      echo "vlm-lite failed to caption $ppm on $run:" >&2
      cat "$out.err" >&2
      exit 1
    fi
    isa=$(sed -n 's/^vlm-lite: isa \([^,]*\),.*/\1/p' "$out.err" | head -n1)
    printf '%-20s isa %-16s tokens: %s (%s s)' "$name" "$isa" "$(head -n1 "$out.ids")" "$((SECONDS - t))"
    if [[ $(head -n1 "$out.ids" | tr -d ' ') == "" ]]; then
      printf '  FAIL: no tokens'
      failed=1
    fi
    if [[ -n $kernels && $isa != "$kernels" ]]; then
      printf '  FAIL: VLM_KERNELS=%s not honoured' "$kernels"
      failed=1
    fi
    if [[ $run == x86 ]]; then
      "${cmd[@]}" "$captioner" "$ppm" 2>/dev/null >"$out.txt"
      "$vlm" caption --model "$captioner" "$ppm" >"$out.host"
      printf '\n%-20s text: "%s"' "" "$(cat "$out.txt")"
      # Only images already at the tower's size: vlm-lite's resize is not Pillow-exact
      # (targets/vlm-lite/src/resize.rs), so a resized image may differ by a grey level.
      if [[ $name == demo-captions-* ]] && ! cmp -s "$out.txt" "$out.host"; then
        printf '  FAIL: vlm caption says "%s"' "$(cat "$out.host")"
        failed=1
      fi
    elif cmp -s "$work/caption-x86-$name.ids" "$out.ids"; then
      printf ' (identical to x86, last logits too)'
    else
      printf '  FAIL: want the x86 tokens and last-logits hash'
      failed=1
    fi
    echo
  done
done

if ((failed)); then
  echo "vlm-lite check failed (outputs in $work)" >&2
  exit 1
fi
step "vlm-lite checks passed in $((SECONDS - start)) s (aarch64 binary $size bytes)"
