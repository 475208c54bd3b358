"""Figures and helpers of notebooks 01 (masking strategies) and 02 (sparse vs dense convolution)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from depthlib.course.masking_demo import center_crop_to_aspect, room_images, zero_out
from depthlib.course.sparse_reference import measure_sparse_vs_dense
from depthlib.errors import DataError
from depthlib.spark.model import make_patch_mask
from depthlib.spark.sparse import upsample_mask
from depthlib.viz import hwc, save_figure
from depthlib.viz.masking import (
    plot_mask_grid,
    plot_mask_seeds,
    plot_masking_strategies,
)
from depthlib.viz.sparse import (
    plot_conv_vs_sparse_conv,
    plot_encoder_stages,
    plot_sparse_timing,
    plot_zero_out_problem,
)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _image(height=64, width=96, seed=0):
    return torch.rand(3, height, width, generator=torch.Generator().manual_seed(seed))


def _axes_titled(fig, start):
    (ax,) = [ax for ax in fig.axes if ax.get_title().startswith(start)]
    return ax


def _shown(ax):
    """The array the (first) image of an axes shows."""
    return np.asarray(ax.get_images()[0].get_array())


def _line(ax, label):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label() == label]
    return np.asarray(found.get_xdata(), float), np.asarray(found.get_ydata(), float)


# ---------------------------------------------------------------------------------- figures


def test_plot_masking_strategies_has_a_row_per_strategy(tmp_path):
    mask = make_patch_mask(1, 64, 128, 32, 0.75, seed=0)  # 2x4 patches, 2 visible: (0,2), (0,3)
    visible = mask[0, 0].numpy()
    assert np.argwhere(visible).tolist() == [[0, 2], [0, 3]]
    image = _image(64, 128)
    fig = plot_masking_strategies(image, mask)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 9
    titles = {ax.get_title() for ax in fig.axes}
    assert "64×128 image,\n2×4 patches of 32×32 pixels" in titles
    assert "mask ratio 0.75:\n2 of 8 patches stay visible" in titles
    # zero-out row: the image with the masked patches at 0, pixel for pixel
    seen = _axes_titled(fig, "masked pixels set to 0")
    np.testing.assert_allclose(_shown(seen), hwc(zero_out(image[None], mask)[0]))
    dense = _axes_titled(fig, "dense tensor 3×64×128: all 8 patches computed,\n6 of them")
    zeros = sorted((round(t.get_position()[1]), round(t.get_position()[0])) for t in dense.texts)
    assert zeros == sorted(map(tuple, np.argwhere(~visible).tolist()))  # a "0" on each masked
    # drop row: the tokens are labelled with their row-major grid positions 2 and 3
    tokens = _axes_titled(fig, "a sequence of 2 tokens")
    assert [t.get_text() for t in tokens.texts] == ["2", "3"]
    positions = _axes_titled(fig, "2 tokens + their positions on the 2×4 grid:\nthe 6 masked")
    assert [t.get_text() for t in positions.texts] == ["2", "3"]
    np.testing.assert_array_equal(_shown(positions), visible.astype(int))
    # sparse row: the active sites (y, x), and only visible pixels opaque
    sites = _axes_titled(fig, "a set of 2 active sites")
    assert [t.get_text() for t in sites.texts] == ["0,2", "0,3"]
    alpha = _shown(_axes_titled(fig, "only visible pixels exist"))[..., 3]
    np.testing.assert_array_equal(alpha, upsample_mask(mask, (64, 128))[0, 0].float().numpy())
    path = save_figure(fig, "fig1_masking_strategies", tmp_path)
    assert path.name == "fig1_masking_strategies.png" and path.stat().st_size > 1000


def test_plot_masking_strategies_refuses_a_batch_mask_or_a_wrong_image():
    with pytest.raises(DataError, match="one image"):
        plot_masking_strategies(_image(), make_patch_mask(2, 64, 96, 32, 0.5, seed=0))
    with pytest.raises(DataError, match="RGB"):
        plot_masking_strategies(torch.rand(1, 64, 96), make_patch_mask(1, 64, 96, 32, 0.5, seed=0))


def test_plot_mask_grid_one_axes_per_patch_and_ratio():
    fig = plot_mask_grid(_image(64, 64), ratios=(0.5, 0.6, 0.75), patches=(16, 32))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 6
    titles = [ax.get_title() for ax in fig.axes]
    assert "keeps 8 of 4×4 = 16" in titles[0]  # patch 16, ratio .5
    assert "keeps 2 of 2×2 = 4" in titles[4]  # patch 32, ratio .6: round(1.6)
    assert "keeps 1 of 2×2 = 4" in titles[5]  # patch 32, ratio .75: round(1.0)


def test_plot_mask_seeds_one_axes_per_mask():
    generator = torch.Generator().manual_seed(0)
    masks = [(f"seed={s}", make_patch_mask(1, 64, 96, 32, 0.5, seed=s)[0]) for s in (0, 0, 1)]
    masks += [
        (f"step {k}", make_patch_mask(1, 64, 96, 32, 0.5, generator=generator)[0]) for k in (0, 1)
    ]  # the (label, (1, h, w) mask) list notebook 01 builds
    fig = plot_mask_seeds(masks)
    assert len(fig.axes) == 5
    for ax, (label, mask) in zip(fig.axes, masks, strict=True):
        grid = mask.reshape(2, 3).numpy()
        assert ax.get_title() == f"{label}\nkeeps 3 of 6"
        np.testing.assert_array_equal(_shown(ax), grid.astype(int))  # blue (1) = visible
    with pytest.raises(DataError):
        plot_mask_seeds([])


def _footprints(visible, layers):
    """Where stacked 3×3 convs write (notebook 02's conv_footprints): a dense conv reaches one more
    ring of positions per layer (a 3×3 dilation), a sparse one stays on the visible sites."""
    dense, grown = [], visible.float()[None, None]
    for _ in range(layers):
        grown = torch.nn.functional.max_pool2d(grown, 3, 1, 1)
        dense.append(grown[0, 0] > 0)
    return {"input": visible, "dense": dense, "sparse": [visible.clone() for _ in dense]}


def test_plot_conv_vs_sparse_conv_axes():
    visible = upsample_mask(make_patch_mask(1, 16, 16, 4, 0.5, seed=1), (16, 16))[0, 0]
    fp = _footprints(visible, layers=2)
    fig = plot_conv_vs_sparse_conv(fp, patch=4, stage=3)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 3
    assert fig.get_suptitle() == (
        "3×3 convolutions on a masked 16×16 feature map (stage 3, stride 8)"
    )
    assert plot_conv_vs_sparse_conv(fp).get_suptitle().endswith("16×16 feature map")
    visible = visible.numpy()
    n_visible, n_masked = int(visible.sum()), int((~visible).sum())
    assert n_visible == n_masked == 128
    top, bottom = fig.axes[:3], fig.axes[3:]
    for row in (top, bottom):
        assert row[0].get_title() == f"input: {n_visible} visible sites"
        np.testing.assert_array_equal(_shown(row[0]), visible.astype(int))
    for k, dense in enumerate(fp["dense"]):
        dense = dense.numpy()
        written = int((dense & ~visible).sum())
        assert written > 0 and top[k + 1].get_title().startswith(
            f"after {k + 1} conv{'s' if k else ''}: {written} masked sites\n"
            f"written ({100 * written / n_masked:.0f}% of {n_masked})"
        )
        codes = np.where(visible & dense, 1, np.where(dense, 2, 0))  # 2 = masked site written
        np.testing.assert_array_equal(_shown(top[k + 1]), codes)
        assert bottom[k + 1].get_title().startswith(f"after {k + 1} conv{'s' if k else ''}: 0 ")
        np.testing.assert_array_equal(_shown(bottom[k + 1]), visible.astype(int))


def _bn_stats(channels, v=0.4, seed=0):
    """BatchNorm statistics as notebook 02's batchnorm_shift returns them (tensors per channel)."""
    generator = torch.Generator().manual_seed(seed)
    mean, var = torch.rand(channels, generator=generator), torch.rand(channels, generator=generator)
    return {
        "channels": channels,
        "visible_fraction": v,
        "visible_mean": mean,
        "visible_var": var,
        "dense_mean": v * mean,
        "dense_var": v * var + v * (1 - v) * mean**2,
        "sparse_mean": mean.clone(),
        "sparse_var": var.clone(),
    }


def test_plot_zero_out_problem_axes():
    rows = [
        {"layer": k, "dense_masked_nonzero": d, "visible_changed": c, "sparse_masked_nonzero": 0.0}
        for k, d, c in ((1, 0.2, 0.0), (2, 0.4, 0.3), (3, 0.7, 0.6))
    ]
    bn = _bn_stats(3)
    fig = plot_zero_out_problem(rows, bn)
    assert len(fig.axes) == 3
    layers = [1, 2, 3]
    for label, key in (
        ("dense: masked positions ≠ 0", "dense_masked_nonzero"),
        ("dense: visible features changed", "visible_changed"),
        ("sparse: masked positions ≠ 0", "sparse_masked_nonzero"),
    ):
        x, y = _line(fig.axes[0], label)
        np.testing.assert_array_equal(x, layers)
        np.testing.assert_allclose(y, [100 * r[key] for r in rows])
    assert _line(fig.axes[0], "dense: masked positions ≠ 0")[1][0] > 0  # not a flat zero line
    visible = f"{100 * bn['visible_fraction']:.0f}% visible"
    for ax, stat in ((fig.axes[1], "mean"), (fig.axes[2], "var")):
        assert ax.get_title().endswith(visible)
        assert [t.get_text() for t in ax.get_xticklabels()] == ["R", "G", "B"]
        bars = {c.get_label(): [p.get_height() for p in c] for c in ax.containers}
        np.testing.assert_allclose(bars["truth: visible positions only"], bn[f"visible_{stat}"])
        np.testing.assert_allclose(bars["dense BN (counts masked zeros)"], bn[f"dense_{stat}"])
        np.testing.assert_allclose(bars["sparse BN"], bn[f"sparse_{stat}"])


def test_plot_zero_out_problem_conv_variance_panel():
    conv = _bn_stats(16, v=0.25, seed=1)
    fig = plot_zero_out_problem([{"layer": 1, **dict.fromkeys(
        ("dense_masked_nonzero", "visible_changed", "sparse_masked_nonzero"), 0.0)}],
        _bn_stats(3), conv_bn=conv, conv_label="stage-1 conv features")  # fmt: skip
    assert len(fig.axes) == 4
    ax = fig.axes[3]
    assert ax.get_title() == "(d) BatchNorm variance, stage-1 conv features (16 channels)"
    (bars,) = ax.containers
    expected = np.sort((conv["dense_var"] / conv["visible_var"]).numpy())
    np.testing.assert_allclose([p.get_height() for p in bars], expected, rtol=1e-6)
    truth, limit = (_line(ax, label)[1] for label in (
        "truth (= sparse BN)", "v = 0.25 (zero-mean limit v·σ²)"))  # fmt: skip
    assert set(truth) == {1.0} and set(limit) == {0.25}


def _stage_rows(names):
    """Encoder stages as notebook 02's encoder_stages returns them (stage s at stride 2**s)."""
    generator = torch.Generator().manual_seed(0)
    rows = []
    for s, name in enumerate(names, start=1):
        h, w = 64 // 2**s, 96 // 2**s
        rows.append({
            "stage": s, "stride": 2**s, "shape": (8 * s, h, w), "name": name,
            "dense_map": torch.rand(h, w, generator=generator),
            "sparse_map": torch.rand(h, w, generator=generator),
            "dense_masked_nonzero": 1.0 - 0.1 * s, "sparse_masked_nonzero": 0.0,
        })  # fmt: skip
    return rows


def test_plot_encoder_stages_two_rows_per_stage():
    rows = _stage_rows(["stem", "layer1", "layer2", "layer3", "layer4"])
    fig = plot_encoder_stages(rows)
    assert len(fig.axes) == 2 * 5
    top, bottom = fig.axes[:5], fig.axes[5:]
    for r, dense_ax, sparse_ax in zip(rows, top, bottom, strict=True):
        c, h, w = r["shape"]
        assert dense_ax.get_title() == (
            f"stage {r['stage']} · stride {r['stride']}\n{c}×{h}×{w} · {r['name']}"
        )
        np.testing.assert_array_equal(_shown(dense_ax), r["dense_map"].numpy())
        np.testing.assert_array_equal(_shown(sparse_ax), r["sparse_map"].numpy())
        share = f"{100 * r['dense_masked_nonzero']:.0f}%"
        assert dense_ax.get_xlabel() == f"masked positions ≠ 0: {share}"
        assert sparse_ax.get_xlabel() == "masked positions ≠ 0: 0%"
    assert [ax.get_title().split("\n")[0] for ax in top] == [
        f"stage {s} · stride {2**s}" for s in range(1, 6)
    ]
    unnamed = [{k: v for k, v in r.items() if k != "name"} for r in rows[:2]]
    titles = [ax.get_title() for ax in plot_encoder_stages(unnamed).axes[:2]]
    assert titles == ["stage 1 · stride 2\n8×32×48", "stage 2 · stride 4\n16×16×24"]
    with pytest.raises(DataError):
        plot_encoder_stages([])


def test_plot_sparse_timing_axes():
    rows = measure_sparse_vs_dense(8, 8, 1, (0.5, 0.75), patch=2, repeats=1)
    rows += measure_sparse_vs_dense(16, 8, 1, (0.5, 0.75), patch=2, repeats=1)
    for i, r in enumerate(rows):  # distinct known times: median and fastest must not be mixed up
        r.update(sparse_ms=1.0 + i, sparse_ms_min=0.5 + i, dense_ms=3.0 + i, dense_ms_min=2.5 + i)
        r.update(sparse_over_dense=(1.0 + i) / (3.0 + i), sparse_over_dense_min=0.2)
    fig = plot_sparse_timing(rows)
    assert len(fig.axes) == 2
    for channels in (8, 16):
        mine = [r for r in rows if r["channels"] == channels]
        for ax, label, key in (
            (fig.axes[0], f"time, {channels} channels", "sparse_over_dense"),
            (fig.axes[1], f"sparse, {channels} ch", "sparse_ms"),
            (fig.axes[1], f"masked-dense, {channels} ch", "dense_ms"),
        ):
            x, y = _line(ax, label)
            np.testing.assert_array_equal(x, [0.5, 0.75])
            np.testing.assert_allclose(y, [r[key] for r in mine])
    _, macs = _line(fig.axes[0], "multiply-adds (= visible fraction)")
    np.testing.assert_allclose(macs, [r["macs_fraction"] for r in rows if r["channels"] == 8])
    assert fig.get_suptitle() == "3×3 conv C→C on a 8x8 map, batch 1 (CPU)"
    with pytest.raises(DataError):
        plot_sparse_timing([])


# ---------------------------------------------------------- example images of notebooks 01-03


def test_center_crop_to_aspect():
    rows, cols = np.mgrid[0:240, 0:320]
    rgb = np.stack([rows, cols // 2, np.zeros_like(rows)], axis=-1).astype(np.uint8)  # (y, x/2, 0)
    wide = center_crop_to_aspect(rgb, 224, 320)  # 16 rows too many: 8 off the top, 8 off the bottom
    assert wide.shape == (224, 320, 3)
    np.testing.assert_array_equal(wide, rgb[8:232])
    assert wide[0, 0, 0] == 8 and wide[-1, 0, 0] == 231
    square = center_crop_to_aspect(rgb, 32, 32)  # 80 columns too many: 40 off each side
    assert square.shape == (240, 240, 3)
    np.testing.assert_array_equal(square, rgb[:, 40:280])
    assert square[0, 0, 1] == 20 and square[0, -1, 1] == 139
    np.testing.assert_array_equal(center_crop_to_aspect(rgb, 240, 320), rgb)  # aspect already right
    odd = center_crop_to_aspect(rgb[:239], 224, 320)  # 15 rows too many: 7 above, 8 below
    np.testing.assert_array_equal(odd, rgb[7:231])
    odd = center_crop_to_aspect(rgb[:, :319], 1, 1)  # 79 columns too many: 39 left, 40 right
    np.testing.assert_array_equal(odd, rgb[:, 39:279])


def test_room_images_from_a_small_rooms_file(tmp_path):
    from depthlib.data.rooms import synthesize

    path = synthesize(tmp_path / "rooms.mat", n=3, size=(24, 32), progress=False, workers=1)
    images = room_images(path, [0, 2], height=32, width=64)
    assert images.shape == (2, 3, 32, 64) and images.dtype == torch.float32
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    with pytest.raises(DataError, match="out of range"):
        room_images(path, [3])
    with pytest.raises(DataError, match="at least one"):
        room_images(path, [])
