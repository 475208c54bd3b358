"""`torchrun -m depthlib finetune` runs unchanged with 2 CPU processes (gloo)."""

import json
import os
import socket
import subprocess
import sys


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_finetune_two_processes(tmp_path):
    env = {
        **os.environ,
        "DEPTHLIB_DATA": str(tmp_path / "data"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
        f"--master_port={_free_port()}", "-m", "depthlib", "finetune",
        "--profile", "quick", "--epochs", "1", "--sync-batchnorm", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    # rank 0 alone prints the table and writes the run; the rooms cache was rendered once
    assert done.stdout.count("| train mean depth map |") == 1
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["best.json", "epoch_0001", "latest.json"]
    meta = json.loads((tmp_path / "run/checkpoints/epoch_0001/meta.json").read_text())
    assert meta.get("world_size") == 2
    assert len(list((tmp_path / "data").glob("*.mat"))) == 2  # the rooms file and its splits


def test_half_set_torchrun_environment_is_a_clean_error(tmp_path):
    env = {**os.environ, "RANK": "0", "DEPTHLIB_DATA": str(tmp_path)}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "depthlib", "finetune", "--profile", "quick", "--epochs", "1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "WORLD_SIZE" in done.stderr and "Traceback" not in done.stderr
