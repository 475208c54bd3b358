"""Paired transforms keep rgb, depth and valid aligned; depth resizing never leaks invalid values."""

import numpy as np
import pytest
import torch

from depthlib.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Augment,
    denormalize,
    normalize,
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


def as_batch(sample, b=1):
    """A numpy sample as a tensor batch of ``b`` copies."""
    return {
        "rgb": torch.from_numpy(np.stack([sample["rgb"]] * b)).permute(0, 3, 1, 2).contiguous(),
        "depth": torch.from_numpy(np.stack([sample["depth"]] * b))[:, None],
        "valid": torch.from_numpy(np.stack([sample["valid"]] * b))[:, None],
    }


def as_sample(batch, k=0):
    return {
        "rgb": batch["rgb"][k].permute(1, 2, 0).numpy(),
        "depth": batch["depth"][k, 0].numpy(),
        "valid": batch["valid"][k, 0].numpy(),
    }


def test_flip_and_crop_move_depth_and_valid_with_the_image():
    s = coordinate_sample()
    f = as_sample(Augment(flip=1.0, brightness=0, contrast=0, saturation=0)(as_batch(s), [rng0()]))
    assert f["rgb"][0, 0, 1] == W - 1 and f["depth"][5, 0] == s["depth"][5, -1]
    np.testing.assert_array_equal(f["valid"], s["valid"][:, ::-1])
    assert_aligned(f)
    crop = Augment(crop=(5, 8), flip=0.0, brightness=0, contrast=0, saturation=0)
    c = as_sample(crop(as_batch(s), [rng0(1)]))
    assert c["rgb"].shape == (5, 8, 3) and c["depth"].shape == (5, 8) and c["valid"].shape == (5, 8)
    assert_aligned(c)
    top, left = int(c["rgb"][0, 0, 0]), int(c["rgb"][0, 0, 1])
    np.testing.assert_array_equal(c["valid"], s["valid"][top : top + 5, left : left + 8])
    origins = crop(as_batch(s, 20), [rng0(k) for k in range(20)])["rgb"][:, :2, 0, 0]
    assert len({tuple(o.tolist()) for o in origins}) > 5
    with pytest.raises(ConfigError, match="larger than"):
        Augment(crop=(H + 1, 4))(as_batch(s), [rng0()])


def rng0(seed=0):
    return np.random.default_rng(seed)


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


def test_jitter_touches_rgb_only():
    s = coordinate_sample()
    s["rgb"] = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
    batch = as_batch(s)
    same = Augment(flip=0.0, brightness=0, contrast=0, saturation=0)(batch, [rng0()])
    assert torch.equal(same["rgb"], batch["rgb"]) and torch.equal(same["depth"], batch["depth"])
    dark = Augment(flip=0.0, brightness=0.5, contrast=0, saturation=0)(batch, [rng0()])
    assert (dark["rgb"].float() - batch["rgb"].float()).abs().max() > 5
    assert torch.equal(dark["valid"], batch["valid"]) and torch.equal(dark["depth"], batch["depth"])


def test_augment_is_seeded_per_sample():
    aug = Augment(crop=(8, 12), flip=0.5, brightness=0.3, contrast=0.3, saturation=0.3)
    base = coordinate_sample()
    base["rgb"] = np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)
    out = aug(as_batch(base, 8), [rng0(k) for k in range(8)])
    assert out["rgb"].dtype == torch.uint8 and out["rgb"].shape == (8, 3, 8, 12)
    again = aug(as_batch(base), [rng0(3)])
    assert torch.equal(again["rgb"][0], out["rgb"][3])
    assert len({out["rgb"][k].numpy().tobytes() for k in range(8)}) == 8


def test_normalize_uses_imagenet_statistics():
    white = torch.full((3, 2, 2), 255, dtype=torch.uint8)
    n = normalize(white)
    assert n.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    torch.testing.assert_close(n[:, 0, 0], expected)
    torch.testing.assert_close(normalize(white.float() / 255), n)
    x = torch.rand(2, 3, 4, 5)
    torch.testing.assert_close(denormalize(normalize(x)), x)
