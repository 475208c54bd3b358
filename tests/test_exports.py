"""NYU's training exports, written tiny here in their real layouts: BTS's "sync" tree with its two
list files, and DenseDepth's nyu_data.zip layout (8-bit train depth, 16-bit test depth)."""

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from depthlib.cli import main
from depthlib.data import folders
from depthlib.data.dataset import DepthDataset, open_depth_dataset, open_splits
from depthlib.data.folders import BTSFolder, DenseDepthFolder, read_depth_png
from depthlib.data.info import dataset_summary
from depthlib.data.transforms import Augment
from depthlib.errors import DataError
from depthlib.jobs.finetune import depth_batches, finetune

H, W = 48, 64
BTS_TRAIN, BTS_TEST = "nyudepthv2_train_files_with_gt.txt", "nyudepthv2_test_files_with_gt.txt"


def ramp(seed: int) -> np.ndarray:
    """Depth in metres that changes along both axes (1-4 m), different per image."""
    rows, cols = np.mgrid[0:H, 0:W]
    return (1.0 + 2.0 * rows / (H - 1) + 0.8 * cols / (W - 1) + 0.1 * (seed % 3)).astype(np.float32)


def write_pair(rgb_path: Path, depth_path: Path, seed: int, bits: int = 16, hole: bool = False):
    rgb_path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(rgb_path)
    depth = ramp(seed)
    if bits == 16:
        stored = np.rint(depth * 1000).astype(np.uint16)
    else:  # DenseDepth's train depth: value / 255 x 10 m
        stored = np.rint(depth / 10 * 255).astype(np.uint8)
    if hole:
        stored[0, 0] = 0
    Image.fromarray(stored).save(depth_path)


def bts_tree(root: Path, n_train: int = 18, n_test: int = 6) -> Path:
    """root/sync/<scene>/rgb_N.jpg + sync_depth_N.png, root/official_splits/test/..., two lists."""
    train_lines, test_lines = [], []
    for i in range(n_train):
        scene = f"kitchen_{i % 3:04d}"
        write_pair(root / "sync" / scene / f"rgb_{i:05d}.jpg",
                   root / "sync" / scene / f"sync_depth_{i:05d}.png", i, hole=True)  # fmt: skip
        train_lines.append(f"/{scene}/rgb_{i:05d}.jpg /{scene}/sync_depth_{i:05d}.png 518.8579")
    for i in range(n_test):
        base = root / "official_splits" / "test" / "bathroom"
        write_pair(base / f"rgb_{i:05d}.jpg", base / f"sync_depth_{i:05d}.png", 100 + i)
        test_lines.append(f"bathroom/rgb_{i:05d}.jpg bathroom/sync_depth_{i:05d}.png 518.8579")
    (root / BTS_TRAIN).write_text("\n".join(train_lines) + "\n")
    (root / BTS_TEST).write_text("\n".join(test_lines) + "\n")
    return root / BTS_TRAIN


def densedepth_zip(root: Path, n_train: int = 18, n_test: int = 6) -> Path:
    """root/data/nyu2_train/<scene>_out/N.jpg + N.png (8-bit), root/data/nyu2_test (16-bit)."""
    data, rows = root / "data", []
    for i in range(n_train):
        folder = f"data/nyu2_train/living_room_{i % 2:04d}_out"
        write_pair(root / folder / f"{i}.jpg", root / folder / f"{i}.png", i, bits=8)
        rows.append(f"{folder}/{i}.jpg,{folder}/{i}.png")
    (data / "nyu2_train.csv").write_text("\n".join(rows) + "\n")
    rows = []
    for i in range(n_test):
        stem = f"data/nyu2_test/{i:05d}"
        write_pair(root / f"{stem}_colors.png", root / f"{stem}_depth.png", 200 + i)
        rows.append(f"{stem}_colors.png,{stem}_depth.png")
    (data / "nyu2_test.csv").write_text("\n".join(rows) + "\n")
    return data / "nyu2_train.csv"


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return bts_tree(root / "bts"), densedepth_zip(root / "densedepth")


def test_depth_reads_back_in_metres_at_each_exports_own_scale(exports):
    bts, dense = exports
    train = DenseDepthFolder(dense)
    assert train.depth_scale == "densedepth-8bit" and len(train) == 18
    np.testing.assert_allclose(train[4]["depth"], ramp(4), atol=10 / 255 / 2 + 1e-6)
    test = DenseDepthFolder(dense.with_name("nyu2_test.csv"))
    assert test.depth_scale == "mm"
    np.testing.assert_allclose(test[1]["depth"], ramp(201), atol=5e-4)
    sync = BTSFolder(bts)
    sample = sync[2]
    np.testing.assert_allclose(sample["depth"][1:, 1:], ramp(2)[1:, 1:], atol=5e-4)
    assert not sample["valid"][0, 0] and sample["valid"][1:, 1:].all()  # 0 = hole, one corner
    assert sample["depth"][H - 1, 1] > sample["depth"][0, 1]  # orientation: far at the bottom


def test_a_folder_export_is_scored_on_its_one_depth_and_refuses_a_ground_truth(exports):
    from depthlib.errors import ConfigError
    from depthlib.jobs.evaluate import evaluate

    class Flat(torch.nn.Module):
        def predict(self, images):
            return torch.full((len(images), 1, *images.shape[2:]), 2.0)

    test_csv = exports[1].with_name("nyu2_test.csv")
    result = evaluate(Flat(), test_csv, baselines=False, progress=False)
    own = "the export's own depth (DenseDepthFolder, 0 = hole)"
    assert result["ground_truth"] == own and result["table"].startswith(f"Ground truth: {own}.")
    for kind in ("raw", "filled"):
        with pytest.raises(ConfigError, match="folder export .* Leave --ground-truth out"):
            evaluate(Flat(), test_csv, ground_truth=kind, baselines=False, progress=False)


def test_a_wrong_bit_depth_for_the_scale_stays_an_error(exports, tmp_path):
    bts, dense = exports
    with pytest.raises(DataError, match="8-bit greyscale PNG, but this list's depth scale 'mm'"):
        DenseDepthFolder(dense, depth_scale="mm")  # DenseDepth's train depth is 8-bit
    with pytest.raises(DataError, match="16-bit"):
        read_depth_png(
            bts.parent / "sync" / "kitchen_0000" / "sync_depth_00000.png", "densedepth-8bit"
        )
    with pytest.raises(DataError, match="depth_scale must be one of"):
        read_depth_png(bts, "cm")


def test_a_train_list_finds_its_test_list_and_a_lone_list_says_what_to_pass(exports, tmp_path):
    bts, dense = exports
    train, test = open_splits(bts)
    assert len(train) == 18 and len(test) == 6
    assert open_splits(dense)[1].list_path.name == "nyu2_test.csv"
    lone = tmp_path / "mine_train.csv"
    lone.write_text(dense.read_text().replace("data/", str(dense.parent) + "/"))
    with pytest.raises(DataError, match="--test-data"):
        open_splits(lone)


@pytest.mark.parametrize("kind", ["bts", "densedepth"])
def test_a_quick_finetune_streams_from_each_export_end_to_end(exports, kind, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHLIB_DATA", str(tmp_path / "data"))
    train_list = dict(zip(("bts", "densedepth"), exports, strict=True))[kind]
    result = finetune(train_list, "quick", out=tmp_path / "run", epochs=1, batch_size=4,
                      progress=False)  # fmt: skip
    assert result.train.stop_reason == "completed" and result.train.step == 4  # 16 train / 4
    rows = result.evaluation["rows"]
    assert rows["model"]["n_images"] == 6 and not result.evaluation["notes"]
    mean_map = rows["train mean depth map"]  # fitted on the train list: the ramps' mean
    assert mean_map["abs_rel"] < 0.1 and mean_map["delta1"] > 0.9
    saved = json.loads((tmp_path / "run" / "evaluation.json").read_text())
    assert saved["data"].endswith(("nyu2_test.csv", BTS_TEST))


def test_streaming_never_holds_the_set_and_reads_each_sample_once(tmp_path, monkeypatch):
    n = 2000
    lines = []
    for i in range(n):
        write_pair(tmp_path / "s" / f"rgb_{i}.jpg", tmp_path / "s" / f"d_{i}.png", i)
        lines.append(f"s/rgb_{i}.jpg s/d_{i}.png")
    (tmp_path / "list.txt").write_text("\n".join(lines))
    reader = open_depth_dataset(tmp_path / "list.txt")
    reads = []
    real = folders.read_rgb
    monkeypatch.setattr(folders, "read_rgb", lambda p: reads.append(p) or real(p))
    data = DepthDataset(reader, augment=Augment(crop=(32, 48)), seed=0)
    assert data.tensors is None
    loader = depth_batches(data, 8, seed=0)
    whole_set = n * H * W * (3 + 4 + 1)  # what preloading would hold: 49 MB
    tracemalloc.start()
    for step, batch in enumerate(loader, start=1):
        assert batch["rgb"].shape == (8, 3, 32, 48)
        assert len(reads) == 8 * step  # one decode per sample, as the batch is made
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(set(reads)) == n and peak < whole_set / 10, (peak, whole_set)


def test_info_reads_a_folder_export(exports, capsys):
    bts, dense = exports
    s = dataset_summary(dense)
    assert s["n_pairs"] == 18 and (s["height"], s["width"]) == (H, W)
    assert s["depth_scale"] == "densedepth-8bit" and s["test_list"].endswith("nyu2_test.csv")
    assert 1.0 <= s["depth_min"] < s["depth_max"] <= 4.2
    assert main(["info", str(bts)]) == 0
    out = capsys.readouterr().out
    assert "BTSFolder list of 18 pairs of 48x64" in out and "depth scale mm" in out
    assert dataset_summary(bts)["raw_hole_fraction"] == pytest.approx(1 / (H * W))  # one per image


def test_the_real_photo_benchmark_scores_runs_and_a_constant_map(
    exports, tmp_path, monkeypatch, capsys
):
    """benchmarks/bench_real_photos.py on a tiny DenseDepth test export: each run and the train
    baselines, metric and median-scaled; the median-scaled constant map checked by hand."""
    import runpy
    import sys

    from depthlib.depth.metrics import compute_metrics

    monkeypatch.setenv("DEPTHLIB_DATA", str(tmp_path / "data"))
    train_list = exports[1]
    run = tmp_path / "run"
    finetune(train_list, "quick", out=run, epochs=1, batch_size=4, final_eval=False,
             progress=False)  # fmt: skip
    test_csv = train_list.with_name("nyu2_test.csv")
    out, fig = tmp_path / "real.json", tmp_path / "real.png"
    argv = ["bench_real_photos.py", "--data", str(test_csv), "--run", f"mine={run}",
            "--out", str(out), "--figure", str(fig)]  # fmt: skip
    bench = str(Path(__file__).resolve().parents[1] / "benchmarks" / "bench_real_photos.py")
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    runpy.run_path(bench, run_name="__main__")
    record = json.loads(out.read_text())
    rows = record["rows"]
    assert {"mine (metric)", "mine (median-scaled)", "train median depth (median-scaled)",
            "train mean depth map (metric)"} <= set(rows)  # fmt: skip
    assert rows["mine (metric)"]["n_images"] == 6 and fig.is_file()
    assert (
        record["data"]["file"] == "nyu2_test.csv"
        and record["data"]["train_data"] == train_list.name
    )
    test = DenseDepthFolder(test_csv)
    by_hand = [compute_metrics(np.full_like(s["depth"], np.median(s["depth"])), s["depth"])["delta1"]
               for s in (test[i] for i in range(len(test)))]  # fmt: skip
    constant = rows["train median depth (median-scaled)"]["delta1"]
    assert constant == pytest.approx(np.mean(by_hand))
    monkeypatch.setattr(sys, "argv", [*argv[:3], "--run", str(run), *argv[5:]])  # no NAME=
    with pytest.raises(SystemExit):
        runpy.run_path(bench, run_name="__main__")
    assert "--run takes NAME=RUN_DIR" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit, match="--overwrite"):  # a measurement is not replaced silently
        runpy.run_path(bench, run_name="__main__")
