"""The zero-shot evaluation set and its metrics, in PyTorch.

`make_eval_set` writes a data folder (PNG images + eval.json) that `vlm eval
zero-shot` reads; `evaluate` computes on it, with the fp32 PyTorch model and the Hugging
Face image processor, the same figures the Rust side computes (same definitions, same
tie rules), so the two can be compared within a fraction of a point.

    python -m vlm_recipes.evaluate make --out DIR [--per-pair 12]
    python -m vlm_recipes.evaluate run --checkpoint CKPT --data DIR
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from . import scenes

EVAL_FORMAT = "vlm-edge-zero-shot-eval"
RECALL_AT = (1, 5, 10)
EVAL_SEED = 777_001


def make_eval_set(out: str, per_pair: int = 12, per_count: int = 60, side: int = 64) -> dict:
    """Single objects for every colour-shape pair (seen and held out) and 1-3 identical
    objects for counting; each image rendered from its own seed."""
    os.makedirs(os.path.join(out, "images"), exist_ok=True)
    pairs = [(c, s) for c in scenes.COLOUR_NAMES for s in scenes.SHAPES]
    items = []  # (file, scene)
    index = 0

    def add(**kw):
        nonlocal index
        img, scene = scenes.sample(EVAL_SEED, index, split="eval", side=side, **kw)
        name = f"images/{index:05d}.png"
        img.save(os.path.join(out, name))
        items.append((name, scene))
        index += 1

    for colour, shape in pairs:
        for _ in range(per_pair):
            add(layout="single", pair=(colour, shape))
    for n in (1, 2, 3):
        for k in range(per_count):
            add(layout="same", count=n)

    pair_labels = [f"a {c} {s}" for c, s in pairs]
    single = [(f, s) for f, s in items if s.count == 1 and s.uniform("shape")]
    single = [(f, s) for f, s in single if len(s.objects) == 1]
    seen = [(f, s) for f, s in single if not scenes.is_held_out(s.objects[0].colour, s.objects[0].shape)]
    held = [(f, s) for f, s in single if scenes.is_held_out(s.objects[0].colour, s.objects[0].shape)]
    counted = [(f, s) for f, s in items[len(pairs) * per_pair:] if s.count >= 1]

    def pair_item(f, s):
        o = s.objects[0]
        return {"image": f, "gold": pairs.index((o.colour, o.shape))}

    tasks = [
        {
            "name": "shape",
            "labels": [f"a {s}" for s in scenes.SHAPES],
            "items": [{"image": f, "gold": scenes.SHAPES.index(s.objects[0].shape)} for f, s in single],
        },
        {
            "name": "colour",
            "labels": [f"a {c} shape" for c in scenes.COLOUR_NAMES],
            "items": [{"image": f, "gold": scenes.COLOUR_NAMES.index(s.objects[0].colour)} for f, s in single],
        },
        {
            "name": "count",
            "items": [
                {
                    "image": f,
                    "labels": [
                        f"{scenes.NUMBER_WORDS[n]} {s.objects[0].colour} "
                        + (s.objects[0].shape if n == 1 else scenes.plural(s.objects[0].shape))
                        for n in (1, 2, 3)
                    ],
                    "gold": s.count - 1,
                }
                for f, s in counted
            ],
        },
        {"name": "colour+shape (seen pairs)", "labels": pair_labels, "items": [pair_item(f, s) for f, s in seen]},
        {"name": "colour+shape (held-out pairs)", "labels": pair_labels, "items": [pair_item(f, s) for f, s in held]},
        {
            "name": "colour (held-out pairs)",
            "labels": [f"a {c} shape" for c in scenes.COLOUR_NAMES],
            "items": [{"image": f, "gold": scenes.COLOUR_NAMES.index(s.objects[0].colour)} for f, s in held],
        },
        {
            "name": "shape (held-out pairs)",
            "labels": [f"a {s}" for s in scenes.SHAPES],
            "items": [{"image": f, "gold": scenes.SHAPES.index(s.objects[0].shape)} for f, s in held],
        },
    ]
    # The held-out split for retrieval: every image showing a held-out pair, captioned
    # with colour, shape and position.
    held_any = [
        (f, s)
        for f, s in items
        if s.uniform("colour") and s.uniform("shape")
        and scenes.is_held_out(s.objects[0].colour, s.objects[0].shape)
    ]

    def retrieval_caption(s):
        o = s.objects[0]
        if s.count == 1:
            return f"a {o.colour} {o.shape} in the {scenes.position_phrase(o.cx, o.cy)}"
        return f"{scenes.NUMBER_WORDS[s.count]} {o.colour} {scenes.plural(o.shape)}"

    doc = {
        "format": EVAL_FORMAT,
        "version": 1,
        "generator": {"seed": EVAL_SEED, "per_pair": per_pair, "per_count": per_count, "side": side},
        "tasks": tasks,
        "retrieval": [
            {"name": "held-out", "items": [{"image": f, "caption": retrieval_caption(s)} for f, s in held_any]}
        ],
    }
    write_json(os.path.join(out, "eval.json"), doc)
    return doc


def write_json(path: str, doc: dict) -> None:
    """An eval folder's description file, as every maker here writes it."""
    with open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")


class TorchSiglip:
    """The fp32 PyTorch reference: a saved checkpoint + the HF processor and tokenizer."""

    def __init__(self, checkpoint: str, model_dir: str | None = None):
        import torch
        from transformers import PreTrainedTokenizerFast, SiglipImageProcessor, SiglipModel

        self.torch = torch
        self.model = SiglipModel.from_pretrained(checkpoint, attn_implementation="eager").eval()
        cfg = self.model.config
        size = cfg.vision_config.image_size
        self.processor = SiglipImageProcessor(
            size={"height": size, "width": size}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3
        )
        self.max_length = cfg.text_config.max_position_embeddings
        tok_file = os.path.join(model_dir or checkpoint, "tokenizer.json")
        self.tokenizer = PreTrainedTokenizerFast(tokenizer_file=tok_file, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")

    def token_ids(self, texts):
        return self.tokenizer(texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")["input_ids"]

    def pixels(self, images):
        return self.processor(images=images, return_tensors="pt")["pixel_values"]

    def embed_images(self, images, batch=64):
        out = []
        with self.torch.no_grad():
            for i in range(0, len(images), batch):
                px = self.pixels(images[i : i + batch])
                out.append(self.model.vision_model(pixel_values=px).pooler_output)
        return self.torch.cat(out).numpy()

    def embed_texts(self, texts, batch=256):
        out = []
        with self.torch.no_grad():
            for i in range(0, len(texts), batch):
                ids = self.token_ids(texts[i : i + batch])
                out.append(self.model.text_model(input_ids=ids).pooler_output)
        return self.torch.cat(out).numpy()


def _normalize(x):
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n == 0, 1, n)


RELIABILITY_BINS = 10


def calibration(probs: list, golds: list) -> dict:
    """What σ(t·cos + b) means on a task: `vlm eval zero-shot`'s definitions, line for line.

    probs[i] holds item i's probability for each of its candidate labels; golds[i] the
    right one. Medians are numpy's; bin k holds [k/10, (k+1)/10), 1.0 the last."""
    true_p, wrong_p, exact = [], [], 0
    bins = [[0, 0.0, 0] for _ in range(RELIABILITY_BINS)]
    for p, gold in zip(probs, golds):
        best_wrong = 0.0
        for i, v in enumerate(p):
            b = bins[min(int(v * RELIABILITY_BINS), RELIABILITY_BINS - 1)]
            b[0] += 1
            b[1] += v
            b[2] += int(i == gold)
            if i != gold:
                best_wrong = max(best_wrong, v)
        exact += int(p[gold] >= 0.5 and best_wrong < 0.5)
        true_p.append(p[gold])
        wrong_p.append(best_wrong)
    return {
        "median_true": float(np.median(true_p)) if true_p else 0.0,
        "median_best_wrong": float(np.median(wrong_p)) if wrong_p else 0.0,
        "threshold_exact": 100.0 * exact / len(golds) if golds else 0.0,
        "bins": [
            {
                "lower": k / RELIABILITY_BINS,
                "upper": (k + 1) / RELIABILITY_BINS,
                "count": n,
                "mean_probability": s / n if n else 0.0,
                "observed": r / n if n else 0.0,
            }
            for k, (n, s, r) in enumerate(bins)
        ],
    }


def evaluate(model: TorchSiglip, data_dir: str) -> dict:
    from PIL import Image

    with open(os.path.join(data_dir, "eval.json")) as fh:
        spec = json.load(fh)
    files = sorted({it["image"] for t in spec["tasks"] for it in t["items"]}
                   | {it["image"] for r in spec.get("retrieval", []) for it in r["items"]})
    images = [Image.open(os.path.join(data_dir, f)).convert("RGB") for f in files]
    img_emb = dict(zip(files, _normalize(model.embed_images(images))))
    texts = sorted({l for t in spec["tasks"] for l in t.get("labels", [])}
                   | {l for t in spec["tasks"] for it in t["items"] for l in it.get("labels") or []}
                   | {it["caption"] for r in spec.get("retrieval", []) for it in r["items"]})
    txt_emb = dict(zip(texts, _normalize(model.embed_texts(texts))))
    scale = float(model.model.logit_scale.detach().exp())
    bias = float(model.model.logit_bias.detach())
    tasks = []
    for t in spec["tasks"]:
        correct, probs, golds = 0, [], []
        for it in t["items"]:
            labels = it.get("labels") or t["labels"]
            scores = np.array([img_emb[it["image"]] @ txt_emb[l] for l in labels])
            correct += int(int(np.argmax(scores)) == it["gold"])
            probs.append([float(v) for v in 1.0 / (1.0 + np.exp(-(scale * scores + bias)))])
            golds.append(it["gold"])
        n = len(t["items"])
        tasks.append({
            "name": t["name"], "correct": correct, "total": n, "accuracy": 100.0 * correct / n if n else 0.0,
            "calibration": calibration(probs, golds),
        })
    retrieval = []
    for r in spec.get("retrieval", []):
        caps = []
        for it in r["items"]:
            if it["caption"] not in caps:
                caps.append(it["caption"])
        cap_of = np.array([caps.index(it["caption"]) for it in r["items"]])
        ims = np.stack([img_emb[it["image"]] for it in r["items"]])
        sim = ims @ np.stack([txt_emb[c] for c in caps]).T
        i2t = [0, 0, 0]
        for i in range(len(ims)):
            rank = int((sim[i] > sim[i, cap_of[i]]).sum())
            for k, at in enumerate(RECALL_AT):
                i2t[k] += int(rank < at)
        t2i = [0, 0, 0]
        for c in range(len(caps)):
            best = sim[cap_of == c, c].max()
            rank = int((sim[cap_of != c, c] > best).sum())
            for k, at in enumerate(RECALL_AT):
                t2i[k] += int(rank < at)
        retrieval.append({
            "name": r["name"], "images": len(ims), "captions": len(caps),
            "image_to_text": [100.0 * h / len(ims) for h in i2t],
            "text_to_image": [100.0 * h / len(caps) for h in t2i],
        })
    return {"tasks": tasks, "retrieval": retrieval}


def print_report(report: dict) -> None:
    print(f"{'task':<32} {'top-1 %':>8} {'items':>6} {'p(right)':>8} {'p(wrong)':>8} {'@0.5 %':>8}")
    for t in report["tasks"]:
        c = t["calibration"]
        print(f"{t['name']:<32} {t['accuracy']:>8.2f} {t['total']:>6} "
              f"{c['median_true']:>8.3f} {c['median_best_wrong']:>8.3f} {c['threshold_exact']:>8.2f}")
    for r in report["retrieval"]:
        print(f"retrieval {r['name']}: i->t R@1/5/10 {r['image_to_text']}  t->i {r['text_to_image']}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("--out", required=True)
    mk.add_argument("--per-pair", type=int, default=12)
    mk.add_argument("--per-count", type=int, default=60)
    rn = sub.add_parser("run")
    rn.add_argument("--checkpoint", required=True)
    rn.add_argument("--data", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "make":
        doc = make_eval_set(args.out, args.per_pair, args.per_count)
        print(f"wrote {sum(len(t['items']) for t in doc['tasks'])} task items to {args.out}")
    else:
        print_report(evaluate(TorchSiglip(args.checkpoint), args.data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
