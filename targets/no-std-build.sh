#!/usr/bin/env bash
# Proves the runtime builds with no std and no allocator for the microcontroller
# targets the project supports: a `no_std` promise that no build checks does not exist.
#   thumbv7em-none-eabihf     Cortex-M4F / Cortex-M7 (FPU)
#   thumbv8m.main-none-eabihf Cortex-M33 / Cortex-M55 (FPU, Helium-capable cores)
set -euo pipefail
cd "$(dirname "$0")/.."
for target in thumbv7em-none-eabihf thumbv8m.main-none-eabihf; do
  rustup target add "$target" >/dev/null 2>&1
  cargo build --quiet --release -p vlm-nostd-check --target "$target"
  echo "no_std build ok: $target"
done
