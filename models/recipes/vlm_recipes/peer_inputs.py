"""The inputs every peer runtime gets in `scripts/bench-peers.sh`, with no runtime
imported here (onnxruntime lives in the recipe's environment, OpenVINO in its own):
`vlm bench`'s timing pattern, and photos preprocessed as the model's processor does.
"""

from __future__ import annotations

import json
import os
import time
from typing import Callable

import numpy as np
from PIL import Image


def pattern_pixels(n: int) -> np.ndarray:
    """`vlm bench`'s pixel values (cli/src/bench.rs, `pattern_pixels`), bit for bit."""
    return ((np.arange(n, dtype=np.int64) * 37 % 251).astype(np.float32) / np.float32(125.0)) - np.float32(1.0)


def model_config(model_dir: str) -> dict:
    with open(os.path.join(model_dir, "config.json")) as fh:
        return json.load(fh)


def timing_input(model_dir: str) -> tuple[str, np.ndarray]:
    """The vision input's name and `vlm bench`'s pixels in its shape."""
    cfg = model_config(model_dir)
    h, w = cfg["preprocess"]["size"]
    c = cfg["vision"].get("num_channels", 3)
    return cfg["vision"]["input"], pattern_pixels(c * h * w).reshape(1, c, h, w)


def photo_paths(folder: str) -> list[str]:
    """The folder's images, in name order."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".png", ".jpg", ".jpeg")))
    if not names:
        raise SystemExit(f"{folder}: no images")
    return [os.path.join(folder, n) for n in names]


def photo_pixels(model_dir: str, path: str) -> np.ndarray:
    """One photo as the vision tower takes it, `[1, C, H, W]`. Photos must already be
    the tower's size (the benchmark writes them so): then no resampler's rounding stands
    between the runtimes, only rescale and normalisation."""
    cfg = model_config(model_dir)
    pre = cfg["preprocess"]
    h, w = pre["size"]
    img = Image.open(path).convert("RGB")
    if img.size != (w, h):
        raise SystemExit(f"{path}: {img.size[0]}x{img.size[1]}, the model takes {w}x{h}")
    x = np.asarray(img, dtype=np.float32) * np.float32(pre["rescale_factor"])
    mean = np.asarray(pre["image_mean"], dtype=np.float32)
    std = np.asarray(pre["image_std"], dtype=np.float32)
    return ((x - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)


def time_runs(run: Callable[[], object], args, **about) -> str:
    """Times `run` (`args.warmup` untimed calls, then `args.runs` timed ones) and returns
    the JSON line `scripts/bench-peers.sh` reads: label, threads, the samples and their
    median and extremes, and `about` (the model file, the runtime's version)."""
    for _ in range(args.warmup):
        run()
    samples = []
    for _ in range(args.runs):
        t = time.perf_counter()
        run()
        samples.append((time.perf_counter() - t) * 1e3)
    return json.dumps(
        {
            "runtime": args.label,
            **about,
            "threads": args.threads,
            "runs": args.runs,
            "warmup": args.warmup,
            "median_ms": float(np.median(samples)),
            "min_ms": min(samples),
            "max_ms": max(samples),
            "samples_ms": samples,
        }
    )
