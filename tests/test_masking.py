"""Patch masks and the three masking strategies (zero-out, drop, sparse)."""

import pytest
import torch

from depthlib.course.masking_demo import (
    drop_patches,
    gather_visible,
    restore_patches,
    sparsify,
    zero_out,
)
from depthlib.errors import ConfigError, DataError
from depthlib.spark.model import kept_patch_count, make_patch_mask, patchify, unpatchify
from depthlib.spark.sparse import upsample_mask


@pytest.mark.parametrize(
    ("batch", "height", "width", "patch", "ratio"),
    [
        (1, 224, 224, 32, 0.6),
        (3, 64, 96, 32, 0.6),
        (5, 96, 64, 16, 0.75),
        (2, 32, 256, 16, 0.4),
        (4, 128, 128, 16, 0.9),
        (2, 64, 64, 32, 0.0),
    ],
)
def test_mask_keeps_exact_count_per_image(batch, height, width, patch, ratio):
    mask = make_patch_mask(batch, height, width, patch, ratio, seed=0)
    grid = (height // patch, width // patch)
    assert mask.dtype == torch.bool
    assert mask.shape == (batch, 1, *grid)
    expected = round(grid[0] * grid[1] * (1 - ratio))
    assert mask.flatten(1).sum(dim=1).tolist() == [expected] * batch


def test_kept_patch_count_follows_spark_rounding():
    assert kept_patch_count(49, 0.6) == 20  # 19.6 -> 20, a 224 image with 32-pixel patches
    assert kept_patch_count(12, 0.6) == 5  # 4.8 -> 5
    assert kept_patch_count(10, 0.75) == 2  # 2.5 -> 2: Python's round, as in SparK's code
    assert kept_patch_count(4, 0.75) == 1


def test_masks_reproducible_by_seed_and_generator():
    a = make_patch_mask(4, 128, 192, 32, 0.6, seed=7)
    b = make_patch_mask(4, 128, 192, 32, 0.6, seed=7)
    c = make_patch_mask(4, 128, 192, 32, 0.6, seed=8)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    first = make_patch_mask(4, 128, 192, 32, 0.6, generator=g1)
    second = make_patch_mask(4, 128, 192, 32, 0.6, generator=g1)
    assert torch.equal(first, make_patch_mask(4, 128, 192, 32, 0.6, generator=g2))
    assert not torch.equal(first, second)  # a generator gives a new mask per call
    torch.manual_seed(5)
    global_a = make_patch_mask(2, 64, 64, 16, 0.5)
    torch.manual_seed(5)
    assert torch.equal(global_a, make_patch_mask(2, 64, 64, 16, 0.5))


def test_every_patch_is_equally_likely():
    masks = make_patch_mask(4000, 64, 64, 16, 0.75, seed=0)  # 16 patches, 4 kept
    frequency = masks.float().mean(dim=0).flatten()
    assert torch.allclose(frequency, torch.full_like(frequency, 0.25), atol=0.03)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((2, 100, 64, 32, 0.6), {}, "not a multiple"),
        ((2, 64, 64, 32, 1.0), {}, r"\[0, 1\)"),
        ((2, 64, 64, 32, -0.1), {}, r"\[0, 1\)"),
        ((2, 64, 64, 32, 0.9), {}, "keeps no patch"),
        ((2, 64, 64, 32, 0.5), {"seed": 1, "generator": torch.Generator()}, "not both"),
        ((0, 64, 64, 32, 0.5), {}, ">= 1"),
    ],
)
def test_make_patch_mask_rejects_bad_arguments(args, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        make_patch_mask(*args, **kwargs)


def test_upsample_mask_is_nearest_by_integer_factors():
    mask = make_patch_mask(2, 64, 96, 32, 0.5, seed=1)
    up = upsample_mask(mask, (8, 12))
    assert up.shape == (2, 1, 8, 12)
    expected = torch.kron(mask.int(), torch.ones(1, 1, 4, 4, dtype=torch.int)).bool()
    assert torch.equal(up, expected)
    assert torch.equal(upsample_mask(mask, (2, 3)), mask)


@pytest.mark.parametrize("size", [(5, 6), (4, 7), (1, 3)])
def test_upsample_mask_refuses_non_multiples(size):
    mask = make_patch_mask(1, 64, 96, 32, 0.5, seed=1)
    with pytest.raises(DataError, match="does not divide"):
        upsample_mask(mask, size)


@pytest.fixture
def batch():
    images = torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(0)) + 0.5
    mask = make_patch_mask(3, 64, 96, 16, 0.6, seed=2)
    return images, mask


def test_zero_out_fills_masked_pixels_only(batch):
    images, mask = batch
    pixel = upsample_mask(mask, (64, 96)).expand_as(images)
    out = zero_out(images, mask)
    assert torch.equal(out[pixel], images[pixel])
    assert (out[~pixel] == 0).all()
    mean = torch.tensor([0.485, 0.456, 0.406])
    filled = zero_out(images, mask, value=mean)
    for c in range(3):
        assert (filled[:, c][~pixel[:, c]] == mean[c]).all()
    with pytest.raises(DataError, match="batch size"):
        zero_out(images[:2], mask)


def test_patchify_roundtrip_and_layout(batch):
    images, _ = batch
    tokens = patchify(images, 16)
    assert tokens.shape == (3, 4 * 6, 16 * 16 * 3)
    # token 7 = grid row 1, column 1; vector laid out as (row, column, channel)
    patch = images[2, :, 16:32, 16:32].permute(1, 2, 0).reshape(-1)
    assert torch.equal(tokens[2, 7], patch)
    assert torch.equal(unpatchify(tokens, 16, (4, 6)), images)


def test_drop_patches_keeps_visible_tokens_and_positions(batch):
    images, mask = batch
    dropped = drop_patches(images, mask)
    n_visible = kept_patch_count(24, 0.6)
    assert dropped.tokens.shape == (3, n_visible, 16 * 16 * 3)
    assert dropped.patch == 16 and dropped.grid == (4, 6)
    for b in range(3):
        expected = mask[b, 0].flatten().nonzero()[:, 0]
        assert torch.equal(dropped.positions[b], expected)
        assert torch.equal(dropped.tokens[b], patchify(images, 16)[b, expected])
    assert torch.equal(restore_patches(dropped), zero_out(images, mask))
    holes = restore_patches(dropped, fill=float("nan"))
    assert torch.equal(holes.isnan(), ~upsample_mask(mask, (64, 96)).expand_as(images))


def test_drop_patches_needs_equal_counts(batch):
    images, mask = batch
    uneven = mask.clone()
    uneven[0].fill_(True)
    with pytest.raises(DataError, match="same number of visible patches"):
        drop_patches(images, uneven)


def test_sparse_strategy_gathers_and_scatters_visible_positions(batch):
    images, mask = batch
    masked, pixel = sparsify(images, mask)
    assert pixel.shape == (3, 1, 64, 96)
    assert torch.equal(masked, images * pixel)
    values = gather_visible(images, mask)
    assert values.shape == (int(pixel.sum()), 3)
    b, _, i, j = pixel.nonzero()[0].tolist()
    assert torch.equal(values[0], images[b, :, i, j])  # ordered by (batch, row, column)
    assert torch.equal(gather_visible(masked, mask), values)  # masked zeros are not gathered
