"""Random-weight Hugging Face captioners: every family's tiny folder loads back as the real
class, and its reference outputs have the shapes the runtime reads and agree with
generate()."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.numpy import load_file

from vlm_recipes import hf_captioners as hfc

STEPS = 6
PROMPT = "What is in this picture?"


@pytest.fixture(scope="module")
def image_path(tmp_path_factory):
    # Not square, so the processor's resize to one square tile is exercised.
    img = Image.new("RGB", (150, 110), (128, 128, 128))
    draw = ImageDraw.Draw(img)
    draw.ellipse((10, 10, 60, 60), fill=(220, 30, 30))
    draw.rectangle((80, 40, 130, 90), fill=(30, 60, 220))
    draw.polygon([(40, 100), (70, 70), (100, 100)], fill=(240, 220, 30))
    path = tmp_path_factory.mktemp("image") / "scene.png"
    img.save(path)
    return str(path)


def _quiet(*_args, **_kwargs):
    pass


def _vision_tower_output(family, model, pixel_values):
    """The vision features, computed without the reference's hooks."""
    inner = model.model
    if family in ("idefics3", "idefics2"):
        return inner.vision_model(pixel_values=pixel_values).last_hidden_state[0]
    out = inner.vision_tower(pixel_values, output_hidden_states=True)
    if family == "llava":
        # LLaVA feeds its projector the last encoder layer, before SigLIP's post-layernorm.
        return out.hidden_states[model.config.vision_feature_layer][0]
    return out.last_hidden_state[0]


@pytest.mark.parametrize("family", hfc.FAMILIES)
def test_tiny_model_and_reference(family, tmp_path, image_path):
    model_dir = str(tmp_path / "model")
    info = hfc.make(family, "tiny", model_dir, seed=3, log=_quiet)
    with open(os.path.join(model_dir, "config.json")) as fh:
        cfg = json.load(fh)
    assert cfg["architectures"] == [hfc.ARCHITECTURES[family]]
    assert os.path.exists(os.path.join(model_dir, "model.safetensors"))

    out = str(tmp_path / "ref.safetensors")
    meta = hfc.reference(model_dir, image_path, PROMPT, STEPS, out, seed=1, log=_quiet)
    with open(str(tmp_path / "ref.json")) as fh:
        assert json.load(fh) == meta
    ref = load_file(out)

    fam, model, processor = hfc.load(model_dir)
    assert fam == family and type(model).__name__ == hfc.ARCHITECTURES[family]
    config = model.config
    tokenizer = processor.tokenizer
    vision, text = config.vision_config, config.text_config
    side, patch = vision.image_size, vision.patch_size

    ids = ref["input_ids"]
    L = len(ids)
    n_img = info["n_image_tokens"]
    assert ids.dtype == np.int32 and ids.shape == (L,)
    assert meta["n_image_tokens"] == n_img == int((ids == config.image_token_id).sum())
    assert meta["image_token_id"] == config.image_token_id == tokenizer.convert_tokens_to_ids("<image>")
    assert meta["vocab_size"] == text.vocab_size == len(tokenizer)
    assert meta["prompt_text"] == hfc.PROMPT_FORMATS[family].format(prompt=PROMPT)

    assert ref["continuation"].dtype == np.int32 and ref["continuation"].shape == (STEPS,)
    special = hfc.special_ids(tokenizer)
    assert {config.image_token_id, tokenizer.convert_tokens_to_ids("<image>")} <= special
    assert not set(ref["continuation"].tolist()) & special
    assert ref["pixel_values"].dtype == np.float32 and ref["pixel_values"].shape == (3, side, side)
    assert ref["vision_features"].shape == ((side // patch) ** 2, vision.hidden_size)
    assert ref["image_embeds"].shape == (n_img, text.hidden_size)
    assert ref["logits"].dtype == np.float32 and ref["logits"].shape == (STEPS + 1, text.vocab_size)
    assert ref["greedy"].dtype == np.int32 and ref["greedy"].shape == (hfc.GREEDY_TOKENS,)
    assert len(np.unique(ref["image_embeds"], axis=0)) == n_img

    # The processor's layout around the image, family by family.
    tok = tokenizer.convert_tokens_to_ids
    image_run = [config.image_token_id] * n_img
    if family == "idefics3":
        layout = [tok("<fake_token_around_image>"), tok("<global-img>"), *image_run, tok("<fake_token_around_image>")]
        assert ids[: len(layout)].tolist() == layout
    elif family == "llava":
        assert ids[:n_img].tolist() == image_run and tokenizer.decode(ids[n_img:]) == "\n" + PROMPT
    elif family == "paligemma":
        assert ids[: n_img + 1].tolist() == [*image_run, tokenizer.bos_token_id]
        assert tokenizer.decode(ids[n_img + 1:]) == PROMPT + "\n"
    else:
        layout = [tokenizer.bos_token_id, tok("<fake_token_around_image>"), *image_run,
                  tok("<fake_token_around_image>")]
        assert ids[: len(layout)].tolist() == layout

    # Independently of the reference's own check: the vision tower gives the same features,
    # and generate()'s first-step logits are row 0 of the one-pass teacher forcing.
    assert max(meta["check"].values()) <= 1e-4
    pixel_values = torch.from_numpy(ref["pixel_values"])
    pixel_values = pixel_values[None, None] if family in ("idefics3", "idefics2") else pixel_values[None]
    inputs = dict(processor(text=meta["prompt_text"], images=Image.open(image_path).convert("RGB"),
                            return_tensors="pt"))
    inputs.pop("labels", None)
    assert torch.equal(inputs["pixel_values"], pixel_values)
    with torch.no_grad():
        features = _vision_tower_output(family, model, pixel_values.reshape(-1, 3, side, side))
        gen = model.generate(**inputs, do_sample=False, max_new_tokens=2, min_new_tokens=2,
                             repetition_penalty=None, output_logits=True, return_dict_in_generate=True)
    assert np.abs(features.numpy() - ref["vision_features"]).max() <= 1e-5
    assert np.abs(gen.logits[0][0].numpy() - ref["logits"][0]).max() <= 1e-4
    assert gen.sequences[0, L:].tolist() == ref["greedy"][:2].tolist()


def test_same_seed_same_folder(tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    hfc.make("idefics3", "tiny", a, seed=5, log=_quiet)
    hfc.make("idefics3", "tiny", b, seed=5, log=_quiet)
    for name in ("model.safetensors", "tokenizer.json", "config.json", "processor_config.json"):
        with open(os.path.join(a, name), "rb") as fa, open(os.path.join(b, name), "rb") as fb:
            assert fa.read() == fb.read(), name
