#!/usr/bin/env bash
# The whole test suite, from a fresh machine: toolchain targets, the recipe's Python
# environment, formatting and lints, the no_std build for a Cortex-M target, the recipe
# in smoke mode (train a few steps, export, golden file), the recipe's own tests, and
# every Rust test (including base-size SigLIP / SigLIP 2 exports against onnxruntime and
# the int8 pipeline on them), the CUDA backend's kernels compiled by NVRTC for Jetson
# Orin and Hopper (no GPU needed; its GPU tests skip, saying so), the runtime's tests
# on aarch64 under qemu (plain NEON, dotprod and i8mm CPUs) and on armv7 under
# qemu-arm, the runtime-only binary on both,
# the same quantized artifact from x86 and aarch64, the Cortex-M firmware examples under
# qemu-system-arm (Cortex-M7 and Cortex-M55, in the Rust tests), and bounded fuzz runs of
# the artifact reader and the image decoders.
set -euo pipefail
cd "$(dirname "$0")/.."
# Each step says how long the one before it took, and the end the total: what to trim
# when the run nears CI's time budget.
last=$SECONDS
step() {
  printf '\n==> [previous step %d s, %d s in all] %s\n' "$((SECONDS - last))" "$SECONDS" "$*"
  last=$SECONDS
}

step "system packages (cross compilers, qemu)"
need=()
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
[ -d /usr/aarch64-linux-gnu/lib ] || need+=(libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null || need+=(gcc-arm-linux-gnueabihf)
[ -e /usr/arm-linux-gnueabihf/lib/crt1.o ] || need+=(libc6-dev-armhf-cross)
command -v qemu-system-arm >/dev/null || need+=(qemu-system-arm)
command -v c++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# A clean clone gains nothing from incremental caches; they would only add GBs to target/.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi

step "toolchain"
rustup component add rustfmt clippy >/dev/null 2>&1 || true
rustup target add thumbv7em-none-eabihf thumbv8m.main-none-eabihf aarch64-unknown-linux-gnu \
  armv7-unknown-linux-gnueabihf >/dev/null

step "recipe python environment"
py="$(scripts/setup-python.sh)"
export VLM_PYTHON="$py" VLM_REQUIRE_PYTHON=1
# The CUDA kernels' scalar functions are checked on the host with c++ (installed above).
export VLM_REQUIRE_CXX=1

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The firmware binaries build only for a Cortex-M target, compiled for the core as the
# board profiles say (the Armv8-M DSP instructions need it). The M55's configuration
# holds all of the firmware's code and both Cortex-M kernels (the M7's is a subset);
# the M7's binaries are built, warnings included, by the firmware's tests.
CARGO_ENCODED_RUSTFLAGS="-Ctarget-cpu=cortex-m55" cargo clippy --quiet -p vlm-firmware \
  --features firmware,vlm-runtime/arm-mve --target thumbv8m.main-none-eabihf --bins -- -D warnings

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

step "rust tests (the Cortex-M7 and M55 firmware examples under qemu-system-arm among them)"
cargo test --workspace --quiet

step "CUDA backend without a GPU: NVRTC (the nvidia-cuda-nvrtc-cu12 wheel) compiles every kernel for sm_87 and sm_90; the op battery runs through the backend on an emulated GPU (a fake libcuda); the real-GPU tests say they skip"
nvrtc_lib="$("$py" -c 'import nvidia.cuda_nvrtc, os; print(os.path.join(list(nvidia.cuda_nvrtc.__path__)[0], "lib"))')"
# --workspace, not -p vlm-cuda: the same features as the step above, so the same test
# binaries (with -p, every crate under vlm-cuda was built again, a minute on two cores).
LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" VLM_REQUIRE_NVRTC=1 \
  cargo test --quiet --workspace --test ptx --test emulated --test gpu -- --nocapture

step "runtime tests on aarch64 under qemu (cortex-a72: plain NEON; cortex-a76: dotprod; max: i8mm)"
scripts/cross-test.sh

step "runtime tests on armv7 under qemu-arm (the armv7 board profile)"
cargo xtask test --board armv7

step "runtime-only binary on aarch64 and armv7: size, and the same answer as x86"
scripts/lite-check.sh

step "the same artifact from every CPU: vlm quantize on x86 and on aarch64 under qemu"
scripts/repro-check.sh

# 30 s each from the committed seeds keeps the run inside CI's half hour; scripts/fuzz.sh
# alone defaults to 60, and VLM_FUZZ_SECONDS sets either.
export VLM_FUZZ_SECONDS=${VLM_FUZZ_SECONDS:-30}
step "fuzz the artifact reader and the image decoders ($VLM_FUZZ_SECONDS s each)"
scripts/fuzz.sh

step "done"
