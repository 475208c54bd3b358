"""Figures and helpers of notebooks 01 (masking strategies) and 02 (sparse vs dense convolution)."""

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from depthlib.course.masking_demo import (
    center_crop_to_aspect,
    mask_count_table,
    masks_by_seed,
    room_images,
)
from depthlib.course.sparse_reference import measure_sparse_vs_dense
from depthlib.course.zero_out import (
    batchnorm_shift,
    conv_footprints,
    encoder_stage_zeros,
    fraction_nonzero,
    resnet_stage_convs,
    resnet_stage_smearing,
    smearing_per_layer,
    sparse_conv_exactness,
    sparse_timing_sweep,
    summarize_timing,
    timing_settings,
)
from depthlib.errors import ConfigError, DataError
from depthlib.spark.masks import make_patch_mask, upsample_mask, zero_out
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


def _smp_encoder():
    import segmentation_models_pytorch as smp

    torch.manual_seed(0)
    return smp.encoders.get_encoder("resnet18", weights=None)


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
    masks = masks_by_seed(64, 96, 32, 0.5, seeds=(0, 0, 1), steps_from_generator=2)
    fig = plot_mask_seeds(masks)
    assert len(fig.axes) == 5
    for ax, (label, mask) in zip(fig.axes, masks, strict=True):
        grid = mask.reshape(2, 3).numpy()
        assert ax.get_title() == f"{label}\nkeeps 3 of 6"
        np.testing.assert_array_equal(_shown(ax), grid.astype(int))  # blue (1) = visible
    with pytest.raises(DataError):
        plot_mask_seeds([])


def test_plot_conv_vs_sparse_conv_axes():
    mask = upsample_mask(make_patch_mask(1, 16, 16, 4, 0.5, seed=1), (16, 16))
    fp = conv_footprints(mask, layers=2)
    fig = plot_conv_vs_sparse_conv(fp, patch=4)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2 * 3
    visible = fp["input"].numpy()
    n_visible, n_masked = int(visible.sum()), int((~visible).sum())
    assert n_visible == n_masked == 128
    top, bottom = fig.axes[:3], fig.axes[3:]
    for row in (top, bottom):
        assert row[0].get_title() == f"input: {n_visible} visible sites"
        np.testing.assert_array_equal(_shown(row[0]), visible.astype(int))
    for k, (dense, written) in enumerate(zip(fp["dense"], fp["dense_written"], strict=True)):
        dense = dense.numpy()
        assert written > 0 and top[k + 1].get_title().startswith(
            f"after {k + 1} conv{'s' if k else ''}: {written} masked sites\n"
            f"written ({100 * written / n_masked:.0f}% of {n_masked})"
        )
        codes = np.where(visible & dense, 1, np.where(dense, 2, 0))  # 2 = masked site written
        np.testing.assert_array_equal(_shown(top[k + 1]), codes)
        assert bottom[k + 1].get_title().startswith(f"after {k + 1} conv{'s' if k else ''}: 0 ")
        np.testing.assert_array_equal(_shown(bottom[k + 1]), visible.astype(int))


def test_plot_zero_out_problem_axes():
    grid = make_patch_mask(1, 32, 32, 8, 0.5, seed=0)
    convs = [torch.nn.Conv2d(4, 4, 3, padding=1, bias=False) for _ in range(3)]
    rows = smearing_per_layer(convs, torch.rand(1, 4, 32, 32), grid)
    bn = batchnorm_shift(torch.rand(2, 3, 32, 32), make_patch_mask(2, 32, 32, 8, 0.5, seed=0))
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


def test_plot_encoder_stages_two_rows_per_stage():
    x = torch.randn(2, 3, 64, 64)
    rows = encoder_stage_zeros(_smp_encoder(), x, make_patch_mask(2, 64, 64, 32, 0.5, seed=0))
    fig = plot_encoder_stages(rows)
    assert len(rows) == 5
    assert len(fig.axes) == 2 * 5
    top, bottom = fig.axes[:5], fig.axes[5:]
    for r, dense_ax, sparse_ax in zip(rows, top, bottom, strict=True):
        c, h, w = r["shape"]
        assert dense_ax.get_title() == f"stage {r['stage']} · stride {r['stride']}\n{c}×{h}×{w}"
        np.testing.assert_array_equal(_shown(dense_ax), r["dense_map"].numpy())
        np.testing.assert_array_equal(_shown(sparse_ax), r["sparse_map"].numpy())
        share = f"{100 * r['dense_masked_nonzero']:.0f}%"
        assert dense_ax.get_xlabel() == f"masked positions ≠ 0: {share}"
        assert sparse_ax.get_xlabel() == "masked positions ≠ 0: 0%"
    assert [ax.get_title().split("\n")[0] for ax in top] == [
        f"stage {s} · stride {2**s}" for s in range(1, 6)
    ]


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


# ------------------------------------------------------------------- zero-out problem numbers


def test_dense_conv_footprint_grows_and_sparse_stays_on_the_visible_sites():
    mask = upsample_mask(make_patch_mask(1, 24, 24, 4, 0.6, seed=2), (24, 24))
    fp = conv_footprints(mask, layers=4)
    visible = mask[0, 0]
    previous = visible
    for dense, sparse in zip(fp["dense"], fp["sparse"], strict=True):
        assert torch.equal(sparse, visible)
        assert bool((dense >= previous).all())  # a superset of the previous layer's sites
        assert int(dense.sum()) > int(previous.sum())  # and strictly larger (map not full yet)
        previous = dense
    masked = ~visible
    assert fp["dense_written"] == [int((d & masked).sum()) for d in fp["dense"]]
    assert fp["sparse_written"] == [0, 0, 0, 0]
    # one 3x3 conv reaches exactly the 1-neighbourhood (8-connected dilation) of the visible sites
    dilated = torch.nn.functional.max_pool2d(visible[None, None].float(), 3, 1, 1)[0, 0] > 0
    assert torch.equal(fp["dense"][0], dilated)


def test_conv_footprints_refuses_bad_arguments():
    with pytest.raises(DataError, match="one map"):
        conv_footprints(make_patch_mask(2, 8, 8, 4, 0.5, seed=0))
    with pytest.raises(ConfigError, match="odd kernel"):
        conv_footprints(make_patch_mask(1, 8, 8, 4, 0.5, seed=0), kernel=2)


def test_smearing_grows_layer_after_layer_for_dense_and_stays_zero_for_sparse():
    rows = resnet_stage_smearing("resnet18", stage=1, height=128, width=128, patch=32, ratio=0.6)
    assert [r["layer"] for r in rows] == [1, 2, 3, 4]  # resnet18 stage 1: four 3x3 convs
    dense = [r["dense_masked_nonzero"] for r in rows]
    assert dense[0] > 0 and all(b > a for a, b in zip(dense, dense[1:], strict=False))
    assert all(r["sparse_masked_nonzero"] == 0.0 for r in rows)
    changed = [r["visible_changed"] for r in rows]
    assert changed[0] == 0.0  # one conv only ever sees real zeros next to visible data
    assert all(c > 0 for c in changed[1:])


def test_resnet_stage_convs_counts_and_keeps_global_rng():
    state = torch.get_rng_state()
    assert len(resnet_stage_convs("resnet18", 1)) == 4
    assert len(resnet_stage_convs("resnet34", 1)) == 6
    assert len(resnet_stage_convs("resnet18", 2)) == 3  # the strided first conv is left out
    assert torch.equal(state, torch.get_rng_state())
    with pytest.raises(ConfigError, match="stage"):
        resnet_stage_convs("resnet18", 7)


def test_batchnorm_shift_dense_mean_is_scaled_by_the_visible_fraction():
    features = torch.rand(2, 3, 32, 48, generator=torch.Generator().manual_seed(0)) + 0.5
    mask = make_patch_mask(2, 32, 48, 8, 0.6, seed=3)
    bn = batchnorm_shift(features, mask)
    v = bn["visible_fraction"]
    assert v == pytest.approx(10 / 24, abs=1e-6)  # round(24 * 0.4) = 10 of 24 patches
    # zero-filled mean = visible fraction x true mean, exactly what BN's statistics see
    assert np.allclose(bn["dense_mean"], np.multiply(v, bn["visible_mean"]), rtol=1e-4)
    assert np.allclose(bn["dense_mean_over_truth"], v, rtol=1e-4)
    assert np.allclose(bn["sparse_mean"], bn["visible_mean"], rtol=1e-5)
    assert np.allclose(bn["sparse_var"], bn["visible_var"], rtol=1e-5)
    assert min(np.subtract(bn["dense_var"], bn["visible_var"])) > 0  # zeros inflate the variance
    assert bn["sparse_stats_exact"] and bn["sparse_output_exact"]
    assert bn["dense_output_error"] > 0.5


def test_encoder_stage_zeros_sparse_is_exactly_zero_and_encoder_untouched():
    encoder = _smp_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    x = torch.randn(2, 3, 64, 96)
    rows = encoder_stage_zeros(encoder, x, make_patch_mask(2, 64, 96, 32, 0.5, seed=0))
    assert [r["stride"] for r in rows] == [2, 4, 8, 16, 32]
    assert [r["shape"][0] for r in rows] == [64, 64, 128, 256, 512]
    for r in rows:
        assert r["sparse_masked_zero"] and r["sparse_masked_max_abs"] == 0.0
        assert r["sparse_masked_nonzero"] == 0.0 and r["sparse_visible_nonzero"] > 0.5
        assert r["dense_masked_nonzero"] > 0.9  # batch-statistics BN shifts every zero
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_sparse_conv_exactness_against_reference():
    rows = sparse_conv_exactness(channels=4, height=16, width=24, patch=8)
    assert len(rows) == 5
    assert all(r["exact"] and r["max_abs_inactive"] == 0.0 for r in rows)
    assert max(r["max_abs_diff"] for r in rows) <= 1e-5


def test_fraction_nonzero_counts_positions_with_any_nonzero_channel():
    features = torch.zeros(1, 2, 2, 2)
    features[0, 1, 0, 0] = 3.0
    where = torch.tensor([[[[True, True], [False, False]]]])
    assert fraction_nonzero(features, where) == 0.5
    with pytest.raises(DataError, match="no position"):
        fraction_nonzero(features, torch.zeros(1, 1, 2, 2, dtype=torch.bool))


def test_timing_settings_follow_the_profile_and_sweep_is_exact():
    assert timing_settings("quick")["channels"] == (32,)
    assert timing_settings("cpu")["size"] == 28
    with pytest.raises(ConfigError, match="Unknown profile"):
        timing_settings("nope")
    rows = sparse_timing_sweep("quick", ratios=(0.5, 0.75))
    assert [r["ratio"] for r in rows] == [0.5, 0.75]
    summary = summarize_timing(rows)
    assert summary["macs_equal_visible"] and summary["exact"]
    # which ratios were faster depends on the machine; with known time ratios it is exact
    rows[0].update(sparse_over_dense=0.8, sparse_over_dense_min=1.0)  # 1.0: a tie is not faster
    rows[1].update(sparse_over_dense=1.3, sparse_over_dense_min=0.6)
    known = summarize_timing(rows)
    assert known["sparse_faster_at"] == [0.5] and known["sparse_faster_at_fastest"] == [0.75]
    rows[1]["sparse_over_dense"] = 1.0
    assert summarize_timing(rows)["sparse_faster_at"] == [0.5]
    rows[1]["sparse_over_dense"] = 0.99
    assert summarize_timing(rows)["sparse_faster_at"] == [0.5, 0.75]
    rows[0]["max_abs_diff"] = 1e-3  # a wrong result must show
    rows[1]["macs_fraction"] += 0.01
    broken = summarize_timing(rows)
    assert not broken["exact"] and not broken["macs_equal_visible"]


# ------------------------------------------------------------------------ notebook 01 helpers


def test_mask_count_table_matches_sparks_rule():
    rows = mask_count_table(224, 320, ratios=(0.4, 0.6, 0.75, 0.9), patches=(16, 32))
    got = {(r["patch"], r["ratio"]): r["expected"] for r in rows}
    assert got[(32, 0.4)] == 42 and got[(32, 0.6)] == 28
    assert got[(32, 0.75)] == 18  # 17.5 rounds half to even
    assert got[(32, 0.9)] == 7 and got[(16, 0.75)] == 70
    assert all(r["exact"] and r["kept"] == [r["expected"]] * 4 for r in rows)


def test_masks_by_seed_repeat_and_generator_stream():
    masks = masks_by_seed(64, 96, 32, 0.5, seeds=(0, 0, 5), steps_from_generator=2)
    labels = [label for label, _ in masks]
    assert labels[:3] == ["seed=0", "seed=0", "seed=5"] and len(masks) == 5
    assert torch.equal(masks[0][1], masks[1][1])
    assert not torch.equal(masks[0][1], masks[2][1])
    assert torch.equal(masks[3][1], masks[0][1])  # a generator seeded 0 starts where seed=0 is
    assert not torch.equal(masks[3][1], masks[4][1])  # and moves on each step


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
