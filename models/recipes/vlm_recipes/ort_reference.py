"""onnxruntime's embeddings of a model folder's towers, as the reference the Rust
(tract) path is checked against. Inputs are given already preprocessed, so the check is
of the graphs alone.

    python -m vlm_recipes.ort_reference --model DIR --out ref.json [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np


def main(argv=None) -> int:
    import onnxruntime as ort

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    with open(os.path.join(args.model, "config.json")) as fh:
        cfg = json.load(fh)
    rng = np.random.default_rng(args.seed)
    h, w = cfg["preprocess"]["size"]
    pixels = rng.uniform(-1, 1, size=(1, 3, h, w)).astype(np.float32)
    L = cfg["text"]["max_length"]
    ids = rng.integers(0, cfg["text"]["vocab_size"], size=(1, L)).astype(np.int64)
    ids[0, L // 2 :] = cfg["text"]["pad_token_id"]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    vis = ort.InferenceSession(os.path.join(args.model, cfg["vision"]["onnx"]), opts, providers=["CPUExecutionProvider"])
    txt = ort.InferenceSession(os.path.join(args.model, cfg["text"]["onnx"]), opts, providers=["CPUExecutionProvider"])
    img_emb = vis.run(None, {cfg["vision"]["input"]: pixels})[0][0]
    txt_emb = txt.run(None, {cfg["text"]["input"]: ids})[0][0]
    with open(args.out, "w") as fh:
        json.dump(
            {
                "pixel_values": pixels.reshape(-1).tolist(),
                "input_ids": ids.reshape(-1).tolist(),
                "image_embedding": img_emb.tolist(),
                "text_embedding": txt_emb.tolist(),
                "onnxruntime": ort.__version__,
            },
            fh,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
