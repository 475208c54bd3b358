"""depthlib.weights: a path or a mapping in, safetensors only, one pickle refusal, strict keys."""

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from depthlib.errors import CheckpointError, ConfigError
from depthlib.weights import load_into, load_weights, read_weights, save_weights


def small() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))


def test_a_str_path_a_pathlike_or_a_mapping_loads_and_anything_else_is_refused(tmp_path):
    torch.manual_seed(0)
    source = small()
    path = save_weights(tmp_path / "w.safetensors", source.state_dict(), {"note": "hi"})
    assert read_weights(path)[1]["note"] == "hi" and read_weights(source.state_dict())[1] == {}
    for given in (str(path), path, source.state_dict()):
        target = small()
        assert load_into(target, given).ok
        assert torch.equal(target[0].weight, source[0].weight)
    for bad in (["w.safetensors"], 3, None):
        with pytest.raises(ConfigError, match="path \\(str or os.PathLike\\).*or a mapping"):
            load_into(small(), bad)
    with pytest.raises(ConfigError, match="not tensors"):
        load_weights({"0.weight": [1.0, 2.0]})
    with pytest.raises(CheckpointError, match="No weight file"):
        load_into(small(), str(tmp_path / "missing.safetensors"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # no temp left


def test_a_mismatch_names_a_few_keys_of_each_kind_and_loads_nothing(tmp_path):
    target = small()
    before = target[0].weight.clone()
    given = dict(small().state_dict())
    given["0.weight"] = torch.zeros(8, 3, 3, 3)
    given["extra.bias"] = torch.zeros(1)
    del given["1.running_var"]
    with pytest.raises(CheckpointError) as err:
        load_into(target, given, name="my file", hint="Do this.")
    msg = str(err.value)
    assert msg.startswith("my file does not match this model (Sequential): ")
    assert msg.endswith("Do this.")
    assert "1 missing key(s): 1.running_var" in msg and "1 unexpected key(s): extra.bias" in msg
    assert "1 shape mismatch(es): 0.weight: file (8, 3, 3, 3) vs model (4, 3, 3, 3)" in msg
    assert torch.equal(target[0].weight, before)
    report = load_into(target, given, strict=False)  # loads what matches, reports the rest
    assert not report.ok and "1.weight" in report.loaded and "0.weight" not in report.loaded


def test_pickles_are_refused_never_unpickled(tmp_path, boom):
    marker = tmp_path / "executed"
    plain, zipped = tmp_path / "plain.safetensors", tmp_path / "model.pth"
    plain.write_bytes(pickle.dumps(boom(marker)))
    torch.save(small().state_dict(), zipped)
    for path in (plain, zipped):
        with pytest.raises(CheckpointError, match="is a pickle.*never unpickles.*save_file"):
            load_into(small(), path)
    assert not marker.exists()
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(CheckpointError, match="not a readable safetensors file"):
        load_weights(tmp_path / "bad.safetensors")


def test_tied_and_non_contiguous_tensors_are_written(tmp_path):
    weight = torch.randn(4, 6)
    path = save_weights(Path(tmp_path, "t.safetensors"), {"a": weight, "b": weight, "c": weight.T})
    loaded = load_weights(path)
    assert all(
        torch.equal(loaded[k], v) for k, v in (("a", weight), ("b", weight), ("c", weight.T))
    )
