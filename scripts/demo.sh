#!/usr/bin/env bash
# Builds `vlm`, quantizes the shipped demo model into one int8 artifact (with an accuracy
# report and the demo labels' embeddings stored), then classifies shipped example images
# on the allocation-free int8 runtime, and captions them with the demo captioner. Says what it is doing at each step: the first
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
# fp32 attention: bf16 is twice as fast where the CPU has bf16 dot products, but on this
# small model its rounding reorders near-tied captions (held-out retrieval R@5 lost 3 to
# 5 of 135 images against fp32, over the one-item budget); the int8 GEMMs are unchanged.
./target/release/vlm quantize --model models/demo --calib models/demo-calib \
  --labels "$labels" --template "a {}" --attention fp32 \
  --out "$out/demo.vlmq" --report "$out/report.html" \
  | grep -Ev '^ +[0-9]+ +(layer_norm|linear|attention|add|patch_embed|embedding|activate) '
echo "quantized in $((SECONDS - t)) s; sha256 $(sha256sum "$out/demo.vlmq" | cut -d' ' -f1) (the same on every CPU)" >&2
for img in models/demo/examples/red-circle.png models/demo/examples/two-blue-stars.png; do
  step "classifying $img with the int8 artifact"
  ./target/release/vlm classify "$img" --model "$out/demo.vlmq"
done
# Each label's probability stands on its own (SigLIP's sigmoid, not a softmax), so a
# threshold keeps every label that is true of an image and may keep none: what a
# multi-label filter such as moderation needs.
step "keeping only the labels at probability 0.5 or above, for every example (the demo model knows only generated shapes: on the cat photo anything it keeps is a guess)"
./target/release/vlm classify models/demo/examples/*.png models/demo/examples/*.jpg \
  --model "$out/demo.vlmq" --threshold 0.5 \
  --labels "a circle,a star,a triangle,a red shape,a yellow shape,two objects,two blue stars"
step "captioning the examples with the demo captioner (models/demo-captioner, a Hugging Face Idefics3 folder read from its safetensors; fp32)"
./target/release/vlm caption models/demo/examples/*.png models/demo/examples/*.jpg
echo "report: $out/report.html"
