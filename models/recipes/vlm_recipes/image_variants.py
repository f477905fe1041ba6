"""Image files in every variant a user may hand `vlm`, and what each should decode to.

    python -m vlm_recipes.image_variants --source photo.png --out DIR [--extra F ...]

writes into DIR one file per variant (JPEG progressive, greyscale, 4:2:0 / 4:2:2 /
4:4:4, quality 1, CMYK, 1×1, 8000×10; PNG palette, grey+alpha, RGBA, 16-bit grey,
16-bit colour; TIFF, BMP, GIF, lossless WebP), then, for those and every --extra file
(made elsewhere: a YCCK JPEG, which Pillow cannot write), `<file>.rgb` with the 8-bit RGB
pixels they must decode to and `expected.json` listing them.

What they must decode to is what the Hugging Face processor sees, Pillow's
`Image.open(f).convert("RGB")`, except for 16-bit greyscale: Pillow clips its values to
0-255 (nearly every pixel white), where vlm keeps the high byte, as Pillow itself does
for 16-bit colour.
"""

import argparse
import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def png16(arr: np.ndarray) -> bytes:
    """A 16-bit PNG (Pillow writes none in colour): grey, grey+alpha, RGB or RGBA."""
    h, w, c = arr.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[c]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def variants(src: Image.Image) -> dict:
    """name -> (bytes, expected RGB array or None for Pillow's own decode)."""
    rgb = src.convert("RGB")
    small = rgb.resize((48, 40), Image.Resampling.BICUBIC)
    wide16 = np.asarray(small).astype(np.uint16) * 257 + np.arange(48)[None, :, None]
    grey16 = wide16[..., 0]
    alpha = np.linspace(0, 255, 48 * 40).reshape(40, 48).astype(np.uint8)
    rgba = np.dstack([np.asarray(small), alpha])
    out = {
        "baseline-420.jpg": encoded(small, "JPEG", quality=90),
        "progressive.jpg": encoded(small, "JPEG", quality=85, progressive=True),
        "grey.jpg": encoded(small.convert("L"), "JPEG", quality=90),
        "sub-422.jpg": encoded(small, "JPEG", quality=90, subsampling=1),
        "sub-444.jpg": encoded(small, "JPEG", quality=90, subsampling=0),
        "quality-1.jpg": encoded(small, "JPEG", quality=1),
        "cmyk.jpg": encoded(small.convert("CMYK"), "JPEG", quality=90),
        "one-pixel.jpg": encoded(small.resize((1, 1)), "JPEG"),
        "strip-8000x10.jpg": encoded(rgb.resize((8000, 10)), "JPEG", quality=75),
        "strip-8000x10.png": encoded(rgb.resize((8000, 10)), "PNG"),
        "palette.png": encoded(small.quantize(64), "PNG"),
        "grey-alpha.png": encoded(Image.fromarray(rgba).convert("LA"), "PNG"),
        "rgba.png": encoded(Image.fromarray(rgba, "RGBA"), "PNG"),
        "grey16.png": png16(grey16[..., None]),
        "rgb16.png": png16(wide16),
        "rgba16.png": png16(np.dstack([wide16, grey16])),
        "rgb.tiff": encoded(small, "TIFF"),
        "rgb.bmp": encoded(small, "BMP"),
        "palette.gif": encoded(small, "GIF"),
        "lossless.webp": encoded(small, "WEBP", lossless=True),
    }
    expected = {name: None for name in out}
    # 16-bit grey: the high byte (Pillow would clip); see the module's doc.
    expected["grey16.png"] = np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, -1)
    return {name: (data, expected[name]) for name, data in out.items()}


def pillow_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--extra", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    listing = []
    with Image.open(args.source) as src:
        made = variants(src)
    files = []
    for name, (data, want) in made.items():
        path = args.out / name
        path.write_bytes(data)
        files.append((path, want))
    files += [(p, None) for p in args.extra]
    for path, want in files:
        if want is None:
            want = pillow_rgb(path)
        h, w, _ = want.shape
        rgb = path.with_name(path.name + ".rgb")
        rgb.write_bytes(np.ascontiguousarray(want, dtype=np.uint8).tobytes())
        listing.append({"file": str(path), "width": w, "height": h, "rgb": str(rgb)})
    (args.out / "expected.json").write_text(json.dumps(listing, indent=1))


if __name__ == "__main__":
    main()
