#!/usr/bin/env bash
# vlm's int8 vision tower against its peers on this machine: onnxruntime int8 (dynamic
# quantization), onnxruntime fp32 and tract fp32, on 1 and 2 threads, all on the same
# base-size SigLIP (random weights: speed does not depend on them) and the same input.
# Prints a table, then the same table in markdown for BENCHMARKS.md. The captioner's
# peer, llama.cpp, is timed by scripts/bench-peers-caption.sh (BENCH_CAPTION=1 runs it
# after this one, with the same BENCH_* settings).
#
#   BENCH_RUNS     timed runs per row (default 12)
#   BENCH_ROUNDS   rounds the runs are split into (default 3): each round times every
#                  runtime in turn, and each row pools its runs over the rounds, so a
#                  shared machine's slow spell weighs on all the runtimes alike
#   BENCH_WARMUP   untimed runs first, in every round (default 3)
#   BENCH_THREADS  thread counts, space-separated (default "1 2")
#   BENCH_KEEP     a folder to keep the model, artifacts and JSON in (default: a temp
#                  folder, removed at exit)
#   VLM_PYTHON     the recipe's Python (default: scripts/setup-python.sh makes it)
#   VLM_BIN        a built `vlm` to use (default: build target/release/vlm)
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"
runs="${BENCH_RUNS:-12}"
rounds="${BENCH_ROUNDS:-3}"
warmup="${BENCH_WARMUP:-3}"
threads="${BENCH_THREADS:-1 2}"
say() { printf '==> %s\n' "$*" >&2; }

py="${VLM_PYTHON:-$(scripts/setup-python.sh)}"
if [ -n "${BENCH_KEEP:-}" ]; then
  mkdir -p "$BENCH_KEEP"
  work="$(cd "$BENCH_KEEP" && pwd)"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi

vlm="${VLM_BIN:-}"
if [ -z "$vlm" ]; then
  say "building vlm (release)"
  # The whole workspace, as every other build here does: building one package
  # re-resolves features and rebuilds tract.
  cargo build --workspace --release --quiet
  vlm="$root/target/release/vlm"
fi

recipes() { (cd "$root/models/recipes" && "$py" -m "$@"); }

if [ ! -f "$work/model/config.json" ]; then
  say "exporting SigLIP base (patch16, 224) with random weights"
  recipes vlm_recipes.export --random siglip-base-patch16-224 --out "$work/model" >&2
fi
if [ ! -d "$work/calib" ]; then
  say "writing calibration photos"
  recipes vlm_recipes.photos --out "$work/calib" --count 16 --seed 1 --side 224 >&2
fi
if [ ! -f "$work/model.vlmq" ]; then
  say "vlm quantize"
  "$vlm" quantize --model "$work/model" --calib "$work/calib" --out "$work/model.vlmq" \
    --json >"$work/quantize.json"
fi
if [ ! -f "$work/vision.int8.onnx" ]; then
  # Dynamic quantization: int8 weights (QInt8, one scale per tensor: ORT's default),
  # uint8 activations quantized per run (DynamicQuantizeLinear always makes uint8). That
  # is U8S8, the format ORT recommends for x86-64; with VNNI it does not saturate, so
  # reduce_range stays off.
  say "onnxruntime quantize_dynamic (U8S8)"
  "$py" - "$work/model/vision.onnx" "$work/vision.int8.onnx" >&2 <<'EOF'
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8)
EOF
fi

out="$work/results"
mkdir -p "$out"
if [ "$rounds" -lt 1 ] || [ "$runs" -lt 1 ]; then
  echo "BENCH_RUNS and BENCH_ROUNDS must be at least 1" >&2
  exit 2
fi
per=$(( (runs + rounds - 1) / rounds ))
ort() { recipes vlm_recipes.bench_ort --model "$work/model" --runs "$per" --warmup "$warmup" "$@"; }
for r in $(seq "$rounds"); do
  for n in $threads; do
    say "round $r of $rounds: vlm int8, $n thread(s)"
    "$vlm" bench --model "$work/model.vlmq" --threads "$n" --runs "$per" --warmup "$warmup" \
      --json >"$out/vlm-int8-$n.$r.json"
    say "round $r of $rounds: onnxruntime int8 dynamic, $n thread(s)"
    ort --onnx "$work/vision.int8.onnx" --threads "$n" --label "onnxruntime int8 dynamic" \
      >"$out/ort-int8-$n.$r.json"
    say "round $r of $rounds: onnxruntime fp32, $n thread(s)"
    ort --threads "$n" --label "onnxruntime fp32" >"$out/ort-fp32-$n.$r.json"
  done
done
# tract, far slower and no goal's yardstick, runs once.
say "tract fp32 (one thread: it has no intra-op threading)"
"$vlm" bench --model "$work/model" --runs "$per" --warmup "$warmup" --json >"$out/tract-fp32.1.json"

"$py" - "$out" "$threads" "$rounds" "$warmup" <<'EOF'
import json, os, statistics, sys

out, threads, rounds, warmup = sys.argv[1], [int(t) for t in sys.argv[2].split()], int(sys.argv[3]), sys.argv[4]


def load(prefix):
    """One row: the first round's report, its timings pooled over every round there is."""
    reports = [json.load(open(p)) for r in range(1, rounds + 1)
               if os.path.exists(p := os.path.join(out, f"{prefix}.{r}.json"))]
    row = dict(reports[0])
    samples = [s for rep in reports for s in rep["samples_ms"]]
    row.update(median_ms=statistics.median(samples), min_ms=min(samples), max_ms=max(samples),
               runs=len(samples), rounds=len(reports))
    return row


tract = load("tract-fp32")
rows, peaks = [], []
for n in threads:
    vlm = load(f"vlm-int8-{n}")
    base = vlm["median_ms"]
    if vlm.get("peak"):
        peaks.append(f"{vlm['peak']['gmac_per_s']:.0f} GMAC/s on {n} thread(s)")
        # The share of peak at the pooled median: GMAC/s = MACs / (ms · 1e6).
        pct = 100 * vlm["macs"] / (base * 1e6) / vlm["peak"]["gmac_per_s"]
        note = f" ({vlm['isa']}, {pct:.0f}% of int8 peak)"
    else:
        note = f" ({vlm['isa']})"
    rows.append(("vlm int8" + note, str(n), vlm, base))
    for prefix, label in [(f"ort-int8-{n}", "onnxruntime int8 dynamic (U8S8)"),
                          (f"ort-fp32-{n}", "onnxruntime fp32")]:
        r = load(prefix)
        rows.append((f"{label} {r['onnxruntime']}", str(n), r, base))
    # tract has no intra-op threads: its one-thread time stands in every row.
    rows.append(("tract fp32", "1" if n == 1 else f"{n} (1 thread)", tract, base))

first = load(f"vlm-int8-{threads[0]}")
print()
print(f"SigLIP base patch16-224 vision tower, {first['macs'] / 1e9:.2f} GMAC per image;"
      f" median of {first['runs']} runs in {rounds} interleaved rounds (each after {warmup}"
      f" warmup; tract: {tract['runs']} runs, once); peer / vlm > 1: vlm is faster")
if peaks:
    print(f"int8 peak ({first['peak']['instruction']}, registers only): " + ", ".join(peaks))
w = max(len(r[0]) for r in rows)
print(f"{'runtime':<{w}}  {'threads':>14}  {'median ms':>10}  {'min ms':>8}  {'peer / vlm':>10}")
for name, t, r, base in rows:
    print(f"{name:<{w}}  {t:>14}  {r['median_ms']:>10.1f}  {r['min_ms']:>8.1f}  {r['median_ms'] / base:>10.2f}")
print()
print("| runtime | threads | median ms | min ms | peer / vlm |")
print("|---|---|---:|---:|---:|")
for name, t, r, base in rows:
    print(f"| {name} | {t} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['median_ms'] / base:.2f} |")
EOF

if [ "${BENCH_CAPTION:-0}" = 1 ]; then
  VLM_BIN="$vlm" VLM_PYTHON="$py" "$root/scripts/bench-peers-caption.sh"
fi
