#!/usr/bin/env bash
# Before/after: two `vlm` builds, each on its own artifact of the same model, timed in
# one interleaved run (A, B, A, B, … per round and thread count), so a slow spell of a
# shared machine weighs on both alike. Prints each side's pooled median and min and the
# ratio B/A per thread count.
#
#   scripts/bench-ab.sh VLM_A ARTIFACT_A VLM_B ARTIFACT_B
#
# Environment: AB_THREADS (default "1 2"), AB_ROUNDS (default 5), AB_RUNS (runs per round
# and side, default 6), AB_WARMUP (default 2), AB_TOWER (vision|text, default vision).
set -euo pipefail
if [[ $# -ne 4 ]]; then
  sed -n '2,10p' "$0" >&2
  exit 2
fi
a_vlm=$1 a_art=$2 b_vlm=$3 b_art=$4
threads=${AB_THREADS:-1 2}
rounds=${AB_ROUNDS:-5}
runs=${AB_RUNS:-6}
warmup=${AB_WARMUP:-2}
tower=${AB_TOWER:-vision}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for r in $(seq "$rounds"); do
  for n in $threads; do
    for side in a b; do
      if [[ $side == a ]]; then vlm=$a_vlm art=$a_art; else vlm=$b_vlm art=$b_art; fi
      "$vlm" bench --model "$art" --tower "$tower" --threads "$n" --runs "$runs" \
        --warmup "$warmup" --json >"$out/$side.$n.$r.json"
    done
  done
  echo "round $r/$rounds done" >&2
done
python3 - "$out" "$threads" "$rounds" <<'PY'
import json, statistics, sys
out, threads, rounds = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
print(f"{'threads':>7} {'A median':>9} {'A min':>8} {'B median':>9} {'B min':>8} {'B/A':>6}")
for n in threads:
    s = {side: [x for r in range(1, rounds + 1)
                for x in json.load(open(f"{out}/{side}.{n}.{r}.json"))["samples_ms"]]
         for side in "ab"}
    ma, mb = statistics.median(s["a"]), statistics.median(s["b"])
    print(f"{n:>7} {ma:>9.2f} {min(s['a']):>8.2f} {mb:>9.2f} {min(s['b']):>8.2f} {mb / ma:>6.3f}")
PY
