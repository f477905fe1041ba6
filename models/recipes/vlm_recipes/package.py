"""Package a trained checkpoint as a shipped model folder, with everything that proves it.

Writes into --out: the export (vision.onnx, text.onnx, config.json, tokenizer.json),
example images, golden.json (PyTorch embeddings of those images and captions, with
their token ids, for the Rust side to match) and manifest.json (sha256 of every file,
training config, seed, training time, and the fp32 figures measured here). The
zero-shot evaluation set goes into --eval-out.

    python -m vlm_recipes.package --checkpoint CKPT --out models/demo --eval-out models/demo-eval \
        --drawings models/demo-drawings

--drawings also measures the model on shape drawings made independently of the scene
generator (`drawings.py`), recorded in the manifest beside the eval set's figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys

import numpy as np

from . import evaluate as ev
from . import scenes
from .export import export_siglip

# Captions for the golden file: in-grammar, a word the grammar never used (spelled out
# by the tokenizer's letter fallback), punctuation and case, and one past max length.
GOLDEN_TEXTS = [
    "a red circle",
    "two blue stars",
    "a photo of a cat",
    "A Yellow Triangle, in the TOP LEFT!",
    "a purple heart to the left of a green cross and a small orange square below it all",
]


def _examples(out: str) -> list[str]:
    """A few images of the kinds a user passes: model-size PNG, larger PNG, a stretched
    JPEG, and a real photograph from scikit-image's bundled data."""
    from PIL import Image

    ex = os.path.join(out, "examples")
    os.makedirs(ex, exist_ok=True)
    names = []
    img, _ = scenes.sample(4242, 0, split="train", side=64, layout="single", pair=("red", "circle"), size="large")
    img.save(os.path.join(ex, "red-circle.png"))
    names.append("examples/red-circle.png")
    img, _ = scenes.sample(4242, 1, split="train", side=160, layout="same", pair=("blue", "star"), count=2)
    img.save(os.path.join(ex, "two-blue-stars.png"))
    names.append("examples/two-blue-stars.png")
    img, _ = scenes.sample(4242, 2, split="train", side=128, layout="single", pair=("yellow", "triangle"), size="large")
    img.resize((200, 120), Image.BICUBIC).save(os.path.join(ex, "yellow-triangle-wide.jpg"), quality=92)
    names.append("examples/yellow-triangle-wide.jpg")
    import skimage.data

    Image.fromarray(skimage.data.chelsea()).save(os.path.join(ex, "chelsea-cat.jpg"), quality=90)
    names.append("examples/chelsea-cat.jpg")
    return names


def _golden(model: ev.TorchSiglip, out: str, images: list[str]) -> dict:
    from PIL import Image

    pil = [Image.open(os.path.join(out, f)).convert("RGB") for f in images]
    img_emb = model.embed_images(pil)
    # The processor's own pixels, back in 8 bits (its normalisation is exactly
    # invertible): the Rust preprocessing is checked against these before any model runs.
    pixels = model.pixels(pil).numpy()
    proc = model.processor
    mean = np.array(proc.image_mean).reshape(1, 3, 1, 1)
    std = np.array(proc.image_std).reshape(1, 3, 1, 1)
    rgb8 = np.rint((pixels * std + mean) / proc.rescale_factor).astype(np.int64)
    rgb8 = rgb8.transpose(0, 2, 3, 1).reshape(len(images), -1)
    txt_emb = model.embed_texts(GOLDEN_TEXTS)
    ids = model.token_ids(GOLDEN_TEXTS).tolist()
    doc = {
        "about": "fp32 PyTorch embeddings (Hugging Face processor and tokenizer) of the example images and texts",
        "images": [
            {"file": f, "resized_rgb8": p.tolist(), "embedding": e.tolist()}
            for f, p, e in zip(images, rgb8, img_emb)
        ],
        "texts": [{"text": t, "input_ids": i, "embedding": e.tolist()} for t, i, e in zip(GOLDEN_TEXTS, ids, txt_emb)],
    }
    with open(os.path.join(out, "golden.json"), "w") as fh:
        json.dump(doc, fh)
        fh.write("\n")
    return doc


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package(
    checkpoint: str, out: str, eval_out: str, per_pair: int = 12, per_count: int = 60, drawings: str | None = None
) -> dict:
    import torch
    import transformers
    from transformers import SiglipModel

    model = SiglipModel.from_pretrained(checkpoint, attn_implementation="eager").eval()
    tok = os.path.join(checkpoint, "tokenizer.json")
    with open(tok) as fh:
        tok_doc = json.load(fh)
    vocab = tok_doc["model"]["vocab"]
    export_siglip(model, out, tokenizer_json=tok, pad_token_id=vocab["<pad>"], eos_token_id=vocab["</s>"])
    images = _examples(out)
    ref = ev.TorchSiglip(checkpoint, model_dir=out)
    _golden(ref, out, images)
    ev.make_eval_set(eval_out, per_pair=per_pair, per_count=per_count)
    figures = ev.evaluate(ref, eval_out)
    drawn = None
    if drawings:
        from . import drawings as dr

        if not os.path.exists(os.path.join(drawings, "eval.json")):
            dr.make(drawings, per_shape=20)
        drawn = {"folder": os.path.basename(os.path.normpath(drawings)), "figures": ev.evaluate(ref, drawings)}
    with open(os.path.join(checkpoint, "training.json")) as fh:
        training = json.load(fh)
    files = {}
    for root, _, names in os.walk(out):
        for n in sorted(names):
            if n == "manifest.json":
                continue
            p = os.path.join(root, n)
            files[os.path.relpath(p, out)] = {"sha256": _sha256(p), "bytes": os.path.getsize(p)}
    manifest = {
        "model": "vlm-edge demo SigLIP",
        "files": dict(sorted(files.items())),
        "total_bytes": sum(f["bytes"] for f in files.values()),
        "config": model.config.to_dict(),
        "seed": training["seed"],
        "training_seconds": training["training_seconds"],
        "training": {k: v for k, v in training.items() if k not in ("seed", "training_seconds")},
        "eval_data": {"folder": os.path.basename(os.path.normpath(eval_out)), "per_pair": per_pair, "per_count": per_count},
        "fp32_figures": figures,
        **({"drawings": drawn} if drawn else {}),
        "versions": {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__},
    }
    with open(os.path.join(out, "manifest.json"), "w") as fh:
        json.dump(manifest, fh, indent=1, default=str)
        fh.write("\n")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--eval-out", required=True)
    ap.add_argument("--per-pair", type=int, default=12)
    ap.add_argument("--per-count", type=int, default=60)
    ap.add_argument(
        "--drawings", help="folder of independent shape drawings (made there if missing) to measure too"
    )
    args = ap.parse_args(argv)
    m = package(args.checkpoint, args.out, args.eval_out, args.per_pair, args.per_count, args.drawings)
    ev.print_report(m["fp32_figures"])
    if "drawings" in m:
        ev.print_report(m["drawings"]["figures"])
    print(f"{args.out}: {m['total_bytes'] / 1e6:.1f} MB in {len(m['files'])} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
