"""Reliability: a killed or signalled training loses nothing; bad input gets a message, not a traceback.

The kill tests run a real training in a subprocess (this module is its script: ``child_main``),
``kill -9`` it mid-epoch, check the last checkpoint, resume in this process and compare the final
weights with an uninterrupted run bit for bit: same CPU, same torch, same seed, and the batch order
and RNG states are restored exactly, so nothing is allowed to differ.
"""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F

from depthlib.cli import main
from depthlib.data.folders import DenseDepthFolder, read_rgb
from depthlib.data.nyu import NYULabeled, write_labeled, write_splits
from depthlib.errors import DataError
from depthlib.profiles import TrainConfig
from depthlib.train import Task, fit
from depthlib.train.batches import epoch_loader
from depthlib.train.checkpoint import (
    CheckpointStore,
    load_checkpoint,
    load_state,
    model_spec,
)

N, BATCH, EPOCHS = 32, 8, 3  # 4 steps per epoch, 12 steps in all
KILL_AT_STEP = 6  # the second step of epoch 2: mid-epoch, after epoch_0001 was written


# ------------------------------------------------------------------ a tiny training, twice
class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.config = {}
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))

    def forward(self, x):
        return self.net(x)


class RandomRegression(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(11)
        self.x = torch.randn(N, 4, generator=g)
        self.y = self.x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class SlowTask(Task):
    """MSE; announces each step on stdout, then sleeps (longer at ``pause_at``), so a parent can
    signal it in the middle of a known step."""

    def __init__(self, sleep_s: float = 0.0, announce: bool = False, pause_at: int = 0):
        self.sleep_s, self.announce, self.pause_at, self.calls = sleep_s, announce, pause_at, 0

    def training_step(self, model, batch):
        self.calls += 1
        if self.announce:
            print(f"step {self.calls}", flush=True)
        if self.sleep_s:
            time.sleep(self.sleep_s * (40 if self.calls == self.pause_at else 1))
        return F.mse_loss(model(batch["x"]), batch["y"])


def train(out, *, resume=False, task=None, epochs=EPOCHS):
    torch.manual_seed(0)
    model = TinyNet()
    config = TrainConfig(epochs=epochs, lr=1e-2, warmup_epochs=0.5, seed=5)
    loader = epoch_loader(RandomRegression(), BATCH, seed=5)
    result = fit(
        model, task or SlowTask(), loader, config, out_dir=out, resume=resume, progress=False
    )
    return model, result


def child_main(out: str, sleep_s: float) -> int:
    """The subprocess' training; exit status 130 when stopped by a signal, as the CLI does."""
    torch.set_num_threads(2)
    _, result = train(out, task=SlowTask(sleep_s, announce=True, pause_at=KILL_AT_STEP))
    print(f"done {result.stop_reason} {result.step}", flush=True)
    return 130 if result.interrupted else 0


def start_child(out: Path) -> subprocess.Popen:
    code = (
        f"import sys; sys.path[:0] = [{str(Path(__file__).parent)!r}]; "
        f"import test_reliability as t; sys.exit(t.child_main({str(out)!r}, 0.03))"
    )
    env = os.environ | {"PYTHONPATH": str(Path(__file__).parents[1]), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip


def wait_for_step(proc: subprocess.Popen, step: int, timeout_s: float = 60.0) -> list[str]:
    """Read the child's stdout until it announces ``step``; its lines so far."""
    lines, t0 = [], time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            pytest.fail(f"training child ended early:\n{''.join(lines)}\n{proc.stderr.read()}")
        lines.append(line)
        if line.strip() == f"step {step}":
            return lines
    proc.kill()
    pytest.fail(f"training child did not reach step {step} in {timeout_s} s")


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted run the interrupted ones must reproduce."""
    model, result = train(tmp_path_factory.mktemp("straight") / "run")
    assert result.stop_reason == "completed" and result.step == EPOCHS * N // BATCH
    return model


def test_kill_9_mid_epoch_keeps_the_last_checkpoint_and_resume_is_exact(tmp_path, straight):
    out = tmp_path / "run"
    proc = start_child(out)
    wait_for_step(proc, KILL_AT_STEP)  # the child now sleeps inside step 6, epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    root = out / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["epoch_0001", "latest.json"]
    ckpt = load_checkpoint(out)  # intact: every file reads, with weights_only / safetensors
    assert ckpt.path.name == "epoch_0001" and ckpt.meta["step"] == 4 and ckpt.state["step"] == 4
    assert all(torch.isfinite(w).all() for w in ckpt.weights.values())
    assert ckpt.weights.keys() == TinyNet().state_dict().keys()

    task = SlowTask()
    resumed, result = train(out, resume=True, task=task)
    assert result.stop_reason == "completed" and task.calls == EPOCHS * N // BATCH - 4
    assert same_weights(resumed, straight)  # bitwise: same batches, RNG and optimizer state
    assert [row["epoch"] for row in result.history] == [1, 2, 3]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_mid_epoch_checkpoints_and_exits_cleanly(tmp_path, straight, sig):
    out = tmp_path / "run"
    proc = start_child(out)
    wait_for_step(proc, KILL_AT_STEP)
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"Stopped by {sig.name} at step {KILL_AT_STEP}" in stdout
    assert f"done interrupted {KILL_AT_STEP}" in stdout  # fit returned, it did not raise
    state = load_state(out / "checkpoints" / f"step_{KILL_AT_STEP:08d}" / "state.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (KILL_AT_STEP, 1, 2)

    resumed, result = train(out, resume=True)
    assert result.stop_reason == "completed" and same_weights(resumed, straight)


# ------------------------------------------------------------------ bad input through the CLI
def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") <= 1  # one paragraph
    return code, err


def labeled_file(path: Path, n: int = 4, nan_depth: bool = False, compression=None) -> Path:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, 8, 10, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 5.0, (n, 8, 10)).astype(np.float32)
    if nan_depth:
        depths[:, :2] = np.nan
    return write_labeled(path, images, depths, compression=compression)


def test_cli_corrupt_dataset_file(tmp_path, capsys):
    path = tmp_path / "labeled.mat"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    code, err = run_cli(capsys, "info", path)
    assert code == 2 and "is not an HDF5 file" in err and "depthlib synth" in err


def test_cli_missing_dataset_file_for_finetune(tmp_path, capsys):
    code, err = run_cli(
        capsys, "finetune", "--data", tmp_path / "nope.mat", "--out", tmp_path / "r"
    )
    assert code == 2 and "No dataset at" in err and "nyu_depth_v2_labeled.mat" in err


def test_cli_hdf5_with_wrong_keys(tmp_path, capsys):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["rgb"] = np.zeros((2, 3, 4, 4), np.uint8)
        f["depth"] = np.zeros((2, 4, 4), np.float32)
    code, err = run_cli(capsys, "info", path)
    assert code == 2 and "has no images or depths dataset" in err and "['depth', 'rgb']" in err


def test_cli_split_indices_out_of_range(tmp_path, capsys):
    path = labeled_file(tmp_path / "set.mat")
    write_splits(tmp_path / "set_splits.mat", [0, 1], [2, 9])  # image 10 of 4
    code, err = run_cli(capsys, "info", path)
    assert code == 2 and "testNdxs has 1 indices outside 1..4" in err and "[10]" in err


def test_cli_info_on_an_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(capsys, "info", tmp_path / "empty")
    assert code == 2 and "is a folder" in err and "nyu_depth_v2_labeled.mat" in err
    assert "There is none in it" in err and "depthlib synth" in err


def test_nan_depth_pixels_are_invalid_in_reader_and_info(tmp_path, capsys):
    path = labeled_file(tmp_path / "nan.mat", nan_depth=True)
    sample = NYULabeled(path, split="all")[0]
    assert not sample["valid"][:2].any() and sample["valid"][2:].all()
    assert np.all(sample["depth"][:2] == 0) and np.isfinite(sample["depth"]).all()
    assert main(["info", str(path)]) == 0
    depth_line = next(x for x in capsys.readouterr().out.splitlines() if "depth over" in x)
    assert "min 0.5" in depth_line and "nan" not in depth_line  # statistics of valid pixels only
    assert "holes 25.0%" in depth_line  # the two NaN rows of eight count as holes


def test_output_folder_under_a_regular_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    code, err = run_cli(
        capsys, "predict", image, "--checkpoint", tmp_path, "--out", blocker / "out"
    )
    assert code == 2 and "Cannot write to the output folder" in err and "--out" in err


def test_pickle_checkpoints_are_refused_by_the_cli_without_running_them(tmp_path, capsys, boom):
    marker = tmp_path / "executed"
    run = tmp_path / "run"
    train(run, epochs=1)
    torch.save({"evil": boom(marker)}, run / "checkpoints" / "epoch_0001" / "state.pt")
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump(boom(marker), f)
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for checkpoint in (run, tmp_path / "model.pkl"):
        code, err = run_cli(
            capsys, "predict", image, "--checkpoint", checkpoint, "--out", tmp_path / "o"
        )
        assert code == 2 and "never unpickles" in err
        code, err = run_cli(
            capsys, "evaluate", "--checkpoint", checkpoint, "--data", tmp_path / "x.mat"
        )
        assert code == 2 and "never unpickles" in err
    assert not marker.exists()


# ------------------------------------------------------------------ images of every kind
def save_pair(folder: Path, name: str, rgb_image: Image.Image | bytes) -> str:
    rgb_path, depth_path = folder / f"{name}.png", folder / f"{name}_depth.png"
    if isinstance(rgb_image, bytes):
        rgb_path.write_bytes(rgb_image)
    else:
        rgb_image.save(rgb_path)
    Image.fromarray(np.full((6, 8), 1500, np.uint16)).save(depth_path)
    return f"{rgb_path.name},{depth_path.name}"


def test_greyscale_rgba_and_palette_images_become_rgb(tmp_path):
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    rgba = np.dstack([np.full((6, 8), c, np.uint8) for c in (10, 20, 30, 0)])  # transparent
    images = {
        "grey": Image.fromarray(grey),
        "rgba": Image.fromarray(rgba, "RGBA"),
        "palette": Image.fromarray(np.dstack([grey] * 3)).convert("P"),
        "grey16": Image.fromarray(grey.astype(np.uint16) * 257),  # 16-bit: not clipped at 255
    }
    lines = [save_pair(tmp_path, name, img) for name, img in images.items()]
    (tmp_path / "list.csv").write_text("\n".join(lines) + "\n")
    data = DenseDepthFolder(tmp_path / "list.csv")
    grey_s, rgba_s, palette_s, grey16_s = (data[i] for i in range(4))
    for s in (grey_s, rgba_s, palette_s, grey16_s):
        assert s["rgb"].shape == (6, 8, 3) and s["rgb"].dtype == np.uint8
    assert np.array_equal(grey_s["rgb"], np.dstack([grey] * 3))
    assert np.array_equal(grey16_s["rgb"], grey_s["rgb"])
    assert np.array_equal(rgba_s["rgb"][0, 0], [10, 20, 30])  # alpha dropped, colour kept
    assert np.allclose(grey_s["depth"], 1.5) and grey_s["valid"].all()


@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not an image\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["text", "truncated-png"],
)
def test_a_file_that_is_not_an_image_is_a_data_error(tmp_path, content):
    line = save_pair(tmp_path, "bad", content)
    (tmp_path / "list.csv").write_text(line + "\n")
    data = DenseDepthFolder(tmp_path / "list.csv")
    with pytest.raises(DataError, match=r"bad\.png is not a readable image.*PNG or JPEG"):
        data[0]
    with pytest.raises(DataError, match="No image file at"):
        read_rgb(tmp_path / "missing.png")


def test_cli_evaluate_skips_and_counts_all_invalid_depth_maps(tmp_path, capsys):
    """NaN pixels are invalid; an image with no valid pixel is skipped and counted, not averaged."""
    from depthlib.depth.unetpp import (
        DepthUNetPlusPlus,  # here: the training child need not import smp
    )

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 5.0, (6, 32, 32)).astype(np.float32)
    depths[4] = np.nan  # a test image without a single valid pixel
    depths[5, :16] = np.nan  # half of another
    data = write_labeled(tmp_path / "set.mat", images, depths, compression=None)
    write_splits(tmp_path / "set_splits.mat", [0, 1, 2], [3, 4, 5])
    torch.manual_seed(0)
    model = DepthUNetPlusPlus(decoder_channels=(8, 8, 8, 8, 8))
    meta = {"step": 0, "epoch": 0, "model": model_spec(model)}  # an untrained model is enough
    CheckpointStore(tmp_path / "run" / "checkpoints").save(
        "epoch_0000", model.state_dict(), {}, meta
    )

    code = main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--data", str(data), "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    model_row = [line for line in out.splitlines() if line.startswith("| model |")][1]
    assert model_row.endswith("| 2 (1 skipped) |") and "nan" not in model_row.lower()


def test_cli_resume_with_another_encoder_names_the_mismatch(tmp_path, capsys):
    from depthlib.depth.unetpp import DepthUNetPlusPlus

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
    depths = rng.uniform(0.5, 5.0, (16, 32, 32)).astype(np.float32)
    data = write_labeled(tmp_path / "set.mat", images, depths, compression=None)
    write_splits(tmp_path / "set_splits.mat", list(range(12)), [12, 13, 14, 15])
    model = DepthUNetPlusPlus("resnet18", decoder_channels=(8, 8, 8, 8, 8))
    meta = {"step": 2, "epoch": 1, "model": model_spec(model)}
    store = CheckpointStore(tmp_path / "run" / "checkpoints")
    store.save("epoch_0001", model.state_dict(), {}, meta)
    argv = ["finetune", "--data", data, "--out", tmp_path / "run", "--resume", "--quiet"]
    code, err = run_cli(capsys, *argv, "--encoder", "resnet34", "--profile", "quick")
    assert code == 2 and "does not match this model" in err and "missing key" in err
    assert "'encoder': 'resnet18'" in err and "choose the matching checkpoint" in err


@pytest.mark.parametrize("damage", ["truncate", "scribble"])
def test_cli_truncated_or_damaged_hdf5_file(tmp_path, capsys, damage):
    """A download cut short or a bad copy: a message saying so, whichever part is broken."""
    path = labeled_file(tmp_path / "set.mat", compression="gzip")  # gzip notices scribbles
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) * 9 // 10]
    else:  # random bytes over most of the compressed image and depth chunks
        start, stop = len(data) * 4 // 10, len(data) * 9 // 10
        data[start:stop] = np.random.default_rng(0).bytes(stop - start)
    path.write_bytes(bytes(data))
    code, err = run_cli(capsys, "info", path)
    assert code == 2 and "truncated or damaged" in err and "Download or copy it again" in err
