"""Property tests (hypothesis): metric scale laws, mask counts, paired transforms stay aligned.

Each property holds for every input, so hypothesis searches for a counterexample among random
depth maps, scales, sizes and seeds instead of the few hand-picked cases of the unit tests.
"""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from depthlib.data.transforms import crop, hflip, random_crop
from depthlib.depth.metrics import MetricAccumulator, compute_metrics, depth_errors
from depthlib.spark.masks import kept_patch_count, make_patch_mask

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
    assert acc.n_skipped == valid_flags.count(False)
    assert acc.n_images == valid_flags.count(True)
    if any(valid_flags):
        result = acc.compute()
        assert result["n_skipped"] == acc.n_skipped
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
def coordinate_sample(h, w, seed):
    """rgb channel 0 = row, 1 = column; depth a function of (row, column); random holes."""
    rows, cols = np.mgrid[0:h, 0:w]
    rgb = np.stack([rows, cols, np.zeros_like(rows)], axis=-1).astype(np.uint8)
    depth = (1 + rows + cols / 100).astype(np.float32)
    valid = np.random.default_rng(seed).random((h, w)) > 0.3
    depth[~valid] = 0
    return {"rgb": rgb, "depth": depth, "valid": valid, "index": 0, "name": "x"}


def assert_aligned(s):
    rows, cols = (s["rgb"][..., k].astype(np.float32) for k in (0, 1))
    v = s["valid"]
    np.testing.assert_allclose(s["depth"][v], (1 + rows + cols / 100)[v], rtol=1e-6)
    assert np.all(s["depth"][~v] == 0)


image_sizes = st.tuples(st.integers(1, 40), st.integers(1, 40))


@fast
@given(size=image_sizes, seed=seeds)
def test_flip_flips_depth_and_valid_with_the_image(size, seed):
    s = coordinate_sample(*size, seed)
    f = hflip(s)
    for key in ("rgb", "depth", "valid"):
        np.testing.assert_array_equal(f[key], s[key][:, ::-1])
    assert_aligned(f)
    for key in ("rgb", "depth", "valid"):
        np.testing.assert_array_equal(hflip(f)[key], s[key])


@fast
@given(size=image_sizes, seed=seeds, data=st.data())
def test_crops_stay_aligned_and_land_where_drawn(size, seed, data):
    h, w = size
    ch, cw = data.draw(st.integers(1, h)), data.draw(st.integers(1, w))
    s = coordinate_sample(h, w, seed)
    c = random_crop(s, (ch, cw), np.random.default_rng(seed))
    assert c["rgb"].shape == (ch, cw, 3) and c["depth"].shape == c["valid"].shape == (ch, cw)
    assert_aligned(c)
    top, left = int(c["rgb"][0, 0, 0]), int(c["rgb"][0, 0, 1])
    np.testing.assert_array_equal(c["valid"], s["valid"][top : top + ch, left : left + cw])
    again = crop(s, top, left, ch, cw)
    for key in ("rgb", "depth", "valid"):
        np.testing.assert_array_equal(again[key], c[key])
