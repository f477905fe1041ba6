"""Times a SigLIP vision ONNX graph on onnxruntime's CPU provider, on the same input
`vlm bench` uses, for `scripts/bench-peers.sh`. Prints one JSON object.

    python -m vlm_recipes.bench_ort --model DIR [--onnx FILE] --threads N \
        [--runs 10] [--warmup 3] [--label NAME]

--model is the fp32 model folder (its config.json names the input and its size);
--onnx, if given, is timed instead of the folder's vision.onnx (e.g. a quantized copy).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def pattern_pixels(n: int) -> np.ndarray:
    """`vlm bench`'s pixel values (cli/src/bench.rs, `pattern_pixels`), bit for bit."""
    return ((np.arange(n, dtype=np.int64) * 37 % 251).astype(np.float32) / np.float32(125.0)) - np.float32(1.0)


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="fp32 model folder (config.json)")
    ap.add_argument("--onnx", help="graph to time instead of the folder's vision tower")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--label", default="onnxruntime")
    args = ap.parse_args(argv)
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        ap.error("--threads and --runs must be at least 1, --warmup at least 0")
    with open(os.path.join(args.model, "config.json")) as fh:
        cfg = json.load(fh)
    path = args.onnx or os.path.join(args.model, cfg["vision"]["onnx"])
    h, w = cfg["preprocess"]["size"]
    c = cfg["vision"].get("num_channels", 3)
    pixels = pattern_pixels(c * h * w).reshape(1, c, h, w)

    opts = ort.SessionOptions()
    # What a single-image edge deployment uses: all threads on one operator at a time,
    # none spent overlapping independent branches (a ViT has none worth it).
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {cfg["vision"]["input"]: pixels}
    for _ in range(args.warmup):
        sess.run(None, feed)
    samples = []
    for _ in range(args.runs):
        t = time.perf_counter()
        sess.run(None, feed)
        samples.append((time.perf_counter() - t) * 1e3)
    print(
        json.dumps(
            {
                "runtime": args.label,
                "onnx": path,
                "threads": args.threads,
                "runs": args.runs,
                "warmup": args.warmup,
                "median_ms": float(np.median(samples)),
                "min_ms": min(samples),
                "max_ms": max(samples),
                "samples_ms": samples,
                "onnxruntime": ort.__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
