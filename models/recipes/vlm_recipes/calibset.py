"""Writes a calibration folder for `vlm quantize`: training-split scenes (never the
evaluation set, whose seed differs) and prompts.txt with captions of those scenes.

    python -m vlm_recipes.calibset --out ../demo-calib --images 64
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from .scenes import captions_for, sample

# Distinct from the training and evaluation seeds: calibration images are new draws from
# the training distribution.
CALIB_SEED = 4242


def make_calib_set(out: str, images: int, side: int = 64, captions_per_image: int = 2) -> int:
    os.makedirs(out, exist_ok=True)
    prompts: list[str] = []
    for i in range(images):
        img, scene = sample(CALIB_SEED, i, split="train", side=side)
        img.save(os.path.join(out, f"calib-{i:03d}.png"))
        caps = captions_for(scene)
        rng = np.random.default_rng([CALIB_SEED, i, 1])
        for j in rng.permutation(len(caps))[:captions_per_image]:
            prompts.append(caps[int(j)])
    with open(os.path.join(out, "prompts.txt"), "w") as f:
        f.write("# captions of the calibration scenes, for the text tower\n")
        f.write("\n".join(prompts) + "\n")
    return len(prompts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--side", type=int, default=64)
    args = ap.parse_args(argv)
    n = make_calib_set(args.out, args.images, args.side)
    print(f"wrote {args.images} images and {n} prompts to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
