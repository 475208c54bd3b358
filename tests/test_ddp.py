"""Multi-process training (torchrun/DDP) on CPU with gloo: 2 real processes for a few steps.

Each worker is this file run as a script with torchrun's environment (RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR, MASTER_PORT), so ``fit`` joins the group itself exactly as under
``torchrun``. What must match a single process on the same global batch (2 × the per-rank
batch): the union of the ranks' batches is the single run's batch (EpochBatchSampler shards
order[r::2]); the loss is a mean over samples with equal shard sizes, so DDP's gradient average
is the global gradient; BatchNorm statistics span both ranks (SyncBatchNorm2d for the UNet++,
the synchronised twin of SparseBatchNorm2d + synchronised decoder BNs for SparK); SparK's masks are a function of the
sample index, not of the rank. A batch-level loss such as SILog would *not* match (the mean of
per-rank SILogs is not the global batch's SILog), which is why the tasks here use L1 / SparK's
per-patch mean.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from depthlib.errors import ConfigError
from depthlib.profiles import TrainConfig
from depthlib.train import Task, distributed, fit
from depthlib.train.batches import EpochBatchSampler, check_sharded, epoch_loader
from depthlib.train.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
N, PER_RANK, WORLD = 12, 2, 2  # 3 steps per epoch in both runs
SIZE = 32


class Pairs(Dataset):
    """Random normalised RGB with a positive depth map (or, for SparK, just the RGB)."""

    def __init__(self, n=N, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.rgb = torch.randn(n, 3, SIZE, SIZE, generator=g)
        self.depth = 0.5 + 4 * torch.rand(n, 1, SIZE, SIZE, generator=g)

    def __len__(self):
        return len(self.rgb)

    def __getitem__(self, i):
        return {"image": self.rgb[i], "depth": self.depth[i], "index": torch.tensor(i)}


class DepthL1(Task):
    """A per-sample-mean loss: DDP's gradient average is then the global batch's gradient."""

    def __init__(self):
        self.losses, self.seen = [], []

    def training_step(self, model, batch):
        self.seen += batch["index"].tolist()
        loss = F.l1_loss(model(batch["image"]), batch["depth"])
        self.losses.append(float(loss.detach()))
        return loss


class SparkByIndex(Task):
    """SparK's loss with each sample's mask drawn from its index (same mask in any world size)."""

    def __init__(self):
        self.losses, self.seen = [], []

    def training_step(self, model, batch):
        spark = distributed.unwrap_model(model)
        masks = [
            spark.random_mask(1, SIZE, SIZE, generator=torch.Generator().manual_seed(100 + i))
            for i in batch["index"].tolist()
        ]
        self.seen += batch["index"].tolist()
        loss, _ = model(batch["image"], torch.cat(masks))
        self.losses.append(float(loss.detach()))
        return loss


def build(kind):
    torch.manual_seed(0)
    if kind == "finetune":
        from depthlib.depth.unetpp import DepthUNetPlusPlus

        return DepthUNetPlusPlus(
            "resnet18", encoder_depth=3, decoder_channels=(16, 8, 4)
        ), DepthL1()
    from depthlib.spark.model import SparK

    model = SparK("resnet18", encoder_depth=3, decoder_width=16, mask_ratio=0.5)
    return model, SparkByIndex()


def train(kind, out, batch, epochs=1, resume=False):
    model, task = build(kind)
    config = TrainConfig(epochs=epochs, lr=1e-3, seed=5, sync_batchnorm=True)
    loader = epoch_loader(Pairs(), batch, seed=5)  # rank/world follow the group fit joins
    result = fit(model, task, loader, config, out, resume=resume, progress=False)
    return model, task, result


def worker(kind, out):
    """One rank of the 2-process run: train, then write what the test compares."""
    out = Path(out)
    model, task, result = train(kind, out / "run", PER_RANK)
    info = distributed.init_distributed()  # idempotent: the group fit joined
    try:
        epoch_loader(Pairs(n=1), 1)  # a dataset smaller than the world
        too_small = ""
    except ConfigError as err:
        too_small = str(err)
    plain = distributed.unwrap_model(model)
    torch.save(plain.state_dict(), out / f"weights{info.rank}.pt")
    report = {
        "rank": info.rank,
        "world": info.world_size,
        "backend": info.backend,
        "losses": task.losses,
        "seen": task.seen,
        "history": result.history,
        "too_small": too_small,
        "sync_layers": sorted(
            {type(m).__name__ for m in plain.modules() if "Sync" in type(m).__name__}
        ),
    }
    (out / f"rank{info.rank}.json").write_text(json.dumps(report))
    distributed.cleanup_distributed()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(kind, out):
    out.mkdir(parents=True, exist_ok=True)
    port = str(free_port())
    procs = []
    for r in range(WORLD):
        env = os.environ | {
            "RANK": str(r), "WORLD_SIZE": str(WORLD), "LOCAL_RANK": str(r),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "CUDA_VISIBLE_DEVICES": "",
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }  # fmt: skip
        cmd = [sys.executable, __file__, kind, str(out)]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    try:
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for r, (p, (_, err)) in enumerate(zip(procs, outputs, strict=True)):
        assert p.returncode == 0, f"rank {r} failed:\n{err.decode()[-3000:]}"
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]


@pytest.fixture(scope="module", params=["finetune", "spark"])
def ddp_run(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"ddp-{request.param}")
    return request.param, out, launch(request.param, out)


def test_two_ranks_end_with_identical_parameters(ddp_run):
    kind, out, reports = ddp_run
    assert [(r["rank"], r["world"], r["backend"]) for r in reports] == [
        (0, 2, "gloo"),
        (1, 2, "gloo"),
    ]
    w0, w1 = (torch.load(out / f"weights{r}.pt", weights_only=True) for r in range(WORLD))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks diverged"
    # the BatchNorms were synchronised (dense ones on request, sparse ones always)
    expected = {
        "finetune": ["SyncBatchNorm2d"],
        "spark": ["SyncBatchNorm2d", "SyncedSparseBatchNorm2d"],
    }
    assert reports[0]["sync_layers"] == expected[kind]


def test_ranks_see_disjoint_shards_of_the_single_process_batches(ddp_run):
    _, _, reports = ddp_run
    a, b = (r["seen"] for r in reports)
    assert len(a) == len(b) == N // WORLD and not set(a) & set(b)
    order = [i for batch in EpochBatchSampler(N, PER_RANK * WORLD, seed=5) for i in batch]
    for step in range(len(a) // PER_RANK):
        pair = (
            a[step * PER_RANK : (step + 1) * PER_RANK] + b[step * PER_RANK : (step + 1) * PER_RANK]
        )
        single = order[step * PER_RANK * WORLD : (step + 1) * PER_RANK * WORLD]
        assert sorted(pair) == sorted(single)


def test_loss_equals_a_single_process_run_on_the_global_batch(ddp_run, tmp_path):
    kind, out, reports = ddp_run
    model, task, result = train(kind, tmp_path / "single", PER_RANK * WORLD)
    losses = zip(reports[0]["losses"], reports[1]["losses"], strict=True)
    per_step = [sum(pair) / WORLD for pair in losses]
    assert len(per_step) == len(task.losses) == N // (PER_RANK * WORLD)
    assert per_step == pytest.approx(task.losses, rel=1e-4)
    # the logged loss is the global batch's (mean over ranks), on rank 0's log
    assert reports[0]["history"][0]["train_loss"] == pytest.approx(
        result.history[0]["train_loss"], rel=1e-4
    )
    # Weights: Adam's first updates are ≈ lr·sign(gradient), so entries whose gradient is ~0
    # amplify rounding noise; compare the gap to the size of the update instead (measured ~1%).
    initial = build(kind)[0].state_dict()
    w0, single = torch.load(out / "weights0.pt", weights_only=True), model.state_dict()
    keys = [k for k in single if single[k].is_floating_point() and "running" not in k]
    gap = sum(float((w0[k] - single[k]).square().sum()) for k in keys) ** 0.5
    update = sum(float((single[k] - initial[k]).square().sum()) for k in keys) ** 0.5
    assert gap < 0.05 * update


def test_rank_zero_alone_writes_one_checkpoint_and_one_log_row(ddp_run):
    _, out, _ = ddp_run
    root = out / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["epoch_0001"]
    meta = load_checkpoint(out / "run").meta
    assert meta["world_size"] == WORLD and meta["step"] == N // (PER_RANK * WORLD)
    assert len((out / "run" / "log.jsonl").read_text().splitlines()) == 1


def test_a_world_larger_than_the_dataset_is_a_clear_error(ddp_run):
    _, _, reports = ddp_run
    for report in reports:
        assert "1 samples" in report["too_small"] and "2 processes" in report["too_small"]
        assert "fewer processes" in report["too_small"]


def test_a_checkpoint_from_two_processes_resumes_in_one(ddp_run, tmp_path, capsys):
    kind, out, _ = ddp_run
    if kind != "finetune":
        pytest.skip("one resume check is enough")
    import shutil

    shutil.copytree(out / "run", tmp_path / "run")
    model, task, result = train(kind, tmp_path / "run", PER_RANK, epochs=2, resume=True)
    said = capsys.readouterr().out
    assert "3 steps per epoch, now 6: continuing at step 6 of 12" in said
    # epoch 1 (3 steps of 2×2 samples) counts as 6 steps of this run's 2 samples
    assert result.stop_reason == "completed" and result.step == 12 and result.epoch == 2
    assert len(task.losses) == 6 and len(result.history) == 2


# --------------------------------------------------------------------------- single process
def test_half_set_torchrun_environment_names_what_is_missing():
    with pytest.raises(ConfigError) as err:
        distributed.init_distributed({"RANK": "0", "MASTER_ADDR": "127.0.0.1"})
    message = str(err.value)
    assert "WORLD_SIZE, LOCAL_RANK, MASTER_PORT missing" in message
    assert "torchrun --nproc_per_node" in message
    full = {
        "RANK": "x",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "h",
        "MASTER_PORT": "1",
    }
    with pytest.raises(ConfigError, match="must be integers"):
        distributed.init_distributed(full)
    with pytest.raises(ConfigError, match="need 0 ≤ RANK < WORLD_SIZE"):
        distributed.init_distributed(full | {"RANK": "2"})


def test_without_torchrun_nothing_is_initialised():
    info = distributed.init_distributed({"MASTER_ADDR": "127.0.0.1"})  # not torchrun's markers
    assert (info.rank, info.world_size, info.backend) == (0, 1, None)
    assert not distributed.is_distributed() and not distributed.launched_by_torchrun({})
    assert not distributed.launched_by_torchrun({"RANK": ""})  # empty = unset


def test_unsharded_loaders_are_refused_in_a_multi_process_run():
    data = Pairs(n=8)
    with pytest.raises(ConfigError, match="whole dataset.*RandomSampler"):
        check_sharded(DataLoader(data, batch_size=2, shuffle=True), 2)
    with pytest.raises(ConfigError, match="sharded for 1 process"):
        check_sharded(epoch_loader(data, 2, rank=0, world_size=1), 2)
    check_sharded(epoch_loader(data, 2, rank=0, world_size=2), 2)
    check_sharded(DataLoader(data, batch_size=2, shuffle=True), 1)


def test_convert_sync_batchnorm_swaps_classes_and_keeps_tensors():
    from depthlib.spark.sparse import SparseBatchNorm2d, to_sparse

    dense = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    sparse, _ = to_sparse(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)))
    weight = dense[1].weight
    assert distributed.convert_sync_batchnorm(dense, "cpu", dense=False) == 0
    assert distributed.convert_sync_batchnorm(dense, "cpu") == 1
    assert type(dense[1]) is distributed.SyncBatchNorm2d and dense[1].weight is weight
    assert isinstance(sparse[1], SparseBatchNorm2d)
    assert distributed.convert_sync_batchnorm(sparse, "cpu", dense=False) == 1
    assert type(sparse[1]) is distributed.synced(SparseBatchNorm2d)
    # outside a process group the synchronised layer is an ordinary BatchNorm
    x = torch.randn(4, 4, 5, 5)
    reference = nn.BatchNorm2d(4)
    torch.testing.assert_close(distributed.SyncBatchNorm2d(4)(x), reference(x))


if __name__ == "__main__":  # one rank of a 2-process run (see launch)
    torch.set_num_threads(1)
    worker(*sys.argv[1:])
