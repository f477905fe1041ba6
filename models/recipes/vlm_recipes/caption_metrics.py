"""BLEU-4 and CIDEr-D as pycocoevalcap computes them: the reference the Rust metrics
(`vlm_host::caption_metrics`) are held to.

    python -m vlm_recipes.caption_metrics make --out SAMPLES.json [--count N]
    python -m vlm_recipes.caption_metrics score --samples SAMPLES.json --out SCORES.json

`make` draws scenes from the generator's eval split: each sample's references are every
phrasing the grammar gives its scene, and its candidate is a phrasing of the scene
itself, of a scene that differs in one attribute, or of an unrelated scene, so the scores
spread over the whole range. `score` reads samples ({"candidate", "references"}, already
tokenized: lowercase words separated by spaces) and writes pycocoevalcap's corpus BLEU-1..4,
CIDEr-D and CIDEr-D per image. PTBTokenizer is not used (it runs Java): the inputs are
tokenized by both sides the same way.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from . import scenes

SEED = 424242


def make_samples(count: int) -> list[dict]:
    out = []
    for i in range(count):
        rng = np.random.default_rng([SEED, i])
        scene = scenes.sample_scene(rng, split="eval")
        refs = scenes.captions_for(scene)
        kind = i % 3
        if kind == 0:
            cand = refs[int(rng.integers(len(refs)))]
        else:
            other = scenes.sample_scene(rng, split="eval")
            if kind == 1:  # one attribute of the first object changed
                o = other.objects[0]
                scene.objects[0].colour = o.colour
                other = scene
            caps = scenes.captions_for(other)
            cand = caps[int(rng.integers(len(caps)))]
        out.append({"candidate": cand, "references": refs})
    return out


def score(samples: list[dict]) -> dict:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    gts = {i: s["references"] for i, s in enumerate(samples)}
    res = {i: [s["candidate"]] for i, s in enumerate(samples)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, per_image = Cider().compute_score(gts, res)
    return {"bleu": [float(b) for b in bleu], "cider_d": float(cider), "cider_d_per_image": [float(c) for c in per_image]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("--out", required=True)
    mk.add_argument("--count", type=int, default=500)
    sc = sub.add_parser("score")
    sc.add_argument("--samples", required=True)
    sc.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "make":
        doc = make_samples(args.count)
    else:
        with open(args.samples) as fh:
            doc = score(json.load(fh))
    with open(args.out, "w") as fh:
        json.dump(doc, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
