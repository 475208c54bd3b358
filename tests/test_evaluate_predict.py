"""Evaluation with baselines, prediction to PNG files, and the finetune/evaluate/predict CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from depthlib.cli import main
from depthlib.data.folders import read_depth_png
from depthlib.data.nyu import NYULabeled, write_labeled, write_splits
from depthlib.data.rooms import synthesize
from depthlib.depth.encoders import save_encoder_weights
from depthlib.depth.metrics import METRIC_NAMES, compute_metrics
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import CheckpointError, ConfigError, DataError
from depthlib.jobs.evaluate import evaluate
from depthlib.jobs.finetune import finetune
from depthlib.jobs.predict import colorize, depth_to_png16, find_images, write_depth_maps

ROWS = {"model", "train mean depth map", "train median depth"}


@pytest.fixture(autouse=True)
def _tmp_dirs_one_thread(tmp_path, monkeypatch):
    """Runs and caches in tmp_path; one torch thread (much faster on a shared 2-core machine)."""
    monkeypatch.setenv("DEPTHLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DEPTHLIB_RUNS", str(tmp_path / "runs"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "rooms.mat"
    return synthesize(path, n=30, size=(48, 64), seed=1, n_train=18, progress=False, workers=1)


@pytest.fixture(scope="module")
def run_dir(rooms, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ft"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        finetune(rooms, "quick", out=out, epochs=1, progress=False, final_eval=False)
    finally:
        torch.set_num_threads(threads)
    return out


def tiny_model():
    torch.manual_seed(0)
    return DepthUNetPlusPlus(decoder_channels=(8, 8, 8, 8, 8), min_depth=0.1, max_depth=10.0)


# ------------------------------------------------------------------------------- evaluate


def test_evaluate_checkpoint_gives_model_and_baseline_rows(rooms, run_dir, tmp_path):
    result = evaluate(run_dir, rooms, out=tmp_path / "e.json", progress=False)
    assert set(result["rows"]) == ROWS
    for row in result["rows"].values():
        assert set(METRIC_NAMES) <= set(row) and row["n_images"] == 12
        assert 0 <= row["delta1"] <= row["delta2"] <= row["delta3"] <= 1
    assert result["eigen_crop"] is False  # a rooms file
    assert result["input_size"] == [32, 64]  # the training size stored in the checkpoint
    assert result["inference_images_per_s"] > 0
    assert "| train mean depth map |" in result["table"]
    saved = json.loads((tmp_path / "e.json").read_text())
    assert saved["rows"]["model"]["abs_rel"] == pytest.approx(result["rows"]["model"]["abs_rel"])


ODD = (37, 45)  # the network input: no side a multiple of 32


@pytest.fixture(scope="module")
def indexed_set(tmp_path_factory):
    """7 images of 37x45 whose blue channel encodes the file index (20 * i), with depth
    1 + 0.1 x + 0.05 y + 0.3 i (a ramp along both axes, so a flip changes it) and two holes per
    image at asymmetric spots; train = 0, 1; test = 2..6 (five: batches of 2 leave one over)."""
    n, (h, w) = 7, ODD
    rgb = np.zeros((n, h, w, 3), np.uint8)
    rgb[..., 0] = np.arange(w, dtype=np.uint8) * 5  # position-dependent red, ignored by the stubs
    rgb[..., 2] = (np.arange(n, dtype=np.uint8) * 20)[:, None, None]
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = 1.0 + 0.1 * x + 0.05 * y + 0.3 * np.arange(n, dtype=np.float32)[:, None, None]
    depth[:, 3, 5] = 0.0
    depth[np.arange(n), 30, np.arange(n) + 10] = 0.0
    path = write_labeled(tmp_path_factory.mktemp("indexed") / "indexed.mat", rgb, depth)
    write_splits(path.with_name("indexed_splits.mat"), [0, 1], [2, 3, 4, 5, 6])
    return path, depth


class IndexedDepth(nn.Module):
    """A stub depth model: reads the file index from the blue channel and returns that image's
    ground truth times ``scale`` (plus ``offset``), at the input's size (B, 1, H, W)."""

    def __init__(self, depths, scale=1.0, offset=None):
        super().__init__()
        self.depths = torch.from_numpy(np.asarray(depths, np.float32))
        self.scale, self.offset = scale, offset
        self.calls = []

    def predict(self, images):
        assert images.dtype == torch.uint8 and images.shape[1:] == (3, *ODD)
        index = images[:, 2, 0, 0].long() // 20
        self.calls.append(index.tolist())
        depth = self.depths[index] * self.scale
        if self.offset is not None:
            depth = depth + torch.from_numpy(self.offset)
        return depth[:, None]


def expected_row(model, path):
    """The per-image mean of compute_metrics on the maps the stub returns for the test split."""
    test = NYULabeled(path, split="test")
    rows = []
    for i in range(len(test)):
        s = test[i]
        image = torch.from_numpy(s["rgb"]).permute(2, 0, 1)[None]
        rows.append(compute_metrics(model.predict(image)[0, 0], s["depth"], s["valid"]))
    return {k: float(np.mean([r[k] for r in rows])) for k in METRIC_NAMES}


def test_evaluate_scores_exactly_what_the_model_predicts(indexed_set):
    path, depths = indexed_set
    kw = {"input_size": ODD, "batch_size": 2, "baselines": False, "progress": False}
    oracle = IndexedDepth(depths)
    row = evaluate(oracle, path, **kw)["rows"]["model"]
    assert oracle.calls == [[2, 3], [4, 5], [6]]  # every test image once, in order
    assert row["n_images"] == 5 and row["n_skipped"] == 0
    assert row["abs_rel"] == 0.0 and row["rmse"] == 0.0 and row["sq_rel"] == 0.0
    assert row["delta1"] == row["delta2"] == row["delta3"] == 1.0

    scaled = IndexedDepth(depths, scale=1.1)  # 10 % too far everywhere
    row = evaluate(scaled, path, **kw)["rows"]["model"]
    assert row["abs_rel"] == pytest.approx(0.1, rel=1e-6) and row["delta1"] == 1.0
    assert row["rmse_log"] == pytest.approx(np.log(1.1), rel=1e-6)
    assert row["silog"] == pytest.approx(0.0, abs=1e-3)  # a pure scale error
    for key, value in expected_row(scaled, path).items():
        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key

    # a ramp unrelated to the GT's own: every metric as compute_metrics gives it on those maps
    h, w = ODD
    ramp = np.linspace(-0.8, 1.2, w, dtype=np.float32)[None] * np.ones((h, 1), np.float32)
    skewed = IndexedDepth(depths, scale=0.9, offset=ramp)
    row = evaluate(skewed, path, **kw)["rows"]["model"]
    expected = expected_row(skewed, path)
    assert 0 < expected["delta1"] < 1 and expected["abs_rel"] > 0.05  # not a trivial case
    for key, value in expected.items():
        assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key


def test_mean_depth_baseline_is_fitted_on_the_train_split(rooms):
    """Scored on the train split itself, the mean map must beat its score on the test split
    (it was fitted there); scored on test it is the honest baseline."""
    on_train = evaluate(tiny_model(), rooms, "train", input_size=(32, 64), progress=False)
    on_test = evaluate(tiny_model(), rooms, "test", input_size=(32, 64), progress=False)
    name = "train mean depth map"
    assert on_train["rows"][name]["rmse"] < on_test["rows"][name]["rmse"]


def test_eigen_crop_is_automatic_for_real_nyu_size_only(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 480, 640, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 9.0, (3, 480, 640)).astype(np.float32)
    path = write_labeled(tmp_path / "nyu.mat", images, depths)
    write_splits(tmp_path / "nyu_splits.mat", [0, 1], [2])
    kw = {"input_size": (32, 64), "progress": False}
    assert evaluate(tiny_model(), path, **kw)["eigen_crop"] is True
    assert evaluate(tiny_model(), path, eigen_crop=False, **kw)["eigen_crop"] is False


class Flat(nn.Module):
    """A stub depth model: ``depth`` metres everywhere, at the input's size."""

    def __init__(self, depth=2.0):
        super().__init__()
        self.depth = depth

    def predict(self, images):
        return torch.full((len(images), 1, *images.shape[2:]), self.depth)


def test_evaluate_scores_raw_depths_by_default_and_filled_when_asked(tmp_path):
    """Filled depth: 2 m on the top half, 4 m below; rawDepths: the bottom half a hole. A flat
    2 m prediction is exact on raw's valid pixels; on the filled depth it is half wrong."""
    n, h, w = 3, 16, 64
    filled = np.full((n, h, w), 2.0, np.float32)
    filled[:, h // 2 :] = 4.0
    raw = filled.copy()
    raw[:, h // 2 :] = 0.0
    images = np.zeros((n, h, w, 3), np.uint8)
    path = write_labeled(tmp_path / "holes.mat", images, filled, raw_depths=raw)
    write_splits(tmp_path / "holes_splits.mat", [0], [1, 2])
    kw = {"baselines": False, "progress": False}

    on_raw = evaluate(Flat(), path, **kw)
    row = on_raw["rows"]["model"]
    assert row["abs_rel"] == 0.0 and row["rmse"] == 0.0 and row["delta1"] == 1.0
    assert on_raw["ground_truth"] == "rawDepths (holes invalid)"
    title = "Ground truth: rawDepths (holes invalid). DBE at 16×64, θ = 1 px, on the edges of "
    assert on_raw["table"].startswith(title + "depths (hole-filled).\n")
    assert row["dbe_comp"] == 1.0  # edges from the filled depth (raw's holes have none): θ
    assert on_raw["dbe"] == {"size": [16, 64], "theta_px": 1.0, "canny_sigma": pytest.approx(
        np.sqrt(2) / 10), "edges_from": "depths (hole-filled)"}  # fmt: skip

    on_filled = evaluate(Flat(), path, ground_truth="filled", out=tmp_path / "f.json", **kw)
    row = on_filled["rows"]["model"]  # top half exact, bottom 2 m for 4 m
    assert row["abs_rel"] == pytest.approx(0.25) and row["delta1"] == 0.5
    assert row["rmse"] == pytest.approx(np.sqrt(2.0)) and row["dbe_comp"] == 1.0
    assert on_filled["table"].startswith("Ground truth: depths (hole-filled). DBE at 16×64")
    saved = json.loads((tmp_path / "f.json").read_text())
    assert saved["ground_truth"] == "depths (hole-filled)" and saved["dbe"]["theta_px"] == 1.0
    plain = evaluate(Flat(), path, ground_truth="raw", boundaries=False, **kw)
    assert plain["table"].startswith("Ground truth: rawDepths (holes invalid).\n")
    assert plain["dbe"] is None and "DBE" not in plain["table"]
    with pytest.raises(DataError, match="depth must be 'filled' or 'raw'"):
        evaluate(Flat(), path, ground_truth="dense", **kw)


def test_evaluate_without_a_checkpoint_says_train_first(tmp_path, rooms):
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(CheckpointError, match="No latest checkpoint .* Train first"):
        evaluate(tmp_path / "empty_run", rooms, progress=False)
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        evaluate(tmp_path / "missing", rooms, progress=False)


def test_evaluate_refuses_a_wrong_split_name(rooms):
    with pytest.raises(DataError, match="split"):
        evaluate(tiny_model(), rooms, "val", progress=False)


# -------------------------------------------------------------------------------- predict


def test_predict_odd_size_grey_rgba_and_a_corrupt_file(run_dir, tmp_path):
    images = tmp_path / "in"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)).save(images / "odd.png")
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(images / "grey.png")
    rgba = rng.integers(0, 256, (25, 41, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(images / "alpha.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (images / "notes.txt").write_text("not an image suffix: ignored")
    report = write_depth_maps(images, run_dir, tmp_path / "out", progress=False)
    assert [p.name for p, _ in report.skipped] == ["broken.jpg"]
    assert "broken.jpg" in report.summary() and "not a readable image" in report.summary()
    sizes = {"odd": (37, 53), "grey": (20, 30), "alpha": (25, 41)}
    assert sorted(p.stem for p, _, _ in report.written) == sorted(sizes)
    for name, size in sizes.items():
        depth = read_depth_png(tmp_path / "out" / f"{name}_depth.png")  # 16-bit greyscale mm
        assert depth.shape == size and (depth >= 0.1).all() and (depth <= 10.0).all()
        with Image.open(tmp_path / "out" / f"{name}_depth_color.png") as colour:
            assert colour.mode == "RGB" and colour.size == (size[1], size[0])


def test_predict_native_size_and_single_file(run_dir, tmp_path):
    path = tmp_path / "one.jpg"
    Image.fromarray(np.full((19, 23, 3), 120, np.uint8)).save(path)
    report = write_depth_maps(path, run_dir, tmp_path / "o", input_size="native", progress=False)
    assert len(report.written) == 1 and not report.skipped
    assert read_depth_png(report.written[0][1]).shape == (19, 23)


def test_predict_unwritable_output_fails_before_any_work(run_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="Cannot write to the output folder"):
        write_depth_maps(tmp_path, run_dir, blocker / "out", progress=False)


def test_predict_read_only_output_fails_before_any_work(read_only_dir, monkeypatch):
    import depthlib.jobs.predict as predict_job

    def no_model(*args, **kw):
        raise AssertionError("the model was loaded before the output folder was checked")

    monkeypatch.setattr(predict_job, "Predictor", no_model)
    with pytest.raises(ConfigError, match="Cannot write to the output folder .*locked"):
        write_depth_maps(read_only_dir.parent, tiny_model(), read_only_dir, progress=False)
    assert list(read_only_dir.iterdir()) == []


def test_predict_missing_input_is_a_clear_error(run_dir, tmp_path):
    with pytest.raises(DataError, match="No file or folder"):
        find_images(tmp_path / "nope.png")


def test_png16_is_millimetres_and_colours_use_the_range():
    depth = np.array([[0.1234, 9.9996], [np.nan, 70.0]])
    assert depth_to_png16(depth).tolist() == [[123, 10000], [0, 65535]]
    ramp = np.linspace(1, 5, 50).reshape(5, 10)
    c = colorize(ramp, (1, 5))
    assert c.shape == (5, 10, 3) and c.dtype == np.uint8 and not np.array_equal(c[0, 0], c[-1, -1])


# ------------------------------------------------------------------------------------ CLI


def test_cli_finetune_evaluate_predict_end_to_end(rooms, tmp_path, capsys):
    run = tmp_path / "cli_run"
    base = ["--profile", "quick", "--epochs", "1", "--quiet"]
    assert main(["finetune", "--data", str(rooms), "--out", str(run), *base]) == 0
    printed = capsys.readouterr().out
    assert "| model |" in printed and "| train mean depth map |" in printed
    assert (run / "evaluation.json").is_file()

    out_json = tmp_path / "eval.json"
    args = ["evaluate", "--checkpoint", str(run), "--data", str(rooms), "--json", str(out_json)]
    assert main([*args, "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "| train median depth |" in printed and "Ground truth: rawDepths (holes" in printed
    assert "DBE at 48×64, θ = 1 px, on the edges of depths (hole-filled)" in printed
    assert set(json.loads(out_json.read_text())["rows"]) == ROWS
    assert main([*args[:5], "--ground-truth", "filled", "--quiet"]) == 0
    assert "Ground truth: depths (hole-filled)." in capsys.readouterr().out

    image = tmp_path / "photo.png"
    Image.fromarray(np.full((37, 53, 3), 90, np.uint8)).save(image)
    pred = tmp_path / "pred"
    assert main(["predict", str(image), "--checkpoint", str(run), "--out", str(pred)]) == 0
    assert read_depth_png(pred / "photo_depth.png").shape == (37, 53)
    (tmp_path / "bad.png").write_bytes(b"garbage")
    assert (
        main(["predict", str(tmp_path / "bad.png"), "--checkpoint", str(run), "--out", str(pred)])
        == 1
    )
    assert "bad.png" in capsys.readouterr().out


def test_cli_encoder_weights_of_another_encoder_exit_2(rooms, tmp_path, capsys):
    weights = save_encoder_weights(
        DepthUNetPlusPlus("resnet34", decoder_channels=(8,) * 5), tmp_path / "r34.safetensors"
    )
    argv = ["finetune", "--data", str(rooms), "--profile", "quick", "--quiet"]
    code = main([*argv, "--encoder-weights", str(weights), "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    assert "resnet34 encoder but the model uses tu-efficientnet_lite0" in err
    assert "depthlib finetune" in err


def test_cli_evaluate_run_without_checkpoint_exit_2(rooms, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    argv = ["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(rooms)]
    assert main(argv) == 2
    assert "Train first" in capsys.readouterr().err


def test_cli_finetune_interrupted_returns_130(rooms, tmp_path, monkeypatch):
    import depthlib.jobs.finetune as ft  # where the job calls the training loop

    real_fit = ft.fit

    def interrupted_fit(*args, **kw):
        result = real_fit(*args, **{**kw, "progress": False})
        result.stop_reason = "interrupted"
        return result

    monkeypatch.setattr(ft, "fit", interrupted_fit)
    argv = ["finetune", "--data", str(rooms), "--profile", "quick", "--epochs", "1", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "r")]) == 130
