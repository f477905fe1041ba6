"""Train the demo SigLIP: supervised warm start of the image tower, then the sigmoid loss.

From-scratch ViTs learn colour from captions in minutes but shape only very slowly, so
(as in the SigLIP paper's LiT setting, which starts from a pretrained image tower):
  A. the image tower learns shape/colour/count with supervised heads on single large
     objects,
  B. then on mixed 1-3 object scenes (small objects do not follow from large ones),
  C. then both towers train with the sigmoid loss, the image tower at a lower learning
     rate and the supervised heads kept as a small auxiliary term so the shape skill
     survives the switch. A fraction of the images is shown grey with its colour-free
     phrasings ("a star", "a circle to the left of a star"), so shape words must be
     read from outlines, not from the colours they came with;
  E. the temperature t and bias b alone are fitted (logistic regression on two
     numbers) to training-split images against every zero-shot prompt, so a
     probability of 0.5 means what it says; the sigmoid loss leaves b far below zero
     because almost every pair in a batch is a negative.
Held-out colour-shape pairs never appear in any stage's training images.

    python -m vlm_recipes.train --out DIR            # the shipped demo model
    python -m vlm_recipes.train --out DIR --smoke    # a few steps on tiny data (CI)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
import torch
import torch.nn.functional as F

from . import scenes
from .configs import DEMO_IMAGE_SIZE, DEMO_MAX_LENGTH, demo_config
from .tokenizer import train_tokenizer

MAX_CAPTIONS = 8


def _gen(args):
    seed, start, stop, split, side, layout, size = args
    out = []
    for i in range(start, stop):
        img, scene = scenes.sample(seed, i, split=split, side=side, layout=layout, size=size)
        out.append((np.asarray(img, dtype=np.uint8), scene))
    return out


def generate(seed, n, split="train", side=DEMO_IMAGE_SIZE, layout=None, size=None, workers=2):
    chunk = max(1, n // (workers * 8))
    jobs = [(seed, s, min(n, s + chunk), split, side, layout, size) for s in range(0, n, chunk)]
    with Pool(workers) as pool:
        parts = pool.map(_gen, jobs)
    items = [x for p in parts for x in p]
    return np.stack([x[0] for x in items]), [x[1] for x in items]


def to_pixels(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC at the model's size -> normalised NCHW (the processor's rescale+normalise)."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (x - 0.5) / 0.5


def labels_of(scene_list):
    shape = torch.zeros(len(scene_list), len(scenes.SHAPES))
    colour = torch.zeros(len(scene_list), len(scenes.COLOUR_NAMES))
    count = torch.zeros(len(scene_list), dtype=torch.long)
    for i, s in enumerate(scene_list):
        for o in s.objects:
            shape[i, scenes.SHAPES.index(o.shape)] = 1
            colour[i, scenes.COLOUR_NAMES.index(o.colour)] = 1
        count[i] = max(0, min(2, s.count - 1))
    return shape, colour, count


class Heads(torch.nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.shape = torch.nn.Linear(width, len(scenes.SHAPES))
        self.colour = torch.nn.Linear(width, len(scenes.COLOUR_NAMES))
        self.count = torch.nn.Linear(width, 3)

    def loss(self, feats, shape, colour, count, has_colour=None):
        colour_loss = F.binary_cross_entropy_with_logits(self.colour(feats), colour, reduction="none").mean(-1)
        if has_colour is not None:
            colour_loss = colour_loss * has_colour
        return (
            F.binary_cross_entropy_with_logits(self.shape(feats), shape)
            + colour_loss.mean()
            + F.cross_entropy(self.count(feats), count)
        )


def grey_some(pixels: torch.Tensor, rng, p: float):
    """Turns a random fraction p of a batch grey; returns the batch and which kept colour.

    Held-out pairs make colour a shortcut for shape (red is never a star in training,
    so a red blob "is not a star"); on grey copies only the outline tells the shape.
    Grey is none of the eight colours, so no held-out pair is shown either."""
    if p == 0:  # draw nothing: a run without grey copies replays the same batches
        return pixels, None
    grey = torch.from_numpy(rng.random(pixels.shape[0]) < p)
    pixels = pixels.clone()
    pixels[grey] = pixels[grey].mean(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return pixels, (~grey).float()


def sigmoid_loss(img, txt, ids, logit_scale, logit_bias):
    """The SigLIP loss; identical captions in one batch are all positives."""
    img = F.normalize(img, dim=-1)
    txt = F.normalize(txt, dim=-1)
    logits = img @ txt.t() * logit_scale.exp() + logit_bias
    same = (ids[:, None, :] == ids[None, :, :]).all(-1)
    z = same.float() * 2 - 1
    return -F.logsigmoid(z * logits).sum() / img.shape[0]


def lr_at(step, total, base, warmup=50):
    if step < warmup:
        return base * (step + 1) / warmup
    p = (step - warmup) / max(1, total - warmup)
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


@torch.no_grad()
def image_features(model, images: np.ndarray, batch: int = 512) -> torch.Tensor:
    """The image tower's pooled output for uint8 NHWC images, in batches."""
    return torch.cat([
        model.vision_model(pixel_values=to_pixels(images[i : i + batch])).pooler_output
        for i in range(0, len(images), batch)
    ])


@torch.no_grad()
def quick_zero_shot(model, tok, images, scene_list, batch=256):
    """Top-1 zero-shot accuracy on single-object scenes, for progress checks."""
    model.eval()
    feats = F.normalize(image_features(model, images, batch), dim=-1)

    def text(prompts):
        ids = torch.tensor([e.ids for e in tok.encode_batch(prompts)])
        return F.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1)

    shape_t = text([f"a {s}" for s in scenes.SHAPES])
    colour_t = text([f"a {c} shape" for c in scenes.COLOUR_NAMES])
    pairs = [(c, s) for c in scenes.COLOUR_NAMES for s in scenes.SHAPES]
    pair_t = text([f"a {c} {s}" for c, s in pairs])
    gold_shape = torch.tensor([scenes.SHAPES.index(x.objects[0].shape) for x in scene_list])
    gold_colour = torch.tensor([scenes.COLOUR_NAMES.index(x.objects[0].colour) for x in scene_list])
    gold_pair = torch.tensor([pairs.index((x.objects[0].colour, x.objects[0].shape)) for x in scene_list])
    held = torch.tensor([scenes.is_held_out(x.objects[0].colour, x.objects[0].shape) for x in scene_list])
    pred_pair = (feats @ pair_t.t()).argmax(-1)
    pred_colour = (feats @ colour_t.t()).argmax(-1)
    model.train()
    return {
        "shape": ((feats @ shape_t.t()).argmax(-1) == gold_shape).float().mean().item(),
        "colour": (pred_colour == gold_colour).float().mean().item(),
        "pair_seen": (pred_pair == gold_pair)[~held].float().mean().item(),
        "pair_held_out": (pred_pair == gold_pair)[held].float().mean().item(),
        "colour_held_out": (pred_colour == gold_colour)[held].float().mean().item(),
    }


def draw_batch(rng, cap_ids, cap_n, size):
    """Image indices and, for each, one of its captions' token ids, drawn at random."""
    idx = rng.integers(0, len(cap_ids), size=size)
    return idx, pick_captions(rng, cap_ids, cap_n, idx)


def pick_captions(rng, cap_ids, cap_n, idx):
    pick = torch.from_numpy((rng.random(len(idx)) * cap_n[idx].numpy()).astype(np.int64))
    return cap_ids[torch.from_numpy(idx), pick]


def caption_ids(tok, scene_list, phrasings=lambda s: s.captions):
    ids = torch.zeros(len(scene_list), MAX_CAPTIONS, DEMO_MAX_LENGTH, dtype=torch.long)
    n = torch.zeros(len(scene_list), dtype=torch.long)
    for i, s in enumerate(scene_list):
        caps = phrasings(s)[:MAX_CAPTIONS]
        for j, e in enumerate(tok.encode_batch(caps)):
            ids[i, j] = torch.tensor(e.ids)
        n[i] = len(caps)
    return ids, n


def prompt_families():
    """Every zero-shot prompt `vlm eval zero-shot` and the demo use, with its truth test."""
    out = [(f"a {s}", lambda sc, s=s: any(o.shape == s for o in sc.objects)) for s in scenes.SHAPES]
    out += [(f"a {c} shape", lambda sc, c=c: any(o.colour == c for o in sc.objects)) for c in scenes.COLOUR_NAMES]
    out += [
        (f"a {c} {s}", lambda sc, c=c, s=s: any(o.colour == c and o.shape == s for o in sc.objects))
        for c in scenes.COLOUR_NAMES
        for s in scenes.SHAPES
    ]
    return out


@torch.no_grad()
def calibrate(model, tok, images, scene_list, log):
    """Fits logit_scale and logit_bias (only) by logistic regression on cos(img, txt).

    Platt scaling: the towers are untouched, so rankings do not move; only what a
    probability means does. Images come from the training split (never the eval set)."""
    model.eval()
    feats = F.normalize(image_features(model, images), dim=-1)
    prompts = prompt_families()
    ids = torch.tensor([e.ids for e in tok.encode_batch([p for p, _ in prompts])])
    txt = F.normalize(model.text_model(input_ids=ids).pooler_output, dim=-1)
    cos = feats @ txt.t()
    truth = torch.tensor([[float(test(sc)) for _, test in prompts] for sc in scene_list])
    scale = model.logit_scale.detach().clone().requires_grad_(True)
    bias = model.logit_bias.detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS([scale, bias], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        with torch.enable_grad():
            loss = F.binary_cross_entropy_with_logits(cos * scale.exp() + bias, truth)
            loss.backward()
        return loss

    before = (model.logit_scale.exp().item(), model.logit_bias.item())
    with torch.enable_grad():
        opt.step(closure)
    model.logit_scale.copy_(scale.detach())
    model.logit_bias.copy_(bias.detach())
    p = torch.sigmoid(cos * scale.detach().exp() + bias.detach())
    single = torch.tensor([sc.count == 1 for sc in scene_list])
    true_p = p[single][truth[single] > 0]
    wrong_p = (p[single] * (1 - truth[single])).max(-1).values
    log(
        f"calibrated t {before[0]:.2f} -> {scale.exp().item():.2f}, b {before[1]:.2f} -> {bias.item():.2f}; "
        f"single objects: median true-label p {true_p.median().item():.3f}, "
        f"median best wrong p {wrong_p.median().item():.3f}"
    )
    model.train()
    return {"t_before": before[0], "b_before": before[1], "t": scale.exp().item(), "b": bias.item()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for the trained checkpoint")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--smoke", action="store_true", help="a few steps on tiny data")
    ap.add_argument("--steps", default="800,3600,1500", help="steps of stages A,B,C")
    ap.add_argument("--vision-lr", type=float, default=1e-4, help="image tower learning rate in stage C")
    ap.add_argument("--aux-weight", type=float, default=0.5, help="weight of the supervised term in stage C")
    ap.add_argument("--grey", type=float, default=0.5, help="fraction of supervised images shown grey")
    ap.add_argument(
        "--grey-captions", type=float, default=0.3,
        help="fraction of stage C images shown grey with their colour-free phrasings",
    )
    ap.add_argument(
        "--calibrate", type=int, default=4000,
        help="training-split images stage E fits t and b on (0: keep the trained t and b)",
    )
    ap.add_argument("--lit-steps", type=int, default=0, help="steps of stage D (image tower locked)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", help="continue from a checkpoint this script saved (same seed and data)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    os.makedirs(args.out, exist_ok=True)
    t0 = time.time()
    steps_a, steps_b, steps_c = (3, 3, 4) if args.smoke else map(int, args.steps.split(","))
    if args.smoke and args.init:
        steps_a = steps_b = 0
    bsz_sup, bsz_sig = (16, 16) if args.smoke else (128, 256)
    n_single, n_mixed = (64, 128) if args.smoke else (16000, 48000)

    def log(msg):
        print(f"[{time.time() - t0:7.1f}s] {msg}", flush=True)

    log("generating data")
    single_x, single_s = generate(args.seed, n_single, layout="single", size="large")
    mixed_x, mixed_s = generate(args.seed + 1, n_mixed)
    check_x, check_s = generate(args.seed + 2, 48 if args.smoke else 480, split="eval", layout="single")
    if args.init:
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(os.path.join(args.init, "tokenizer.json"))
    else:
        corpus = [c for s in mixed_s + single_s for c in s.captions]
        corpus += [f"a {c} {s}" for c in scenes.COLOUR_NAMES for s in scenes.SHAPES]
        tok = train_tokenizer(corpus, max_length=DEMO_MAX_LENGTH)
    tok.save(os.path.join(args.out, "tokenizer.json"))
    log(f"data ready: {len(single_s)} single, {len(mixed_s)} mixed; vocab {tok.get_vocab_size()}")

    from transformers import SiglipModel

    history, earlier_seconds, earlier_steps = [], 0.0, []
    if args.init:
        model = SiglipModel.from_pretrained(args.init, attn_implementation="eager")
        cfg = model.config
        heads = Heads(cfg.vision_config.hidden_size)
        heads_file = os.path.join(args.init, "heads.pt")
        if os.path.exists(heads_file):
            heads.load_state_dict(torch.load(heads_file))
        with open(os.path.join(args.init, "training.json")) as fh:
            earlier = json.load(fh)
        history = earlier["history"]
        earlier_seconds = earlier["training_seconds"]
        earlier_steps = earlier.get("runs", [earlier["steps"]])
        # A continuation draws fresh batches: the same seed would replay the first run's.
        rng = np.random.default_rng([args.seed, len(earlier_steps)])
    else:
        cfg = demo_config(tok.get_vocab_size())
        cfg._attn_implementation = "eager"
        model = SiglipModel(cfg)
        with torch.no_grad():
            model.logit_scale.fill_(math.log(10.0))
            model.logit_bias.fill_(-10.0)
        heads = Heads(cfg.vision_config.hidden_size)
    model.train()

    def check(stage, step):
        r = quick_zero_shot(model, tok, check_x, check_s)
        r.update(stage=stage, step=step, seconds=round(time.time() - t0, 1))
        history.append(r)
        log("zero-shot " + " ".join(f"{k}={v:.3f}" for k, v in r.items() if isinstance(v, float) and k != "seconds"))

    # Stages A and B: supervised warm start of the image tower.
    vis_params = list(model.vision_model.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(vis_params, lr=1e-3, weight_decay=1e-4)
    for stage, xs, ss, steps in (("A", single_x, single_s, steps_a), ("B", mixed_x, mixed_s, steps_b)):
        if steps == 0:
            continue
        lab = labels_of(ss)
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, 1e-3)
            idx = torch.from_numpy(rng.integers(0, len(xs), size=bsz_sup))
            pixels, has_colour = grey_some(to_pixels(xs[idx.numpy()]), rng, args.grey)
            feats = model.vision_model(pixel_values=pixels).pooler_output
            loss = heads.loss(feats, lab[0][idx], lab[1][idx], lab[2][idx], has_colour)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0 or step == steps - 1:
                log(f"stage {stage} step {step}/{steps} loss {loss.item():.4f}")
        check(stage, steps)

    # Stage C: the sigmoid loss on both towers, guarding the shape skill.
    all_x = np.concatenate([single_x, mixed_x])
    all_s = single_s + mixed_s
    lab = labels_of(all_s)
    cap_ids, cap_n = caption_ids(tok, all_s)
    grey_ids, grey_n = caption_ids(tok, all_s, scenes.colour_free_captions)
    text_params = list(model.text_model.parameters()) + [model.logit_scale, model.logit_bias]
    opt = torch.optim.AdamW(
        [
            {"params": text_params, "base": 1e-3},
            {"params": list(model.vision_model.parameters()), "base": args.vision_lr},
            {"params": list(heads.parameters()), "base": args.vision_lr},
        ],
        weight_decay=1e-4,
    )
    aux_weight = args.aux_weight
    for step in range(steps_c):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps_c, g["base"])
        idx, ids = draw_batch(rng, cap_ids, cap_n, bsz_sig)
        pixels, has_colour = grey_some(to_pixels(all_x[idx]), rng, args.grey_captions)
        if has_colour is not None:
            grey = has_colour == 0
            ids[grey] = pick_captions(rng, grey_ids, grey_n, idx[grey.numpy()])
        img = model.vision_model(pixel_values=pixels).pooler_output
        txt = model.text_model(input_ids=ids).pooler_output
        t_idx = torch.from_numpy(idx)
        loss_sig = sigmoid_loss(img, txt, ids, model.logit_scale, model.logit_bias)
        loss_aux = heads.loss(img, lab[0][t_idx], lab[1][t_idx], lab[2][t_idx], has_colour)
        loss = loss_sig + aux_weight * loss_aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps_c - 1:
            log(
                f"stage C step {step}/{steps_c} sigmoid {loss_sig.item():.4f} aux {loss_aux.item():.4f} "
                f"t {model.logit_scale.exp().item():.2f} b {model.logit_bias.item():.2f}"
            )
        if (step + 1) % 300 == 0 or step == steps_c - 1:
            check("C", step + 1)

    # Stage D (LiT): the image tower is locked and only the text tower (with t and b)
    # learns to meet it. Image embeddings are computed once, so a step is cheap.
    steps_d = min(3, args.lit_steps) if args.smoke else args.lit_steps
    if steps_d:
        model.eval()
        feats = image_features(model, all_x)
        model.text_model.train()
        bsz_lit = 16 if args.smoke else 1024
        opt = torch.optim.AdamW(text_params, lr=1e-3, weight_decay=1e-4)
        for step in range(steps_d):
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps_d, 1e-3)
            idx, ids = draw_batch(rng, cap_ids, cap_n, bsz_lit)
            txt = model.text_model(input_ids=ids).pooler_output
            loss = sigmoid_loss(feats[torch.from_numpy(idx)], txt, ids, model.logit_scale, model.logit_bias)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0 or step == steps_d - 1:
                log(f"stage D step {step}/{steps_d} sigmoid {loss.item():.4f} "
                    f"t {model.logit_scale.exp().item():.2f} b {model.logit_bias.item():.2f}")
            if (step + 1) % 500 == 0 or step == steps_d - 1:
                check("D", step + 1)

    calibration = None
    n_calib = min(64, args.calibrate) if args.smoke else args.calibrate
    if n_calib:
        log("stage E: fitting t and b")
        calib_x, calib_s = generate(args.seed + 3, n_calib)
        # No zero-shot check after it: t and b do not move a ranking.
        calibration = calibrate(model, tok, calib_x, calib_s, log)

    model.eval()
    model.save_pretrained(args.out)
    torch.save(heads.state_dict(), os.path.join(args.out, "heads.pt"))
    steps = {"A": steps_a, "B": steps_b, "C": steps_c, "D": steps_d}
    run = {
        **steps,
        "init": bool(args.init),
        "grey_fraction_supervised": args.grey,
        "stage_c": {
            "vision_lr": args.vision_lr,
            "aux_weight": args.aux_weight,
            "grey_caption_fraction": args.grey_captions,
        },
        "calibration": {"images": n_calib, **(calibration or {})},
        "arguments": {k: v for k, v in vars(args).items() if k not in ("out", "init")},
        "seconds": round(time.time() - t0, 1),
    }
    info = {
        "seed": args.seed,
        "smoke": args.smoke,
        "steps": steps,
        "runs": earlier_steps + [run],
        "batch": {"supervised": bsz_sup, "sigmoid": bsz_sig},
        "train_images": {"single_large": n_single, "mixed": n_mixed},
        "held_out_pairs": sorted(f"{c} {s}" for c, s in scenes.HELD_OUT),
        "training_seconds": round(earlier_seconds + time.time() - t0, 1),
        "threads": args.threads,
        "torch": torch.__version__,
        "history": history,
    }
    with open(os.path.join(args.out, "training.json"), "w") as f:
        json.dump(info, f, indent=2)
    log(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
