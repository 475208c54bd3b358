"""Gaps found by trying the course as a new user: overwriting named files, baselines that cannot
be fitted, split files that do not fit, progress in log files, memory that does not fit, and
micro-batches that must train the very model the whole batch would."""

import io
import sys

import h5py
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from depthlib import progress
from depthlib.cli import main
from depthlib.data.info import dataset_summary, format_dataset_summary
from depthlib.data.nyu import write_labeled, write_splits
from depthlib.errors import ConfigError
from depthlib.profiles import TrainConfig
from depthlib.train import Task, epoch_loader, fit, memory


def labeled(path, n=6, train=(0, 1, 2), test=(3, 4, 5), zero_train=False):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    depths = rng.uniform(1.0, 4.0, (n, 32, 32)).astype(np.float32)
    if zero_train:
        depths[list(train)] = 0.0  # e.g. a partly extracted file
    write_labeled(path, images, depths)
    write_splits(path.with_name(f"{path.stem}_splits.mat"), np.array(train), np.array(test))
    return path


def test_synth_refuses_to_overwrite_a_file_without_overwrite(tmp_path, capsys):
    out = tmp_path / "nyu_depth_v2_labeled.mat"
    out.write_bytes(b"the 2.8 GB download")
    args = ["synth", "--out", str(out), "--profile", "quick", "--n", "4", "--quiet"]
    assert main(args) == 2
    assert (
        "already exists" in capsys.readouterr().err and out.read_bytes() == b"the 2.8 GB download"
    )
    assert main([*args, "--overwrite", "--workers", "1"]) == 0 and h5py.is_hdf5(out)


def test_evaluate_scores_the_model_when_no_baseline_can_be_fitted(tmp_path):
    from depthlib.depth.unetpp import DepthUNetPlusPlus
    from depthlib.jobs.evaluate import evaluate

    data = labeled(tmp_path / "partial.mat", zero_train=True)
    model = DepthUNetPlusPlus("resnet18", 3, (8, 8, 8))
    result = evaluate(model, data, "test", progress=False, boundaries=False)
    assert set(result["rows"]) == {"model"} and result["rows"]["model"]["n_images"] == 3
    assert any(
        "no baselines" in note and "No valid training depth" in note for note in result["notes"]
    )


def test_info_prints_what_the_file_holds_and_warns_about_the_split(tmp_path):
    data = labeled(tmp_path / "f.mat")
    write_splits(data.with_name("f_splits.mat"), np.array([0, 1, 9]), np.array([3]))  # 10 > 6
    summary = dataset_summary(data)
    assert summary["n_images"] == 6 and summary["depth_min"] >= 1.0
    text = format_dataset_summary(summary)
    assert "6 images of 32x32" in text and "split file problem" in text and "outside 1..6" in text


def test_progress_in_a_log_file_is_a_line_per_tenth(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    bar = progress.progress_bar(total=200, desc="epoch 1/1", unit="step")
    for _ in range(200):
        bar.update(1)
    bar.set_postfix(loss="0.5")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 10 and "\r" not in stream.getvalue()
    assert lines[0].startswith("epoch 1/1:  10% 20/200 step") and lines[-1].startswith(
        "epoch 1/1: 100%"
    )


class Ramp(Dataset):
    def __init__(self, n=16):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 8, 8, generator=g)
        self.y = torch.rand(n, 1, 8, 8, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class L1Task(Task):
    """A per-sample mean: the mean of two micro-batch means is the batch's mean."""

    def training_step(self, model, batch):
        return (model(batch["x"]) - batch["y"]).abs().mean()


def _trained(micro_batch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))
    config = TrainConfig(epochs=2, lr=1e-2, grad_clip=None, batch_size=8, micro_batch=micro_batch)
    result = fit(model, L1Task(), epoch_loader(Ramp(), micro_batch, seed=1), config, progress=False)
    return model, result


def test_micro_batches_train_the_model_the_whole_batch_would():
    whole, one = _trained(8)
    micro, many = _trained(4)
    assert one.step == many.step == 4  # optimizer steps, not micro-batches
    for a, b in zip(whole.parameters(), micro.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="micro_batch must be None, 'auto' or a divisor"):
        TrainConfig(batch_size=8, micro_batch=3)


def test_the_memory_plan_picks_a_micro_batch_that_fits_or_says_so(monkeypatch):
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 1, 1))
    example = torch.zeros(1, 3, 64, 64)
    one, fixed = memory.step_bytes(model, example, 1)
    assert one == 2 * 4 * (16 + 16 + 1) * 64 * 64  # three outputs of one image, kept twice
    monkeypatch.setattr(memory, "available_bytes", lambda device: int((5 * one + fixed) / 0.8))
    cpu = torch.device("cpu")
    assert memory.choose_micro_batch(model, example, 32, "auto", cpu)[0] == 4  # 8 would not fit
    with pytest.raises(ConfigError, match=r"--micro-batch 4 \(or --micro-batch auto\)"):
        memory.choose_micro_batch(model, example, 32, None, cpu)
    with pytest.raises(ConfigError, match="must divide the batch size 32"):
        memory.choose_micro_batch(model, example, 32, 5, cpu)
    monkeypatch.setattr(memory, "available_bytes", lambda device: fixed)
    with pytest.raises(ConfigError, match="Even one image"):
        memory.choose_micro_batch(model, example, 32, "auto", cpu)
