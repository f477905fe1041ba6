"""Deterministic compositional image-caption generator.

Every sample is a pure function of (split seed, index): no global RNG state, so any
sample can be regenerated alone and a data loader may draw them in any order.

A scene holds 1-3 objects. Each object has a shape, a colour, a size and a position;
two different objects are described by their spatial relation, several identical
objects by their count. Backgrounds are flat, gradients, noise, or crops of the real
photographs and textures that ship inside scikit-image.

Some colour-shape pairs never appear in the training split: they are the zero-shot
test (the model must compose a colour it has seen with a shape it has seen).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ["circle", "square", "triangle", "star", "cross", "heart"]
COLOURS = {
    "red": (220, 30, 30),
    "orange": (245, 130, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 50),
    "cyan": (40, 210, 220),
    "blue": (30, 60, 220),
    "purple": (140, 40, 190),
    "pink": (250, 140, 200),
}
COLOUR_NAMES = list(COLOURS)
# One held-out shape per colour, every shape at least once: the model sees every colour
# and every shape in training, never these combinations.
HELD_OUT = {
    ("red", "star"),
    ("orange", "circle"),
    ("yellow", "cross"),
    ("green", "heart"),
    ("cyan", "triangle"),
    ("blue", "square"),
    ("purple", "circle"),
    ("pink", "triangle"),
}
SIZES = ["small", "large"]
NUMBER_WORDS = {1: "one", 2: "two", 3: "three"}
SUPERSAMPLE = 2


@dataclass
class SceneObject:
    shape: str
    colour: str
    size: str
    cx: float  # centre, as a fraction of the image side
    cy: float
    radius: float  # as a fraction of the image side
    angle: float


@dataclass
class Scene:
    objects: list[SceneObject]
    background: str
    caption: str = ""
    captions: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        return len(self.objects)

    def uniform(self, attr: str) -> str | None:
        values = {getattr(o, attr) for o in self.objects}
        return values.pop() if len(values) == 1 else None


def is_held_out(colour: str, shape: str) -> bool:
    return (colour, shape) in HELD_OUT


def plural(shape: str) -> str:
    return shape + ("es" if shape.endswith("s") else "s")


def position_phrase(cx: float, cy: float) -> str:
    vert = "top" if cy < 0.4 else "bottom" if cy > 0.6 else ""
    horiz = "left" if cx < 0.4 else "right" if cx > 0.6 else ""
    if vert and horiz:
        return f"{vert} {horiz}"
    return vert or horiz or "centre"


# ---------------------------------------------------------------- backgrounds

_PHOTO_CACHE: list[np.ndarray] | None = None


def _photos() -> list[np.ndarray]:
    """RGB arrays of the images bundled in scikit-image's own data folder.

    Read from the installed package only: nothing is downloaded.
    """
    global _PHOTO_CACHE
    if _PHOTO_CACHE is None:
        import skimage.data
        import skimage.io

        folder = os.path.dirname(skimage.data.__file__)
        names = sorted(
            f for f in os.listdir(folder) if f.lower().endswith((".png", ".jpg", ".jpeg"))
        )
        photos = []
        for name in names:
            try:
                img = np.asarray(skimage.io.imread(os.path.join(folder, name)))
            except Exception:  # a file skimage cannot read is simply not a background
                continue
            if img.ndim == 2:
                img = np.stack([img] * 3, axis=-1)
            if img.ndim != 3 or img.shape[0] < 96 or img.shape[1] < 96:
                continue
            img = img[..., :3]
            if img.dtype != np.uint8:
                img = (255 * (img.astype(np.float64) / max(1, img.max()))).astype(np.uint8)
            photos.append(img)
        if not photos:
            raise RuntimeError("no usable background photos in scikit-image's data folder")
        _PHOTO_CACHE = photos
    return _PHOTO_CACHE


def _background(rng: np.random.Generator, side: int) -> tuple[np.ndarray, str]:
    kind = rng.choice(["flat", "gradient", "noise", "photo"], p=[0.25, 0.25, 0.2, 0.3])
    if kind == "flat":
        # Muted colours so an object's colour stays the most saturated thing in view.
        base = rng.integers(60, 200, size=3)
        grey = base.mean()
        base = (0.5 * base + 0.5 * grey).astype(np.uint8)
        return np.broadcast_to(base, (side, side, 3)).copy(), "flat"
    if kind == "gradient":
        a = rng.integers(40, 220, size=3).astype(np.float32)
        b = rng.integers(40, 220, size=3).astype(np.float32)
        theta = rng.uniform(0, 2 * math.pi)
        ys, xs = np.mgrid[0:side, 0:side] / (side - 1)
        t = (np.cos(theta) * xs + np.sin(theta) * ys)
        t = (t - t.min()) / max(1e-6, t.max() - t.min())
        img = a * (1 - t[..., None]) + b * t[..., None]
        grey = img.mean(axis=-1, keepdims=True)
        return (0.5 * img + 0.5 * grey).astype(np.uint8), "gradient"
    if kind == "noise":
        mean = rng.integers(70, 190)
        scale = rng.integers(10, 50)
        coarse = rng.normal(mean, scale, size=(side // 4, side // 4, 1))
        img = np.kron(coarse, np.ones((4, 4, 1))) + rng.normal(0, scale / 3, size=(side, side, 1))
        img = np.repeat(img, 3, axis=-1) + rng.normal(0, 6, size=(1, 1, 3))
        return np.clip(img, 0, 255).astype(np.uint8), "noise"
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    crop = int(rng.integers(min(h, w) // 4, min(h, w) + 1))
    y0 = int(rng.integers(0, h - crop + 1))
    x0 = int(rng.integers(0, w - crop + 1))
    img = Image.fromarray(photo[y0 : y0 + crop, x0 : x0 + crop]).resize(
        (side, side), Image.BILINEAR
    )
    return np.asarray(img), "photo"


# ---------------------------------------------------------------- shapes


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple]:
    def rot(points):
        ca, sa = math.cos(angle), math.sin(angle)
        return [(cx + x * ca - y * sa, cy + x * sa + y * ca) for x, y in points]

    if shape == "square":
        s = r * 0.85
        return rot([(-s, -s), (s, -s), (s, s), (-s, s)])
    if shape == "triangle":
        return rot([(r * math.cos(a), r * math.sin(a)) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
    if shape == "star":
        pts = []
        for i in range(10):
            rr = r if i % 2 == 0 else r * 0.42
            a = -math.pi / 2 + i * math.pi / 5
            pts.append((rr * math.cos(a), rr * math.sin(a)))
        return rot(pts)
    if shape == "cross":
        t = r * 0.33
        return rot([(-t, -r), (t, -r), (t, -t), (r, -t), (r, t), (t, t), (t, r), (-t, r),
                    (-t, t), (-r, t), (-r, -t), (-t, -t)])
    if shape == "heart":
        pts = []
        for i in range(40):
            a = 2 * math.pi * i / 40
            x = 16 * math.sin(a) ** 3
            y = -(13 * math.cos(a) - 5 * math.cos(2 * a) - 2 * math.cos(3 * a) - math.cos(4 * a))
            pts.append((x * r / 16.5, (y + 2.5) * r / 16.5))
        return rot(pts)
    raise ValueError(shape)


def _draw(draw: ImageDraw.ImageDraw, obj: SceneObject, side: int, rgb: tuple) -> None:
    cx, cy, r = obj.cx * side, obj.cy * side, obj.radius * side
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    else:
        draw.polygon(_polygon(obj.shape, cx, cy, r, obj.angle), fill=rgb)


def _jitter_colour(rng: np.random.Generator, name: str) -> tuple:
    base = np.array(COLOURS[name], dtype=np.float32)
    base = base * rng.uniform(0.85, 1.1) + rng.normal(0, 8, size=3)
    return tuple(int(v) for v in np.clip(base, 0, 255))


# ---------------------------------------------------------------- scenes


def _place(rng, radius: float, placed: list[SceneObject]) -> tuple[float, float] | None:
    for _ in range(50):
        cx, cy = rng.uniform(radius + 0.02, 1 - radius - 0.02, size=2)
        if all(math.hypot(cx - o.cx, cy - o.cy) > radius + o.radius + 0.03 for o in placed):
            return float(cx), float(cy)
    return None


def _pick_pair(rng, split: str) -> tuple[str, str]:
    """A colour-shape pair allowed in `split` (train: never a held-out pair)."""
    while True:
        colour = COLOUR_NAMES[rng.integers(len(COLOUR_NAMES))]
        shape = SHAPES[rng.integers(len(SHAPES))]
        if split != "train" or not is_held_out(colour, shape):
            return colour, shape


def _radius(rng, size: str, count: int) -> float:
    if size == "large":
        return float(rng.uniform(0.24, 0.34) if count == 1 else rng.uniform(0.17, 0.22))
    return float(rng.uniform(0.10, 0.15))


def sample_scene(
    rng: np.random.Generator,
    split: str = "train",
    layout: str | None = None,
    pair: tuple[str, str] | None = None,
    count: int | None = None,
    size: str | None = None,
) -> Scene:
    """Draw the layout of a scene (no pixels yet).

    layout: "single" (one object), "same" (1-3 identical objects), "pair" (two
    different objects and their relation), or None for a random mix.
    """
    if layout is None:
        layout = rng.choice(["single", "same", "pair"], p=[0.45, 0.3, 0.25])
    angle_jitter = lambda: float(rng.uniform(-0.25, 0.25))  # noqa: E731
    objects: list[SceneObject] = []
    if layout in ("single", "same"):
        n = 1 if layout == "single" else (count or int(rng.integers(1, 4)))
        colour, shape = pair or _pick_pair(rng, split)
        size = size or (SIZES[rng.integers(2)] if n < 3 else "small")
        for _ in range(n):
            r = _radius(rng, size, n)
            pos = _place(rng, r, objects)
            obj_size = size
            if pos is None:
                obj_size, r = "small", _radius(rng, "small", 3)
                pos = _place(rng, r, objects)
            if pos is None:
                break
            objects.append(SceneObject(shape, colour, obj_size, pos[0], pos[1], r, angle_jitter()))
    else:
        first = pair or _pick_pair(rng, split)
        while True:
            second = _pick_pair(rng, split)
            if second != first:
                break
        for colour, shape in (first, second):
            size = SIZES[rng.integers(2)]
            r = _radius(rng, size, 2)
            pos = _place(rng, r, objects)
            if pos is None:
                size, r = "small", _radius(rng, "small", 3)
                pos = _place(rng, r, objects)
            if pos is None:
                break
            objects.append(SceneObject(shape, colour, size, pos[0], pos[1], r, angle_jitter()))
    scene = Scene(objects=objects, background="")
    scene.captions = captions_for(scene)
    scene.caption = scene.captions[int(rng.integers(len(scene.captions)))]
    return scene


def relation(a: SceneObject, b: SceneObject) -> str:
    dx, dy = b.cx - a.cx, b.cy - a.cy
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def captions_for(scene: Scene) -> list[str]:
    """Every phrasing the grammar allows for this scene (all true of it)."""
    objs = scene.objects
    n = len(objs)
    if n == 0:
        return ["an empty picture"]
    colour, shape = scene.uniform("colour"), scene.uniform("shape")
    if colour and shape:
        o = objs[0]
        if n == 1:
            where = position_phrase(o.cx, o.cy)
            return [
                f"a {o.colour} {o.shape}",
                f"a {o.size} {o.colour} {o.shape}",
                f"a photo of a {o.colour} {o.shape}",
                f"a {o.colour} {o.shape} in the {where}",
                f"one {o.colour} {o.shape}",
                f"a {o.shape}",
                f"a {o.colour} shape",
                f"one object",
            ]
        word = NUMBER_WORDS[n]
        caps = [
            f"{word} {o.colour} {plural(o.shape)}",
            f"a photo of {word} {o.colour} {plural(o.shape)}",
            f"{word} {plural(o.shape)}",
            f"{word} objects",
        ]
        size = scene.uniform("size")
        if size:
            caps.insert(2, f"{word} {size} {o.colour} {plural(o.shape)}")
        return caps
    a, b = objs[0], objs[1]
    rel = relation(a, b)
    return [
        f"a {a.colour} {a.shape} {rel} a {b.colour} {b.shape}",
        f"a {a.colour} {a.shape} and a {b.colour} {b.shape}",
        f"a {b.colour} {b.shape} and a {a.colour} {a.shape}",
        f"a {a.size} {a.colour} {a.shape} {rel} a {b.size} {b.colour} {b.shape}",
        "two objects",
    ]


def colour_free_captions(scene: Scene) -> list[str]:
    """The scene's phrasings with every colour word removed: what stays true of a grey copy.

    Phrasings that named only a colour ("a red shape") say nothing once it is gone."""
    out = []
    for cap in captions_for(scene):
        words = [w for w in cap.split() if w not in COLOURS]
        if "shape" in words:
            continue
        text = " ".join(words)
        if text not in out:
            out.append(text)
    return out


def render(scene: Scene, rng: np.random.Generator, side: int = 64) -> Image.Image:
    big = side * SUPERSAMPLE
    bg, kind = _background(rng, big)
    scene.background = kind
    img = Image.fromarray(bg)
    draw = ImageDraw.Draw(img)
    for obj in scene.objects:
        rgb = _jitter_colour(rng, obj.colour)
        # A thin dark or light outline keeps an object separable from a busy photo.
        if rng.random() < 0.5:
            edge = (20, 20, 20) if sum(rgb) > 300 else (235, 235, 235)
            grown = SceneObject(**{**obj.__dict__, "radius": obj.radius + 1.2 / big})
            _draw(draw, grown, big, edge)
        _draw(draw, obj, big, rgb)
    if rng.random() < 0.2:
        img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    return img.resize((side, side), Image.BILINEAR)


def sample(seed: int, index: int, split: str = "train", side: int = 64, **kw) -> tuple[Image.Image, Scene]:
    """Sample `index` of the split whose seed is `seed`: deterministic."""
    rng = np.random.default_rng([seed, index])
    scene = sample_scene(rng, split=split, **kw)
    return render(scene, rng, side), scene
