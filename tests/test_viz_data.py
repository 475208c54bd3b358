"""Notebook 00's data helpers (gallery, knob sweeps) and its figures."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from depthlib.course.gallery import gallery_samples, render_knob_sweep
from depthlib.data.rooms import RoomKnobs, synthesize
from depthlib.errors import ConfigError, DataError
from depthlib.viz import save_figure
from depthlib.viz.data import (
    KNOB_MEANINGS,
    plot_depth_statistics,
    plot_rooms_gallery,
    plot_rooms_knobs,
    show_depth,
)

H, W = 24, 32


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def rooms_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("rooms") / "rooms.mat"
    return synthesize(path, n=8, size=(H, W), seed=0, progress=False, workers=1)


# --------------------------------------------------------------------------- gallery_samples


def test_gallery_samples_carry_filled_raw_and_knobs(rooms_file):
    samples = gallery_samples(rooms_file, [1, 5])
    assert [s["index"] for s in samples] == [1, 5]
    for s in samples:
        assert s["rgb"].shape == (H, W, 3) and s["depth"].shape == (H, W)
        assert np.all(s["depth"] > 0)
        holes = s["raw_depth"] == 0
        assert s["hole_fraction"] == pytest.approx(holes.mean())
        # where the sensor saw something, raw depth is the filled depth up to quantisation
        ok = ~holes
        assert np.allclose(s["raw_depth"][ok], s["depth"][ok], rtol=0.05, atol=0.02)
        assert 0.0 < s["knobs"]["light"] <= 10.0 and s["knobs"]["index"] == s["index"]


def test_gallery_samples_reject_bad_indices(rooms_file):
    with pytest.raises(DataError, match=r"out of range.*0\.\.7"):
        gallery_samples(rooms_file, [8])
    with pytest.raises(ConfigError, match="at least one"):
        gallery_samples(rooms_file, [])


# ------------------------------------------------------------------------------- render_knob_sweep


def test_light_sweep_changes_colours_only():
    sweep = render_knob_sweep("light", (0.2, 0.7, 1.2), index=3, height=H, width=W)
    assert sweep["applied"] == pytest.approx([0.2, 0.7, 1.2])
    assert sweep["rgb_changes"] and not sweep["depth_changes"]
    for depth, raw in zip(sweep["depth"][1:], sweep["raw_depth"][1:], strict=True):
        np.testing.assert_array_equal(depth, sweep["depth"][0])
        np.testing.assert_array_equal(raw, sweep["raw_depth"][0])
    brightness = [rgb.mean() for rgb in sweep["rgb"]]
    assert brightness == sorted(brightness) and brightness[0] < brightness[-1]


def test_contrast_sweep_keeps_depth_and_geometry_sweeps_change_it():
    contrast = render_knob_sweep("contrast", (0.0, 1.0), index=3, height=H, width=W)
    assert contrast["rgb_changes"] and not contrast["depth_changes"]
    size = render_knob_sweep("size_scale", (0.6, 1.5), index=3, height=H, width=W)
    assert size["depth_changes"]
    height = render_knob_sweep("camera_height", (1.0, 1.8), index=3, height=H, width=W)
    assert height["depth_changes"]
    assert height["applied"] == pytest.approx([1.0, 1.8])


def test_sweep_reports_the_rooms_own_value_and_the_unforced_room():
    from depthlib.data.rooms import render_room

    own = render_room(0, 3, H, W)
    sweep = render_knob_sweep("light", (own["knobs"]["light"],), index=3, height=H, width=W)
    assert sweep["own_value"] == pytest.approx(own["knobs"]["light"])
    np.testing.assert_array_equal(sweep["rgb"][0], own["rgb"])  # forcing its own value = no-op


def test_n_objects_sweep_uses_whole_numbers():
    sweep = render_knob_sweep("n_objects", (2.0, 6.0), index=1, height=H, width=W)
    assert sweep["values"] == [2, 6] and all(isinstance(v, int) for v in sweep["values"])


def test_bad_knob_name_lists_the_valid_knobs():
    with pytest.raises(ConfigError) as err:
        render_knob_sweep("brightness", (0.5,), height=H, width=W)
    for name in RoomKnobs.names():
        assert name in str(err.value)


def test_bad_knob_values_are_config_errors():
    with pytest.raises(ConfigError, match="at least one value"):
        render_knob_sweep("light", (), height=H, width=W)
    with pytest.raises(ConfigError, match="outside"):
        render_knob_sweep("contrast", (1.5,), height=H, width=W)


# ----------------------------------------------------------------------------------- figures


def test_gallery_figure_has_three_panels_per_room(rooms_file, tmp_path):
    samples = gallery_samples(rooms_file, [0, 1, 2, 3, 4])  # odd: the last row is half empty
    fig = plot_rooms_gallery(samples, rooms_per_row=2)
    assert isinstance(fig, Figure)
    with_images = [ax for ax in fig.axes if ax.images]
    assert len(with_images) == 3 * len(samples)
    assert [ax.get_ylabel() for ax in fig.axes if not ax.images and ax.axison] == ["depth (m)"]
    for s, rgb_ax, depth_ax, raw_ax in zip(
        samples, with_images[0::3], with_images[1::3], with_images[2::3], strict=True
    ):  # each triplet shows its own room's pixels, in the order given
        np.testing.assert_array_equal(rgb_ax.get_images()[0].get_array(), s["rgb"])
        np.testing.assert_array_equal(depth_ax.get_images()[0].get_array(), s["depth"])
        raw = raw_ax.get_images()[0].get_array()
        np.testing.assert_array_equal(np.ma.getmaskarray(raw), s["raw_depth"] <= 0)  # holes white
        np.testing.assert_array_equal(raw.filled(0), s["raw_depth"])
        assert rgb_ax.get_title() == f"image {s['index']}\nRGB · light {s['knobs']['light']:.2f}"
        assert raw_ax.get_title() == f"raw depth\n{100 * s['hole_fraction']:.1f}% holes (white)"
        valid = s["depth"][s["depth"] > 0]
        assert depth_ax.get_title() == f"filled depth\n{valid.min():.1f}–{valid.max():.1f} m"
    vmax = float(np.ceil(max(s["depth"].max() for s in samples)))
    assert {ax.get_images()[0].get_clim() for ax in with_images[1::3]} == {(0.0, vmax)}
    path = save_figure(fig, "rooms_gallery", directory=tmp_path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_knob_sweep_figure_shows_depth_only_where_it_changes(tmp_path):
    sweeps = [
        render_knob_sweep("light", (0.2, 1.0, 1.3), index=2, height=H, width=W),
        render_knob_sweep("size_scale", (0.7, 1.4), index=2, height=H, width=W),
    ]
    fig = plot_rooms_knobs(sweeps)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 3 + 2 * 2  # light: RGB row only; size_scale: RGB + depth rows
    assert len(fig.axes) == len(images) + 1  # one colour bar, for the depth row
    titles = {t.get_text() for t in fig.texts}
    assert any(t.startswith("light: ") and "depth map identical" in t for t in titles)
    assert any(t.startswith("size_scale: ") and "depth maps differ" in t for t in titles)
    rgb_panels = images[:3] + images[3:5]
    rgbs = sweeps[0]["rgb"] + sweeps[1]["rgb"]
    for ax, rgb in zip(rgb_panels, rgbs, strict=True):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), rgb)
    for ax, depth in zip(images[5:], sweeps[1]["depth"], strict=True):
        np.testing.assert_array_equal(ax.get_images()[0].get_array(), depth)
    assert [ax.get_title() for ax in rgb_panels] == [
        "light = 0.2",
        "light = 1",
        "light = 1.3",
        "size_scale = 0.7",
        "size_scale = 1.4",
    ]
    save_figure(fig, "rooms_knobs", directory=tmp_path)


def _histograms() -> dict:
    """Per-split histograms in the format notebook 00's ``split_depth_histograms`` returns."""
    bins = np.linspace(0.0, 10.0, 101)
    out = {}
    for split, shift in (("train", 0), ("test", 3)):
        counts = np.zeros(len(bins) - 1, dtype=np.int64)
        counts[20 + shift : 40 + shift] = np.arange(1, 21)
        out[split] = {
            "counts": counts,
            "bins": bins,
            "n_images": 5 + shift,
            "n_pixels": int(counts.sum()),
            "mean": 3.0 + 0.1 * shift,
            "median": 3.2 + 0.1 * shift,
        }
    return out


def test_every_knob_has_a_meaning_for_the_figure_titles():
    assert set(KNOB_MEANINGS) == set(RoomKnobs.names())
    assert "mean colour of walls and floor" in KNOB_MEANINGS["contrast"]


def test_show_depth_paints_holes_white():
    fig, ax = plt.subplots()
    depth = np.array([[0.0, 1.0], [2.0, 3.0]])
    shown = show_depth(ax, depth, 4.0, holes=True).get_array()
    np.testing.assert_array_equal(np.ma.getmaskarray(shown), depth <= 0)
    assert show_depth(ax, depth, 4.0).get_clim() == (0.0, 4.0)


def test_depth_statistics_figure_with_and_without_the_mean_map():
    hist = _histograms()
    fig = plot_depth_statistics(hist)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        f"{split}: {h['n_images']} images, median {h['median']:.2f} m, mean {h['mean']:.2f} m"
        for split, h in hist.items()
    ]
    stairs = [p for p in ax.patches if hasattr(p, "get_data")]
    medians = [ln.get_xdata()[0] for ln in ax.get_lines() if len(ln.get_xdata())]
    assert len(stairs) == 2 and medians == [h["median"] for h in hist.values()]
    for step, h in zip(stairs, hist.values(), strict=True):  # % of that split's valid pixels
        values, edges = step.get_data()[:2]
        np.testing.assert_allclose(values, 100 * h["counts"] / h["counts"].sum())
        np.testing.assert_array_equal(edges, h["bins"])
        assert values.sum() == pytest.approx(100.0)
    mean_map = np.linspace(1.0, 4.0, H * W).reshape(H, W)
    scores = {"delta1": 0.5, "abs_rel": 0.3, "rmse": 1.1}
    fig = plot_depth_statistics(hist, mean_map, scores)
    assert len(fig.axes) == 3  # histogram, mean map, colour bar
    assert fig.axes[1].get_title() == (
        "train mean depth map (the baseline)\non test: δ1 0.500 · AbsRel 0.300 · RMSE 1.100 m"
    )
    shown = fig.axes[1].get_images()[0]
    np.testing.assert_array_equal(shown.get_array(), mean_map)
    assert shown.get_clim() == (1.0, 4.0)  # the map's own range, rounded to half metres


def test_figures_reject_empty_input(rooms_file):
    with pytest.raises(DataError):
        plot_rooms_gallery([])
    with pytest.raises(ConfigError, match="rooms_per_row"):
        plot_rooms_gallery(gallery_samples(rooms_file, [0]), rooms_per_row=0)
    with pytest.raises(DataError):
        plot_rooms_knobs([])
    with pytest.raises(DataError):
        plot_depth_statistics({})
