"""Property tests (hypothesis): metric scale laws, mask counts, paired transforms stay aligned.

Each property holds for every input, so hypothesis searches for a counterexample among random
depth maps, scales, sizes and seeds instead of the few hand-picked cases of the unit tests.
"""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from depthlib.data.transforms import Augment
from depthlib.depth.metrics import MetricAccumulator, compute_metrics, depth_errors
from depthlib.spark.model import kept_patch_count, make_patch_mask

# modest and reproducible: the same examples on every run, no per-example time limit
fast = settings(max_examples=40, deadline=None, derandomize=True)

sizes = st.tuples(st.integers(1, 12), st.integers(1, 12))
seeds = st.integers(0, 2**32 - 1)


def depth_map(shape, seed, low=0.5, high=5.0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(low, high, shape)


# ------------------------------------------------------------------ metrics
@fast
@given(shape=sizes, seed=seeds, c=st.floats(0.3, 1.9))
def test_scaled_prediction_abs_rel_rmse_and_silog(shape, seed, c):
    g = depth_map(shape, seed)  # p = c·g stays inside the protocol's (1e-3, 10) m
    m = compute_metrics(c * g, g)
    assert np.isclose(m["abs_rel"], abs(c - 1), rtol=1e-9, atol=1e-12)
    assert np.isclose(m["rmse"], abs(c - 1) * np.sqrt(np.mean(g**2)), rtol=1e-9, atol=1e-12)
    assert np.isclose(m["sq_rel"], (c - 1) ** 2 * np.mean(g), rtol=1e-9, atol=1e-12)
    assert m["silog"] < 1e-5  # a global scale is exactly what SILog ignores


@fast
@given(shape=sizes, seed=seeds, c=st.floats(0.3, 1.9))
def test_scaled_prediction_deltas_are_all_or_nothing(shape, seed, c):
    g = depth_map(shape, seed)
    p = c * g
    ratio = np.maximum(g / p, p / g)  # ≈ max(c, 1/c) at every pixel, up to rounding
    m = compute_metrics(p, g)
    for k, key in enumerate(("delta1", "delta2", "delta3"), start=1):
        assert m[key] == np.mean(ratio < 1.25**k)
        if max(c, 1 / c) < 1.25**k * (1 - 1e-12):
            assert m[key] == 1.0
        elif max(c, 1 / c) > 1.25**k * (1 + 1e-12):
            assert m[key] == 0.0


@fast
@given(n=st.integers(1, 60), seed=seeds, spread=st.floats(0.0, 0.6))
def test_delta1_is_one_iff_every_ratio_is_below_1_25(n, seed, spread):
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.5, 5.0, n)
    p = g * np.exp(rng.uniform(-spread, spread, n))
    worst = np.max(np.maximum(p / g, g / p))
    assert (depth_errors(p, g)["delta1"] == 1.0) == (worst < 1.25)


@fast
@given(shape=sizes, seed=seeds, holes=st.floats(0.0, 0.9))
def test_nan_and_zero_gt_pixels_are_ignored(shape, seed, holes):
    rng = np.random.default_rng(seed)
    g, p = depth_map(shape, seed), depth_map(shape, seed + 1)
    bad = rng.random(shape) < holes
    bad.flat[0] = False  # at least one valid pixel
    g_holes = g.copy()
    g_holes[bad] = rng.choice([np.nan, 0.0, np.inf], size=int(bad.sum()))
    got = compute_metrics(p, g_holes)
    want = depth_errors(p[~bad], g[~bad])
    assert got == want


@fast
@given(valid_flags=st.lists(st.booleans(), min_size=1, max_size=8), seed=seeds)
def test_all_invalid_images_are_skipped_and_counted(valid_flags, seed):
    acc = MetricAccumulator()
    for k, has_valid in enumerate(valid_flags):
        g = depth_map((4, 5), seed + k)
        if not has_valid:
            g[:] = np.nan if k % 2 else 0.0
        acc.update(g[None] * 1.1, g[None])
    if any(valid_flags):
        result = acc.compute()
        assert result["n_skipped"] == valid_flags.count(False)
        assert result["n_images"] == valid_flags.count(True)
        assert np.isclose(result["abs_rel"], 0.1)


# ------------------------------------------------------------------ masks
@fast
@given(
    batch=st.integers(1, 4),
    grid=st.tuples(st.integers(1, 8), st.integers(1, 8)),
    patch=st.sampled_from([4, 16, 32]),
    ratio=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**31),
)
def test_masks_keep_the_exact_count_and_repeat_with_the_seed(batch, grid, patch, ratio, seed):
    n = grid[0] * grid[1]
    if round(n * (1 - ratio)) < 1:
        return  # refused with a ConfigError, tested in test_masking
    h, w = grid[0] * patch, grid[1] * patch
    mask = make_patch_mask(batch, h, w, patch, ratio, seed=seed)
    assert mask.shape == (batch, 1, *grid) and mask.dtype == torch.bool
    assert mask.flatten(1).sum(1).tolist() == [kept_patch_count(n, ratio)] * batch
    assert torch.equal(mask, make_patch_mask(batch, h, w, patch, ratio, seed=seed))


# ------------------------------------------------------------------ paired transforms
def coordinate_batch(h, w, seed, b=3):
    """rgb channel 0 = row, 1 = column; depth a function of (row, column); random holes."""
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.stack([rows, cols, np.zeros_like(rows)]).astype(np.uint8)
    valid = np.random.default_rng(seed).random((b, 1, h, w)) > 0.3
    depth = np.where(valid, 1 + rows + cols / 100, 0).astype(np.float32)
    return {"rgb": torch.from_numpy(np.stack([rgb] * b)), "depth": torch.from_numpy(depth),
            "valid": torch.from_numpy(valid)}  # fmt: skip


def assert_aligned(batch, before):
    """Every pixel's depth and validity still belong to the rgb pixel they came with."""
    for k in range(len(batch["rgb"])):
        rows, cols = batch["rgb"][k, 0].long(), batch["rgb"][k, 1].long()
        assert torch.equal(batch["depth"][k, 0], before["depth"][k, 0][rows, cols])
        assert torch.equal(batch["valid"][k, 0], before["valid"][k, 0][rows, cols])


image_sizes = st.tuples(st.integers(1, 40), st.integers(1, 40))
still = {"brightness": 0.0, "contrast": 0.0, "saturation": 0.0}


@fast
@given(size=image_sizes, seed=seeds)
def test_flip_flips_depth_and_valid_with_the_image(size, seed):
    before = coordinate_batch(*size, seed)
    flipped = Augment(flip=1.0, **still)(before, [np.random.default_rng(seed)] * 3)
    for key in ("rgb", "depth", "valid"):
        assert torch.equal(flipped[key], before[key].flip(-1))
    assert_aligned(flipped, before)


@fast
@given(size=image_sizes, seed=seeds, data=st.data())
def test_crops_stay_aligned_and_land_where_drawn(size, seed, data):
    h, w = size
    ch, cw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    before = coordinate_batch(h, w, seed)
    augment = Augment(crop=(ch, cw), flip=0.5, **still)
    out = augment(before, [np.random.default_rng([seed, k]) for k in range(3)])
    assert out["rgb"].shape == (3, 3, ch, cw) and out["depth"].shape == (3, 1, ch, cw)
    assert_aligned(out, before)
    again = augment(before, [np.random.default_rng([seed, k]) for k in range(3)])
    assert all(torch.equal(out[key], again[key]) for key in ("rgb", "depth", "valid"))
