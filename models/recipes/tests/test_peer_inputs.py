"""The peers' inputs: photos normalised as the processor does, wrong sizes refused."""

import json

import numpy as np
import pytest
from PIL import Image

from vlm_recipes.peer_inputs import pattern_pixels, photo_paths, photo_pixels, timing_input


def _model(tmp_path, size=(4, 6)):
    cfg = {
        "preprocess": {"size": list(size), "rescale_factor": 1 / 255, "image_mean": [0.5, 0.25, 0.0],
                       "image_std": [0.5, 0.5, 2.0]},
        "vision": {"input": "pixel_values", "num_channels": 3},
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    return str(tmp_path)


def test_photo_pixels_normalise_each_channel(tmp_path):
    model = _model(tmp_path)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    x = photo_pixels(model, str(tmp_path / "a.png"))
    assert x.shape == (1, 3, 4, 6) and x.dtype == np.float32
    want = (rgb[..., 1].astype(np.float64) / 255 - 0.25) / 0.5
    np.testing.assert_allclose(x[0, 1], want, atol=1e-6)


def test_wrong_size_and_empty_folder_are_refused(tmp_path):
    model = _model(tmp_path)
    Image.new("RGB", (5, 4)).save(tmp_path / "b.png")
    with pytest.raises(SystemExit, match="5x4"):
        photo_pixels(model, str(tmp_path / "b.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SystemExit, match="no images"):
        photo_paths(str(empty))


def test_timing_input_is_the_pattern_in_the_input_shape(tmp_path):
    name, x = timing_input(_model(tmp_path))
    assert name == "pixel_values" and x.shape == (1, 3, 4, 6)
    assert np.array_equal(x.reshape(-1), pattern_pixels(72))
    assert x.reshape(-1)[7] == np.float32((7 * 37 % 251) / np.float32(125.0) - 1)
