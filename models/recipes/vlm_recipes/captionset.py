"""The caption evaluation set: scene-generator images with every phrasing of the grammar
as references, and the facts a caption must get right (each object's colour and shape,
how many there are).

    python -m vlm_recipes.captionset --out DIR [--per-pair 4] [--per-count 30] [--side 64]

The folder holds `captions.json` and `images/`. Items are single objects of every
colour-shape pair (held-out pairs marked: they never appear in training), one to three
identical objects (the count), and pairs of different objects. `vocabulary` lists the
words the checks read (colours, shapes and their plurals, number words), so the scorer
(`vlm eval caption`) knows no word of this generator by heart.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import scenes
from .evaluate import write_json

EVAL_SEED = 515151
FORMAT = "vlm-edge-caption-eval"


def make(out: str, per_pair: int = 4, per_count: int = 30, side: int = 64) -> dict:
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    items = []
    index = 0

    def add(kind, **kw):
        nonlocal index
        img, scene = scenes.sample(EVAL_SEED, index, split="eval", side=side, **kw)
        name = f"images/{index:05d}.png"
        img.save(os.path.join(out, name))
        items.append({
            "image": name,
            "kind": kind,
            "references": scene.captions,
            "objects": [{"colour": o.colour, "shape": o.shape} for o in scene.objects],
            "held_out": any(scenes.is_held_out(o.colour, o.shape) for o in scene.objects),
        })
        index += 1

    for colour in scenes.COLOUR_NAMES:
        for shape in scenes.SHAPES:
            for _ in range(per_pair):
                add("single", layout="single", pair=(colour, shape))
    for n in (1, 2, 3):
        for _ in range(per_count):
            add("count", layout="same", count=n)
    for _ in range(per_count):
        add("pair", layout="pair")
    doc = {
        "format": FORMAT,
        "version": 1,
        "generator": {"seed": EVAL_SEED, "per_pair": per_pair, "per_count": per_count, "side": side},
        "vocabulary": {
            "colours": scenes.COLOUR_NAMES,
            "shapes": {s: [s, scenes.plural(s)] for s in scenes.SHAPES},
            "numbers": {"a": 1, "an": 1, "one": 1, **{w: n for n, w in scenes.NUMBER_WORDS.items()}},
        },
        "items": items,
    }
    write_json(os.path.join(out, "captions.json"), doc)
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-pair", type=int, default=4)
    ap.add_argument("--per-count", type=int, default=30)
    ap.add_argument("--side", type=int, default=64)
    args = ap.parse_args(argv)
    doc = make(args.out, args.per_pair, args.per_count, args.side)
    print(f"wrote {len(doc['items'])} captioned images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
