"""Checkpoint folders: atomic writes, weights_only loading, pickle refusal, mismatches, retention."""

import json
import pickle
import random

import numpy as np
import pytest
import torch
from torch import nn

import depthlib.train.checkpoint as ckpt_mod
from depthlib.atomic import atomic_write, atomic_write_text, ensure_writable_dir
from depthlib.errors import CheckpointError, ConfigError
from depthlib.train.checkpoint import (
    CheckpointStore,
    load_checkpoint,
    load_state,
    model_spec,
    resolve_checkpoint,
    save_checkpoint,
)
from depthlib.train.rng import capture_rng_state, restore_rng_state


class Small(nn.Module):
    def __init__(self, width=8, head=1):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width), nn.ReLU())
        self.head = nn.Conv2d(width, head, 1)

    def forward(self, x):
        return self.head(self.body(x))


class Other(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 1)


def trained_optimizer(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 8, 8)).mean().backward()
    opt.step()
    return opt


def write(store, name, model, step, epoch=1, **extra):
    opt = trained_optimizer(model)
    state = {
        "optimizer": opt.state_dict(),
        "rng": capture_rng_state(),
        "step": step,
        "epoch": epoch,
    }
    meta = {"step": step, "epoch": epoch, "model": model_spec(model)} | extra
    return store.save(name, model.state_dict(), state, meta)


# ------------------------------------------------------------------ atomic writes
def test_atomic_write_failing_mid_write_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "latest.json"
    atomic_write_text(target, "old")

    def half_then_fail(f):
        f.write(b"new but incomplete")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json"]
    with pytest.raises(OSError):
        atomic_write(tmp_path / "fresh.bin", half_then_fail)
    assert not (tmp_path / "fresh.bin").exists()


def test_checkpoint_failing_mid_save_leaves_previous_checkpoint_only(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    first = write(store, "epoch_0001", Small(), step=4)

    def partial_save(obj, f):
        f.write(b"PK\x03\x04 truncated")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(ckpt_mod.torch, "save", partial_save)
    with pytest.raises(RuntimeError, match="killed"):
        write(store, "epoch_0002", Small(), step=8, epoch=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["epoch_0001", "latest.json"]
    assert store.latest() == first and load_checkpoint(tmp_path).meta["step"] == 4


def test_leftovers_of_a_killed_save_are_ignored_then_removed(tmp_path):
    store = CheckpointStore(tmp_path)
    write(store, "epoch_0001", Small(), step=4)
    stale = tmp_path / ".tmp-epoch_0002-abc"
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"half")
    (tmp_path / "latest.json").unlink()  # even without the pointer: only complete folders count
    assert store.latest().name == "epoch_0001"
    write(store, "epoch_0002", Small(), step=8, epoch=2)
    assert not stale.exists()


# ------------------------------------------------------------------ format and loading
def test_state_loads_with_weights_only_and_round_trips(tmp_path):
    model = Small()
    opt = trained_optimizer(model)
    folder = save_checkpoint(
        tmp_path / "epoch_0001",
        model.state_dict(),
        {"optimizer": opt.state_dict(), "rng": capture_rng_state(), "step": 1, "epoch": 1},
        {"step": 1, "epoch": 1, "model": model_spec(model, {"width": 8})},
    )
    assert sorted(p.name for p in folder.iterdir()) == [
        "meta.json",
        "model.safetensors",
        "state.pt",
    ]
    state = torch.load(folder / "state.pt", weights_only=True)
    assert state["step"] == 1 and set(state["rng"]) >= {"torch", "numpy", "python"}

    loaded = load_checkpoint(folder)
    fresh = Small()
    loaded.restore_model(fresh)
    for (k, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    new_opt = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    new_opt.load_state_dict(loaded.state["optimizer"])
    for s_old, s_new in zip(opt.state.values(), new_opt.state.values(), strict=True):
        assert all(torch.equal(s_old[k], s_new[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert loaded.meta["model"]["config"] == {"width": 8}
    assert loaded.meta["model"]["class"].endswith("test_checkpoint.Small")


def test_rng_state_round_trip_for_torch_numpy_python():
    torch.manual_seed(1)
    np.random.seed(1)  # noqa: NPY002
    random.seed(1)
    np.random.standard_normal()  # noqa: NPY002 -- leaves a cached gaussian in the state
    state = capture_rng_state()
    first = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))  # noqa: NPY002
    restore_rng_state(state)
    again = (torch.rand(3), np.random.rand(3), random.random(), random.gauss(0, 1))  # noqa: NPY002
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1])
    assert first[2:] == again[2:]


def test_pickle_checkpoints_are_refused_without_executing_them(tmp_path, boom):
    marker = tmp_path / "executed"
    folder = write(CheckpointStore(tmp_path / "run" / "checkpoints"), "epoch_0001", Small(), 4)
    torch.save({"evil": boom(marker)}, folder / "state.pt")
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_checkpoint(tmp_path / "run")
    # a whole module saved with torch.save, and a plain pickle, passed as "the checkpoint"
    torch.save(Small(), tmp_path / "model.pth")
    with open(tmp_path / "plain.pkl", "wb") as f:
        pickle.dump(boom(marker), f)
    for path in (tmp_path / "model.pth", tmp_path / "plain.pkl"):
        with pytest.raises(CheckpointError, match="never unpickles"):
            load_checkpoint(path)
    assert not marker.exists()


def test_damaged_files_give_a_clear_error(tmp_path):
    folder = write(CheckpointStore(tmp_path), "epoch_0001", Small(), 4)
    data = (folder / "state.pt").read_bytes()
    (folder / "state.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or damaged"):
        load_state(folder / "state.pt")
    (folder / "model.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="safetensors"):
        load_checkpoint(folder)


def test_state_that_needs_pickling_is_rejected_at_save_time(tmp_path):
    with pytest.raises(TypeError, match="weights_only"):
        save_checkpoint(tmp_path / "x", {}, {"sched": object()}, {})
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ mismatches
def test_other_width_or_architecture_names_the_mismatch(tmp_path):
    folder = write(CheckpointStore(tmp_path), "epoch_0001", Small(width=8), 4)
    ckpt = load_checkpoint(folder)
    with pytest.raises(
        CheckpointError, match=r"shape mismatch.*body\.0\.weight: file \(8, 3, 3, 3\)"
    ):
        ckpt.restore_model(Small(width=16))
    with pytest.raises(CheckpointError, match=r"missing key.*fc\.weight.*unexpected key") as err:
        ckpt.restore_model(Other())
    assert "written for" in str(err.value) and "Small" in str(err.value)


def test_tied_weights_are_saved(tmp_path):
    model = Other()
    model.tied = model.fc  # the same parameters under two names
    save_checkpoint(tmp_path / "c", model.state_dict(), {}, {})
    assert set(load_checkpoint(tmp_path / "c").weights) == {
        "fc.weight",
        "fc.bias",
        "tied.weight",
        "tied.bias",
    }


# ------------------------------------------------------------------ finding checkpoints
def test_resolve_accepts_run_store_folder_and_inner_file(tmp_path):
    store = CheckpointStore(tmp_path / "run" / "checkpoints")
    folder = write(store, "epoch_0001", Small(), 4)
    for path in (tmp_path / "run", store.root, folder, folder / "model.safetensors"):
        assert resolve_checkpoint(path) == folder
    with pytest.raises(CheckpointError, match="No checkpoint at"):
        resolve_checkpoint(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="No best checkpoint"):
        resolve_checkpoint(tmp_path / "run", which="best")
    (tmp_path / "weights.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="single file"):
        resolve_checkpoint(tmp_path / "weights.safetensors")


def test_retention_drops_old_epochs_and_superseded_step_checkpoints(tmp_path):
    store = CheckpointStore(tmp_path, keep_last=2)
    write(store, "epoch_0001", Small(), 4)
    store.save("epoch_0002", Small().state_dict(), {"step": 8}, {"step": 8, "epoch": 2}, best=True)
    write(store, "step_00000010", Small(), 10, epoch=2)
    assert {p.name for p in tmp_path.iterdir() if p.is_dir()} == {
        "epoch_0001",
        "epoch_0002",
        "step_00000010",
    }
    write(store, "epoch_0003", Small(), 12, epoch=3)
    write(store, "epoch_0004", Small(), 16, epoch=4)
    assert {p.name for p in tmp_path.iterdir() if p.is_dir()} == {
        "epoch_0002",
        "epoch_0003",
        "epoch_0004",
    }
    assert store.best().name == "epoch_0002" and store.latest().name == "epoch_0004"
    assert json.loads((tmp_path / "latest.json").read_text()) == {
        "step": 16,
        "epoch": 4,
        "name": "epoch_0004",
    }


def test_unwritable_folder_is_a_config_error(tmp_path, read_only_dir):
    (tmp_path / "file").write_text("x")  # under a regular file mkdir fails, even for root
    with pytest.raises(ConfigError, match="Choose a folder you can write to"):
        ensure_writable_dir(tmp_path / "file" / "run")
    with pytest.raises(
        ConfigError, match=r"Cannot write to the output folder .*locked \(Permission"
    ):
        ensure_writable_dir(read_only_dir)
    assert list(read_only_dir.iterdir()) == []
    assert ensure_writable_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert list((tmp_path / "new" / "run").iterdir()) == []  # the probe file is removed


def test_build_model_rebuilds_allowed_classes_only(tmp_path):
    model = Small(width=4)
    model.config = {"width": 4}
    folder = save_checkpoint(tmp_path / "c", model.state_dict(), {}, {"model": model_spec(model)})
    ckpt = load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="only depthlib.depth., depthlib.spark. classes"):
        ckpt.build_model()  # this test module is not part of depthlib
    jobs = {"model": {"class": "depthlib.jobs.finetune.build_model", "config": {}}}
    with pytest.raises(
        CheckpointError, match="does not say how to rebuild"
    ):  # the model layers only
        load_checkpoint(save_checkpoint(tmp_path / "j", model.state_dict(), {}, jobs)).build_model()
    rebuilt = ckpt.build_model(allowed_prefixes=(__name__,))
    assert isinstance(rebuilt, Small) and torch.equal(rebuilt.head.weight, model.head.weight)
