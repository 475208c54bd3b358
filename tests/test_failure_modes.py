"""Knob sweeps, region measures, claim verdicts and the notebook-05 figures (tiny sizes)."""

import json
import math

import matplotlib
import numpy as np
import pytest
import torch

from depthlib.course.failure_modes import (
    CLAIMS,
    claim_verdict,
    in_training_draws,
    knob_sweep,
    prediction_rows,
    results_rows,
    rows_by_model,
    sweep_rooms_for_profile,
    sweep_rooms_seed,
    sweep_summary,
)
from depthlib.course.failure_regions import boundary_band, relief_detection, render_labelled_room
from depthlib.data.pools import unlabelled_rooms_seed
from depthlib.data.rooms.generate import render_room
from depthlib.data.rooms.scene import DRAW_RANGES, RoomKnobs, draw_knobs
from depthlib.depth.metrics import MeanDepthBaseline, MedianDepthBaseline, compute_metrics
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import ConfigError, DataError
from depthlib.jobs.predict import Predictor
from depthlib.viz.failure_modes import BASELINE, plot_knob_sweep, plot_predictions

SIZE = (32, 48)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return DepthUNetPlusPlus("resnet18", encoder_depth=3, decoder_channels=(16, 8, 8)).eval()


@pytest.fixture(scope="module")
def constant():
    return MedianDepthBaseline().fit([np.full(SIZE, 3.0, np.float32)])


def test_sweep_seed_is_disjoint_from_the_labelled_set_and_the_pretraining_pool():
    for labelled in (0, 1, 7):
        assert sweep_rooms_seed(labelled) not in {labelled, unlabelled_rooms_seed(labelled)}
    assert sweep_rooms_for_profile("quick") < sweep_rooms_for_profile("cpu")


def test_labelled_room_has_render_rooms_pixels_and_its_object_fraction():
    for index in range(3):
        ours = render_labelled_room(11, index, 40, 56, RoomKnobs(light=0.4))
        theirs = render_room(11, index, 40, 56, raw=False, light=0.4)
        np.testing.assert_array_equal(ours["rgb"], theirs["rgb"])
        np.testing.assert_array_equal(ours["depth"], theirs["depth"])
        frac = float((ours["objects"] >= 0).mean())
        assert frac == pytest.approx(theirs["knobs"]["object_fraction"])
        visible = len(np.unique(ours["objects"][ours["objects"] >= 0]))
        assert visible == theirs["knobs"]["objects_visible"]


def test_light_sweep_is_paired_only_light_changes():
    seed = sweep_rooms_seed(0)
    for index in range(2):
        dark = render_labelled_room(seed, index, *SIZE, RoomKnobs(light=0.15))
        bright = render_labelled_room(seed, index, *SIZE, RoomKnobs(light=1.0))
        np.testing.assert_array_equal(dark["depth"], bright["depth"])
        np.testing.assert_array_equal(dark["objects"], bright["objects"])
        assert dark["rgb"].mean() < bright["rgb"].mean()
        changed = {k for k in RoomKnobs.names() if dark["knobs"][k] != bright["knobs"][k]}
        assert changed == {"light"}


def test_sweep_rows_pair_the_same_rooms_and_a_constant_model_sees_identical_gt(constant):
    rows = knob_sweep(constant, "light", (0.15, 1.0), n_rooms=3, size=SIZE)
    assert len(rows) == 6 and {r["model"] for r in rows} == {"model"}
    by_value = {v: [r for r in rows if r["value"] == v] for v in (0.15, 1.0)}
    assert [r["room"] for r in by_value[0.15]] == [r["room"] for r in by_value[1.0]] == [0, 1, 2]
    for a, b in zip(by_value[0.15], by_value[1.0], strict=True):  # same GT -> same error
        for key in ("abs_rel", "objects_abs_rel", "boundary_abs_rel", "object_fraction"):
            assert a[key] == b[key] or (math.isnan(a[key]) and math.isnan(b[key]))
        assert a["luminance"] < b["luminance"]
    verdict = claim_verdict(rows, "dark")
    assert verdict["verdict"] == "refuted" and verdict["mean_worse"] == 0.0


def test_sweep_scores_every_model_on_each_rendered_room(tiny_model, constant):
    mean = MeanDepthBaseline().fit([np.linspace(1, 5, SIZE[0] * SIZE[1]).reshape(SIZE)])
    models = {"net": tiny_model, "mean": mean, "median": constant}
    rows = knob_sweep(models, "size_scale", (0.5, 1.0), n_rooms=2, size=SIZE, input_size=(32, 48))
    grouped = rows_by_model(rows)
    assert list(grouped) == ["net", "mean", "median"]
    assert all(len(r) == 4 for r in grouped.values())
    seed = sweep_rooms_seed(0)
    for value in (0.5, 1.0):  # each row holds the metrics of that model on that very room
        for room in range(2):
            scene = render_labelled_room(seed, room, *SIZE, RoomKnobs(size_scale=value))
            gt, rgb = scene["depth"], scene["rgb"]
            preds = {
                "net": tiny_model.predict(rgb),
                "mean": mean.predict(SIZE),
                "median": constant.predict(SIZE),  # the histogram median, within 1 mm of 3
            }
            for name, pred in preds.items():
                (r,) = [r for r in grouped[name] if r["value"] == value and r["room"] == room]
                expected = compute_metrics(pred, gt)
                for key in ("abs_rel", "delta1", "rmse"):
                    assert r[key] == pytest.approx(expected[key], rel=1e-5), (name, key)
                assert r["object_fraction"] == float((scene["objects"] >= 0).mean())
                assert r["luminance"] == pytest.approx(rgb.mean() / 255)
    for r in rows:
        assert math.isnan(r["detected"]) == (r["n_counted"] == 0)
    summary = sweep_summary(grouped["net"])
    assert [s["value"] for s in summary] == [0.5, 1.0]
    first = [r["abs_rel"] for r in grouped["net"] if r["value"] == 0.5]
    assert summary[0]["abs_rel"] == pytest.approx(np.mean(first))
    assert summary[0]["abs_rel_se"] == pytest.approx(np.std(first, ddof=1) / np.sqrt(2))


def test_bad_sweep_input_raises_config_errors(constant):
    with pytest.raises(ConfigError, match="light.*size_scale.*contrast"):
        knob_sweep(constant, "brightness", (0.5,), n_rooms=1, size=SIZE)
    with pytest.raises(ConfigError, match=r"outside \[0.0, 1.0\]"):
        knob_sweep(constant, "contrast", (1.5,), n_rooms=1, size=SIZE)
    with pytest.raises(ConfigError, match="at least one value"):
        knob_sweep(constant, "light", (), n_rooms=1, size=SIZE)
    with pytest.raises(ConfigError, match="n_rooms"):
        knob_sweep(constant, "light", (1.0,), n_rooms=0, size=SIZE)
    with pytest.raises(ConfigError, match="nn.Module"):
        knob_sweep(42, "light", (1.0,), n_rooms=1, size=SIZE)


def _rows(stress_values, reference_values, knob="light", stress=0.15, reference=1.0, key=None):
    key = key or CLAIMS["dark"].measure
    rows = []
    for value, xs in ((stress, stress_values), (reference, reference_values)):
        rows += [
            {"model": "m", "knob": knob, "value": value, "room": i, key: float(x)}
            for i, x in enumerate(xs)
        ]
    return rows


def test_verdict_confirmed_refuted_and_inconclusive():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.15, 0.25, 20)
    worse = claim_verdict(_rows(base * 1.3 + rng.normal(0, 0.005, 20), base), "dark")
    assert worse["verdict"] == "confirmed"
    assert worse["ci_worse"][0] > 0 and worse["relative_change"] == pytest.approx(0.3, abs=0.05)
    assert worse["sentence"].startswith("confirmed") and "n=20 rooms" in worse["sentence"]
    same = claim_verdict(_rows(base + rng.normal(0, 0.002, 20), base), "dark")
    assert same["verdict"] == "refuted" and same["ci_worse"][1] < 0.1 * base.mean()
    noisy = claim_verdict(_rows(base + rng.normal(0.05, 0.3, 20), base), "dark")
    assert noisy["verdict"] == "inconclusive"
    tiny = claim_verdict(_rows([0.3], [0.2]), "dark")
    assert tiny["verdict"] == "inconclusive" and tiny["n_rooms"] == 1
    # a worsening whose CI starts above 0 but below the material size (10% of ~0.2) is only
    # detected: confirmed needs the whole interval past the material size
    small = claim_verdict(_rows(base + 0.02 + rng.normal(0, 0.02, 20), base), "dark")
    lo, hi = small["ci_worse"]
    assert 0 < lo < 0.1 * base.mean() <= hi and small["verdict"] == "detected"
    assert small["sentence"].startswith("detected (the CI excludes 0 but includes")
    no_threshold = claim_verdict(
        _rows(base + 0.02 + rng.normal(0, 0.02, 20), base), "dark", min_effect=0.0
    )
    assert (
        no_threshold["verdict"] == "confirmed" and "material size = 0%" in no_threshold["sentence"]
    )
    unchanged = claim_verdict(_rows(base, base), "dark", min_effect=0.0)  # CI [0, 0]
    assert unchanged["verdict"] == "refuted"
    with pytest.raises(ConfigError, match="min_effect"):
        claim_verdict(_rows(base, base), "dark", min_effect=-0.1)


def test_stress_values_are_marked_in_or_out_of_the_training_draws():
    assert in_training_draws("light", 0.15) and in_training_draws("light", 1.0)
    assert not in_training_draws("size_scale", 0.5) and in_training_draws("size_scale", 1.0)
    assert not in_training_draws("contrast", 0.0) and in_training_draws("contrast", 0.25)
    assert not in_training_draws("object_albedo", 0.15)
    rng = np.random.default_rng(0)
    draws = [draw_knobs(np.random.default_rng(i)) for i in range(300)]
    assert all(in_training_draws(k, d[k]) for d in draws for k in DRAW_RANGES)
    assert set(DRAW_RANGES) == set(RoomKnobs.names())  # every knob says what its draws cover
    assert not in_training_draws("camera_height", 0.5) and not in_training_draws("n_objects", 20)
    with pytest.raises(ValueError, match="Unknown room knob 'lights'"):
        in_training_draws("lights", 1.0)
    c = CLAIMS["similar_colour"]
    base = rng.uniform(0.2, 0.3, 10)
    verdict = claim_verdict(_rows(base + 0.1, base, c.knob, c.stress, c.reference, c.measure), c)
    assert not verdict["stress_in_training"] and "outside the training draws" in verdict["sentence"]


def test_verdict_for_a_rate_where_lower_is_worse_and_nan_rooms_are_dropped():
    c = CLAIMS["small"]
    ref = np.full(12, 0.8)
    fewer = np.r_[np.full(11, 0.4), np.nan]
    rows = _rows(fewer, ref, c.knob, c.stress, c.reference, c.measure)
    verdict = claim_verdict(rows, "small")
    assert verdict["verdict"] == "confirmed" and verdict["n_rooms"] == 11
    more = claim_verdict(_rows(ref + 0.1, ref, c.knob, c.stress, c.reference, c.measure), c)
    assert more["verdict"] == "refuted" and more["mean_worse"] < 0


def test_verdict_versus_a_baseline_removes_what_the_measure_does_alone():
    c = CLAIMS["similar_colour"]
    ref = np.linspace(0.2, 0.3, 10)
    net = _rows(ref + 0.1, ref, c.knob, c.stress, c.reference, c.measure)
    base = [
        dict(r, model="base")
        for r in _rows(ref + 0.1, ref, c.knob, c.stress, c.reference, c.measure)
    ]
    rows = net + base
    alone = claim_verdict(rows, c, model="m")
    assert alone["verdict"] == "confirmed" and alone["mean_worse"] == pytest.approx(0.1)
    beyond = claim_verdict(rows, c, model="m", versus="base")
    assert beyond["verdict"] == "refuted" and beyond["mean_worse"] == pytest.approx(0.0)
    assert "beyond base" in beyond["sentence"] and beyond["n_rooms"] == 10
    whole = [dict(r, abs_rel=0.2) for r in net]  # the whole image does not change
    assert claim_verdict(whole, c, measure="abs_rel")["verdict"] == "refuted"
    assert claim_verdict(whole, c)["verdict"] == "confirmed"


def test_verdict_bad_input():
    rows = _rows([0.3, 0.3], [0.2, 0.2])
    with pytest.raises(ConfigError, match="dark, dark_objects, small, similar_colour"):
        claim_verdict(rows, "blurry")
    with pytest.raises(DataError, match="values present"):
        claim_verdict(_rows([0.3], [0.2], reference=0.6), "dark")
    two = rows + [dict(r, model="other") for r in rows]
    with pytest.raises(ConfigError, match="several models"):
        claim_verdict(two, "dark")
    assert claim_verdict(two, "dark", model="other")["n_rooms"] == 2


def test_relief_detection_on_a_box_before_a_wall():
    gt = np.full((30, 30), 3.0)
    objects = np.full((30, 30), -1, np.int32)
    gt[10:20, 10:20], objects[10:20, 10:20] = 1.0, 0
    assert relief_detection(gt, gt, objects) == (1, 1)
    assert relief_detection(gt * 1.7, gt, objects) == (1, 1)  # a global scale error is no miss
    assert relief_detection(np.full_like(gt, 2.0), gt, objects) == (0, 1)
    half = np.where(objects >= 0, 2.1, 3.0)  # recovers 0.9 of 2 m relief: under half
    assert relief_detection(half, gt, objects) == (0, 1)
    assert relief_detection(gt, gt, objects, min_pixels=101) == (0, 0)
    flat = np.full_like(gt, 3.05)
    assert relief_detection(gt, flat, objects) == (0, 0)  # no true relief: not counted


def test_boundary_band_is_around_object_edges_only():
    objects = np.full((20, 20), -1, np.int32)
    objects[5:10, 5:10] = 0
    band = boundary_band(objects, 1)
    assert band[3:12, 3:12].sum() == band.sum() and not band[7, 7] and band[5, 5] and band[3, 7]
    assert not boundary_band(np.full((8, 8), -1, np.int32), 2).any()


def test_prediction_grid_and_figures(tiny_model):
    source = [render_room(3, i, *SIZE, raw=False) for i in range(2)]
    for i, s in enumerate(source):
        s["valid"], s["index"] = s["depth"] > 0, i
    mean_map = MeanDepthBaseline().fit(s["depth"] for s in source)
    models = {"tiny": Predictor(tiny_model, (32, 48)), "twice": Predictor(tiny_model, (64, 96))}
    grid = prediction_rows(models | {BASELINE: mean_map}, source, [1, 0])
    assert [r["index"] for r in grid] == [1, 0]
    assert list(grid[0]["predictions"]) == ["tiny", "twice", BASELINE]
    pred, abs_rel = grid[0]["predictions"]["tiny"]
    assert pred.shape == SIZE and abs_rel > 0
    fig = plot_predictions(grid)
    images = [ax for ax in fig.axes if ax.images]
    assert isinstance(fig, matplotlib.figure.Figure) and len(images) == 2 * 5
    titles = [ax.get_title() for ax in images[:5]]
    assert titles[:3] == ["photo", "ground truth", f"tiny\nAbsRel {abs_rel:.3f}"]
    assert titles[4].startswith(f"{BASELINE}\nAbsRel ")  # the baseline last, beside the models
    assert images[7].get_title().startswith("AbsRel")  # column names on the top row only
    assert [images[0].get_ylabel(), images[5].get_ylabel()] == ["image A", "image B"]
    assert not any("test image" in t for t in titles)
    assert np.array_equal(images[4].images[0].get_array(), mean_map.predict(SIZE))  # the same map
    for r, row in zip(grid, (images[0:5], images[5:10]), strict=True):  # one range per row
        depths = [r["depth"][r["valid"]]] + [p for p, _ in r["predictions"].values()]
        top = max(float(d.max()) for d in depths)
        assert {ax.images[0].get_clim() for ax in row[1:]} == {(0.0, top)}
    assert len([ax for ax in fig.axes if not ax.images]) == 2  # one colour bar per row
    with pytest.raises(DataError, match="mean-depth baseline"):
        plot_predictions(prediction_rows(models, source, [0]))
    assert len(plot_predictions(grid, baseline=None).axes) == 2 * 5 + 2  # drawn as a model
    rows = _rows([0.3, 0.35], [0.2, 0.22]) + _rows([0.4, 0.3], [0.3, 0.3], stress=0.6)
    rows = [dict(r, abs_rel=r["objects_abs_rel"] - 0.05) for r in rows]
    fig = plot_knob_sweep({"a": rows, "b": rows}, "light")
    assert len(fig.axes) == 2 and len(fig.axes[0].get_legend().get_texts()) == 2
    with pytest.raises(DataError):
        plot_predictions([])
    with pytest.raises(DataError, match="no rows for knob"):
        plot_knob_sweep({"a": rows}, "contrast")
    matplotlib.pyplot.close("all")


def test_results_rows_read_each_runs_evaluation(tmp_path):
    runs = {}
    for name, abs_rel in (("scratch", 0.2), ("spark", 0.15)):
        run = tmp_path / name
        run.mkdir()
        rows = {"model": {"abs_rel": abs_rel}, "train mean depth map": {"abs_rel": 0.35}}
        (run / "evaluation.json").write_text(json.dumps({"rows": rows}))
        runs[name] = run
    rows = results_rows(runs)
    assert list(rows) == ["scratch", "spark", "mean-depth baseline"]
    assert rows["spark"]["abs_rel"] == 0.15 and rows["mean-depth baseline"]["abs_rel"] == 0.35
    with pytest.raises(ConfigError, match="not one of the runs"):
        results_rows(runs, baseline_run="other")
    with pytest.raises(DataError, match="no final evaluation"):
        results_rows({"x": tmp_path / "missing"})


def test_an_interval_above_0_that_holds_the_material_size_is_detected_not_confirmed():
    """An interval above 0 that still holds the material size is a detected effect of unsettled
    size; one from below 0 to above the material size is inconclusive."""
    base = np.full(20, 0.2)  # material size: 10 % of 0.2 = 0.02
    offsets = np.resize([0.035, -0.005], 20)  # mean +0.015, spread wide enough to hold +0.02
    detected = claim_verdict(_rows(base + offsets, base), "dark")
    lo, hi = detected["ci_worse"]
    assert detected["verdict"] == "detected" and 0 < lo < 0.02 <= hi
    assert "excludes 0" in detected["sentence"] and "neither" not in detected["sentence"]
    wide = np.resize([0.05, -0.034], 20)  # mean +0.008, an interval from below 0 to above 0.02
    straddling = claim_verdict(_rows(base + wide, base), "dark")
    assert straddling["ci_worse"][0] < 0 < straddling["ci_worse"][1]
    assert straddling["verdict"] == "inconclusive"
    assert "includes both 0 and the material size" in straddling["sentence"]
