"""Train a small captioner of a real Hugging Face class on the scene generator.

    python -m vlm_recipes.train_captioner --family {idefics3,llava,paligemma,idefics2} --out DIR \\
        [--minutes M] [--steps N] [--seed S] [--batch B] [--lr LR] [--vision-lr VLR] \\
        [--canonical P] [--threads T] [--eval N] [--eval-set DIR] [--eval-every K]

The model is the family's transformers class at a small size. Its vision tower is the
demo SigLIP's image tower (64 px, patch 8, width 128, 4 layers), read back from the
shipped `vision.onnx`; the connector and the language model start from the library's
random initialisation. The tokenizer is a byte-level BPE trained on every phrasing of
the caption grammar, carrying the family's special tokens (as `hf_captioners` builds it).

Training draws fresh scenes from the generator's train split (held-out colour-shape
pairs never appear): the input is the family's prompt layout around one image, the
target one of the scene's phrasings, picked anew each time (the full one with
probability `--canonical`, see `pick_caption`), followed by the family's end token;
only the caption tokens carry loss. Training stops at `--steps` or after
`--minutes`, whichever comes first; the cosine schedule follows whichever is nearer.

DIR is what `save_pretrained` writes for the model and the processor, plus
`vlm_caption.json` (the prompt the model was trained with), `train_log.json` and, with
`--eval N`, `eval.json`: greedy captions of N images of the caption eval set
(`vlm_recipes.captionset`), their exact-match rate, whether each names the objects'
colours and shapes and the right count (the checks `vlm eval caption` makes), and
BLEU-4 / CIDEr-D.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import numpy as np

from . import hf_captioners as hfc
from . import scenes

DEMO_VISION_ONNX = os.path.join(os.path.dirname(__file__), "..", "..", "demo", "vision.onnx")
CAPTION_FILE = "vlm_caption.json"
TRAIN_SEED = 90210
MAX_NEW_TOKENS = 24
VOCAB_SIZE = 512
# The smaller families reach their plateau sooner; Idefics3 is the one the runtime ships.
DEFAULT_MINUTES = {"idefics3": 40.0, "llava": 15.0, "paligemma": 15.0, "idefics2": 15.0}
# PaliGemma was pretrained with task prefixes; the others read a plain instruction.
PROMPTS = {"idefics3": "Caption:", "llava": "Caption:", "paligemma": "caption en", "idefics2": "Caption:"}

# The demo SigLIP's image tower (models/demo/config.json).
VISION = dict(hidden=128, layers=4, heads=4, inter=512, patch=8, image=64)


def vision_config(family: str) -> dict:
    v = VISION
    # LLaVA and PaliGemma hold a SiglipVisionModel; the demo's pooling head is of no use to them.
    extra = {"vision_use_head": False} if family in ("llava", "paligemma") else {}
    return hfc._siglip(v["hidden"], v["layers"], v["heads"], v["inter"], v["patch"], v["image"], **extra)


def text_config(family: str, vocab: int, special: dict) -> dict:
    """The language model: 256 wide, 4 layers, grouped-query attention as the family has it."""
    if family == "idefics3":  # SmolLM2 (Llama)
        return hfc._lm("llama", 256, 4, 8, 2, 32, 768, vocab, 100000.0, 1e-5, 512, False, "silu", **special)
    if family == "llava":  # Qwen2: q/k/v biases, tied head
        return hfc._lm("qwen2", 256, 4, 8, 2, 32, 768, vocab, 1e6, 1e-6, 512, True, "silu", **special)
    if family == "paligemma":  # Gemma: one key/value head, head_dim not hidden/heads, tied head
        return hfc._lm("gemma", 256, 4, 4, 1, 64, 768, vocab, 10000.0, 1e-6, 512, True, "gelu_pytorch_tanh",
                       **special)
    if family == "idefics2":  # Mistral
        # A narrower MLP than the others keeps the perceiver within the 25 MB budget.
        return hfc._lm("mistral", 256, 4, 8, 2, 32, 512, vocab, 10000.0, 1e-5, 512, False, "silu",
                       sliding_window=None, **special)
    raise ValueError(f"unknown family {family!r}")


PERCEIVER = dict(hidden_size=256, hidden_act="silu", rms_norm_eps=1e-5, resampler_n_latents=16, resampler_depth=2,
                 resampler_n_heads=4, resampler_head_dim=32, num_key_value_heads=2)


# ----------------------------------------------------------------------------- tokenizer


def grammar_captions(n_scenes: int = 4000, seed: int = 1) -> list[str]:
    """Every phrasing the grammar produces, gathered from scene layouts (no pixels drawn)."""
    out = set()
    for i in range(n_scenes):
        out.update(scenes.captions_for(scenes.sample_scene(np.random.default_rng([seed, i]), split="train")))
    return sorted(out)


def tokenizer_lines(prompt: str) -> list[str]:
    caps = grammar_captions()
    # Both forms, since a caption follows the prompt after a space (most families) or a
    # newline (PaliGemma), which the byte-level pre-tokenizer sees as different words.
    return [f"{prompt} {c}" for c in caps] + caps


# ----------------------------------------------------------------------------- model


def demo_vision_state_dict(onnx_path: str = DEMO_VISION_ONNX) -> dict:
    """The demo image tower's weights under SiglipVisionModel's parameter names.

    The ONNX export keeps the module names of every initializer it stores as is (biases,
    norms, embeddings), but stores each Linear weight transposed under an anonymous name
    as a MatMul operand. Each such MatMul feeds the Add of its own named bias, which names
    the weight."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(onnx_path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    prefix = "vision."
    state = {k[len(prefix):]: v for k, v in inits.items() if k.startswith(prefix)}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    for node in graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or node.input[1].startswith(prefix):
            continue
        biases = [i for c in consumers.get(node.output[0], []) if c.op_type == "Add"
                  for i in c.input if i.startswith(prefix) and i.endswith(".bias")]
        if len(biases) != 1:
            raise ValueError(f"{onnx_path}: cannot tell which Linear {node.input[1]} belongs to")
        weight = biases[0][len(prefix):-len("bias")] + "weight"
        if weight in state:
            raise ValueError(f"{onnx_path}: two MatMuls claim {weight}")
        state[weight] = inits[node.input[1]].T
    return {k: torch.from_numpy(np.ascontiguousarray(v).copy()) for k, v in state.items()}


def vision_tower(family: str, model):
    inner = model.model
    return inner.vision_model if family in ("idefics3", "idefics2") else inner.vision_tower


def load_demo_vision(family: str, model, onnx_path: str = DEMO_VISION_ONNX) -> None:
    import torch

    tower = vision_tower(family, model)
    own = tower.state_dict()
    # The tower's keys may sit under a wrapper (e.g. "vision_model."); find it from a key
    # every SigLIP tower has.
    anchor = "embeddings.patch_embedding.weight"
    inner = [k[: -len(anchor)] for k in own if k.endswith(anchor)]
    if len(inner) != 1:
        raise ValueError(f"{family}: cannot find the vision tower's patch embedding")
    src = demo_vision_state_dict(onnx_path)
    mapped = {inner[0] + k: v for k, v in src.items() if inner[0] + k in own}
    missing = sorted(set(own) - set(mapped))
    unused = sorted(k for k in src if inner[0] + k not in own and not k.startswith("head."))
    if missing or unused:
        raise ValueError(f"{family}: demo vision weights do not fit: missing {missing}, unused {unused}")
    for k, v in mapped.items():
        if own[k].shape != v.shape:
            raise ValueError(f"{family}: {k} is {tuple(own[k].shape)} here, {tuple(v.shape)} in the demo")
    with torch.no_grad():
        tower.load_state_dict(mapped, strict=True)


REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


def portable_path(v):
    """A path as the logs a model ships with record it: relative to the repository when
    inside it, else its last component (no machine's folders in shipped files)."""
    if not isinstance(v, str) or os.sep not in v:
        return v
    p = os.path.abspath(v)
    if p.startswith(REPO + os.sep):
        return os.path.relpath(p, REPO)
    return os.path.basename(p)


def build(family: str, seed: int = 0, vision_onnx: str = DEMO_VISION_ONNX):
    """(model, processor, prompt text) for one family, vision tower from the demo SigLIP."""
    import torch
    import transformers

    prompt = PROMPTS[family]
    tokenizer = hfc.build_tokenizer(family, VOCAB_SIZE, tokenizer_lines(prompt))
    ids = {k: tokenizer.convert_tokens_to_ids(v) if v else None
           for k, v in (("bos", tokenizer.bos_token), ("eos", tokenizer.eos_token), ("pad", tokenizer.pad_token))}
    special = dict(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    vision = vision_config(family)
    text = text_config(family, len(tokenizer), special)
    config, n_tokens = hfc.compose_config(family, vision, text, tokenizer.convert_tokens_to_ids("<image>"), special,
                                          scale=2, perceiver=PERCEIVER if family == "idefics2" else None)
    processor = hfc.build_processor(family, tokenizer, vision["image_size"], n_tokens, vision["patch_size"])
    if len(processor.tokenizer) > config.text_config.vocab_size:
        raise AssertionError("the processor added tokens the embedding table does not cover")
    config.dtype = torch.float32
    torch.manual_seed(seed)
    model = getattr(transformers, hfc.ARCHITECTURES[family])(config).to(torch.float32)
    if family == "idefics2":
        # The library starts every perceiver latent at ones: identical latents get identical
        # gradients and never tell apart.
        with torch.no_grad():
            latents = model.model.connector.perceiver_resampler.latents
            latents.normal_(0.0, 1.0, generator=torch.Generator().manual_seed(seed))
    load_demo_vision(family, model, vision_onnx)
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=config.text_config.bos_token_id, eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return model, processor, hfc.PROMPT_FORMATS[family].format(prompt=prompt)


# ----------------------------------------------------------------------------- batches


def _processor_images(family: str, images: list):
    # The Idefics processors take a list of images per prompt.
    return [[im] for im in images] if family in ("idefics3", "idefics2") else images


class Batches:
    """Model inputs for the fixed prompt followed by each target caption, right-padded.

    The prompt is encoded by the processor, exactly as at inference; the caption is
    appended as token ids, so prompt and caption never merge into one BPE token."""

    def __init__(self, family: str, processor, prompt_text: str, eos_id: int, pad_id: int):
        self.family, self.processor, self.prompt_text = family, processor, prompt_text
        self.eos_id, self.pad_id = eos_id, pad_id
        # PaliGemma's processor ends the prompt with "\n"; the others end on the prompt's
        # last character, so the caption starts a new word.
        self.lead = "" if family == "paligemma" else " "

    def caption_ids(self, caption: str) -> list[int]:
        return self.processor.tokenizer(self.lead + caption, add_special_tokens=False)["input_ids"] + [self.eos_id]

    def prompt_inputs(self, images: list) -> dict:
        import torch

        inputs = dict(self.processor(text=[self.prompt_text] * len(images),
                                     images=_processor_images(self.family, images), return_tensors="pt"))
        inputs.pop("labels", None)
        if "attention_mask" in inputs and not bool(inputs["attention_mask"].all()):
            raise AssertionError("the processor padded a prompt; every prompt should be the same length")
        inputs["input_ids"] = inputs["input_ids"].to(torch.long)
        return inputs

    def make(self, images: list, captions: list[str]) -> dict:
        import torch

        inputs = self.prompt_inputs(images)
        prompt = inputs["input_ids"]
        b, p = prompt.shape
        targets = [self.caption_ids(c) for c in captions]
        width = max(len(t) for t in targets)
        cap = torch.full((b, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for i, t in enumerate(targets):
            cap[i, : len(t)] = torch.tensor(t)
            mask[i, : len(t)] = 1
        inputs["input_ids"] = torch.cat([prompt, cap], dim=1)
        inputs["attention_mask"] = torch.cat([torch.ones_like(prompt), mask], dim=1)
        if self.family == "paligemma":
            # 0 is the prompt prefix, attended both ways; 1 the causal suffix (the caption).
            inputs["token_type_ids"] = torch.cat([torch.zeros_like(prompt), torch.ones_like(cap)], dim=1)
        labels = torch.full_like(inputs["input_ids"], -100)
        labels[:, p:] = torch.where(mask.bool(), cap, -100)
        return inputs, labels


def pick_caption(scene, rng: np.random.Generator, canonical: float) -> str:
    """The scene's first phrasing (colour, shape and count of everything) with probability
    `canonical`, else any phrasing.

    Greedy decoding returns the most likely phrasing. Under uniform phrasings that is the
    least committal one ("a red shape", "two objects") whenever the model is unsure of a
    shape, so the caption names less than the model knows; weighting the full phrasing
    makes it the mode while the others stay in the training signal."""
    if rng.random() < canonical:
        return scene.captions[0]
    return scene.captions[int(rng.integers(len(scene.captions)))]


def train_scenes(seed: int, start: int, count: int, rng: np.random.Generator, canonical: float = 0.0):
    images, captions = [], []
    for i in range(start, start + count):
        img, scene = scenes.sample(TRAIN_SEED + seed, i, split="train", side=VISION["image"])
        if any(scenes.is_held_out(o.colour, o.shape) for o in scene.objects):
            raise AssertionError("a held-out pair reached training")
        images.append(img)
        captions.append(pick_caption(scene, rng, canonical))
    return images, captions


def caption_loss(logits, labels):
    import torch.nn.functional as F

    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)


# ----------------------------------------------------------------------------- evaluation


def tokenize(text: str) -> str:
    """Lowercase words without punctuation, as the Rust caption metrics read captions."""
    punct = set(".,!?;:\"'()[]{}-_/\\@#$%&*+=<>|`~^")
    words = "".join(" " if c in punct else c for c in text.lower()).split()
    return " ".join(words)


def mentions(vocab: dict, caption: str) -> list[dict]:
    """Every (number?, colour?, shape) phrase of a caption, in order (as `vlm eval caption`)."""
    words = tokenize(caption).split()
    shape_of = {name: s for s, names in vocab["shapes"].items() for name in names}
    out = []
    for i, w in enumerate(words):
        if w not in shape_of:
            continue
        colour = count = None
        for back in list(reversed(words[:i]))[:3]:
            if back in shape_of:
                break
            if colour is None and back in vocab["colours"]:
                colour = back
            elif back in vocab["numbers"]:
                count = vocab["numbers"][back]
                break
        out.append({"count": count, "colour": colour, "shape": shape_of[w]})
    return out


def check_caption(vocab: dict, item: dict, caption: str) -> dict:
    """What a caption gets right about an item's objects.

    objects: every object named by colour and shape, and nothing named that is not there;
    count: the number word is right (for two different objects: two mentions, each single);
    colour / shape: the first mention's colour / shape is one present in the image."""
    said = mentions(vocab, caption)
    objs = item["objects"]
    present = all(any(o["shape"] == m["shape"] and m["colour"] in (None, o["colour"]) for o in objs) for m in said)
    named = all(any(m["shape"] == o["shape"] and m["colour"] == o["colour"] for m in said) for o in objs)
    if not said:
        count = False
    elif item["kind"] != "pair":
        count = said[0]["count"] == len(objs) and len(said) == 1
    else:
        count = len(said) == 2 and all(m["count"] in (None, 1) for m in said)
    first = said[0] if said else None
    return {
        "objects": named and present,
        "count": count,
        "colour": bool(first) and any(first["colour"] == o["colour"] for o in objs),
        "shape": bool(first) and any(first["shape"] == o["shape"] for o in objs),
    }


GROUPS = [
    ("single object, seen pairs", lambda it: it["kind"] == "single" and not it["held_out"]),
    ("single object, held-out pairs", lambda it: it["kind"] == "single" and it["held_out"]),
    ("identical objects (count)", lambda it: it["kind"] == "count" and not it["held_out"]),
    ("two different objects", lambda it: it["kind"] == "pair" and not it["held_out"]),
    ("any image with a held-out pair", lambda it: it["held_out"]),
]


def pick_items(items: list, n: int | None) -> list:
    """n items spread evenly over the set (it is ordered by kind, then colour and shape)."""
    if not n or n >= len(items):
        return list(items)
    return [items[int(i)] for i in np.linspace(0, len(items) - 1, n).round().astype(int)]


def generate_captions(family: str, model, processor, prompt_text: str, images: list, batch: int = 32) -> list[str]:
    import torch

    eos = model.generation_config.eos_token_id
    out = []
    model.eval()
    batches = Batches(family, processor, prompt_text, eos, model.generation_config.pad_token_id)
    with torch.no_grad():
        for i in range(0, len(images), batch):
            inputs = batches.prompt_inputs(images[i: i + batch])
            seqs = model.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS)
            new = seqs[:, inputs["input_ids"].shape[1]:]
            out += [t.strip() for t in processor.tokenizer.batch_decode(new, skip_special_tokens=True)]
    return out


def evaluate(family: str, model, processor, prompt_text: str, eval_dir: str, n: int | None = None,
             with_captions: bool = True) -> dict:
    from PIL import Image

    with open(os.path.join(eval_dir, "captions.json")) as fh:
        doc = json.load(fh)
    items = pick_items(doc["items"], n)
    vocab = doc["vocabulary"]
    images = [Image.open(os.path.join(eval_dir, it["image"])).convert("RGB") for it in items]
    t0 = time.time()
    captions = generate_captions(family, model, processor, prompt_text, images)
    seconds = time.time() - t0
    checks = [check_caption(vocab, it, c) for it, c in zip(items, captions)]
    exact = [tokenize(c) in {tokenize(r) for r in it["references"]} for it, c in zip(items, captions)]

    def pct(flags):
        flags = list(flags)
        return round(100.0 * sum(flags) / len(flags), 2) if flags else None

    groups = []
    for name, keep in GROUPS:
        picked = [(it, ch, ex) for it, ch, ex in zip(items, checks, exact) if keep(it)]
        groups.append({
            "name": name, "images": len(picked),
            "objects_named": pct(ch["objects"] for _, ch, _ in picked),
            "count_right": pct(ch["count"] for _, ch, _ in picked),
            "colour_right": pct(ch["colour"] for _, ch, _ in picked),
            "shape_right": pct(ch["shape"] for _, ch, _ in picked),
            "exact_match": pct(ex for _, _, ex in picked),
        })
    report = {"images": len(items), "exact_match": pct(exact), "groups": groups,
              "seconds_per_image": round(seconds / max(1, len(items)), 4)}
    try:
        from .caption_metrics import score

        s = score([{"candidate": tokenize(c), "references": [tokenize(r) for r in it["references"]]}
                   for it, c in zip(items, captions)])
        report["bleu4"] = round(s["bleu"][3], 4)
        report["cider_d"] = round(s["cider_d"], 4)
    except ImportError as err:  # pycocoevalcap is optional outside the eval environment
        report["metrics_skipped"] = str(err)
    if with_captions:
        report["captions"] = [{"image": it["image"], "kind": it["kind"], "held_out": it["held_out"], "caption": c,
                               "references": it["references"], "objects_named": ch["objects"],
                               "count_right": ch["count"], "colour_right": ch["colour"], "shape_right": ch["shape"]}
                              for it, c, ch in zip(items, captions, checks)]
    return report


def print_report(report: dict, log=print) -> None:
    head = f"eval on {report['images']} images: exact match {report['exact_match']}%"
    if "bleu4" in report:
        head += f", BLEU-4 {report['bleu4']:.3f}, CIDEr-D {report['cider_d']:.3f}"
    log(head)
    for g in report["groups"]:
        if g["images"]:
            log(f"  {g['name']:<32} n={g['images']:<4} objects {g['objects_named']:6.2f}%  colour "
                f"{g['colour_right']:6.2f}%  shape {g['shape_right']:6.2f}%  count {g['count_right']:6.2f}%  "
                f"exact {g['exact_match']:6.2f}%")


def eval_folder(path: str | None) -> tuple[str, tempfile.TemporaryDirectory | None]:
    if path:
        return path, None
    from . import captionset

    tmp = tempfile.TemporaryDirectory(prefix="caption-eval-")
    captionset.make(tmp.name)
    return tmp.name, tmp


# ----------------------------------------------------------------------------- training


def lr_factor(progress: float, step: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def param_groups(family: str, model, lr: float, vision_lr: float, weight_decay: float):
    tower = {id(p) for p in vision_tower(family, model).parameters()}
    groups = []
    for is_vision, group_lr in ((False, lr), (True, vision_lr)):
        params = [(n, p) for n, p in model.named_parameters() if (id(p) in tower) == is_vision and p.requires_grad]
        decay = [p for n, p in params if p.dim() >= 2 and "embed" not in n]
        rest = [p for n, p in params if not (p.dim() >= 2 and "embed" not in n)]
        groups += [{"params": decay, "weight_decay": weight_decay, "base_lr": group_lr},
                   {"params": rest, "weight_decay": 0.0, "base_lr": group_lr}]
    return [g for g in groups if g["params"]]


def train(args, log=print) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    t_start = time.time()
    model, processor, prompt_text = build(args.family, args.seed, args.vision_onnx)
    n_params = sum(p.numel() for p in model.parameters())
    minutes = args.minutes if args.minutes is not None else DEFAULT_MINUTES[args.family]
    log(f"{args.family}: {n_params:,} parameters ({n_params * 4 / 1e6:.1f} MB fp32), prompt {prompt_text!r}, "
        f"tokenizer {len(processor.tokenizer)}, budget {minutes} min"
        + (f" / {args.steps} steps" if args.steps else ""))
    eos = model.generation_config.eos_token_id
    batches = Batches(args.family, processor, prompt_text, eos, model.generation_config.pad_token_id)

    if args.vision_lr == 0:
        for p in vision_tower(args.family, model).parameters():
            p.requires_grad_(False)
    groups = param_groups(args.family, model, args.lr, args.vision_lr, args.weight_decay)
    opt = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.98), eps=1e-8)

    eval_dir, eval_tmp = (None, None)
    if args.eval or args.eval_every:
        eval_dir, eval_tmp = eval_folder(args.eval_set)

    rng = np.random.default_rng([TRAIN_SEED, args.seed])
    losses, curve, evals = [], [], []
    step, seen = 0, 0
    t0 = time.time()
    budget_s = minutes * 60.0
    train_s = eval_s = 0.0
    model.train()
    while True:
        # Evaluations during training do not count against the budget.
        elapsed = time.time() - t0 - eval_s
        progress = max(step / args.steps if args.steps else 0.0, elapsed / budget_s if budget_s else 0.0)
        if (args.steps and step >= args.steps) or elapsed >= budget_s:
            break
        f = lr_factor(progress, step, args.warmup)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * f
        ts = time.time()
        images, captions = train_scenes(args.seed, seen, args.batch, rng, args.canonical)
        inputs, labels = batches.make(images, captions)
        logits = model(**inputs, use_cache=False).logits
        loss = caption_loss(logits, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        train_s += time.time() - ts
        seen += args.batch
        step += 1
        losses.append(round(loss.item(), 5))
        if step % args.log_every == 0 or step == 1:
            recent = float(np.mean(losses[-args.log_every:]))
            point = {"step": step, "minutes": round((time.time() - t0) / 60, 2), "loss": round(recent, 4),
                     "lr": round(args.lr * f, 7), "seconds_per_step": round(train_s / step, 3)}
            curve.append(point)
            log(f"step {step:5d}  {point['minutes']:6.2f} min  loss {recent:.4f}  lr {args.lr * f:.2e}  "
                f"{point['seconds_per_step']:.2f} s/step")
        if args.eval_every and step % args.eval_every == 0:
            te = time.time()
            rep = evaluate(args.family, model, processor, prompt_text, eval_dir, args.eval_every_n, with_captions=False)
            rep = {"step": step, "minutes": round((time.time() - t0) / 60, 2), **rep}
            evals.append(rep)
            print_report(rep, log)
            model.train()
            eval_s += time.time() - te
    train_minutes = (time.time() - t0 - eval_s) / 60

    os.makedirs(args.out, exist_ok=True)
    model.eval()
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)
    with open(os.path.join(args.out, CAPTION_FILE), "w") as fh:
        json.dump({"family": args.family, "prompt": PROMPTS[args.family], "prompt_text": prompt_text,
                   "max_new_tokens": MAX_NEW_TOKENS}, fh, indent=2)
        fh.write("\n")
    size = os.path.getsize(os.path.join(args.out, "model.safetensors"))
    result = {
        "args": {k: portable_path(v) for k, v in vars(args).items()},
        "family": args.family,
        "architecture": hfc.ARCHITECTURES[args.family],
        "parameters": n_params,
        "safetensors_bytes": size,
        "prompt_text": prompt_text,
        "steps": step,
        "images_seen": seen,
        "minutes": round(train_minutes, 3),
        "seconds_per_step": round(train_s / max(1, step), 4),
        "setup_seconds": round(t0 - t_start, 2),
        "curve": curve,
        "losses": losses,
        "evals": evals,
    }
    write_log(args.out, result)
    log(f"{step} steps ({seen} images) in {train_minutes:.1f} min, {result['seconds_per_step']:.2f} s/step; "
        f"saved {size / 1e6:.1f} MB to {args.out}")

    if args.eval:
        rep = evaluate(args.family, model, processor, prompt_text, eval_dir, args.eval)
        rep = {"step": step, "eval_set": portable_path(args.eval_set) or "captionset (generated)", **rep}
        with open(os.path.join(args.out, "eval.json"), "w") as fh:
            json.dump(rep, fh, indent=1)
            fh.write("\n")
        print_report(rep, log)
        result["eval"] = {k: v for k, v in rep.items() if k != "captions"}
        write_log(args.out, result)
    if eval_tmp is not None:
        eval_tmp.cleanup()
    return result


def write_log(out: str, result: dict) -> None:
    with open(os.path.join(out, "train_log.json"), "w") as fh:
        json.dump(result, fh, indent=1)
        fh.write("\n")


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=hfc.FAMILIES, required=True)
    ap.add_argument("--out", required=True)
    budgets = ", ".join(f"{k} {v:g}" for k, v in DEFAULT_MINUTES.items())
    ap.add_argument("--minutes", type=float, default=None, help=f"training time budget (default: {budgets})")
    ap.add_argument("--steps", type=int, default=0, help="stop after this many steps (0: time budget only)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate of the connector and language model")
    ap.add_argument("--vision-lr", type=float, default=1e-4,
                    help="peak learning rate of the vision tower (0 freezes it)")
    # Two threads suit a two-core machine; when other jobs hold the cores, one
    # thread is several times faster than two that keep waiting for each other.
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--canonical", type=float, default=0.5,
                    help="share of targets that are the scene's full phrasing (the rest: any phrasing)")
    ap.add_argument("--weight-decay", type=float, default=0.01)
    ap.add_argument("--warmup", type=int, default=30)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--eval", type=int, default=0, help="after training, caption N images of the caption eval set")
    ap.add_argument("--eval-set", default=None, help="caption eval folder (default: generate one with captionset)")
    ap.add_argument("--eval-every", type=int, default=0, help="also evaluate every K steps during training")
    ap.add_argument("--eval-every-n", type=int, default=96, help="images per evaluation during training")
    ap.add_argument("--vision-onnx", default=DEMO_VISION_ONNX, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
