#!/usr/bin/env bash
# Builds `vlm`, quantizes the shipped demo model into one int8 artifact (with an accuracy
# report and the demo labels' embeddings stored), then classifies shipped example images
# on the allocation-free int8 runtime. Says what it is doing at each step: the first
# build alone takes minutes.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*" >&2; }
t=$SECONDS
if [ -x target/release/vlm ]; then
  step "building vlm (release; up to date unless the sources changed)"
else
  step "building vlm (release; the first build compiles every dependency, tract included: about 5 minutes on 2 idle cores, longer under load)"
fi
# cargo's own progress (one line per crate when not on a terminal) shows it is working.
cargo build --release -p vlm-cli
echo "built in $((SECONDS - t)) s" >&2

labels="red circle,blue star,yellow triangle,green heart,purple cross,orange square"
out=target/demo
mkdir -p "$out"
step "quantizing models/demo to int8: import and check against tract, calibrate on models/demo-calib, convert, store the labels' embeddings"
t=$SECONDS
./target/release/vlm quantize --model models/demo --calib models/demo-calib \
  --labels "$labels" --template "a {}" --out "$out/demo.vlmq" --report "$out/report.html" \
  | grep -Ev '^ +[0-9]+ +(layer_norm|linear|attention|add|patch_embed|embedding|activate) '
echo "quantized in $((SECONDS - t)) s; sha256 $(sha256sum "$out/demo.vlmq" | cut -d' ' -f1) (the same on every CPU)" >&2
for img in models/demo/examples/red-circle.png models/demo/examples/two-blue-stars.png; do
  step "classifying $img with the int8 artifact"
  ./target/release/vlm classify "$img" --model "$out/demo.vlmq"
done
echo "report: $out/report.html"
