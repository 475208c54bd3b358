"""Learning curves averaged over runs, and SparK reconstructions early vs late."""

import json

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from depthlib.errors import ConfigError, DataError
from depthlib.spark.model import SparK, reconstruct
from depthlib.train.runlog import RunLog
from depthlib.viz.training import plot_learning_curves, plot_reconstruction_progress


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def rows(seed: int, epochs: int = 4) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "epoch": e,
            "step": 10 * e,
            "train_loss": float(rng.uniform(1, 5)),
            "val_abs_rel": float(rng.uniform(0.1, 0.5)),
            "val_delta1": float(rng.uniform(0.4, 0.9)),
        }
        for e in range(1, epochs + 1)
    ]


def line(ax, label_start: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_label().startswith(label_start)]
    return found.get_xdata(), found.get_ydata()


def test_lines_are_the_mean_over_runs_and_bands_the_std():
    runs = [rows(s) for s in range(3)]
    fig = plot_learning_curves({"a": runs, "b": [rows(9)]}, metrics=("abs_rel", "delta1"))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["train loss ↓", "val abs_rel ↓", "val delta1 ↑"]
    for ax, key in zip(fig.axes, ("train_loss", "val_abs_rel", "val_delta1"), strict=True):
        table = np.array([[r[key] for r in run] for run in runs])
        x, y = line(ax, "a (3 runs)")
        np.testing.assert_array_equal(x, [1, 2, 3, 4])
        np.testing.assert_allclose(y, table.mean(axis=0))
        band = ax.collections[0].get_paths()[0].vertices
        at_2 = band[np.isclose(band[:, 0], 2.0), 1]
        std = table[:, 1].std(ddof=1)
        np.testing.assert_allclose(
            [at_2.min(), at_2.max()], [table[:, 1].mean() - std, table[:, 1].mean() + std]
        )
        np.testing.assert_allclose(line(ax, "b (1 run)")[1], [r[key] for r in rows(9)])
    assert len(fig.axes[0].collections) == 1  # one run: no band for "b"


def test_runs_of_different_length_average_where_they_exist():
    short, long = rows(0, epochs=2), rows(1, epochs=4)
    fig = plot_learning_curves({"g": [short, long]}, metrics=("delta1",), x="step")
    x, y = line(fig.axes[1], "g")
    np.testing.assert_array_equal(x, [10, 20, 30, 40])
    both = [(a["val_delta1"] + b["val_delta1"]) / 2 for a, b in zip(short, long[:2], strict=True)]
    np.testing.assert_allclose(y, both + [r["val_delta1"] for r in long[2:]])
    assert fig.axes[1].get_xlabel() == "step"


def test_run_folders_are_read_from_the_training_log(tmp_path):
    (tmp_path / "run").mkdir()
    log, history = RunLog(tmp_path / "run"), []
    for row in rows(5):  # written the way the training loop writes it, one row per epoch
        history.append(row)
        log.append(row, history)
    fig = plot_learning_curves({"from disk": [tmp_path / "run", str(tmp_path / "run")]})
    _, y = line(fig.axes[1], "from disk (2 runs)")
    np.testing.assert_allclose(y, [r["val_abs_rel"] for r in rows(5)])


def test_other_logged_values_are_plotted_under_their_own_name():
    runs = [[{"epoch": e, "train_loss": 1.0 / e, "recon_loss": 2.0 / e} for e in (1, 2)]]
    fig = plot_learning_curves({"pretrain": runs}, metrics=("recon_loss",))
    assert [ax.get_title() for ax in fig.axes] == ["train loss ↓", "recon loss ↓"]
    np.testing.assert_allclose(line(fig.axes[1], "pretrain")[1], [2.0, 1.0])


def test_missing_log_and_missing_metric_are_explained(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="No log.jsonl in .*empty.*out= of"):
        plot_learning_curves({"a": [tmp_path / "empty"]})
    with pytest.raises(DataError, match="no 'rmse'.*val_abs_rel.*metrics="):
        plot_learning_curves({"a": [rows(0)]}, metrics=("rmse",))
    with pytest.raises(DataError, match="no x column 'time_s'"):
        plot_learning_curves({"a": [rows(0)]}, x="time_s")


def test_bad_groups_and_broken_logs_are_rejected(tmp_path):
    with pytest.raises(ConfigError, match="at least one group"):
        plot_learning_curves({})
    with pytest.raises(ConfigError, match="wrap a single run folder in a list"):
        plot_learning_curves({"a": str(tmp_path)})
    with pytest.raises(DataError, match="non-empty list of per-epoch dicts"):
        plot_learning_curves({"a": [[]]})
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text(json.dumps(rows(0)[0]) + "\n{broken\n")
    with pytest.raises(DataError, match="line 2 is not JSON"):
        plot_learning_curves({"a": [run]})
    (run / "log.jsonl").write_text("")
    with pytest.raises(DataError, match="is empty"):
        plot_learning_curves({"a": [run]})


@pytest.fixture(scope="module")
def reconstructions():
    torch.manual_seed(0)
    model = SparK("resnet18", encoder_depth=4, decoder_width=32)
    images = torch.randint(0, 256, (2, 3, 32, 48), dtype=torch.uint8)
    mask = model.random_mask(2, 32, 48, generator=torch.Generator().manual_seed(1))
    early = reconstruct(model, images, mask)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.add_(0.05)
    late = reconstruct(model, images, mask)
    other = reconstruct(model, images, ~mask)
    return early, late, other


def test_reconstruction_progress_has_one_column_per_stage(reconstructions):
    early, late, _ = reconstructions
    fig = plot_reconstruction_progress({"epoch 1": early, "epoch 6": late})
    assert len(fig.axes) == 2 * 4
    titles = [ax.get_title() for ax in fig.axes[:4]]
    assert titles[:2] == ["input", "masked input"]
    assert titles[2] == f"epoch 1\nloss {float(early['loss']):.3f}"
    assert titles[3].startswith("epoch 6\nloss")
    shown = fig.axes[7].get_images()[0].get_array()  # second image, "epoch 6" column
    expected = late["composite"][1].permute(1, 2, 0).clamp(0, 1).numpy()
    np.testing.assert_allclose(np.asarray(shown), expected, atol=1e-6)


def test_reconstruction_progress_rejects_mismatched_stages(reconstructions):
    early, _, other = reconstructions
    with pytest.raises(DataError, match="same mask"):
        plot_reconstruction_progress({"a": early, "b": other})
    with pytest.raises(DataError, match=r"lacks \['composite'\]"):
        plot_reconstruction_progress({"a": {k: v for k, v in early.items() if k != "composite"}})
    with pytest.raises(DataError, match="at least one"):
        plot_reconstruction_progress({})
