"""Paired transforms keep rgb, depth and valid aligned; depth resizing never leaks invalid values."""

import numpy as np
import pytest
import torch

from depthlib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    color_jitter,
    crop,
    denormalize,
    hflip,
    normalize,
    normalize_hwc,
    random_crop,
    resize,
    resize_depth,
)
from depthlib.errors import ConfigError

H, W = 12, 20


def coordinate_sample(seed=0):
    """rgb channel 0 = row, channel 1 = column, depth = 1 + row + column / 100, random holes."""
    rows, cols = np.mgrid[0:H, 0:W]
    rgb = np.stack([rows, cols, np.full_like(rows, 7)], axis=-1).astype(np.uint8)
    depth = (1 + rows + cols / 100).astype(np.float32)
    valid = np.random.default_rng(seed).random((H, W)) > 0.3
    depth[~valid] = 0
    return {"rgb": rgb, "depth": depth, "valid": valid, "index": 3, "name": "x"}


def assert_aligned(sample):
    """Every pixel's depth still belongs to the rgb pixel it was recorded with."""
    rows, cols = sample["rgb"][..., 0].astype(np.float32), sample["rgb"][..., 1].astype(np.float32)
    v = sample["valid"]
    np.testing.assert_allclose(sample["depth"][v], (1 + rows + cols / 100)[v], rtol=1e-6)


def test_hflip_moves_depth_and_valid_with_the_image():
    s = coordinate_sample()
    f = hflip(s)
    assert f["rgb"][0, 0, 1] == W - 1 and f["depth"][5, 0] == s["depth"][5, -1]
    np.testing.assert_array_equal(f["valid"], s["valid"][:, ::-1])
    assert_aligned(f)
    g = hflip(f)
    for key in ("rgb", "depth", "valid"):
        np.testing.assert_array_equal(g[key], s[key])
    assert g["index"] == 3 and g["name"] == "x"


def test_crop_keeps_alignment_and_is_seeded():
    s = coordinate_sample()
    c = random_crop(s, (5, 8), np.random.default_rng(1))
    assert c["rgb"].shape == (5, 8, 3) and c["depth"].shape == (5, 8) and c["valid"].shape == (5, 8)
    assert_aligned(c)
    top, left = int(c["rgb"][0, 0, 0]), int(c["rgb"][0, 0, 1])
    np.testing.assert_array_equal(c["valid"], s["valid"][top : top + 5, left : left + 8])
    again = random_crop(s, (5, 8), np.random.default_rng(1))
    np.testing.assert_array_equal(again["rgb"], c["rgb"])
    origins = {
        tuple(random_crop(s, (5, 8), np.random.default_rng(k))["rgb"][0, 0, :2]) for k in range(20)
    }
    assert len(origins) > 5
    with pytest.raises(ConfigError, match="larger than"):
        random_crop(s, (H + 1, 4), np.random.default_rng(0))
    with pytest.raises(ConfigError, match="does not fit"):
        crop(s, 10, 0, 5, 5)


@pytest.mark.parametrize("mode", ["nearest", "area"])
@pytest.mark.parametrize("size", [(6, 10), (5, 7), (24, 40), (9, 30)])
def test_resize_never_mixes_invalid_into_valid(mode, size):
    rng = np.random.default_rng(0)
    depth = rng.uniform(1.0, 2.0, (H, W)).astype(np.float32)
    valid = rng.random((H, W)) > 0.5
    valid[: H // 2, : W // 2] = False  # a hole larger than any output cell
    depth[~valid] = 100.0  # a poison value the reader would never leave, to catch any leak
    d, v = resize_depth(depth, valid, size, mode)
    assert d.shape == size and v.shape == size and d.dtype == np.float32 and v.dtype == bool
    assert v.any() and not v.all()
    assert np.all(d[v] >= 1.0 - 1e-6) and np.all(d[v] <= 2.0 + 1e-6)
    assert np.all(d[~v] == 0)
    if mode == "nearest":
        assert np.isin(d[v], depth[valid]).all()  # only real measurements


def test_area_resize_is_any_valid_mean_of_valid():
    depth = np.zeros((4, 4), np.float32)
    valid = np.zeros((4, 4), bool)
    depth[0, 0], valid[0, 0] = 3.0, True  # one valid pixel in the top-left 2x2 cell
    depth[2:, 2:], valid[2:, 2:] = [[1.0, 2.0], [3.0, 4.0]], True  # full bottom-right cell
    depth[0, 3] = 50.0  # invalid: must not show up
    d, v = resize_depth(depth, valid, (2, 2), "area")
    np.testing.assert_array_equal(v, [[True, False], [False, True]])
    np.testing.assert_allclose(d, [[3.0, 0.0], [0.0, 2.5]], rtol=1e-6)
    with pytest.raises(ConfigError, match="nearest"):
        resize_depth(depth, valid, (2, 2), "bicubic")


def test_resize_keeps_rgb_and_depth_in_register():
    s = coordinate_sample()
    s["valid"][:] = True
    s["depth"] = (1 + np.mgrid[0:H, 0:W][1]).astype(np.float32)  # ramp along x
    s["rgb"][:] = 0
    s["rgb"][: H // 4, : W // 4, 0] = 255  # top-left red block
    r = resize(s, (6, 10))
    assert r["rgb"].shape == (6, 10, 3) and r["rgb"].dtype == np.uint8
    assert r["rgb"][0, 0, 0] > 200 and r["rgb"][-1, -1, 0] == 0 and r["rgb"][0, -1, 0] == 0
    assert np.all(np.diff(r["depth"], axis=1) > 0) and r["depth"][0, 0] < r["depth"][0, -1]
    assert resize(s, (H, W)) is s  # no work when the size already matches
    up = resize(s, (2 * H, 2 * W))
    np.testing.assert_array_equal(up["depth"][::2, ::2], s["depth"])  # nearest 2x repeats pixels


def test_color_jitter_touches_rgb_only():
    s = coordinate_sample()
    s["rgb"] = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    same = color_jitter(s, (1.0, 1.0, 1.0))
    np.testing.assert_array_equal(same["rgb"], s["rgb"])
    dark = color_jitter(s, (0.5, 1.0, 1.0))
    np.testing.assert_allclose(dark["rgb"], s["rgb"] * 0.5, atol=0.51)
    grey = color_jitter(s, (1.0, 1.0, 0.0))["rgb"].astype(int)
    assert np.abs(grey[..., 0] - grey[..., 1]).max() <= 1  # saturation 0 is grey
    flat = color_jitter(s, (1.0, 0.0, 1.0))["rgb"]
    assert flat.std() < 1.0  # contrast 0 is a flat image
    assert dark["depth"] is s["depth"] and dark["valid"] is s["valid"]


def test_augment_is_seeded_and_same_on_numpy_and_tensors():
    aug = Augment(crop=(8, 12), flip=0.5, brightness=0.3, contrast=0.3, saturation=0.3)
    base = coordinate_sample()
    base["rgb"] = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = [aug(base, np.random.default_rng(k)) for k in range(8)]
    again = aug(base, np.random.default_rng(3))
    np.testing.assert_array_equal(again["rgb"], out[3]["rgb"])
    assert len({o["rgb"].tobytes() for o in out}) == 8
    batch = {
        "rgb": torch.from_numpy(np.stack([base["rgb"]] * 8)).permute(0, 3, 1, 2),
        "depth": torch.from_numpy(np.stack([base["depth"]] * 8))[:, None],
        "valid": torch.from_numpy(np.stack([base["valid"]] * 8))[:, None],
    }
    tb = aug.apply_batch(batch, [np.random.default_rng(k) for k in range(8)])
    assert tb["rgb"].dtype == torch.uint8 and tb["rgb"].shape == (8, 3, 8, 12)
    for k in range(8):
        np.testing.assert_array_equal(tb["depth"][k, 0].numpy(), out[k]["depth"])
        np.testing.assert_array_equal(tb["valid"][k, 0].numpy(), out[k]["valid"])
        diff = np.abs(tb["rgb"][k].permute(1, 2, 0).numpy().astype(int) - out[k]["rgb"])
        assert diff.max() <= 1  # float summation order may move a value across a rounding edge


def test_augment_geometry_stays_aligned():
    aug = Augment(crop=(6, 6), flip=1.0, brightness=0, contrast=0, saturation=0)
    out = aug(coordinate_sample(), np.random.default_rng(0))
    assert_aligned(out)
    assert out["rgb"][0, 0, 1] > out["rgb"][0, -1, 1]  # flipped: columns decrease


def test_normalize_uses_imagenet_statistics():
    white = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    n = normalize(white)
    assert n.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(n[:, 0, 0], expected)
    torch.testing.assert_close(normalize(white.float() / 255), n)
    x = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(denormalize(normalize(x)), x)
    rgb = np.random.default_rng(0).integers(0, 256, (4, 6, 3), dtype=np.uint8)
    hwc = normalize_hwc(rgb)
    assert hwc.shape == (3, 4, 6) and hwc.dtype == np.float32
    torch.testing.assert_close(
        torch.from_numpy(hwc), normalize(torch.from_numpy(rgb).permute(2, 0, 1))
    )
