"""Export a Hugging Face SigLIP checkpoint into a vlm-edge model folder.

The folder holds the two towers as ONNX (what a user gets from any SigLIP checkpoint),
`config.json` (everything a runtime needs to preprocess, tokenize and score the way the
checkpoint was trained) and `tokenizer.json`. The same code exports the trained demo
model, a local copy of a real checkpoint (SigLIP or fixed-resolution SigLIP 2) and the
random-weight base-size models.

    python -m vlm_recipes.export --checkpoint path/to/siglip-base-patch16-224 --out DIR
    python -m vlm_recipes.export --random siglip-base-patch16-224 --out DIR
    python -m vlm_recipes.export --random siglip-base-patch16-224 \
        --random-config '{"vision": {"hidden_size": 96, "num_attention_heads": 6}}' --out DIR
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys

import torch
from transformers import SiglipConfig, SiglipModel

FORMAT = "vlm-edge-siglip-onnx"
FORMAT_VERSION = 1
OPSET = 17


class VisionTower(torch.nn.Module):
    """pixel_values [N,3,H,W] -> image_embeds [N,D] (the MAP head's pooled output)."""

    def __init__(self, model: SiglipModel):
        super().__init__()
        self.vision = model.vision_model

    def forward(self, pixel_values):
        return self.vision(pixel_values=pixel_values).pooler_output


class TextTower(torch.nn.Module):
    """input_ids [N,L] -> text_embeds [N,D] (the head over the last position)."""

    def __init__(self, model: SiglipModel):
        super().__init__()
        self.text = model.text_model

    def forward(self, input_ids):
        return self.text(input_ids=input_ids).pooler_output


def _export(module: torch.nn.Module, example: torch.Tensor, path: str, inp: str, out: str) -> None:
    module.eval()
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            path,
            input_names=[inp],
            output_names=[out],
            dynamic_axes={inp: {0: "batch"}, out: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def model_config_json(
    cfg: SiglipConfig,
    logit_scale: float,
    logit_bias: float,
    image_mean=(0.5, 0.5, 0.5),
    image_std=(0.5, 0.5, 0.5),
    resample: str = "bicubic",
    max_length: int | None = None,
    pad_token_id: int = 1,
    eos_token_id: int | None = 1,
    tokenizer: str | None = "tokenizer.json",
) -> dict:
    v, t = cfg.vision_config, cfg.text_config
    max_length = max_length or t.max_position_embeddings
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": "siglip",
        "vision": {
            "onnx": "vision.onnx",
            "input": "pixel_values",
            "output": "image_embeds",
            "image_size": v.image_size,
            "patch_size": v.patch_size,
            "num_channels": v.num_channels,
            "hidden_size": v.hidden_size,
            "intermediate_size": v.intermediate_size,
            "num_hidden_layers": v.num_hidden_layers,
            "num_attention_heads": v.num_attention_heads,
            "layer_norm_eps": v.layer_norm_eps,
            "hidden_act": v.hidden_act,
        },
        "text": {
            "onnx": "text.onnx",
            "input": "input_ids",
            "output": "text_embeds",
            "vocab_size": t.vocab_size,
            "hidden_size": t.hidden_size,
            "intermediate_size": t.intermediate_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "projection_size": getattr(t, "projection_size", None) or t.hidden_size,
            "layer_norm_eps": t.layer_norm_eps,
            "hidden_act": t.hidden_act,
            "max_length": max_length,
            # SigLIP pools the last position and was trained on inputs padded to the
            # full length with no attention mask: shorter inputs would change the result.
            "padding": "max_length",
            "pad_token_id": pad_token_id,
            "eos_token_id": eos_token_id,
        },
        "preprocess": {
            "size": [v.image_size, v.image_size],
            "resample": resample,
            "rescale_factor": 1.0 / 255.0,
            "image_mean": list(image_mean),
            "image_std": list(image_std),
            "convert_rgb": True,
        },
        "embed_dim": t.projection_size if getattr(t, "projection_size", None) else v.hidden_size,
        "logit_scale": logit_scale,
        "logit_bias": logit_bias,
        "tokenizer": tokenizer,
    }


def export_siglip(
    model: SiglipModel,
    out_dir: str,
    tokenizer_json: str | None = None,
    **config_kw,
) -> dict:
    """Write vision.onnx, text.onnx, config.json (and tokenizer.json) into out_dir."""
    os.makedirs(out_dir, exist_ok=True)
    model = model.eval()
    cfg = model.config
    v, t = cfg.vision_config, cfg.text_config
    max_length = config_kw.get("max_length") or t.max_position_embeddings
    pixels = torch.zeros(1, v.num_channels, v.image_size, v.image_size)
    ids = torch.zeros(1, max_length, dtype=torch.long)
    _export(VisionTower(model), pixels, os.path.join(out_dir, "vision.onnx"), "pixel_values", "image_embeds")
    _export(TextTower(model), ids, os.path.join(out_dir, "text.onnx"), "input_ids", "text_embeds")
    if tokenizer_json:
        dst = os.path.join(out_dir, "tokenizer.json")
        if os.path.abspath(tokenizer_json) != os.path.abspath(dst):
            shutil.copyfile(tokenizer_json, dst)
    doc = model_config_json(
        cfg,
        logit_scale=float(model.logit_scale.exp().item()),
        logit_bias=float(model.logit_bias.item()),
        tokenizer="tokenizer.json" if tokenizer_json else None,
        **config_kw,
    )
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    return doc


def random_model(name: str, seed: int = 0, overrides: dict | None = None) -> SiglipModel:
    """Random weights in a named architecture; `overrides` ({"vision": {...}, "text":
    {...}}) replaces fields of its vision/text configs, to export differently shaped
    towers (tests use it to check nothing assumes the base sizes)."""
    from .configs import BASE_CONFIGS

    torch.manual_seed(seed)
    cfg = BASE_CONFIGS[name]()
    for side, fields in (overrides or {}).items():
        if side not in ("vision", "text"):
            raise ValueError(f"--random-config: unknown tower {side!r} (vision or text)")
        sub = getattr(cfg, f"{side}_config")
        for key, value in fields.items():
            if not hasattr(sub, key):
                raise ValueError(f"--random-config: {side} config has no field {key!r}")
            setattr(sub, key, value)
    cfg._attn_implementation = "eager"
    model = SiglipModel(cfg).eval()
    with torch.no_grad():
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return model


def load_checkpoint(path: str) -> tuple[SiglipModel, dict]:
    """A local Hugging Face SigLIP folder (never downloads), with its processor settings."""
    model = SiglipModel.from_pretrained(path, local_files_only=True, attn_implementation="eager")
    kw: dict = {}
    pre = os.path.join(path, "preprocessor_config.json")
    if os.path.exists(pre):
        with open(pre) as f:
            p = json.load(f)
        kw["image_mean"] = p.get("image_mean", [0.5] * 3)
        kw["image_std"] = p.get("image_std", [0.5] * 3)
        # PIL's resampling codes: 2 bilinear, 3 bicubic.
        kw["resample"] = {2: "bilinear", 3: "bicubic"}.get(p.get("resample", 3), "bicubic")
    text_cfg = model.config.text_config
    kw["pad_token_id"] = text_cfg.pad_token_id if text_cfg.pad_token_id is not None else 1
    kw["eos_token_id"] = text_cfg.eos_token_id
    return model, kw


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="local Hugging Face SigLIP checkpoint folder")
    src.add_argument("--random", help="random weights in a named base architecture")
    ap.add_argument(
        "--random-config",
        help='with --random: JSON overrides of its configs, {"vision": {...}, "text": {...}}',
    )
    ap.add_argument("--tokenizer", help="tokenizer.json to ship (default: the checkpoint's)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.random_config and not args.random:
        ap.error("--random-config needs --random")
    if args.checkpoint:
        model, kw = load_checkpoint(args.checkpoint)
        tok = args.tokenizer or os.path.join(args.checkpoint, "tokenizer.json")
        if not os.path.exists(tok):
            print(f"note: {tok} not found; exporting without a tokenizer", file=sys.stderr)
            tok = None
    else:
        overrides = json.loads(args.random_config) if args.random_config else None
        model, kw, tok = random_model(args.random, args.seed, overrides), {}, args.tokenizer
    export_siglip(model, args.out, tokenizer_json=tok, **kw)
    print(f"exported to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
