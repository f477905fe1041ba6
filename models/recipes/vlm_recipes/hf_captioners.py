"""Random-weight Hugging Face captioners, and the outputs a runtime must reproduce from them.

    python -m vlm_recipes.hf_captioners make --family {idefics3,llava,paligemma,idefics2} \\
        --size {tiny,real} --out DIR [--seed 0]
    python -m vlm_recipes.hf_captioners reference --model DIR --image IMG.png --prompt TEXT \\
        [--steps 8] --out ref.safetensors [--seed 0]

`make` builds the real transformers class from a config written here (no hub), keeps the
library's own random initialisation, and writes the folder exactly as `save_pretrained`
does (config.json, generation_config.json, model.safetensors, tokenizer and processor
files). The tokenizer is a small byte-level BPE trained here on generated scene
descriptions, carrying the special tokens each family's processor looks for. `tiny` models
take seconds; `real` ones have the published widths (some depths cut, printed by `make`).

`reference` loads such a folder offline and writes, for one image and one prompt, the
processor's ids and pixels, the vision tower's output, the image embeddings as spliced
into the language model, the teacher-forced logits over the prompt plus `steps` random
continuation tokens, and 32 greedy tokens. It also checks that the one-pass teacher
forcing reproduces `generate`'s own logits, which is what makes the logits a fair target
for an incremental (KV-cache) runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time

import numpy as np

FAMILIES = ("idefics3", "llava", "paligemma", "idefics2")
SIZES = ("tiny", "real")
GREEDY_TOKENS = 32

ARCHITECTURES = {
    "idefics3": "Idefics3ForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
    "paligemma": "PaliGemmaForConditionalGeneration",
    "idefics2": "Idefics2ForConditionalGeneration",
}

# How each family's processor wants one image and a plain prompt (no chat template).
# PaliGemma's processor inserts <bos> after the image tokens and appends "\n" itself.
PROMPT_FORMATS = {
    "idefics3": "<image>{prompt}",
    "llava": "<image>\n{prompt}",
    "paligemma": "<image>{prompt}",
    "idefics2": "<image>{prompt}",
}

_ROW_COL = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]

# Special tokens go first in the BPE's vocabulary, in the order the real tokenizers number
# them where that is cheap to copy (Gemma: pad 0, eos 1, bos 2, unk 3; SmolLM: 0, 1, 2).
TOKENS = {
    "idefics3": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<fake_token_around_image>", "<image>",
                  "<global-img>", "<end_of_utterance>", *_ROW_COL],
        bos="<|im_start|>", eos="<end_of_utterance>", pad="<|im_end|>", unk="<|endoftext|>", add_bos=False,
    ),
    "llava": dict(
        specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"],
        bos=None, eos="<|im_end|>", pad="<|endoftext|>", unk=None, add_bos=False,
    ),
    "paligemma": dict(
        specials=["<pad>", "<eos>", "<bos>", "<unk>", "<image>"],
        bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", add_bos=True,
    ),
    "idefics2": dict(
        specials=["<unk>", "<s>", "</s>", "<fake_token_around_image>", "<image>", "<end_of_utterance>"],
        bos="<s>", eos="</s>", pad="<unk>", unk="<unk>", add_bos=True,
    ),
}

_COLOURS = ["red", "green", "blue", "yellow", "orange", "purple", "pink", "brown", "black", "white", "grey",
            "cyan", "dark red", "light blue", "pale green"]
_SHAPES = ["circle", "square", "triangle", "star", "heart", "cross", "ring", "diamond", "hexagon", "oval"]
_COUNTS = ["a", "one", "two", "three", "four", "five", "several", "many", "some"]
_PLACES = ["on a {c} background", "in the top left corner", "in the bottom right corner", "near the centre",
           "to the left of {n} {c} {s}", "above {n} {c} {s}", "below {n} {c} {s}", "next to {n} {c} {s}",
           "on a {c} and {c2} gradient", "over a noisy {c} texture"]
_OPENERS = ["", "the image shows ", "this picture contains ", "there is ", "we can see ", "Caption: ",
            "Describe the image. ", "What is in this picture? ", "User: ", "Assistant: "]


def _plural(shape: str, count: str) -> str:
    if count in ("a", "one"):
        return shape
    return shape + ("es" if shape.endswith(("x", "s")) else "s")


def corpus(n: int = 4000, seed: int = 0) -> list[str]:
    """Scene descriptions for the BPE: words the prompts use, so tokens are whole words."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        count, colour, shape = rng.choice(_COUNTS), rng.choice(_COLOURS), rng.choice(_SHAPES)
        count2, shape2 = rng.choice(_COUNTS), rng.choice(_SHAPES)
        place = rng.choice(_PLACES).format(c=rng.choice(_COLOURS), c2=rng.choice(_COLOURS), n=count2,
                                           s=_plural(shape2, count2))
        line = f"{rng.choice(_OPENERS)}{count} {colour} {_plural(shape, count)} {place}"
        if rng.random() < 0.3:
            line = line[0].upper() + line[1:] + rng.choice([".", "!", "?", ",", ";"])
        if rng.random() < 0.2:
            line += "\n"
        lines.append(line)
    return lines


def build_tokenizer(family: str, vocab_size: int = 768, lines: list[str] | None = None):
    """The family's tokenizer: a byte-level BPE trained on `lines` (default: `corpus()`)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = TOKENS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=spec["specials"],
        # Every byte is a token, so any prompt encodes without an unknown token.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus() if lines is None else lines, trainer=trainer)
    named = {spec[k] for k in ("bos", "eos", "pad", "unk") if spec[k]}
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos"],
        eos_token=spec["eos"],
        pad_token=spec["pad"],
        unk_token=spec["unk"],
        additional_special_tokens=[t for t in spec["specials"] if t not in named],
        add_bos_token=spec["add_bos"],
        add_eos_token=False,
    )
    if family == "paligemma":
        from transformers.models.paligemma.processing_paligemma import EXTRA_TOKENS

        # PaliGemma's processor adds its 1024 <locXXXX> and 128 <segXXX> tokens to whatever
        # tokenizer it gets; adding them here first lets the config size the embedding table
        # from the tokenizer alone.
        fast.add_tokens(EXTRA_TOKENS)
    return fast


# ----------------------------------------------------------------------------- configs


def _siglip(hidden, layers, heads, inter, patch, image, **extra):
    return dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads, intermediate_size=inter,
                patch_size=patch, image_size=image, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6, **extra)


def _lm(model_type, hidden, layers, heads, kv, head_dim, inter, vocab, rope_theta, eps, max_pos, tie, act, **extra):
    return dict(model_type=model_type, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv, head_dim=head_dim, intermediate_size=inter, vocab_size=vocab,
                rope_parameters={"rope_type": "default", "rope_theta": rope_theta}, rms_norm_eps=eps,
                max_position_embeddings=max_pos, tie_word_embeddings=tie, hidden_act=act, **extra)


def family_config(family: str, size: str, tokenizer):
    """(config, image side, image token count, cuts) for one family and size."""
    ids = {k: tokenizer.convert_tokens_to_ids(v) if v else None
           for k, v in (("bos", tokenizer.bos_token), ("eos", tokenizer.eos_token), ("pad", tokenizer.pad_token))}
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    special = dict(bos_token_id=ids["bos"], eos_token_id=ids["eos"], pad_token_id=ids["pad"])
    cuts: list[str] = []
    real = size == "real"

    def vocab(published: int) -> int:
        # A real-size model keeps the published embedding table (our tokenizer uses its first
        # rows); a tiny one has exactly one row per token.
        return max(published, len(tokenizer)) if real else len(tokenizer)

    if family == "idefics3":
        # SmolVLM-256M-Instruct: SigLIP-B/16 at 512 px, pixel shuffle 4 -> 64 tokens, SmolLM2-135M text.
        if real:
            vision = _siglip(768, 12, 12, 3072, 16, 512)
            text = _lm("llama", 576, 30, 9, 3, 64, 1536, vocab(49280), 100000.0, 1e-5, 8192,
                       False, "silu", **special)
            scale = 4
        else:
            vision = _siglip(64, 2, 2, 256, 16, 128)
            text = _lm("llama", 64, 2, 4, 2, 16, 256, vocab(0), 100000.0, 1e-5, 512, False,
                       "silu", **special)
            scale = 2
        config, n_tokens = compose_config(family, vision, text, image_id, special, scale=scale)
    elif family == "llava":
        # llava-interleave-qwen-0.5b: SigLIP so400m/14 at 384 px (729 tokens, no CLS, last layer,
        # no post-layernorm), 2-layer GELU projector, Qwen2-0.5B text (q/k/v biases, tied head).
        if real:
            vision = _siglip(1152, 6, 16, 4304, 14, 384, vision_use_head=False)
            text = _lm("qwen2", 896, 6, 14, 2, 64, 4864, vocab(151936), 1e6, 1e-6, 32768, True,
                       "silu", **special)
            cuts += ["vision layers 27 -> 6", "text layers 24 -> 6"]
        else:
            vision = _siglip(64, 2, 4, 256, 16, 96, vision_use_head=False)
            text = _lm("qwen2", 64, 2, 4, 2, 16, 256, vocab(0), 1e6, 1e-6, 512, False, "silu",
                       **special)
        config, n_tokens = compose_config(family, vision, text, image_id, special)
    elif family == "paligemma":
        # PaliGemma-3B-pt-224: SigLIP so400m/14 at 224 px (256 tokens), one linear projector,
        # Gemma-2B text (multi-query attention, head_dim 256, tied head).
        if real:
            vision = _siglip(1152, 4, 16, 4304, 14, 224, vision_use_head=False)
            text = _lm("gemma", 2048, 2, 8, 1, 256, 16384, vocab(257216), 10000.0, 1e-6, 8192,
                       True, "gelu_pytorch_tanh", **special)
            cuts += ["vision layers 27 -> 4", "text layers 18 -> 2"]
        else:
            # head_dim is deliberately not hidden/heads (32 vs 16), as in larger Gemmas, so a
            # runtime that derives it from the hidden size fails here rather than later.
            vision = _siglip(64, 2, 2, 256, 16, 80, vision_use_head=False)
            text = _lm("gemma", 64, 2, 4, 1, 32, 256, vocab(0), 10000.0, 1e-6, 512, True,
                       "gelu_pytorch_tanh", **special)
        config, n_tokens = compose_config(family, vision, text, image_id, special)
    elif family == "idefics2":
        # Idefics2-8B: SigLIP so400m/14 (980 px max), MLP projector into a 64-latent perceiver
        # resampler, Mistral-7B text.
        if real:
            vision = _siglip(1152, 4, 16, 4304, 14, 378)
            text = _lm("mistral", 4096, 2, 32, 8, 128, 14336, vocab(32003), 10000.0, 1e-5,
                       32768, False, "silu", sliding_window=4096, **special)
            perceiver = dict(hidden_size=4096, hidden_act="silu", rms_norm_eps=1e-5, resampler_n_latents=64,
                             resampler_depth=3, resampler_n_heads=16, resampler_head_dim=96, num_key_value_heads=4)
            cuts += ["vision layers 27 -> 4", "image side 980 -> 378 (27 x 27 patches)", "text layers 32 -> 2"]
        else:
            vision = _siglip(96, 2, 4, 384, 16, 112)
            text = _lm("mistral", 64, 2, 4, 2, 16, 256, vocab(0), 10000.0, 1e-5, 512, False,
                       "silu", sliding_window=None, **special)
            perceiver = dict(hidden_size=64, hidden_act="silu", rms_norm_eps=1e-5, resampler_n_latents=16,
                             resampler_depth=2, resampler_n_heads=4, resampler_head_dim=16, num_key_value_heads=2)
        config, n_tokens = compose_config(family, vision, text, image_id, special, perceiver=perceiver)
    else:
        raise ValueError(f"unknown family {family!r}")
    return config, vision["image_size"], n_tokens, cuts


def compose_config(family: str, vision: dict, text: dict, image_id: int, special: dict, scale: int = 2,
                   perceiver: dict | None = None):
    """(config, image token count): the family's class around one vision and one text config.

    `scale` is Idefics3's pixel shuffle; `perceiver` is Idefics2's resampler."""
    import transformers

    side = vision["image_size"]
    if family == "idefics3":
        n_tokens = (side // vision["patch_size"]) ** 2 // scale**2
        config = transformers.Idefics3Config(vision_config=vision, text_config=text, scale_factor=scale,
                                             image_token_id=image_id, tie_word_embeddings=text["tie_word_embeddings"],
                                             **special)
    elif family == "llava":
        n_tokens = (side // vision["patch_size"]) ** 2
        config = transformers.LlavaConfig(vision_config={"model_type": "siglip_vision_model", **vision},
                                          text_config=text, image_token_index=image_id, image_seq_length=n_tokens,
                                          projector_hidden_act="gelu", vision_feature_select_strategy="full",
                                          vision_feature_layer=-1, multimodal_projector_bias=True,
                                          tie_word_embeddings=text["tie_word_embeddings"], **special)
    elif family == "paligemma":
        n_tokens = (side // vision["patch_size"]) ** 2
        config = transformers.PaliGemmaConfig(vision_config={"model_type": "siglip_vision_model", **vision},
                                              text_config=text, image_token_index=image_id,
                                              projection_dim=text["hidden_size"], hidden_size=text["hidden_size"],
                                              vocab_size=text["vocab_size"], tie_word_embeddings=True, **special)
    elif family == "idefics2":
        if perceiver is None:
            raise ValueError("idefics2 needs a perceiver config")
        n_tokens = perceiver["resampler_n_latents"]
        config = transformers.Idefics2Config(vision_config=vision, perceiver_config=perceiver, text_config=text,
                                             image_token_id=image_id,
                                             tie_word_embeddings=text["tie_word_embeddings"], **special)
    else:
        raise ValueError(f"unknown family {family!r}")
    return config, n_tokens


def build_processor(family: str, tokenizer, side: int, n_tokens: int, patch: int):
    import transformers
    from transformers.image_utils import PILImageResampling

    half = [0.5, 0.5, 0.5]
    if family == "idefics3":
        images = transformers.Idefics3ImageProcessorPil(
            do_image_splitting=False, size={"longest_edge": side}, max_image_size={"longest_edge": side},
            image_mean=half, image_std=half, resample=PILImageResampling.LANCZOS)
        return transformers.Idefics3Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=n_tokens)
    if family == "llava":
        images = transformers.SiglipImageProcessorPil(
            size={"height": side, "width": side}, image_mean=half, image_std=half, resample=PILImageResampling.BICUBIC)
        return transformers.LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=patch,
                                           vision_feature_select_strategy="full", image_token="<image>",
                                           num_additional_image_tokens=0)
    if family == "paligemma":
        images = transformers.SiglipImageProcessorPil(
            size={"height": side, "width": side}, image_mean=half, image_std=half,
            resample=PILImageResampling.BICUBIC, image_seq_length=n_tokens)
        return transformers.PaliGemmaProcessor(image_processor=images, tokenizer=tokenizer)
    if family == "idefics2":
        # A fixed square tile (not Idefics2's aspect-preserving shortest/longest edge) so every
        # image gives the same patch grid and the same number of vision positions.
        images = transformers.Idefics2ImageProcessorPil(
            do_image_splitting=False, size={"height": side, "width": side}, image_mean=half, image_std=half)
        return transformers.Idefics2Processor(image_processor=images, tokenizer=tokenizer, image_seq_len=n_tokens)
    raise ValueError(f"unknown family {family!r}")


def make(family: str, size: str, out: str, seed: int = 0, log=print) -> dict:
    import torch
    import transformers

    t0 = time.time()
    tokenizer = build_tokenizer(family)
    config, side, n_tokens, cuts = family_config(family, size, tokenizer)
    processor = build_processor(family, tokenizer, side, n_tokens, config.vision_config.patch_size)
    if len(processor.tokenizer) > config.text_config.vocab_size:
        raise AssertionError("the processor added tokens the embedding table does not cover")
    config.dtype = torch.float32

    torch.manual_seed(seed)
    cls = getattr(transformers, ARCHITECTURES[family])
    model = cls(config).to(torch.float32).eval()
    if family == "idefics2":
        # The library initialises every perceiver latent to ones, which makes all latents (and
        # so every image embedding row) identical: a runtime that mixed up latent rows would
        # still match. Trained latents differ, so these do too.
        with torch.no_grad():
            latents = model.model.connector.perceiver_resampler.latents
            latents.copy_(torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed)))
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=config.text_config.bos_token_id, eos_token_id=config.text_config.eos_token_id,
        pad_token_id=config.text_config.pad_token_id)
    os.makedirs(out, exist_ok=True)
    # transformers 5 always writes safetensors (the old safe_serialization switch is gone).
    model.save_pretrained(out)
    processor.save_pretrained(out)

    params = sum(p.numel() for p in model.parameters())
    info = {
        "family": family, "size": size, "architecture": ARCHITECTURES[family], "parameters": params,
        "image_side": side, "n_image_tokens": n_tokens, "tokenizer_len": len(processor.tokenizer),
        "vocab_size": config.text_config.vocab_size, "cuts": cuts, "seconds": round(time.time() - t0, 2),
    }
    log(f"{family} {size}: {params:,} parameters ({params * 4 / 2**20:.1f} MiB fp32), "
        f"{n_tokens} image tokens, tokenizer {len(processor.tokenizer)} / vocab {config.text_config.vocab_size}, "
        f"{info['seconds']} s -> {out}")
    log("cut from the published model: " + ("; ".join(cuts) if cuts else "nothing"))
    return info


# ----------------------------------------------------------------------------- reference


def _family_modules(family: str, model):
    """(module whose input is the vision features and output the image embeddings, language model)."""
    inner = model.model
    if family in ("idefics3", "idefics2"):
        return inner.connector, inner.text_model
    return inner.multi_modal_projector, inner.language_model


def _forward_inputs(inputs: dict, extra_ids, family: str) -> dict:
    """Model inputs for the prompt followed by `extra_ids` in one pass."""
    import torch

    ids = torch.cat([inputs["input_ids"], extra_ids[None].to(inputs["input_ids"].dtype)], dim=1)
    kw = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "token_type_ids")}
    kw["input_ids"] = ids
    kw["attention_mask"] = torch.ones_like(ids)
    if family == "paligemma":
        # token_type_ids 0 is PaliGemma's bidirectional prefix (image + prompt); 1 is the causal
        # suffix, which is what generate() gives every generated token.
        suffix = torch.ones((1, extra_ids.numel()), dtype=inputs["token_type_ids"].dtype)
        kw["token_type_ids"] = torch.cat([inputs["token_type_ids"], suffix], dim=1)
    return kw


def load(model_dir: str):
    import torch
    import transformers

    with open(os.path.join(model_dir, "config.json")) as fh:
        cfg = json.load(fh)
    family = cfg["model_type"]
    if family not in FAMILIES:
        raise ValueError(f"{model_dir}: model_type {family!r} is none of {FAMILIES}")
    cls = getattr(transformers, cfg["architectures"][0])
    model = cls.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    processor = transformers.AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    return family, model, processor


def reference(model_dir: str, image_path: str, prompt: str, steps: int, out: str, seed: int = 0,
              log=print) -> dict:
    import torch
    from PIL import Image
    from safetensors.numpy import save_file

    torch.set_num_threads(2)
    t0 = time.time()
    family, model, processor = load(model_dir)
    tokenizer = processor.tokenizer
    config = model.config
    image = Image.open(image_path).convert("RGB")
    text = PROMPT_FORMATS[family].format(prompt=prompt)
    inputs = dict(processor(text=text, images=image, return_tensors="pt"))
    inputs.pop("labels", None)  # PaliGemma's training labels; not a model input here
    prompt_ids = inputs["input_ids"][0]
    L = prompt_ids.numel()
    image_token_id = config.image_token_id
    n_image_tokens = int((prompt_ids == image_token_id).sum())
    if "pixel_attention_mask" in inputs and not bool(inputs["pixel_attention_mask"].all()):
        raise ValueError("the processor padded the image; expected one full tile")
    pixel_values = inputs["pixel_values"]
    if pixel_values.dim() == 5 and pixel_values.shape[1] != 1:
        raise ValueError(f"expected one image tile, the processor made {pixel_values.shape[1]}")

    special = special_ids(tokenizer)
    allowed = np.array([i for i in range(len(tokenizer)) if i not in special])
    rng = np.random.RandomState(seed)
    continuation = torch.from_numpy(allowed[rng.randint(0, len(allowed), size=steps)]).long()

    projector, language_model = _family_modules(family, model)
    captured = {}

    def on_projector(_module, args, kwargs, output):
        captured["vision_features"] = (args[0] if args else kwargs["image_hidden_states"]).detach().clone()
        captured["image_embeds"] = output.detach().clone()

    def on_language_model(_module, args, kwargs):
        captured["inputs_embeds"] = kwargs["inputs_embeds"].detach().clone()

    hooks = [projector.register_forward_hook(on_projector, with_kwargs=True),
             language_model.register_forward_pre_hook(on_language_model, with_kwargs=True)]
    try:
        with torch.no_grad():
            logits = model(**_forward_inputs(inputs, continuation, family), use_cache=False).logits[0]
    finally:
        for h in hooks:
            h.remove()
    logits = logits[L - 1: L + steps]
    vision_features = captured["vision_features"].reshape(-1, captured["vision_features"].shape[-1])
    image_embeds = captured["image_embeds"].reshape(-1, captured["image_embeds"].shape[-1])
    spliced = captured["inputs_embeds"][0, :L][prompt_ids == image_token_id]
    if image_embeds.shape[0] != n_image_tokens or not torch.equal(spliced, image_embeds):
        raise AssertionError("the projector output is not what the language model received at the image tokens")

    greedy, check, margin = _greedy_and_check(family, model, inputs, logits[0], L)
    _check_tolerance(check)

    tensors = {
        "input_ids": prompt_ids.numpy().astype(np.int32),
        "continuation": continuation.numpy().astype(np.int32),
        "pixel_values": pixel_values.reshape(pixel_values.shape[-3:]).numpy().astype(np.float32),
        "vision_features": vision_features.numpy().astype(np.float32),
        "image_embeds": image_embeds.numpy().astype(np.float32),
        "logits": logits.numpy().astype(np.float32),
        "greedy": greedy.numpy().astype(np.int32),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, out)
    eos = config.text_config.eos_token_id
    meta = {
        "family": family,
        "architecture": config.architectures[0],
        "prompt_text": text,
        "image_token_id": int(image_token_id),
        "n_image_tokens": n_image_tokens,
        "bos": config.text_config.bos_token_id,
        "eos": eos,
        "vocab_size": int(config.text_config.vocab_size),
        "tokenizer_len": len(tokenizer),
        "n_prompt_tokens": L,
        "steps": steps,
        "seed": seed,
        # min_new_tokens keeps these ids at -inf for every greedy step.
        "greedy_suppressed_ids": _id_list(model.generation_config.eos_token_id),
        # PaliGemma numbers positions from 1 and lets the whole prompt (image + text) attend
        # both ways; continuation tokens are causal.
        "first_position_id": 1 if family == "paligemma" else 0,
        "bidirectional_prefix": family == "paligemma",
        "check": check,
        # The smallest gap between the best and second-best logit over the greedy steps: a
        # runtime within float error of this may pick the other token there.
        "greedy_min_margin": margin,
        "seconds": round(time.time() - t0, 2),
    }
    with open(_sidecar(out), "w") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    log(f"{family}: {L} prompt tokens ({n_image_tokens} image), {steps} continuation, "
        f"logits {tuple(logits.shape)}, check {check}, {meta['seconds']} s -> {out}")
    return meta


def special_ids(tokenizer) -> set[int]:
    """Every special token's id. `all_special_ids` alone is not enough: the Idefics
    processors' add_special_tokens call replaces the extra special tokens, so <image> and
    <fake_token_around_image> drop out of it while tokenizer.json still marks them special."""
    added = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return added | set(tokenizer.all_special_ids)


def _id_list(ids) -> list[int]:
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


def _sidecar(out: str) -> str:
    root, ext = os.path.splitext(out)
    return (root if ext == ".safetensors" else out) + ".json"


CHECK_TOLERANCE = 1e-4


def _check_tolerance(check: dict) -> None:
    worst = max(check.values())
    if worst > CHECK_TOLERANCE:
        raise AssertionError(f"teacher forcing does not reproduce generate's logits: {check}")


def _greedy_and_check(family: str, model, inputs: dict, first_row, L: int):
    """Greedy tokens, and how far one-pass teacher forcing is from generate's own logits.

    `row0` compares the teacher-forced logits at the last prompt position with generate's
    first step; `greedy_rows` teacher-forces the greedy tokens themselves and compares every
    row with the logits generate saw while decoding with its cache.
    """
    import torch

    with torch.no_grad():
        gen = model.generate(**inputs, do_sample=False, max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS,
                             repetition_penalty=None, output_logits=True, return_dict_in_generate=True)
        greedy = gen.sequences[0, L:]
        gen_logits = torch.stack(gen.logits)[:, 0]
        forced = model(**_forward_inputs(inputs, greedy, family), use_cache=False).logits[0, L - 1: L - 1 + len(greedy)]
    check = {
        "row0": float((first_row - gen_logits[0]).abs().max()),
        "greedy_rows": float((forced - gen_logits).abs().max()),
    }
    suppressed = torch.tensor(_id_list(model.generation_config.eos_token_id), dtype=torch.long)
    top2 = gen_logits.index_fill(1, suppressed, float("-inf")).topk(2, dim=-1).values
    return greedy, check, float((top2[:, 0] - top2[:, 1]).min())


def greedy(model_dir: str, images: list[str], prompt: str, max_new_tokens: int, out: str,
           num_beams: int = 1) -> list[dict]:
    """Greedy captions as `generate` makes them (stopping at the model's end tokens): the
    tokens the runtime's greedy decoding must reproduce, one record per image."""
    import torch
    from PIL import Image

    torch.set_num_threads(2)
    family, model, processor = load(model_dir)
    stops = set(_id_list(model.generation_config.eos_token_id))
    records = []
    for path in images:
        image = Image.open(path).convert("RGB")
        text = PROMPT_FORMATS[family].format(prompt=prompt)
        inputs = dict(processor(text=text, images=image, return_tensors="pt"))
        inputs.pop("labels", None)
        L = inputs["input_ids"].shape[1]
        with torch.no_grad():
            seq = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens,
                                 num_beams=num_beams, repetition_penalty=None)[0, L:].tolist()
        tokens = []
        for t in seq:
            if t in stops:
                break
            tokens.append(t)
        records.append({"image": os.path.basename(path), "tokens": tokens,
                        "text": processor.tokenizer.decode(tokens, skip_special_tokens=True)})
    with open(out, "w") as fh:
        json.dump({"prompt": prompt, "max_new_tokens": max_new_tokens, "num_beams": num_beams,
                   "captions": records}, fh, indent=1)
    return records


# ----------------------------------------------------------------------------- CLI


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    mk = sub.add_parser("make", help="write a random-weight model folder")
    mk.add_argument("--family", choices=FAMILIES, required=True)
    mk.add_argument("--size", choices=SIZES, default="tiny")
    mk.add_argument("--out", required=True)
    mk.add_argument("--seed", type=int, default=0)
    ref = sub.add_parser("reference", help="write teacher-forced reference outputs for one image and prompt")
    ref.add_argument("--model", required=True)
    ref.add_argument("--image", required=True)
    ref.add_argument("--prompt", required=True)
    ref.add_argument("--steps", type=int, default=8)
    ref.add_argument("--out", required=True)
    ref.add_argument("--seed", type=int, default=0)
    gr = sub.add_parser("greedy", help="greedy captions of images with generate()")
    gr.add_argument("--model", required=True)
    gr.add_argument("--images", nargs="+", required=True, help="image files, or one folder of them")
    gr.add_argument("--prompt", required=True)
    gr.add_argument("--max-new-tokens", type=int, default=32)
    gr.add_argument("--beams", type=int, default=1, help="beam search with N beams (1: greedy)")
    gr.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.cmd == "greedy":
        files = args.images
        if len(files) == 1 and os.path.isdir(files[0]):
            folder = files[0]
            files = sorted(os.path.join(folder, f) for f in os.listdir(folder)
                           if f.lower().endswith((".png", ".jpg", ".jpeg")))
        greedy(args.model, files, args.prompt, args.max_new_tokens, args.out, num_beams=args.beams)
    elif args.cmd == "make":
        make(args.family, args.size, args.out, seed=args.seed)
    else:
        reference(args.model, args.image, args.prompt, args.steps, args.out, seed=args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
