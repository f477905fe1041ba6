#!/usr/bin/env bash
# vlm's int8 vision tower against its peers on this machine: onnxruntime int8 (dynamic
# quantization), onnxruntime fp32, OpenVINO int8 (NNCF post-training quantization) and
# fp32, and tract fp32, on 1 and 2 threads, all on the same base-size SigLIP (random
# weights: speed does not depend on them) and the same input. Beside each time, the
# embedding cosine against onnxruntime fp32 over held-out photo crops (median and
# minimum): a fast int8 that has lost the embedding is no peer. On a CPU without VNNI,
# onnxruntime's default U8S8 saturates its 16-bit pair sums (vpmaddubsw), so it also
# runs with reduce_range (7-bit weights), the setting its documentation gives for such
# CPUs. Prints a table, then the same table in markdown for BENCHMARKS.md. The
# captioner's peer, llama.cpp, is timed by scripts/bench-peers-caption.sh
# (BENCH_CAPTION=1 runs it after this one, with the same BENCH_* settings).
#
#   BENCH_RUNS     timed runs per row (default 12)
#   BENCH_ROUNDS   rounds the runs are split into (default 3): each round times every
#                  runtime in turn, and each row pools its runs over the rounds, so a
#                  shared machine's slow spell weighs on all the runtimes alike
#   BENCH_WARMUP   untimed runs first, in every round (default 3)
#   BENCH_THREADS  thread counts, space-separated (default "1 2")
#   BENCH_KEEP     a folder to keep the model, artifacts and JSON in (default: a temp
#                  folder, removed at exit)
#   BENCH_REDUCE_RANGE  1: time onnxruntime reduce_range even with VNNI; 0: never
#                  (default: only without VNNI)
#   BENCH_WEIGHT7  1: also time vlm with 7-bit weights on every layer (`vlm quantize
#                  --weight-bits 7`, what AVX2 multiplies fastest); 0: never (default:
#                  when onnxruntime runs reduce_range, its 7-bit counterpart)
#   BENCH_ACT7     1: also time vlm with 7-bit weights and activations (`--weight-bits 7
#                  --activation-bits 7`, AVX2's paired kernel); 0: never (default: as
#                  BENCH_WEIGHT7)
#   BENCH_ACT7_MIN_COSINE  that artifact's quantization budget (default 0.9985: the
#                  quantizer checks on a quarter of the calibration photos, here 4, a
#                  noisy median; the cosine column measures the held-out photos)
#   BENCH_OPENVINO 0 skips OpenVINO (default 1: its venv, OPENVINO_VENV or
#                  ~/.cache/vlm-edge/openvino-venv, is made once from
#                  models/recipes/requirements-openvino.txt)
#   BENCH_TIER     native (default): each engine takes the best code this CPU runs;
#                  avx2: every engine's process sees an AVX2 + FMA CPU (CPUID with the
#                  AVX-512, AVX-VNNI and AMX bits cleared, scripts/tier/x86_avx2_only.c
#                  loaded with LD_PRELOAD), so onnxruntime and OpenVINO pick the kernels
#                  an AVX2-only machine gets and vlm its x86-avx2 set: the AVX2 tier's
#                  figures on a CPU with more (its memory system is still this machine's)
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
# Another seed, other crops: the accuracy column's photos, seen by no calibration.
if [ ! -d "$work/holdout" ]; then
  say "writing held-out photos"
  recipes vlm_recipes.photos --out "$work/holdout" --count 16 --seed 2 --side 224 >&2
fi

# VNNI (AVX-512 or AVX) multiplies u8 by s8 into 32-bit sums without the 16-bit
# intermediate that saturates onnxruntime's U8S8 kernels on older x86.
vnni=0
if grep -qwE 'avx512_vnni|avx_vnni' /proc/cpuinfo 2>/dev/null; then vnni=1; fi
tier="${BENCH_TIER:-native}"
tier_preload=""
case "$tier" in
  native) ;;
  avx2)
    flags="$(grep -m1 '^flags' /proc/cpuinfo || true)"
    if ! grep -qw avx2 <<<"$flags" || ! grep -qw fma <<<"$flags"; then
      echo "BENCH_TIER=avx2 needs an x86 CPU with AVX2 and FMA" >&2
      exit 2
    fi
    if grep -qwE 'avx512f|avx_vnni|avx512_vnni' <<<"$flags"; then
      # The masking needs the kernel's CPUID faulting (Intel CPUs and some KVM guests).
      if ! grep -qw cpuid_fault <<<"$flags"; then
        echo "BENCH_TIER=avx2 on a CPU with AVX-512 or AVX-VNNI needs CPUID faulting" \
          "('cpuid_fault' in /proc/cpuinfo), which this one lacks" >&2
        exit 2
      fi
      say "building the AVX2-tier CPUID mask"
      tier_preload="$work/x86_avx2_only.so"
      cc -O2 -shared -fPIC -o "$tier_preload" "$root/scripts/tier/x86_avx2_only.c"
    fi
    vnni=0
    ;;
  *)
    echo "BENCH_TIER must be native or avx2, not '$tier'" >&2
    exit 2
    ;;
esac
case "${BENCH_REDUCE_RANGE:-}" in
  1) reduce_range=1 ;;
  0) reduce_range=0 ;;
  *) reduce_range=$((1 - vnni)) ;;
esac
if [ ! -f "$work/model.vlmq" ]; then
  say "vlm quantize"
  "$vlm" quantize --model "$work/model" --calib "$work/calib" --out "$work/model.vlmq" \
    --json >"$work/quantize.json"
fi
# Dynamic quantization: int8 weights (QInt8, one scale per tensor: ORT's default),
# uint8 activations quantized per run (DynamicQuantizeLinear always makes uint8). That is
# U8S8, the format ORT recommends for x86-64; reduce_range keeps weights to 7 bits.
ort_quantize() {
  local out=$1 reduce=$2
  [ -f "$out" ] && return
  say "onnxruntime quantize_dynamic (U8S8, reduce_range=$reduce)"
  "$py" - "$work/model/vision.onnx" "$out" "$reduce" >&2 <<'EOF'
import sys
from onnxruntime.quantization import QuantType, quantize_dynamic
quantize_dynamic(sys.argv[1], sys.argv[2], weight_type=QuantType.QInt8,
                 reduce_range=sys.argv[3] == "1")
EOF
}
ort_quantize "$work/vision.int8.onnx" 0
if [ "$reduce_range" = 1 ]; then ort_quantize "$work/vision.int8rr.onnx" 1; fi
weight7="${BENCH_WEIGHT7:-$reduce_range}"
if [ "$weight7" = 1 ] && [ ! -f "$work/model7.vlmq" ]; then
  say "vlm quantize --weight-bits 7"
  "$vlm" quantize --model "$work/model" --calib "$work/calib" --weight-bits 7 \
    --out "$work/model7.vlmq" --json >"$work/quantize7.json"
fi
act7="${BENCH_ACT7:-$weight7}"
if [ "$act7" = 1 ] && [ ! -f "$work/model77.vlmq" ]; then
  say "vlm quantize --weight-bits 7 --activation-bits 7"
  "$vlm" quantize --model "$work/model" --calib "$work/calib" --weight-bits 7 \
    --activation-bits 7 --min-cosine "${BENCH_ACT7_MIN_COSINE:-0.9985}" \
    --out "$work/model77.vlmq" --json >"$work/quantize77.json"
fi

openvino="${BENCH_OPENVINO:-1}"
ov_venv="${OPENVINO_VENV:-$HOME/.cache/vlm-edge/openvino-venv}"
ov() { (cd "$root/models/recipes" && "$ov_venv/bin/python" -m vlm_recipes.bench_openvino "$@"); }
if [ "$openvino" = 1 ]; then
  ov_req="$root/models/recipes/requirements-openvino.txt"
  ov_want="$(sha256sum "$ov_req" | cut -d' ' -f1)"
  if [ "$(cat "$ov_venv/.requirements.sha256" 2>/dev/null)" != "$ov_want" ]; then
    say "making $ov_venv (openvino, nncf)"
    [ -x "$ov_venv/bin/python" ] || "$py" -m venv "$ov_venv" >&2
    "$ov_venv/bin/pip" install --quiet --disable-pip-version-check -r "$ov_req" >&2
    echo "$ov_want" >"$ov_venv/.requirements.sha256"
  fi
  if [ ! -f "$work/openvino/int8.xml" ]; then
    say "OpenVINO: convert, and quantize with NNCF on the calibration photos"
    ov prepare --model "$work/model" --calib "$work/calib" --out "$work/openvino" >&2
  fi
fi

# From here on every engine runs at the tier's ISA (quantizing above gives the same
# artifacts at any ISA).
if [ -n "$tier_preload" ]; then export LD_PRELOAD="$tier_preload"; fi

# Embeddings of the held-out photos from every engine (vlm's through `vlm embed`).
emb="$work/embeddings"
mkdir -p "$emb"
say "embedding the held-out photos with every runtime"
mapfile -t holdout < <(find "$work/holdout" -maxdepth 1 -name '*.png' | sort)
"$vlm" embed --model "$work/model.vlmq" "${holdout[@]/#/--image=}" >"$emb/vlm-int8.json"
if [ "$weight7" = 1 ]; then
  "$vlm" embed --model "$work/model7.vlmq" "${holdout[@]/#/--image=}" >"$emb/vlm-int8w7.json"
fi
if [ "$act7" = 1 ]; then
  "$vlm" embed --model "$work/model77.vlmq" "${holdout[@]/#/--image=}" >"$emb/vlm-int8w7x7.json"
fi
ort_embed() { recipes vlm_recipes.bench_ort --model "$work/model" --embed "$work/holdout" "$@"; }
ort_embed --out "$emb/ort-fp32.npy"
ort_embed --onnx "$work/vision.int8.onnx" --out "$emb/ort-int8.npy"
if [ "$reduce_range" = 1 ]; then
  ort_embed --onnx "$work/vision.int8rr.onnx" --out "$emb/ort-int8rr.npy"
fi
if [ "$openvino" = 1 ]; then
  for p in fp32 int8; do
    ov embed --model "$work/model" --xml "$work/openvino/$p.xml" --photos "$work/holdout" \
      --out "$emb/ov-$p.npy"
  done
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
    if [ "$weight7" = 1 ]; then
      say "round $r of $rounds: vlm int8 with 7-bit weights, $n thread(s)"
      "$vlm" bench --model "$work/model7.vlmq" --threads "$n" --runs "$per" --warmup "$warmup" \
        --json >"$out/vlm-int8w7-$n.$r.json"
    fi
    if [ "$act7" = 1 ]; then
      say "round $r of $rounds: vlm int8 with 7-bit weights and activations, $n thread(s)"
      "$vlm" bench --model "$work/model77.vlmq" --threads "$n" --runs "$per" --warmup "$warmup" \
        --json >"$out/vlm-int8w7x7-$n.$r.json"
    fi
    say "round $r of $rounds: onnxruntime int8 dynamic, $n thread(s)"
    ort --onnx "$work/vision.int8.onnx" --threads "$n" --label "onnxruntime int8 dynamic" \
      >"$out/ort-int8-$n.$r.json"
    if [ "$reduce_range" = 1 ]; then
      say "round $r of $rounds: onnxruntime int8 dynamic reduce_range, $n thread(s)"
      ort --onnx "$work/vision.int8rr.onnx" --threads "$n" \
        --label "onnxruntime int8 dynamic reduce_range" >"$out/ort-int8rr-$n.$r.json"
    fi
    say "round $r of $rounds: onnxruntime fp32, $n thread(s)"
    ort --threads "$n" --label "onnxruntime fp32" >"$out/ort-fp32-$n.$r.json"
    if [ "$openvino" = 1 ]; then
      for p in int8 fp32; do
        say "round $r of $rounds: OpenVINO $p, $n thread(s)"
        ov time --model "$work/model" --xml "$work/openvino/$p.xml" --threads "$n" \
          --runs "$per" --warmup "$warmup" --label "OpenVINO $p" >"$out/ov-$p-$n.$r.json"
      done
    fi
  done
done
# tract, far slower and no goal's yardstick, runs once.
say "tract fp32 (one thread: it has no intra-op threading)"
"$vlm" bench --model "$work/model" --runs "$per" --warmup "$warmup" --json >"$out/tract-fp32.1.json"

unset LD_PRELOAD
"$py" - "$out" "$threads" "$rounds" "$warmup" "$emb" "$vnni" "$tier" <<'EOF'
import json, os, statistics, sys

import numpy as np

out, threads, rounds, warmup = sys.argv[1], [int(t) for t in sys.argv[2].split()], int(sys.argv[3]), sys.argv[4]
emb, vnni, tier = sys.argv[5], sys.argv[6] == "1", sys.argv[7]


def embeddings(name):
    path = os.path.join(emb, name)
    if not os.path.exists(path):
        return None
    if name.endswith(".json"):
        # `vlm embed`: one JSON object per line.
        rows = [json.loads(line) for line in open(path) if line.strip()]
        return np.array([r["embedding"] for r in rows if r["kind"] == "image"], dtype=np.float64)
    return np.load(path).astype(np.float64)


ref = embeddings("ort-fp32.npy")


def cosine(name):
    """Median and minimum cosine of one engine's held-out embeddings against onnxruntime fp32."""
    e = embeddings(name)
    if e is None:
        return ""
    c = (e * ref).sum(1) / np.linalg.norm(e, axis=1) / np.linalg.norm(ref, axis=1)
    return f"{np.median(c):.5f} / {c.min():.5f}"


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

    def note(r):
        # The share of the peak of the row's own loop (`vlm bench` picks the loop of the
        # weight width most MACs have) at the pooled median: GMAC/s = MACs / (ms · 1e6).
        if not r.get("peak"):
            return f" ({r['isa']})"
        pct = 100 * r["macs"] / (r["median_ms"] * 1e6) / r["peak"]["gmac_per_s"]
        return f" ({r['isa']}, {pct:.0f}% of int8 peak)"

    if vlm.get("peak"):
        peaks.append(f"{vlm['peak']['gmac_per_s']:.0f} GMAC/s on {n} thread(s)")
    rows.append(("vlm int8" + note(vlm), str(n), vlm, base, cosine("vlm-int8.json")))
    if os.path.exists(os.path.join(out, f"vlm-int8w7-{n}.1.json")):
        r = load(f"vlm-int8w7-{n}")
        if r.get("peak") and r["peak"]["instruction"] != (vlm.get("peak") or {}).get("instruction"):
            peaks.append(f"{r['peak']['gmac_per_s']:.0f} GMAC/s on {n} thread(s) with"
                         f" {r['peak']['instruction']}")
        rows.append(("vlm int8, 7-bit weights" + note(r), str(n), r, base, cosine("vlm-int8w7.json")))
    if os.path.exists(os.path.join(out, f"vlm-int8w7x7-{n}.1.json")):
        r = load(f"vlm-int8w7x7-{n}")
        if r.get("peak") and r["peak"]["instruction"] != (vlm.get("peak") or {}).get("instruction"):
            peaks.append(f"{r['peak']['gmac_per_s']:.0f} GMAC/s on {n} thread(s) with"
                         f" {r['peak']['instruction']}")
        rows.append(("vlm int8, 7-bit weights and activations" + note(r), str(n), r, base,
                     cosine("vlm-int8w7x7.json")))
    for prefix, label, e in [(f"ort-int8-{n}", "onnxruntime int8 dynamic (U8S8)", "ort-int8.npy"),
                             (f"ort-int8rr-{n}", "onnxruntime int8 dynamic reduce_range", "ort-int8rr.npy"),
                             (f"ort-fp32-{n}", "onnxruntime fp32", "ort-fp32.npy")]:
        if os.path.exists(os.path.join(out, f"{prefix}.1.json")):
            r = load(prefix)
            rows.append((f"{label} {r['onnxruntime']}", str(n), r, base, cosine(e)))
    for p in ["int8", "fp32"]:
        if os.path.exists(os.path.join(out, f"ov-{p}-{n}.1.json")):
            r = load(f"ov-{p}-{n}")
            label = f"OpenVINO {r['openvino'].split('-')[0]} {p}" + (" (NNCF)" if p == "int8" else "")
            rows.append((label, str(n), r, base, cosine(f"ov-{p}.npy")))
    # tract has no intra-op threads: its one-thread time stands in every row.
    rows.append(("tract fp32", "1" if n == 1 else f"{n} (1 thread)", tract, base, ""))

first = load(f"vlm-int8-{threads[0]}")
print()
print(f"SigLIP base patch16-224 vision tower, {first['macs'] / 1e9:.2f} GMAC per image;"
      f" median of {first['runs']} runs in {rounds} interleaved rounds (each after {warmup}"
      f" warmup; tract: {tract['runs']} runs, once); peer / vlm > 1: vlm is faster")
print(f"cosine: against onnxruntime fp32 over {len(ref)} held-out photo crops, median / min;"
      + (f" this CPU {'has' if vnni else 'lacks'} VNNI" if tier == "native" else
         f" BENCH_TIER={tier}: every engine saw this CPU without AVX-512, VNNI or AMX"))
if peaks:
    print(f"int8 peak ({first['peak']['instruction']}, registers only): " + ", ".join(peaks))
w = max(len(r[0]) for r in rows)
print(f"{'runtime':<{w}}  {'threads':>14}  {'median ms':>10}  {'min ms':>8}  {'peer / vlm':>10}  {'cosine':>17}")
for name, t, r, base, c in rows:
    print(f"{name:<{w}}  {t:>14}  {r['median_ms']:>10.1f}  {r['min_ms']:>8.1f}  {r['median_ms'] / base:>10.2f}  {c:>17}")
print()
print("| runtime | threads | median ms | min ms | peer / vlm | cosine median / min |")
print("|---|---|---:|---:|---:|---|")
for name, t, r, base, c in rows:
    print(f"| {name} | {t} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | {r['median_ms'] / base:.2f} | {c} |")
# With VNNI the goal is against onnxruntime's default U8S8, which does not saturate
# there: at most 0.75 of its time on one thread, ahead on more.
if vnni:
    for n in threads:
        peer = os.path.join(out, f"ort-int8-{n}.1.json")
        if os.path.exists(peer):
            goal = "<= 0.75" if n == 1 else "< 1"
            print(f"{n} thread(s): vlm int8 / onnxruntime int8 dynamic (U8S8) = "
                  f"{load(f'vlm-int8-{n}')['median_ms'] / load(f'ort-int8-{n}')['median_ms']:.2f}"
                  f" (goal {goal})")
# The AVX2 tier's goal: vlm's time at most 0.8 of onnxruntime reduce_range's.
for n in threads:
    rr = os.path.join(out, f"ort-int8rr-{n}.1.json")
    if not os.path.exists(rr):
        continue
    peer = load(f"ort-int8rr-{n}")["median_ms"]
    for prefix, label in [(f"vlm-int8-{n}", "vlm int8"), (f"vlm-int8w7-{n}", "vlm int8, 7-bit weights"),
                          (f"vlm-int8w7x7-{n}", "vlm int8, 7-bit weights and activations")]:
        if os.path.exists(os.path.join(out, f"{prefix}.1.json")):
            print(f"{n} thread(s): {label} / onnxruntime reduce_range = "
                  f"{load(prefix)['median_ms'] / peer:.2f} (goal <= 0.8)")
EOF

if [ "${BENCH_CAPTION:-0}" = 1 ]; then
  VLM_BIN="$vlm" VLM_PYTHON="$py" "$root/scripts/bench-peers-caption.sh"
fi
