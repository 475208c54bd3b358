"""The training loop on a tiny MLP regression: learning, exact resume, guards, stopping, logs."""

import csv
import json
import math
import os
import signal

import pytest
import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset

from depthlib.errors import CheckpointError, ConfigError
from depthlib.profiles import FinetuneConfig, TrainConfig, get_profile, job_settings
from depthlib.train import Task, TrainingDiverged, fit
from depthlib.train.batches import EpochBatchSampler, epoch_loader
from depthlib.train.checkpoint import load_checkpoint, load_state
from depthlib.train.optim import WarmupCosine, lr_factor, make_optimizer, param_groups

N, BATCH = 32, 8  # 4 steps per epoch
TRUE_W = torch.tensor([[1.0], [-2.0], [0.5], [3.0]])


class Toy(Dataset):
    """y = x·w + noise; ``nan_at`` poisons one sample's input."""

    def __init__(self, n=N, nan_at=None, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 4, generator=g)
        self.y = self.x @ TRUE_W + 0.01 * torch.randn(n, 1, generator=g)
        self.nan_at = nan_at

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        x = self.x[i].clone()
        if i == self.nan_at:
            x[0] = math.nan
        return {"x": x, "y": self.y[i], "index": torch.tensor(i)}


class MLP(nn.Module):
    def __init__(self, hidden=16):
        super().__init__()
        self.config = {"hidden": hidden}
        self.net = nn.Sequential(
            nn.Linear(4, hidden),
            nn.LayerNorm(hidden),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(hidden, 1),
        )

    def forward(self, x):
        return self.net(x)


class Regression(Task):
    """MSE task; records the batches it sees and can send itself signals at given calls."""

    def __init__(self, signal_at=(), snapshots=False, nan_grad=False, nan_at_call=None):
        self.calls, self.seen, self.snapshots = 0, [], []
        self.signal_at, self.keep_snapshots, self.nan_grad = tuple(signal_at), snapshots, nan_grad
        self.nan_at_call = nan_at_call
        self.val = Toy(16, seed=1)

    def training_step(self, model, batch):
        self.calls += 1
        self.seen.append(batch["index"].tolist())
        if self.keep_snapshots:
            self.snapshots.append([p.detach().clone() for p in model.parameters()])
        for _ in range(self.signal_at.count(self.calls)):
            os.kill(os.getpid(), signal.SIGINT)
        if self.calls == self.nan_at_call:
            batch["x"][0, 0] = math.nan
        pred = model(batch["x"])
        loss = F.mse_loss(pred, batch["y"])
        if self.nan_grad:  # finite value (0), infinite derivative of sqrt at 0 → NaN gradient
            loss = loss + (model.net[0].weight.sum() * 0).abs().sqrt()
        return loss, {"mae": (pred - batch["y"]).abs().mean()}

    def validate(self, model, epoch):
        model.eval()
        with torch.no_grad():
            return {"mse": F.mse_loss(model(self.val.x), self.val.y).item()}


def run(out=None, epochs=2, task=None, data=None, resume=False, **cfg):
    torch.manual_seed(0)
    model = MLP()
    config = TrainConfig(epochs=epochs, lr=3e-2, warmup_epochs=0.5, seed=3, **cfg)
    loader = epoch_loader(data or Toy(), BATCH, seed=3)
    task = task or Regression()
    result = fit(model, task, loader, config, out_dir=out, resume=resume, progress=False)
    return model, task, result


def same_weights(a, b):
    return all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


def test_loss_goes_down_on_a_learnable_task(tmp_path):
    _, _, result = run(tmp_path / "r", epochs=8)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < 0.4 * losses[0]
    assert result.final_metrics["mse"] < result.history[0]["val_mse"]
    assert result.stop_reason == "completed" and result.step == 8 * N // BATCH


def test_interrupt_at_epoch_end_then_resume_equals_straight_run(tmp_path):
    straight, _, full = run(tmp_path / "a")

    class StopAfterFirstEpoch(Regression):
        def on_epoch_end(self, model, epoch, row):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return {"hook_epoch": epoch}

    _, _, first = run(tmp_path / "b", task=StopAfterFirstEpoch())
    assert first.interrupted and first.epoch == 1 and first.step == 4
    assert first.checkpoint.name == "epoch_0001"
    resumed, _, second = run(tmp_path / "b", resume=True)
    assert second.stop_reason == "completed" and second.step == full.step
    assert same_weights(straight, resumed)
    assert [r["train_loss"] for r in second.history] == [r["train_loss"] for r in full.history]


def test_mid_epoch_interrupt_resumes_same_batches_and_optimizer_state(tmp_path):
    straight, straight_task, full = run(tmp_path / "a", task=Regression(snapshots=True))
    _, first_task, first = run(tmp_path / "b", task=Regression(signal_at=[6]))
    assert first.interrupted and first.step == 6
    assert first.checkpoint.name == "step_00000006"
    state = load_state(first.checkpoint / "state.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (6, 1, 2)
    assert state["scheduler"] == {"step": 6}
    assert all(int(s["step"]) == 6 for s in state["optimizer"]["state"].values())

    resumed, resumed_task, second = run(
        tmp_path / "b", resume=True, task=Regression(snapshots=True)
    )
    # the remaining batches of epoch 2, exactly
    assert first_task.seen + resumed_task.seen == straight_task.seen
    # the first resumed step starts from the step-6 weights, and after one update (which uses
    # the restored Adam moments) matches the straight run's step 7: the optimizer state is equal
    for k in (0, 1):
        for p, q in zip(resumed_task.snapshots[k], straight_task.snapshots[6 + k], strict=True):
            assert torch.equal(p, q)
    assert same_weights(straight, resumed)
    assert len(second.history) == 2
    assert second.history[-1]["train_loss"] == pytest.approx(
        full.history[-1]["train_loss"], abs=1e-12
    )
    # only the newest checkpoints remain: the mid-epoch one was superseded
    names = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir() if p.is_dir())
    assert names == ["epoch_0001", "epoch_0002"]


def test_second_ctrl_c_aborts_at_once_keeping_the_last_checkpoint(tmp_path):
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when the tests run as a background job
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "r", task=Regression(signal_at=[6, 6]))
    ckpt = load_checkpoint(tmp_path / "r")
    assert ckpt.path.name == "epoch_0001" and ckpt.meta["step"] == 4
    assert signal.getsignal(signal.SIGINT) == before  # handlers restored


def test_resume_without_checkpoint_starts_fresh(tmp_path, capsys):
    _, _, result = run(tmp_path / "new", resume=True)
    assert "No checkpoint" in capsys.readouterr().out
    assert result.stop_reason == "completed" and result.epoch == 2


def test_resume_of_a_finished_run_does_nothing_and_loads_the_weights(tmp_path, capsys):
    trained, _, _ = run(tmp_path / "r")
    task = Regression()
    model, _, result = run(tmp_path / "r", resume=True, task=task)
    assert "already complete" in capsys.readouterr().out
    assert result.stop_reason == "already_complete" and task.calls == 0
    assert same_weights(model, trained) and len(result.history) == 2


def test_resuming_with_another_model_names_the_mismatch(tmp_path):
    run(tmp_path / "r", epochs=1)
    with pytest.raises(CheckpointError, match=r"shape mismatch.*net\.0\.weight"):
        fit(MLP(hidden=8), Regression(), epoch_loader(Toy(), BATCH), TrainConfig(epochs=2),
            tmp_path / "r", resume=True, progress=False)  # fmt: skip


def test_used_out_dir_without_resume_is_refused_unless_overwrite(tmp_path):
    run(tmp_path / "r", epochs=1)
    with pytest.raises(ConfigError, match="resume=True"):
        run(tmp_path / "r", epochs=1)
    torch.manual_seed(0)
    again = fit(MLP(), Regression(), epoch_loader(Toy(), BATCH), TrainConfig(epochs=1),
                out_dir=tmp_path / "r", overwrite=True, progress=False)  # fmt: skip
    assert again.step == 4 and len(again.history) == 1


def test_nan_batch_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingDiverged) as err:
        run(tmp_path / "r", epochs=3, task=Regression(nan_at_call=6))
    message = str(err.value)
    assert "Non-finite loss (nan) at step 6 (epoch 2, batch 2 of 4)" in message
    assert "epoch_0001" in message and "resume=True" in message
    ckpt = load_checkpoint(tmp_path / "r")
    assert ckpt.path.name == "epoch_0001" and ckpt.meta["step"] == 4
    assert all(torch.isfinite(w).all() for w in ckpt.weights.values())
    assert not list((tmp_path / "r" / "checkpoints").glob("step_*"))


def test_nan_in_the_data_before_any_checkpoint_says_so(tmp_path):
    loader = epoch_loader(Toy(nan_at=5), BATCH, seed=3)
    order = [i for b in loader.batch_sampler for i in b]
    bad_step = order.index(5) // BATCH + 1  # 1-based step whose batch holds sample 5
    with pytest.raises(TrainingDiverged, match="no checkpoint had been written") as err:
        torch.manual_seed(0)
        fit(MLP(), Regression(), loader, TrainConfig(epochs=2), tmp_path / "r", progress=False)
    assert f"at step {bad_step} (epoch 1," in str(err.value)


def test_nan_gradient_is_caught_even_with_a_finite_loss(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"gradient norm \(nan\) at step 1 "):
        run(tmp_path / "r", task=Regression(nan_grad=True))


def test_unwritable_out_dir_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    task = Regression()
    with pytest.raises(ConfigError, match="Cannot write to the output folder"):
        run(blocker / "run", task=task)
    assert task.calls == 0


def test_read_only_out_dir_fails_before_training(read_only_dir):
    task = Regression()
    with pytest.raises(ConfigError, match="Cannot write to the output folder .*locked"):
        run(read_only_dir, task=task)
    assert task.calls == 0
    assert list(read_only_dir.iterdir()) == []  # nothing written there either


def test_time_budget_stops_early_with_a_checkpoint_and_resume_finishes(tmp_path):
    straight, _, _ = run(tmp_path / "a")
    _, task, result = run(tmp_path / "b", time_budget_s=1e-6)
    assert result.stop_reason == "time_budget" and not result.interrupted
    assert task.calls == 1 and result.checkpoint.name == "step_00000001"
    resumed, _, done = run(tmp_path / "b", resume=True)
    assert done.stop_reason == "completed" and same_weights(straight, resumed)


def test_max_steps_ends_the_run_and_the_schedule(tmp_path):
    _, task, result = run(tmp_path / "r", epochs=5, max_steps=6, min_lr_ratio=0.0)
    assert task.calls == 6 and result.step == 6 and result.epoch == 2
    assert result.history[-1]["lr"] == pytest.approx(0.0)  # cosine reached its end at step 6
    assert load_checkpoint(tmp_path / "r").meta["finished"] is True


def test_logs_have_one_row_per_epoch_even_across_an_interruption(tmp_path):
    run(tmp_path / "r", epochs=3, task=Regression(signal_at=[6]))
    run(tmp_path / "r", epochs=3, resume=True)
    lines = (tmp_path / "r" / "log.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert {"step", "lr", "train_loss", "train_mae", "val_mse", "samples_per_s"} <= set(rows[0])
    with open(tmp_path / "r" / "log.csv") as f:
        table = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in table] == [1, 2, 3]
    assert float(table[-1]["train_loss"]) == pytest.approx(rows[-1]["train_loss"])


def test_meta_records_config_model_and_metrics(tmp_path):
    run(tmp_path / "r", best_metric="mse")
    meta = json.loads((tmp_path / "r" / "checkpoints" / "epoch_0002" / "meta.json").read_text())
    assert meta["model"] == {"class": f"{__name__}.MLP", "config": {"hidden": 16}}
    assert meta["config"]["epochs"] == 2 and meta["step"] == 8 and "mse" in meta["metrics"]
    assert json.loads((tmp_path / "r" / "checkpoints" / "best.json").read_text())["name"]


def test_retention_keeps_last_k_and_the_best(tmp_path):
    class WorseEachEpoch(Regression):
        def validate(self, model, epoch):
            return {"score": float(epoch)}

    run(tmp_path / "r", epochs=4, keep_last=2, best_metric="score", task=WorseEachEpoch())
    root = tmp_path / "r" / "checkpoints"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [
        "epoch_0001",  # the best (lowest score)
        "epoch_0003",
        "epoch_0004",
    ]
    assert load_checkpoint(tmp_path / "r", which="best").meta["epoch"] == 1


def test_warmup_cosine_values():
    f = lambda s: lr_factor(s, warmup_steps=2, total_steps=10, min_ratio=0.1)  # noqa: E731
    assert [f(0), f(1), f(2)] == pytest.approx([0.5, 1.0, 1.0])
    assert f(6) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the cosine
    assert f(10) == pytest.approx(0.1) and f(50) == pytest.approx(0.1)
    model = MLP()
    opt = make_optimizer(model, lr=1e-3, weight_decay=0.05)
    sched = WarmupCosine(opt, total_steps=10, warmup_steps=2, min_ratio=0.1, weight_decay_end=0.2)
    seen = []
    for _ in range(10):
        seen.append(opt.param_groups[0]["lr"])
        sched.step()
    assert seen[:3] == pytest.approx([5e-4, 1e-3, 1e-3]) and seen[6] == pytest.approx(5.5e-4)
    assert opt.param_groups[0]["weight_decay"] == pytest.approx(0.2)  # decay moved to its end
    assert opt.param_groups[1]["weight_decay"] == 0.0  # norms/biases stay decay-free


def test_no_weight_decay_on_norms_biases_and_mask_tokens():
    model = MLP()
    model.mask_token = nn.Parameter(torch.zeros(1, 16, 1, 1))
    groups = {g["name"]: g for g in param_groups(model, 0.05)}
    decay = {id(p) for p in groups["decay"]["params"]}
    assert decay == {id(model.net[0].weight), id(model.net[4].weight)}
    assert groups["no_decay"]["weight_decay"] == 0.0
    assert id(model.mask_token) in {id(p) for p in groups["no_decay"]["params"]}


def test_batch_order_is_a_function_of_seed_and_epoch():
    order = lambda **kw: [b for b in EpochBatchSampler(10, 3, **kw)]  # noqa: E731
    assert order(seed=1) == order(seed=1) and order(seed=1) != order(seed=2)
    sampler = EpochBatchSampler(10, 3, seed=1)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != order(seed=1) and len(epoch1) == len(sampler) == 3
    sampler.skip_batches(2)
    assert list(sampler) == epoch1[2:]
    ranks = [
        [i for b in EpochBatchSampler(10, 2, seed=1, rank=r, world_size=2) for i in b]
        for r in (0, 1)
    ]
    assert not set(ranks[0]) & set(ranks[1]) and len(ranks[0]) == len(ranks[1]) == 4
    with pytest.raises(ConfigError, match="fewer processes"):
        EpochBatchSampler(1, 1, rank=0, world_size=2)


def test_only_a_loader_and_a_task_are_accepted():
    data = Toy()
    with pytest.raises(ConfigError, match="fit needs a Loader .*got list"):
        fit(MLP(), Regression(), [{"x": data.x, "y": data.y}], TrainConfig(), progress=False)

    class NoSubclass:
        def training_step(self, model, batch):
            return model(batch["x"]).mean()

    with pytest.raises(TypeError, match="subclass depthlib.train.Task"):
        fit(MLP(), NoSubclass(), epoch_loader(data, BATCH), TrainConfig(), progress=False)
    with pytest.raises(ConfigError, match="Resolve micro_batch='auto'"):
        fit(MLP(), Regression(), epoch_loader(data, BATCH), TrainConfig(micro_batch="auto"))


def test_config_errors_and_job_settings():
    with pytest.raises(ConfigError, match="TrainConfig.warmup_epochs"):
        TrainConfig(warmup_epochs=-1)
    with pytest.raises(ConfigError, match="FinetuneConfig.epochs"):
        FinetuneConfig(epochs=0)
    profile, cfg = job_settings("quick", "finetune", keep_last=3, seed=None)
    assert isinstance(cfg, TrainConfig) and profile is get_profile("quick")
    assert (cfg.epochs, cfg.warmup_epochs, cfg.keep_last, cfg.seed) == (2, 0.5, 3, 0)
    with pytest.raises(ConfigError, match=r"Unknown fine-tuning setting\(s\) \['warmup'\]"):
        job_settings("quick", "finetune", warmup=1.0)
    with pytest.raises(ConfigError, match="needs out_dir"):
        fit(MLP(), Regression(), epoch_loader(Toy(), BATCH), TrainConfig(), resume=True)


def test_progress_bar_and_epoch_lines_print(tmp_path, capsys):
    torch.manual_seed(0)
    fit(MLP(), Regression(), epoch_loader(Toy(), BATCH), TrainConfig(epochs=1, log_every=2),
        tmp_path / "r", progress=True)  # fmt: skip
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "loss=" in captured.err
    assert "train_loss" in captured.out


def test_a_ddp_wrapped_model_trains_and_checkpoints_plain_keys(tmp_path):
    import torch.distributed as torch_dist

    from depthlib.train import distributed

    torch_dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1
    )
    try:
        assert distributed.is_distributed() and distributed.is_main_process()
        assert distributed.any_rank(True) and not distributed.any_rank(False)
        torch.manual_seed(0)
        wrapped = nn.parallel.DistributedDataParallel(MLP())
        loader = epoch_loader(Toy(), BATCH, seed=3)
        result = fit(
            wrapped, Regression(), loader, TrainConfig(epochs=1), tmp_path / "r", progress=False
        )
        ckpt = load_checkpoint(tmp_path / "r")
        assert result.step == 4 and set(ckpt.weights) == set(MLP().state_dict())
        assert ckpt.meta["model"]["class"].endswith(".MLP") and ckpt.meta["world_size"] == 1
    finally:
        torch_dist.destroy_process_group()
