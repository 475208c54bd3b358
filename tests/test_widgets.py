"""The notebooks' interactive explorers: they build without a display (no kernel, no browser) and
moving a control really draws a new picture with a matching caption."""

import numpy as np
import pytest
import torch

from depthlib.data.rooms import render_room
from depthlib.errors import ConfigError
from depthlib.viz.failure_modes import BASELINE
from depthlib.viz.widgets import KNOB_SLIDERS, knob_explorer, mask_explorer, prediction_explorer

H, W = 24, 32


def _parts(box):
    """(controls by description, caption HTML widget, picture Image widget) of an explorer."""
    row, caption, picture = box.children
    return {c.description: c for c in row.children}, caption, picture


def test_knob_explorer_starts_at_the_rooms_own_draws():
    box = knob_explorer(seed=0, index=3, height=H, width=W)
    controls, caption, picture = _parts(box)
    assert list(controls) == [
        "light",
        "contrast",
        "object_albedo",
        "size_scale",
        "camera_height",
        "pitch_deg",
    ]
    own = render_room(0, 3, H, W)["knobs"]
    assert controls["light"].value == pytest.approx(own["light"])
    assert controls["object_albedo"].value == 1.0  # not drawn: rooms keep their colours
    assert picture.format == "jpeg" and picture.value[:2] == b"\xff\xd8"  # a JPEG is drawn
    assert caption.value.startswith("room 3 of seed 0: light ")


def test_moving_a_knob_slider_re_renders_the_room():
    box = knob_explorer(seed=0, index=3, height=H, width=W, knobs=("light", "camera_height"))
    controls, caption, picture = _parts(box)
    before, before_caption = picture.value, caption.value
    controls["light"].value = 0.2
    assert picture.value != before
    assert "light 0.2," in caption.value and caption.value != before_caption
    darker = render_room(0, 3, H, W, light=0.2)["knobs"]["mean_luminance"]
    assert f"mean luminance {darker:.2f}" in caption.value
    controls["camera_height"].value = 1.8
    assert "camera_height 1.8" in caption.value


def test_knob_explorer_rejects_unknown_knobs():
    with pytest.raises(ConfigError, match="light"):
        knob_explorer(height=H, width=W, knobs=("brightness",))
    assert set(KNOB_SLIDERS) >= {"light", "contrast", "object_albedo", "size_scale"}


def _image(height=64, width=96):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(0))


def test_mask_explorer_shows_the_kept_count_and_redraws():
    box = mask_explorer(_image(), patches=(16, 32), ratio=0.5)
    controls, caption, picture = _parts(box)
    assert controls["patch (px)"].value == 32  # the largest patch by default
    assert "2×3 = 6 patches of 32×32 px" in caption.value and "keeps <b>3</b>" in caption.value
    first = picture.value
    controls["patch (px)"].value = 16
    assert "4×6 = 24 patches" in caption.value and "keeps <b>12</b>" in caption.value
    assert picture.value != first
    controls["mask ratio"].value = 0.75
    assert "round(24 × 0.25) = 6" in caption.value and "keeps <b>6</b>" in caption.value
    seen = picture.value
    controls["seed"].value = 1  # another seed: another mask, the same count
    assert picture.value != seen and "keeps <b>6</b>" in caption.value


def test_mask_explorer_says_when_no_patch_is_left():
    box = mask_explorer(_image(32, 32), patches=(16,), ratio=0.5)  # 2x2 = 4 patches
    controls, caption, picture = _parts(box)
    controls["mask ratio"].value = 0.9  # round(0.4) = 0 kept
    assert "keeps no patch" in caption.value and picture.value


def test_mask_explorer_rejects_patches_that_do_not_divide_the_image():
    with pytest.raises(ConfigError, match="do not divide"):
        mask_explorer(_image(64, 96), patches=(16, 20))
    with pytest.raises(ConfigError, match="not one of"):
        mask_explorer(_image(64, 96), patches=(16, 32), patch=8)


def test_explorer_pictures_are_not_pyplot_figures():
    import matplotlib.pyplot as plt

    plt.close("all")
    mask_explorer(_image(), patches=(32,))
    assert plt.get_fignums() == []  # an inline backend would otherwise show them twice


def test_prediction_explorer_draws_the_picked_image_and_ranks_the_models():
    rng = np.random.default_rng(0)
    asked = []

    def row_for(i):
        asked.append(i)
        depth = rng.uniform(1, 5, (H, W)).astype(np.float32)
        return {
            "index": 100 + i, "rgb": rng.integers(0, 255, (H, W, 3), dtype=np.uint8),
            "depth": depth, "valid": depth > 0,
            "predictions": {"a": (depth * 1.2, 0.2 + i), "b": (depth, 0.1), BASELINE: (depth, 0.3)},
        }  # fmt: skip

    box = prediction_explorer(row_for, n_images=3)
    controls, caption, picture = _parts(box)
    assert (
        asked == [0]
        and caption.value == f"test image 100, AbsRel: b 0.100, a 0.200, {BASELINE} 0.300"
    )
    first = picture.value
    controls["test image"].value = 2
    assert asked == [0, 2] and caption.value.startswith("test image 102,")
    assert picture.value != first
    with pytest.raises(ConfigError, match="index 3 of 3 images"):
        prediction_explorer(row_for, n_images=3, index=3)
