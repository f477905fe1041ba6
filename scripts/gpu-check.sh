#!/usr/bin/env bash
# The CUDA backend on a machine with an NVIDIA GPU, in one run of a few minutes: builds,
# runs the GPU op battery (every op against the CPU's scalar reference; int8 bit for bit)
# and the demo model end to end, times SigLIP-B/16's encoder (random int8 weights) on the
# GPU against 2 CPU threads, runs `vlm bench`, `vlm classify` and `vlm caption` with
# --device cuda (the same labels and captions as the CPU), and prints one table. Fails
# on any mismatch.
#   VLM_NVRTC_DIR     a folder holding libnvrtc.so.12 (else: $CUDA_HOME/lib64,
#                     /usr/local/cuda/lib64, or a Python's nvidia-cuda-nvrtc-cu12 wheel)
#   VLM_GPU_CAPTIONER a captioner artifact or folder (SmolVLM-256M) to time as well
#   GPU_CHECK_RUNS    timed runs per figure (default 10)
#   GPU_CHECK_TOWER   the timed encoder's "LAYERS TOKENS WIDTH HEADS MLP" (default
#                     SigLIP-B/16's: 12 196 768 12 3072)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${GPU_CHECK_RUNS:-10}
start=$SECONDS

nvrtc=""
for d in "${VLM_NVRTC_DIR:-}" "${CUDA_HOME:+$CUDA_HOME/lib64}" /usr/local/cuda/lib64 \
  /usr/lib/x86_64-linux-gnu /usr/lib/aarch64-linux-gnu; do
  if [ -n "$d" ] && [ -e "$d/libnvrtc.so.12" ]; then nvrtc=$d; break; fi
done
if [ -z "$nvrtc" ]; then
  for py in python3 "${VLM_PYTHON:-}"; do
    [ -n "$py" ] && command -v "$py" >/dev/null || continue
    d="$("$py" -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))' 2>/dev/null || true)"
    if [ -n "$d" ] && [ -e "$d/libnvrtc.so.12" ]; then nvrtc=$d; break; fi
  done
fi
if [ -z "$nvrtc" ]; then
  echo "gpu-check: no libnvrtc.so.12 found: set VLM_NVRTC_DIR, or pip install nvidia-cuda-nvrtc-cu12" >&2
  exit 2
fi
export LD_LIBRARY_PATH="$nvrtc${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export VLM_REQUIRE_GPU=1 VLM_REQUIRE_NVRTC=1
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader

echo "==> build"
cargo build --release --quiet -p vlm-cli -p vlm-cuda --examples
cargo test --release --quiet -p vlm-cuda --no-run 2>/dev/null

echo "==> kernels for this GPU, Orin and Hopper; the op battery; the demo model end to end"
cargo test --release --quiet -p vlm-cuda --test ptx --test gpu -- --nocapture --test-threads 1 2>&1 \
  | tee /tmp/gpu-check-tests.$$ | grep -E "SKIPPED|compiled|ops on the GPU|cosine|FAILED|panicked|test result" || true
grep -q "test result: FAILED\|panicked" /tmp/gpu-check-tests.$$ && { cat /tmp/gpu-check-tests.$$; exit 1; }
battery="$(grep -o '[0-9]* ops on the GPU, [0-9]* left to the CPU' /tmp/gpu-check-tests.$$ || true)"
demo_cos="$(grep -m1 -o 'cosine [0-9.]*' /tmp/gpu-check-tests.$$ | cut -d' ' -f2 || true)"
rm -f /tmp/gpu-check-tests.$$

echo "==> an encoder (SigLIP-B/16's unless GPU_CHECK_TOWER says): GPU against 2 CPU threads"
# shellcheck disable=SC2086
cargo run --release --quiet -p vlm-cuda --example gpu_bench -- "$runs" ${GPU_CHECK_TOWER:-} \
  | tee /tmp/gpu-check-bench.$$

echo "==> vlm on the GPU: bench and classify"
vlm=target/release/vlm
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
grep ', batch 1, ms |' /tmp/gpu-check-bench.$$ | sed 's/^| \(.*\), batch 1, ms | \(.*\) | \(.*\) | \(.*\) |$/| \1, batch 1: CPU 2 threads \2 ms, GPU \3 ms | \4 faster |/'
grep '^| output cosine' /tmp/gpu-check-bench.$$ | sed 's/| output cosine, GPU against CPU | | \(.*\) | |/| encoder output, GPU against CPU | cosine \1 |/'
rm -f /tmp/gpu-check-bench.$$
echo "gpu-check: done in $((SECONDS - start)) s"
