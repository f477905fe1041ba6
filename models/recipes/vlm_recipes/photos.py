"""Writes real photographs for calibrating and checking big models: the images that ship
inside scikit-image, scikit-learn and matplotlib (nothing is downloaded), cut into
deterministic crops.

    python -m vlm_recipes.photos --out /tmp/photos --count 36 --seed 0

Different seeds give different crops, so one seed can calibrate and another check.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

from .scenes import _photos


def _more_photos() -> list[np.ndarray]:
    """scikit-learn's and matplotlib's bundled photos, where installed."""
    out = []
    try:
        from sklearn.datasets import load_sample_images

        out.extend(np.asarray(i) for i in load_sample_images().images)
    except Exception:  # optional source: the set is still usable without it
        pass
    try:
        import matplotlib.cbook

        with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
            out.append(np.asarray(Image.open(f).convert("RGB")))
    except Exception:  # optional source, as above
        pass
    return out


def write_photos(out: str, count: int, seed: int, side: int = 0) -> list[str]:
    os.makedirs(out, exist_ok=True)
    photos = _photos() + _more_photos()
    rng = np.random.default_rng(seed)
    names = []
    for i in range(count):
        p = photos[i % len(photos)]
        h, w = p.shape[:2]
        crop = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
        y0 = int(rng.integers(0, h - crop + 1))
        x0 = int(rng.integers(0, w - crop + 1))
        img = Image.fromarray(p[y0 : y0 + crop, x0 : x0 + crop])
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        if side:
            img = img.resize((side, side), Image.BICUBIC)
        name = os.path.join(out, f"photo-{seed}-{i:03d}.png")
        img.save(name)
        names.append(name)
    return names


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--side", type=int, default=0, help="resize to side×side (0: keep the crop)")
    ap.add_argument("--prompts", action="store_true", help="also write prompts.txt for the text tower")
    args = ap.parse_args(argv)
    write_photos(args.out, args.count, args.seed, args.side)
    if args.prompts:
        with open(os.path.join(args.out, "prompts.txt"), "w") as f:
            subjects = ["a cat", "an astronaut", "a cup of coffee", "a rocket", "a flower",
                        "a building", "a person", "coins", "a horse", "a camera man",
                        "a satellite image", "a page of text", "a moon surface", "a chessboard"]
            for s in subjects:
                f.write(f"a photo of {s}\n{s}\nthis is {s} on a table\n")
    print(f"wrote {args.count} photos to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
