#!/usr/bin/env bash
# Builds `vlm`, quantizes the shipped demo model into one int8 artifact (with an accuracy
# report and the demo labels' embeddings stored), then classifies shipped example images
# on the allocation-free int8 runtime.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p vlm-cli
labels="red circle,blue star,yellow triangle,green heart,purple cross,orange square"
out=target/demo
mkdir -p "$out"
./target/release/vlm quantize --model models/demo --calib models/demo-calib \
  --labels "$labels" --template "a {}" --out "$out/demo.vlmq" --report "$out/report.html" \
  | grep -Ev '^ +[0-9]+ +(layer_norm|linear|attention|add|patch_embed|embedding|activate) '
for img in models/demo/examples/red-circle.png models/demo/examples/two-blue-stars.png; do
  ./target/release/vlm classify "$img" --model "$out/demo.vlmq"
done
echo "report: $out/report.html"
