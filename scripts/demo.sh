#!/usr/bin/env bash
# Builds `vlm` and classifies a shipped example image with the shipped demo model.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p vlm-cli
labels="red circle,blue star,yellow triangle,green heart,purple cross,orange square"
for img in models/demo/examples/red-circle.png models/demo/examples/two-blue-stars.png; do
  ./target/release/vlm classify "$img" --labels "$labels" --template "a {}"
done
