"""Shape images drawn independently of the scene generator: a check that the demo model
learned shapes, not the generator's way of drawing them.

    python -m vlm_recipes.drawings --out DIR [--per-shape 20]

Nothing here shares code with `scenes.py`: outlines come from their own geometry
(rasterised with scikit-image's polygon filler at 4x, then box-averaged, where the
generator uses PIL's drawing and bilinear resizing), colours are either the eight
named ones (as plain RGB, without the generator's jitter) or any hue, grey, black or
white (two tasks, reported apart), sizes run from a quarter to seven tenths of the
image side, positions anywhere the object fits, and images are 128 px (the processor
resizes).
Backgrounds: flat, two-tone split, smooth noise, or photographs bundled with
matplotlib (the generator takes scikit-image's). The folder is an eval.json that
`vlm eval zero-shot` reads, with two tasks (the shape, in named or in any colours). It
is never used for training.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from PIL import Image

from .evaluate import write_json

SHAPES = ["circle", "square", "triangle", "star", "cross", "heart"]
SEED = 90210
SIDE = 128
SUPER = 4


def outline(shape: str, rng) -> np.ndarray:
    """Unit-size outline points (x, y) centred on 0, radius about 1."""
    if shape == "circle":
        t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
        squash = rng.uniform(0.9, 1.0)  # a hand-drawn circle is rarely perfect
        pts = np.stack([np.cos(t), squash * np.sin(t)], -1)
    elif shape == "square":
        pts = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], float) * 0.8
    elif shape == "triangle":
        t = np.array([90, 210, 330]) * math.pi / 180
        pts = np.stack([np.cos(t), -np.sin(t)], -1)
    elif shape == "star":
        inner = rng.uniform(0.38, 0.5)
        t = np.arange(10) * math.pi / 5 + math.pi / 2
        r = np.where(np.arange(10) % 2 == 0, 1.0, inner)
        pts = np.stack([r * np.cos(t), -r * np.sin(t)], -1)
    elif shape == "cross":
        w = rng.uniform(0.28, 0.4)
        pts = np.array([
            [-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w],
            [w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w],
        ], float)
    elif shape == "heart":
        t = np.linspace(0, 2 * math.pi, 120, endpoint=False)
        x = 16 * np.sin(t) ** 3
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        pts = np.stack([x, -y], -1) / 16.5
        pts[:, 1] += 0.1
    else:
        raise ValueError(shape)
    angle = rng.uniform(-0.3, 0.3)
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def _photos() -> list[np.ndarray]:
    import matplotlib

    folder = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data")
    out = []
    for name in sorted(os.listdir(folder)):
        if name.lower().endswith((".png", ".jpg")):
            img = np.asarray(Image.open(os.path.join(folder, name)).convert("RGB"))
            if min(img.shape[:2]) >= 96:
                out.append(img)
    return out


def background(rng, photos) -> np.ndarray:
    big = SIDE * SUPER
    kind = rng.choice(4, p=[0.4, 0.2, 0.2, 0.2]) if photos else rng.choice(3, p=[0.5, 0.25, 0.25])
    if kind == 0:
        return np.broadcast_to(rng.integers(0, 256, 3), (big, big, 3)).astype(np.float64)
    if kind == 1:
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        yy, xx = np.mgrid[0:big, 0:big]
        side = (xx * math.cos(rng.uniform(0, 6.3)) + yy * math.sin(rng.uniform(0, 6.3))) > rng.uniform(0, big)
        return np.where(side[..., None], a, b).astype(np.float64)
    if kind == 2:
        small = rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)
        return np.asarray(Image.fromarray(small).resize((big, big), Image.BICUBIC), np.float64)
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    s = int(rng.integers(min(h, w) // 2, min(h, w) + 1))
    y, x = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
    crop = Image.fromarray(photo[y : y + s, x : x + s]).resize((big, big), Image.BICUBIC)
    return np.asarray(crop, np.float64)


NAMED = [(220, 30, 30), (245, 130, 20), (240, 220, 30), (40, 170, 50),
         (40, 210, 220), (30, 60, 220), (140, 40, 190), (250, 140, 200)]


def colour_against(rng, bg_mean: np.ndarray, named: bool) -> np.ndarray:
    """A colour that stands out from the background: one of the eight named ones, or any
    (grey, black and white included)."""
    for _ in range(100):
        kind = rng.random()
        if named:
            c = np.array(NAMED[rng.integers(len(NAMED))], np.float64)
        elif kind < 0.15:
            c = np.full(3, float(rng.choice([15, 128, 240])))
        else:
            c = rng.integers(0, 256, 3).astype(np.float64)
        if np.abs(c - bg_mean).sum() > 150:
            return c
    return 255 - bg_mean


def draw(shape: str, rng, photos, named: bool) -> Image.Image:
    from skimage.draw import polygon

    big = SIDE * SUPER
    img = background(rng, photos)
    radius = rng.uniform(0.25, 0.7) * big / 2
    cx, cy = rng.uniform(radius * 1.05, big - radius * 1.05, 2)
    pts = outline(shape, rng) * radius + [cx, cy]
    rr, cc = polygon(pts[:, 1], pts[:, 0], shape=(big, big))
    img[rr, cc] = colour_against(rng, img[rr, cc].mean(0) if len(rr) else img.mean((0, 1)), named)
    small = img.reshape(SIDE, SUPER, SIDE, SUPER, 3).mean((1, 3))
    return Image.fromarray(np.clip(small.round(), 0, 255).astype(np.uint8))


def make(out: str, per_shape: int) -> dict:
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    photos = _photos()
    items = {True: [], False: []}
    for k in range(per_shape):
        for si, shape in enumerate(SHAPES):
            i = k * len(SHAPES) + si
            rng = np.random.default_rng([SEED, i])
            name = f"images/{i:04d}.png"
            named = k % 2 == 0
            draw(shape, rng, photos, named).save(os.path.join(out, name))
            items[named].append({"image": name, "gold": si})
    doc = {
        "format": "vlm-edge-zero-shot-eval",
        "version": 1,
        "generator": {"drawings": SEED, "per_shape": per_shape, "side": SIDE},
        "tasks": [
            {"name": f"shape (drawings, {which} colours)", "labels": [f"a {s}" for s in SHAPES], "items": items[named]}
            for which, named in (("named", True), ("any", False))
        ],
    }
    write_json(os.path.join(out, "eval.json"), doc)
    return doc


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-shape", type=int, default=20)
    args = ap.parse_args(argv)
    doc = make(args.out, args.per_shape)
    print(f"wrote {sum(len(t['items']) for t in doc['tasks'])} drawings to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
