"""Times a SigLIP vision ONNX graph on onnxruntime's CPU provider, on the same input
`vlm bench` uses, for `scripts/bench-peers.sh`. Prints one JSON object.

    python -m vlm_recipes.bench_ort --model DIR [--onnx FILE] --threads N \
        [--runs 10] [--warmup 3] [--label NAME] [--embed PHOTOS --out FILE.npy]

--model is the fp32 model folder (its config.json names the input and its size);
--onnx, if given, is timed instead of the folder's vision.onnx (e.g. a quantized copy).
With --embed, it times nothing: it writes the image embeddings of the folder's photos
(in name order, one row each) to --out, for the accuracy column.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .peer_inputs import model_config, photo_paths, photo_pixels, time_runs, timing_input


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="fp32 model folder (config.json)")
    ap.add_argument("--onnx", help="graph to time instead of the folder's vision tower")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--label", default="onnxruntime")
    ap.add_argument("--embed", help="photo folder to embed instead of timing")
    ap.add_argument("--out", help="embeddings file (.npy) for --embed")
    args = ap.parse_args(argv)
    if bool(args.embed) != bool(args.out):
        ap.error("--embed and --out go together")
    if args.threads < 1 or args.runs < 1 or args.warmup < 0:
        ap.error("--threads and --runs must be at least 1, --warmup at least 0")
    cfg = model_config(args.model)
    path = args.onnx or os.path.join(args.model, cfg["vision"]["onnx"])
    name, pixels = timing_input(args.model)

    opts = ort.SessionOptions()
    # What a single-image edge deployment uses: all threads on one operator at a time,
    # none spent overlapping independent branches (a ViT has none worth it).
    opts.intra_op_num_threads = args.threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    if args.embed:
        output = cfg["vision"]["output"]
        rows = [sess.run([output], {name: photo_pixels(args.model, p)})[0].reshape(-1) for p in photo_paths(args.embed)]
        np.save(args.out, np.stack(rows))
        return 0
    feed = {name: pixels}
    print(time_runs(lambda: sess.run(None, feed), args, onnx=path, onnxruntime=ort.__version__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
