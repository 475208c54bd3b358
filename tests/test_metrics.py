"""NYU metrics: hand-computed values, the protocol's steps, accumulation and baselines."""

import math

import numpy as np
import pytest
import torch

from depthlib.depth.boundaries import boundary_errors, dbe_settings, depth_edges
from depthlib.depth.metrics import (
    METRIC_NAMES,
    MeanDepthBaseline,
    MedianDepthBaseline,
    MetricAccumulator,
    compute_metrics,
    depth_errors,
    eigen_crop_mask,
    format_table,
)
from depthlib.errors import ConfigError, DataError

P = [1.0, 2.0, 3.0, 4.0]
G = [1.5, 2.5, 3.5, 4.5]


def test_peer_case_every_metric_by_hand():
    m = compute_metrics(np.array([P]), np.array([G]))
    # Ratios g/p: 1.5, 1.25, 7/6, 1.125. Strict <: 1.25 itself fails δ1, so δ1 = 2/4.
    assert m["delta1"] == 0.5
    assert m["delta2"] == 1.0 and m["delta3"] == 1.0  # all ratios < 1.5625
    # |g - p| = 0.5 everywhere.
    assert m["abs_rel"] == pytest.approx((0.5 / 1.5 + 0.5 / 2.5 + 0.5 / 3.5 + 0.5 / 4.5) / 4)
    assert m["abs_rel"] == pytest.approx(186 / 945)  # (1/3 + 1/5 + 1/7 + 1/9) / 4
    assert m["sq_rel"] == pytest.approx((0.25 / 1.5 + 0.25 / 2.5 + 0.25 / 3.5 + 0.25 / 4.5) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 * 4) / 4))  # 0.5
    logs = [math.log(g / p) for p, g in zip(P, G, strict=True)]  # ln g - ln p
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in logs) / 4))
    log10s = [abs(math.log10(g) - math.log10(p)) for p, g in zip(P, G, strict=True)]
    assert m["log10"] == pytest.approx(sum(log10s) / 4)
    e = [-x for x in logs]  # e = ln p - ln g
    mean_e, mean_e2 = sum(e) / 4, sum(x * x for x in e) / 4
    assert m["silog"] == pytest.approx(100 * math.sqrt(mean_e2 - mean_e**2))
    assert m["rmse_log"] == pytest.approx(0.250913, abs=1e-6)  # and as numbers, once
    assert m["silog"] == pytest.approx(11.0777, abs=1e-4)


def test_delta_thresholds_are_strict_at_1_25_squared_and_cubed():
    # 1.25**2 = 1.5625 and 1.25**3 = 1.953125 exactly in binary floating point.
    assert 1.25**2 == 1.5625 and 1.25**3 == 1.953125
    on_delta2 = depth_errors(np.array([1.0, 1.5625]), np.array([1.5625, 1.0]))  # both ways
    assert (on_delta2["delta1"], on_delta2["delta2"], on_delta2["delta3"]) == (0.0, 0.0, 1.0)
    on_delta3 = depth_errors(np.array([1.0]), np.array([1.953125]))
    assert (on_delta3["delta1"], on_delta3["delta2"], on_delta3["delta3"]) == (0.0, 0.0, 0.0)
    m = compute_metrics(np.array([[1.0, 1.0, 1.0]]), np.array([[1.5625, 1.953125, 1.2]]))
    assert (m["delta1"], m["delta2"], m["delta3"]) == (1 / 3, 1 / 3, 2 / 3)


def test_perfect_prediction_and_torch_input():
    g = torch.rand(1, 1, 8, 8) * 5 + 1
    m = compute_metrics(g.clone(), g)
    assert m["delta1"] == 1.0 and m["abs_rel"] == 0.0 and m["rmse"] == 0.0
    assert m["silog"] == pytest.approx(0.0, abs=1e-6)


def test_per_image_averaging_not_per_pixel():
    acc = MetricAccumulator()
    # Image A: one valid pixel, p=1, g=2 → abs_rel 0.5.  Image B: three exact pixels → 0.
    acc.update([np.array([[1.0]])], [np.array([[2.0]])])
    acc.update([np.full((1, 3), 3.0)], [np.full((1, 3), 3.0)])
    result = acc.compute()
    assert result["abs_rel"] == pytest.approx((0.5 + 0.0) / 2)  # per pixel it would be 0.5 / 4
    assert result["delta1"] == pytest.approx((0.0 + 1.0) / 2)
    assert result["n_images"] == 2 and result["n_skipped"] == 0


def test_valid_range_is_open_and_mask_is_combined():
    gt = np.array([[1e-3, 10.0, 2.0, 4.0, np.nan]])  # 1e-3 and 10 themselves are invalid
    pred = np.array([[5.0, 5.0, 2.0, 2.0, 5.0]])
    assert compute_metrics(pred, gt)["abs_rel"] == pytest.approx((0 + 0.5) / 2)
    valid = np.array([[True, True, True, False, True]])
    assert compute_metrics(pred, gt, valid)["abs_rel"] == 0.0
    narrow = compute_metrics(pred, gt, min_depth=3.0, max_depth=10.0)  # only g=4 left
    assert narrow["abs_rel"] == pytest.approx(abs(4.0 - 3.0) / 4.0)  # pred 2 clipped up to 3


def test_nan_inf_and_out_of_range_predictions():
    gt = np.array([[1.0, 5.0, 2.0, 5.0]])
    pred = np.array([[np.nan, np.inf, 2.0, 20.0]])  # NaN → 1e-3, inf → 10, 20 clipped → 10
    m = compute_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx((0.999 / 1 + 5 / 5 + 0 + 5 / 5) / 4)
    assert m["delta1"] == 0.25
    assert all(math.isfinite(v) for v in m.values())


def test_prediction_is_resized_bilinear_align_corners():
    pred = np.array([[1.0, 2.0], [3.0, 4.0]])
    # align_corners=True keeps the corners and puts the mid-points halfway.
    gt = np.array([[1.0, 1.5, 2.0], [2.0, 2.5, 3.0], [3.0, 3.5, 4.0]])
    m = compute_metrics(pred, gt)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert m["delta1"] == 1.0


def test_eigen_crop_on_480x640_and_scaled():
    mask = eigen_crop_mask(480, 640)
    expected = np.zeros((480, 640), bool)
    expected[45:471, 41:601] = True
    assert np.array_equal(mask, expected)
    small = eigen_crop_mask(240, 320)
    rows, cols = np.where(small)
    assert (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) == (23, 236, 21, 301)


def test_eigen_crop_excludes_the_border():
    gt = np.full((480, 640), 2.0)
    pred = np.full((480, 640), 8.0)
    pred[45:471, 41:601] = 2.0  # right inside the crop, wrong on the border
    assert compute_metrics(pred, gt, eigen_crop=True)["abs_rel"] == 0.0
    assert compute_metrics(pred, gt)["abs_rel"] > 0.5  # off by default


def test_all_invalid_image_is_skipped_and_counted():
    acc = MetricAccumulator()
    gt = np.stack([np.full((4, 4), 2.0), np.zeros((4, 4))])  # second image: holes only
    pred = torch.full((2, 1, 4, 4), 2.5)
    acc.update(pred, torch.from_numpy(gt)[:, None])
    result = acc.compute()
    assert result["n_images"] == 1 and result["n_skipped"] == 1
    assert result["abs_rel"] == pytest.approx(0.25)
    assert acc.per_image[1] is None
    with pytest.raises(DataError, match="no valid pixel"):
        compute_metrics(pred[1], gt[1])


def test_accumulator_with_only_invalid_images_says_what_to_check():
    acc = MetricAccumulator()
    acc.update(np.ones((1, 3, 3)), np.zeros((1, 3, 3)))
    with pytest.raises(DataError, match="units"):
        acc.compute()


def test_accumulator_rejects_mismatched_batches_and_bad_ranges():
    with pytest.raises(DataError, match="Batch sizes differ"):
        MetricAccumulator().update(np.ones((2, 3, 3)), np.ones((3, 3, 3)))
    with pytest.raises(ConfigError):
        MetricAccumulator(min_depth=5, max_depth=1)
    with pytest.raises(DataError, match="valid mask"):
        compute_metrics(np.ones((3, 3)), np.ones((3, 3)), np.ones((2, 2), bool))


def test_mean_depth_baseline_per_pixel_with_fallback():
    d1 = np.array([[1.0, 2.0], [3.0, 0.0]])  # 0 = hole
    d2 = np.array([[3.0, 4.0], [5.0, 0.0]])
    valid2 = np.array([[True, False, True, True]]).reshape(2, 2)
    base = MeanDepthBaseline().fit([d1, d2], [np.ones((2, 2), bool), valid2])
    # (1+3)/2, 2 alone (4 masked out), (3+5)/2, never valid → global mean of 1,2,3,3,5.
    expected = np.array([[2.0, 2.0], [4.0, 14 / 5]])
    assert np.allclose(base.mean_map, expected)
    assert base.predict((2, 2)).dtype == np.float32
    assert base.predict((4, 6)).shape == (4, 6)


def test_mean_depth_baseline_resizes_to_a_common_size():
    maps = [np.full((4, 4), 2.0), np.full((8, 8), 4.0)]
    base = MeanDepthBaseline().fit(iter(maps))  # a one-pass iterable is enough
    assert base.mean_map.shape == (4, 4) and np.allclose(base.mean_map, 3.0)
    with pytest.raises(DataError, match="metres"):
        MeanDepthBaseline().fit([np.full((2, 2), 5000.0)])  # millimetres
    with pytest.raises(ConfigError, match="fit"):
        MeanDepthBaseline().predict((2, 2))


def test_median_baseline():
    base = MedianDepthBaseline().fit([np.array([[1.0, 2.0, 3.0, 50.0]])])  # 50 m is invalid
    assert base.median == pytest.approx(2.0, abs=1e-3)
    rng = np.random.default_rng(0)
    maps = [rng.uniform(0.5, 9.5, size=(30, 40)) for _ in range(5)]
    base = MedianDepthBaseline().fit(maps)
    assert base.median == pytest.approx(np.median(np.stack(maps)), abs=2e-3)
    assert np.all(base.predict((3, 5)) == np.float32(base.median))


def test_baselines_score_through_the_same_metrics():
    rng = np.random.default_rng(1)
    train = [rng.uniform(1, 5, size=(6, 8)) for _ in range(4)]
    mean_base = MeanDepthBaseline().fit(train)
    acc = MetricAccumulator()
    test_map = rng.uniform(1, 5, size=(12, 16))
    acc.update([mean_base.predict(test_map.shape)], [test_map])
    assert set(METRIC_NAMES) <= set(acc.compute())


def test_format_table():
    rows = {
        "model": compute_metrics(np.array([P]), np.array([G])) | {"n_images": 654, "n_skipped": 0},
        "mean-depth baseline": {"delta1": 0.4, "abs_rel": 0.377, "n_images": 650, "n_skipped": 4},
    }
    text = format_table(rows)
    lines = text.splitlines()
    assert lines[0].startswith("| model | δ1 ↑ |") and "AbsRel ↓" in lines[0]
    assert lines[0].endswith("| images |")
    assert "| model | 0.500 | 1.000 | 1.000 | 0.197 |" in text
    assert "| mean-depth baseline | 0.400 | – | – | 0.377 |" in text
    assert "650 (4 skipped)" in text
    assert "higher is better" in text and "lower is better" in text


# ------------------------------------------------------------------ depth boundary errors


def _step(width=64, at=32, near=2.0, far=4.0, height=48):
    depth = np.full((height, width), far)
    depth[:, :at] = near
    return depth


def test_depth_edges_mark_the_near_side_of_a_jump_only():
    edges = depth_edges(_step())
    assert edges.sum() == 48 and edges[:, 31].all()  # one pixel wide, on the near (2 m) side
    assert not depth_edges(_step(near=3.9)).any()  # a 2.6 % step is no occlusion at jump 0.1
    valid = np.ones((48, 64), bool)
    valid[:, 32] = False  # a hole next to the step: no edge across it
    assert not depth_edges(_step(), valid).any()


def test_dbe_threshold_and_canny_sigma_scale_with_the_width_from_ibims_640_px():
    nyu, rooms, quick = dbe_settings((480, 640)), dbe_settings((240, 320)), dbe_settings((48, 64))
    assert nyu == {"size": [480, 640], "theta_px": 10.0, "canny_sigma": math.sqrt(2)}  # iBims-1's
    assert rooms["size"] == [240, 320] and rooms["theta_px"] == 5.0
    assert rooms["canny_sigma"] == pytest.approx(math.sqrt(2) / 2)
    assert quick["theta_px"] == 1.0 and dbe_settings((1, 240, 320)) == rooms


def test_boundary_errors_at_240x320_measure_a_shift_and_cost_theta_for_no_edge():
    gt = _step(width=320, at=160, height=240)
    edges = depth_edges(gt)
    exact = boundary_errors(gt, edges)
    assert exact["dbe_acc"] <= 1.0 and exact["dbe_comp"] <= 1.0  # Canny may mark the far side
    for k in (1, 2, 3):  # the predicted step k px to the right adds k px in both measures
        shifted = boundary_errors(_step(width=320, at=160 + k, height=240), edges)
        assert shifted["dbe_acc"] - exact["dbe_acc"] == pytest.approx(k, abs=0.05)
        assert shifted["dbe_comp"] - exact["dbe_comp"] == pytest.approx(k, abs=0.05)
    flat = boundary_errors(np.full_like(gt, 3.0), edges)
    assert flat == {"dbe_acc": 5.0, "dbe_comp": 5.0}  # no edge: θ = 10 px x 320/640
    far = boundary_errors(_step(width=320, at=180, height=240), edges)  # 20 px away: beyond θ
    assert far == {"dbe_acc": 5.0, "dbe_comp": 5.0}
    wide = _step(width=640, at=320, height=480)  # the same scene at iBims-1's width: θ = 10 px
    assert boundary_errors(np.full_like(wide, 3.0), depth_edges(wide))["dbe_comp"] == 10.0
    assert np.isnan(boundary_errors(gt, np.zeros_like(edges))["dbe_acc"])


def test_dbe_is_scored_at_the_gt_size_on_the_edges_given():
    """A 60x80 prediction is upsampled to the 240x320 GT before its edges are found; edges found
    on a dense depth are used where the GT's own holes hide the step."""
    gt = _step(width=320, at=160, height=240)
    low = _step(width=80, at=40, height=60)
    acc = MetricAccumulator(boundaries=True)
    acc.update(low[None], gt[None])
    up = torch.nn.functional.interpolate(
        torch.from_numpy(low)[None, None], (240, 320), mode="bilinear", align_corners=True
    )[0, 0].numpy()
    assert acc.per_image[0]["dbe_acc"] == boundary_errors(up, depth_edges(gt))["dbe_acc"] < 2
    by_itself = boundary_errors(low, depth_edges(gt))  # upsampled there the same way
    assert by_itself == pytest.approx(boundary_errors(up, depth_edges(gt)))
    raw = gt.copy()
    raw[:, 159:161] = 0.0  # holes along the step: the raw map has no edge there
    holes = MetricAccumulator(boundaries=True)
    holes.update(gt[None], raw[None])
    holes.update(gt[None], raw[None], None, depth_edges(gt)[None])
    assert np.isnan(holes.per_image[0]["dbe_acc"]) and holes.per_image[1]["dbe_acc"] <= 1.0


def test_accumulator_reports_boundary_errors_only_when_asked():
    gt, pred = _step(width=640, at=320), _step(width=640, at=324)
    plain = MetricAccumulator()
    plain.update(pred[None], gt[None])
    assert "dbe_acc" not in plain.compute()
    acc = MetricAccumulator(boundaries=True)
    acc.update(pred[None], gt[None])
    acc.update(gt[None], gt[None])
    out = acc.compute()
    shifted, exact = (m["dbe_acc"] for m in acc.per_image)
    assert 3.5 <= shifted <= 4.5 and exact <= 1.0
    assert out["dbe_acc"] == pytest.approx((shifted + exact) / 2)
    assert "DBE acc" in format_table({"model": out})


def test_median_scaling_takes_the_scale_out_and_only_the_scale():
    g = np.linspace(1.0, 4.0, 20).reshape(4, 5)
    twice, shuffled = MetricAccumulator(median_scaling=True), MetricAccumulator(median_scaling=True)
    twice.update((2 * g)[None], g[None])  # right structure, wrong scale
    shuffled.update((2 * g[::-1])[None], g[None])  # wrong structure: scaling cannot fix it
    metric = MetricAccumulator()
    metric.update((2 * g)[None], g[None])
    assert metric.compute()["delta1"] == 0.0
    assert twice.compute()["delta1"] == 1.0 and twice.compute()["abs_rel"] == pytest.approx(0.0)
    assert shuffled.compute()["delta1"] < 0.5
