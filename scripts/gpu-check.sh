#!/usr/bin/env bash
# The CUDA backend on a machine with an NVIDIA GPU, in one run of a few minutes: builds,
# runs the GPU op battery (every op against the CPU's scalar reference, bit for bit)
# and the demo model end to end, times SigLIP-B/16's encoder (random int8 weights) on the
# GPU against 2 CPU threads, runs `vlm bench`, `vlm classify` and `vlm caption` with
# --device cuda (the same labels and captions as the CPU), and prints one table. Fails
# on any mismatch.
#
#   scripts/gpu-check.sh                  build here with cargo, then check
#   scripts/gpu-check.sh --pack FILE      only build, into FILE (a .tar.gz of the four
#                                         programs the check runs), on any x86-64 Linux
#   scripts/gpu-check.sh --prebuilt FILE  check with FILE's programs: for a GPU machine
#                                         with no Rust toolchain or no crates to build from
#
#   VLM_NVRTC_DIR     a folder holding NVRTC: libnvrtc.so.12, or CUDA 13's libnvrtc.so or
#                     libnvrtc.so.13 (Turing and newer only). Else it is looked for in
#                     $CUDA_HOME/lib64, /usr/local/cuda/lib64, the system's library
#                     folders, and a Python's nvidia-cuda-nvrtc wheel; CUDA 12's first.
#   VLM_GPU_CAPTIONER a captioner artifact or folder (SmolVLM-256M) to time as well
#   GPU_CHECK_RUNS    timed runs per figure (default 10)
#   GPU_CHECK_TOWER   the timed encoder's "LAYERS TOKENS WIDTH HEADS MLP" (default
#                     SigLIP-B/16's: 12 196 768 12 3072)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${GPU_CHECK_RUNS:-10}
start=$SECONDS
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The four programs: vlm, the encoder timing, and the two test binaries (no paths of
# this tree are compiled into them: the tests use the built-in demo model).
build() {
  local dest=$1
  cargo build --release --quiet -p vlm-cli -p vlm-cuda --example gpu_bench
  mkdir -p "$dest"
  cp target/release/vlm target/release/examples/gpu_bench "$dest/"
  local t exe
  for t in ptx gpu; do
    exe="$(cargo test --release --quiet -p vlm-cuda --test "$t" --no-run --message-format=json \
      | grep -o '"executable":"[^"]*"' | cut -d'"' -f4)"
    [ -n "$exe" ] || { echo "gpu-check: the $t test binary was not built" >&2; exit 1; }
    cp "$exe" "$dest/$t"
  done
  strip "$dest/"* 2>/dev/null || true
}

case "${1:-}" in
  --pack)
    [ -n "${2:-}" ] || { echo "usage: scripts/gpu-check.sh --pack FILE.tar.gz" >&2; exit 2; }
    build "$work/pack"
    tar -czf "$work/pack.tar.gz" -C "$work/pack" .
    mv "$work/pack.tar.gz" "$2"
    echo "gpu-check: packed $(du -h "$2" | cut -f1) into $2"
    exit 0
    ;;
  --prebuilt)
    [ -f "${2:-}" ] || { echo "gpu-check: --prebuilt: no such file: ${2:-(none)}" >&2; exit 2; }
    mkdir -p "$work/bin"
    tar -xzf "$2" -C "$work/bin"
    bin="$work/bin"
    ;;
  "") bin="" ;;
  *) echo "usage: scripts/gpu-check.sh [--pack FILE | --prebuilt FILE]" >&2; exit 2 ;;
esac

# cudarc opens the first of libnvrtc.so, libnvrtc.so.12 that the loader finds, and a
# CUDA 13 wheel has only libnvrtc.so.13: the one chosen here is reached through a link of
# the plain name, first on the library path.
nvrtc=""
use_nvrtc() {
  local d=$1 f
  for f in libnvrtc.so.12 libnvrtc.so libnvrtc.so.13; do
    if [ -e "$d/$f" ]; then
      mkdir -p "$work/nvrtc"
      ln -sf "$d/$f" "$work/nvrtc/libnvrtc.so"
      nvrtc="$work/nvrtc:$d"
      return
    fi
  done
}
candidates=("${VLM_NVRTC_DIR:-}" "${CUDA_HOME:+$CUDA_HOME/lib64}" /usr/local/cuda/lib64
  /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu)
for py in python3 "${VLM_PYTHON:-}"; do
  [ -n "$py" ] && command -v "$py" >/dev/null || continue
  # The wheels' folders: nvidia/cuda_nvrtc/lib (CUDA 12), nvidia/cu13/lib (CUDA 13).
  while IFS= read -r d; do candidates+=("$d"); done < <("$py" -c '
import glob, os
try:
    import nvidia
except ImportError:
    raise SystemExit
for p in nvidia.__path__:
    for d in sorted(glob.glob(os.path.join(p, "*", "lib"))):
        print(d)' 2>/dev/null || true)
done
for want in libnvrtc.so.12 "libnvrtc.so*"; do
  for d in "${candidates[@]}"; do
    if [ -n "$d" ] && compgen -G "$d/$want" >/dev/null; then use_nvrtc "$d"; fi
    [ -z "$nvrtc" ] || break 2
  done
done
if [ -z "$nvrtc" ]; then
  echo "gpu-check: no NVRTC (libnvrtc.so.12, libnvrtc.so or libnvrtc.so.13) found: set VLM_NVRTC_DIR, or pip install nvidia-cuda-nvrtc-cu12" >&2
  exit 2
fi
export LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VLM_REQUIRE_GPU=1 VLM_REQUIRE_NVRTC=1
echo "NVRTC from ${nvrtc##*:}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

if [ -z "$bin" ]; then
  echo "==> build"
  bin="$work/bin"
  build "$bin"
fi

echo "==> kernels for this GPU, Orin and Hopper; the op battery; the demo model end to end"
tests="$work/tests.log"
status=0
for t in ptx gpu; do
  "$bin/$t" --nocapture --test-threads 1 >>"$tests" 2>&1 || status=1
done
grep -E "SKIPPED|compiled|not compiled|ops on the GPU|cosine|FAILED|panicked|test result" "$tests" || true
if [ "$status" -ne 0 ]; then cat "$tests"; exit 1; fi
battery="$(grep -o '[0-9]* ops on the GPU, [0-9]* left to the CPU' "$tests" || true)"
demo_cos="$(grep -m1 -o 'cosine [0-9.]*' "$tests" | cut -d' ' -f2 || true)"

echo "==> an encoder (SigLIP-B/16's unless GPU_CHECK_TOWER says): GPU against 2 CPU threads"
# shellcheck disable=SC2086
"$bin/gpu_bench" "$runs" ${GPU_CHECK_TOWER:-} | tee "$work/bench.log"

echo "==> vlm on the GPU: bench and classify"
vlm="$bin/vlm"
"$vlm" bench --model models/demo.vlmq --device cuda --runs "$runs"
shopt -s nullglob
images=(models/demo-eval/images/*)
if [ ${#images[@]} -gt 0 ]; then
  img=${images[0]}
  cpu_top="$("$vlm" classify "$img" --device cpu --top 3 --json)"
  gpu_top="$("$vlm" classify "$img" --device cuda --top 3 --json)"
  labels() { grep '"label"' | tr -s ' '; }
  if [ "$(labels <<<"$cpu_top")" = "$(labels <<<"$gpu_top")" ]; then
    same="same top-3 labels on the GPU as on the CPU"
  else
    echo "classify: the GPU's top-3 labels differ from the CPU's:"; echo "$cpu_top"; echo "$gpu_top"
    exit 1
  fi
  echo "classify $img: $same"
  some=("${images[@]:0:16}")
  if [ "$("$vlm" caption "${some[@]}" --device cpu)" = "$("$vlm" caption "${some[@]}" --device cuda)" ]; then
    captions="the demo captioner's ${#some[@]} greedy captions are the CPU's"
  else
    echo "caption: the GPU's captions differ from the CPU's" >&2
    exit 1
  fi
  echo "$captions"
fi
if [ -n "${VLM_GPU_CAPTIONER:-}" ]; then
  echo "==> captioner on the GPU"
  "$vlm" bench --caption --model "$VLM_GPU_CAPTIONER" --device cuda --threads 1 --runs 3
fi

echo
echo "| check | result |"
echo "|---|---|"
echo "| op battery against the scalar reference | passed: ${battery:-?} |"
echo "| demo model image embedding, GPU against CPU | cosine ${demo_cos:-?} |"
echo "| vlm classify --device cuda | ${same:-not run} |"
echo "| vlm caption --device cuda | ${captions:-not run} |"
grep ', batch 1, ms |' "$work/bench.log" | sed 's/^| \(.*\), batch 1, ms | \(.*\) | \(.*\) | \(.*\) |$/| \1, batch 1: CPU 2 threads \2 ms, GPU \3 ms | \4 faster |/'
grep '^| output cosine' "$work/bench.log" | sed 's/| output cosine, GPU against CPU | | \(.*\) | |/| encoder output, GPU against CPU | cosine \1 |/'
rm -f "$work/bench.log"
echo "gpu-check: done in $((SECONDS - start)) s"
