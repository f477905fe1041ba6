"""Trained captioners: a few steps per family give a folder that loads back as the real
class and generates, the demo SigLIP's image tower is recovered exactly from its ONNX
export, and the caption checks read captions as `vlm eval caption` does."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
import transformers

from vlm_recipes import captionset, scenes
from vlm_recipes import hf_captioners as hfc
from vlm_recipes import train_captioner as tc

LIMIT_BYTES = 25 * 1000 * 1000


def _quiet(*_args, **_kwargs):
    pass


@pytest.fixture(scope="module")
def eval_set(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("caption-eval"))
    captionset.make(out, per_pair=1, per_count=2)
    return out


def test_demo_vision_weights_reproduce_the_onnx_tower():
    import onnxruntime as ort

    cfg = transformers.SiglipVisionConfig(**hfc._siglip(128, 4, 4, 512, 8, 64))
    model = transformers.SiglipVisionModel(cfg).eval()
    model.load_state_dict(tc.demo_vision_state_dict(), strict=True)
    x = np.random.RandomState(0).randn(2, 3, 64, 64).astype(np.float32)
    sess = ort.InferenceSession(tc.DEMO_VISION_ONNX, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"pixel_values": x})[0]
    with torch.no_grad():
        got = model(pixel_values=torch.from_numpy(x)).pooler_output.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("family", hfc.FAMILIES)
def test_smoke_training_saves_a_loadable_captioner(family, tmp_path, eval_set):
    out = str(tmp_path / family)
    args = tc.parse_args(["--family", family, "--out", out, "--steps", "3", "--batch", "2", "--eval", "4",
                          "--eval-set", eval_set, "--log-every", "1", "--threads", "1"])
    result = tc.train(args, log=_quiet)
    assert result["steps"] == 3 and len(result["losses"]) == 3
    assert all(np.isfinite(result["losses"]))

    for name in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                 "processor_config.json", tc.CAPTION_FILE, "train_log.json", "eval.json"):
        assert os.path.exists(os.path.join(out, name)), name
    assert os.path.getsize(os.path.join(out, "model.safetensors")) <= LIMIT_BYTES
    with open(os.path.join(out, tc.CAPTION_FILE)) as fh:
        meta = json.load(fh)
    assert meta["prompt_text"] == hfc.PROMPT_FORMATS[family].format(prompt=meta["prompt"])
    with open(os.path.join(out, "train_log.json")) as fh:
        log = json.load(fh)
    assert log["steps"] == 3 and log["args"]["family"] == family
    with open(os.path.join(out, "eval.json")) as fh:
        report = json.load(fh)
    assert report["images"] == 4 and len(report["captions"]) == 4

    fam, model, processor = hfc.load(out)
    assert fam == family and type(model).__name__ == hfc.ARCHITECTURES[family]
    vision = model.config.vision_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (64, 8, 128, 4)
    text = model.config.text_config
    assert text.num_hidden_layers == 4 and 192 <= text.hidden_size <= 256
    assert text.num_key_value_heads == (1 if family == "paligemma" else 2)

    img, _ = scenes.sample(1, 0, split="eval")
    inputs = dict(processor(text=meta["prompt_text"], images=tc._processor_images(family, [img]),
                            return_tensors="pt"))
    inputs.pop("labels", None)
    n_image = int((inputs["input_ids"] == model.config.image_token_id).sum())
    assert n_image == {"idefics3": 16, "llava": 64, "paligemma": 64, "idefics2": 16}[family]
    with torch.no_grad():
        seq = model.generate(**inputs, do_sample=False, max_new_tokens=6)
    assert seq.shape[1] > inputs["input_ids"].shape[1]


def test_a_training_batch_scores_only_the_caption():
    model, processor, prompt_text = tc.build("idefics3")
    eos = model.generation_config.eos_token_id
    batches = tc.Batches("idefics3", processor, prompt_text, eos, model.generation_config.pad_token_id)
    images = [scenes.sample(2, i)[0] for i in range(2)]
    inputs, labels = batches.make(images, ["a red circle", "two blue stars to the left"])
    prompt_len = batches.prompt_inputs(images[:1])["input_ids"].shape[1]
    for row, caption in zip(labels, ["a red circle", "two blue stars to the left"]):
        scored = row[row != -100].tolist()
        assert (row[:prompt_len] == -100).all()
        assert scored[-1] == eos
        assert processor.tokenizer.decode(scored[:-1]).strip() == caption
    # Pads carry no loss and no attention.
    assert inputs["attention_mask"].sum().item() == prompt_len * 2 + int((labels != -100).sum())


def test_training_scenes_never_show_a_held_out_pair():
    rng = np.random.default_rng(0)
    _, captions = tc.train_scenes(0, 0, 64, rng)
    for cap in captions:
        words = cap.split()
        for colour, shape in scenes.HELD_OUT:
            for i, w in enumerate(words[:-1]):
                assert not (w == colour and words[i + 1] in (shape, scenes.plural(shape))), cap


def test_caption_checks_read_captions_like_the_runtime():
    vocab = {"colours": ["red", "blue"], "shapes": {"circle": ["circle", "circles"], "star": ["star", "stars"]},
             "numbers": {"a": 1, "one": 1, "two": 2, "three": 3}}
    one = {"kind": "single", "objects": [{"colour": "red", "shape": "circle"}]}
    assert tc.check_caption(vocab, one, "A small red circle.")["objects"]
    assert tc.check_caption(vocab, one, "a red circle")["count"]
    assert not tc.check_caption(vocab, one, "a blue circle")["objects"]
    assert tc.check_caption(vocab, one, "a blue circle")["shape"]
    assert not tc.check_caption(vocab, one, "a blue circle")["colour"]
    assert not tc.check_caption(vocab, one, "a circle")["objects"]
    assert not tc.check_caption(vocab, one, "a red circle and a blue star")["objects"]
    pair = {"kind": "pair", "objects": [{"colour": "red", "shape": "circle"}, {"colour": "blue", "shape": "star"}]}
    assert tc.check_caption(vocab, pair, "a blue star to the left of a red circle")["objects"]
    assert tc.check_caption(vocab, pair, "a blue star to the left of a red circle")["count"]
    assert not tc.check_caption(vocab, pair, "a red circle")["objects"]
    three = {"kind": "count", "objects": [{"colour": "blue", "shape": "star"}] * 3}
    assert tc.check_caption(vocab, three, "three small blue stars")["count"]
    assert not tc.check_caption(vocab, three, "two blue stars")["count"]
    assert not tc.check_caption(vocab, three, "blue stars")["count"]
