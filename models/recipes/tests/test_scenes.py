"""The data generator: deterministic, compositional, and never leaking held-out pairs."""

import numpy as np
import pytest

from vlm_recipes import scenes
from vlm_recipes.tokenizer import train_tokenizer


def test_same_seed_same_sample_different_index_different_sample():
    a, sa = scenes.sample(5, 17)
    b, sb = scenes.sample(5, 17)
    c, _ = scenes.sample(5, 18)
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert sa.caption == sb.caption
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_vocabulary_is_as_wide_as_promised():
    assert len(scenes.SHAPES) >= 6 and len(scenes.COLOUR_NAMES) >= 8
    # Every colour and every shape is still seen in training with some other partner.
    for colour in scenes.COLOUR_NAMES:
        assert any(not scenes.is_held_out(colour, s) for s in scenes.SHAPES)
    for shape in scenes.SHAPES:
        assert any(not scenes.is_held_out(c, shape) for c in scenes.COLOUR_NAMES)


def test_training_split_never_shows_a_held_out_pair():
    for i in range(400):
        _, scene = scenes.sample(11, i, split="train")
        for o in scene.objects:
            assert not scenes.is_held_out(o.colour, o.shape), (i, o)


def test_eval_split_does_show_held_out_pairs():
    found = {(o.colour, o.shape) for i in range(600) for o in scenes.sample(12, i, split="eval")[1].objects}
    assert found & scenes.HELD_OUT


@pytest.mark.parametrize("index", range(60))
def test_captions_are_true_of_the_scene(index):
    _, scene = scenes.sample(13, index)
    assert 1 <= scene.count <= 3
    assert scene.caption in scene.captions
    for caption in scene.captions:
        words = caption.split()
        for o in scene.objects:
            # A caption names only colours and shapes that are in the picture.
            for colour in scenes.COLOUR_NAMES:
                if colour in words:
                    assert any(x.colour == colour for x in scene.objects), caption
            for shape in scenes.SHAPES:
                if shape in words or scenes.plural(shape) in words:
                    assert any(x.shape == shape for x in scene.objects), caption
        for n, word in scenes.NUMBER_WORDS.items():
            if words[0] == word:
                assert scene.count == n, caption


def test_objects_stay_inside_and_apart():
    for i in range(200):
        _, scene = scenes.sample(14, i)
        for a in scene.objects:
            assert a.radius < a.cx < 1 - a.radius and a.radius < a.cy < 1 - a.radius
            for b in scene.objects:
                if a is not b:
                    assert np.hypot(a.cx - b.cx, a.cy - b.cy) > a.radius + b.radius


def test_tokenizer_pads_to_max_length_and_spells_unknown_words():
    tok = train_tokenizer(["a red circle", "two blue stars"], max_length=8)
    ids = tok.encode("a red circle").ids
    assert len(ids) == 8 and ids[-1] == tok.token_to_id("<pad>")
    assert tok.token_to_id("</s>") in ids
    unknown = tok.encode("zebra").ids
    assert tok.token_to_id("<unk>") not in unknown
    assert len(tok.encode("word " * 40).ids) == 8


@pytest.mark.parametrize("index", range(0, 300, 7))
def test_colour_free_phrasings_name_no_colour_and_keep_every_shape(index):
    # What a grey copy is captioned with in training: true of it, so no colour word, and
    # the scene's shapes still named (else a grey copy teaches nothing about shape).
    scene = scenes.sample_scene(np.random.default_rng([3, index]))
    phrasings = scenes.colour_free_captions(scene)
    assert phrasings
    for p in phrasings:
        assert not set(p.split()) & set(scenes.COLOUR_NAMES), p
    shapes = {o.shape for o in scene.objects}
    assert any(all(s in p or scenes.plural(s) in p for s in shapes) for p in phrasings), phrasings
