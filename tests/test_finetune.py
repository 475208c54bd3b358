"""Fine-tuning on a tiny rooms set (quick profile): learning, label subsets, exact resume, errors."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from depthlib.data.dataset import DepthDataset, evenly_spaced, open_depth_dataset
from depthlib.data.rooms import synthesize
from depthlib.errors import CheckpointError, ConfigError
from depthlib.jobs.finetune import (
    build_model,
    depth_batches,
    finetune,
    label_subset,
    subset_passes,
    train_data,
    validation_carve,
)
from depthlib.profiles import get_profile
from depthlib.train.batches import EpochBatchSampler
from depthlib.train.checkpoint import load_checkpoint

QUICK = get_profile("quick")


@pytest.fixture(scope="module")
def rooms(tmp_path_factory):
    """43 rooms of 48x64 (the quick profile's size): 27 train, of which 3 (10 %) are held out for
    validation and 24 train (3 batches of 8), and 16 test."""
    path = tmp_path_factory.mktemp("data") / "rooms.mat"
    return synthesize(path, n=43, size=(48, 64), seed=3, n_train=27, progress=False, workers=1)


@pytest.fixture(autouse=True)
def _tmp_dirs_one_thread(tmp_path, monkeypatch):
    """Runs and caches in tmp_path; one torch thread: on a shared 2-core machine two OpenMP
    threads per process measured ~10x slower for these tiny models than one."""
    monkeypatch.setenv("DEPTHLIB_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DEPTHLIB_RUNS", str(tmp_path / "runs"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run(rooms, out, **kw):
    kw = {"progress": False, "final_eval": False} | kw
    return finetune(rooms, "quick", out=out, **kw)


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_tiny_finetune_lowers_the_loss_and_validates(rooms, tmp_path):
    result = run(rooms, tmp_path / "r", epochs=5, lr=3e-3, warmup_epochs=0.0)
    losses = [row["train_loss"] for row in result.train.history]
    assert result.train.stop_reason == "completed" and result.train.step == 5 * 3
    assert losses[-1] < 0.8 * losses[0], losses
    last = result.train.history[-1]
    assert {"val_abs_rel", "val_delta1", "val_rmse"} <= set(last)
    assert result.train.best_checkpoint is not None  # best by validation abs_rel
    best = load_checkpoint(result.train.best_checkpoint).meta["metrics"]["abs_rel"]
    assert best == pytest.approx(min(r["val_abs_rel"] for r in result.train.history))


def test_a_frozen_encoder_keeps_its_weights_and_statistics_while_the_decoder_learns(
    rooms, tmp_path
):
    from depthlib.train import seed_everything

    seed_everything(4)  # what finetune does before it builds the model
    init = weights(build_model(QUICK.finetune))
    result = run(rooms, tmp_path / "b", epochs=2, seed=4, freeze_encoder=True)
    trained = weights(result.model)
    encoder = [k for k in trained if k.startswith("encoder.")]
    assert any("running_mean" in k for k in encoder)
    assert all(torch.equal(trained[k], init[k]) for k in encoder)  # weights and statistics
    decoder = [k for k in trained if k.startswith("decoder.") and trained[k].is_floating_point()]
    assert any(not torch.equal(trained[k], init[k]) for k in decoder)
    result.model.train()
    assert result.model.training and not result.model.encoder.training


def test_default_run_folder_and_final_evaluation(rooms, tmp_path):
    result = finetune(rooms, "quick", epochs=1, progress=False)
    assert result.run_dir == tmp_path / "runs" / f"finetune-{QUICK.finetune.encoder}-quick"
    rows = result.evaluation["rows"]
    assert set(rows) == {"model", "train mean depth map", "train median depth"}
    assert rows["model"]["n_images"] == 16  # the whole test split, not the validation subset
    saved = json.loads((result.run_dir / "evaluation.json").read_text())
    assert saved["rows"]["model"]["abs_rel"] == pytest.approx(rows["model"]["abs_rel"])
    meta = load_checkpoint(result.run_dir).meta
    assert meta["run_config"]["input_size"] == [QUICK.finetune.height, QUICK.finetune.width]


def test_resume_mid_epoch_gives_the_straight_run_bit_for_bit(rooms, tmp_path):
    straight = run(rooms, tmp_path / "a", epochs=2)
    first = run(rooms, tmp_path / "b", epochs=2, time_budget_s=1e-9)  # stops after one step
    assert first.train.stop_reason == "time_budget" and first.train.step == 1
    resumed = run(rooms, tmp_path / "b", epochs=2, resume=True)
    assert resumed.train.step == straight.train.step == 6
    a, b = weights(straight.model), weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in resumed.train.history] == [
        r["train_loss"] for r in straight.train.history
    ]


def test_resume_with_more_epochs_continues_at_the_same_step(rooms, tmp_path):
    one = run(rooms, tmp_path / "c", epochs=1)
    state = load_checkpoint(one.train.checkpoint).state
    adam_steps = {int(s["step"]) for s in state["optimizer"]["state"].values()}
    assert adam_steps == {3}
    more = run(rooms, tmp_path / "c", epochs=2, resume=True)
    assert more.train.step == 6 and len(more.train.history) == 2
    state = load_checkpoint(more.train.checkpoint).state
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {6}


def test_same_seed_same_run_other_seed_other_weights(rooms, tmp_path):
    a = run(rooms, tmp_path / "s0", epochs=1, seed=4)
    b = run(rooms, tmp_path / "s1", epochs=1, seed=4)
    c = run(rooms, tmp_path / "s2", epochs=1, seed=5)
    wa, wb, wc = weights(a.model), weights(b.model), weights(c.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)


def test_label_fraction_is_a_seeded_subset(rooms, tmp_path):
    subset = label_subset(795, 0.1, seed=0)
    assert len(subset) == 80 and len(set(subset.tolist())) == 80
    assert np.array_equal(subset, label_subset(795, 0.1, seed=0))
    assert not np.array_equal(subset, label_subset(795, 0.1, seed=1))
    assert np.array_equal(label_subset(10, 1.0, seed=0), np.arange(10))
    result = run(rooms, tmp_path / "f", epochs=1, label_fraction=0.5, batch_size=4)
    # 12 labelled images, repeated twice: an epoch has the full split's 24 // 4 = 6 steps
    assert result.n_train == 12 and result.train.step == 6


def test_subset_is_repeated_to_the_full_epoch_with_fresh_augmentation(rooms):
    assert subset_passes(795, 80) == 10 and subset_passes(795, 795) == 1
    assert subset_passes(795, 500) == 2 and subset_passes(10, 0) == 10
    source = open_depth_dataset(rooms, "train")
    tenth = dataclasses.replace(QUICK.finetune, label_fraction=0.1)
    pool = np.arange(24)
    labelled = pool[label_subset(len(pool), 0.1, seed=0)]
    passes = subset_passes(len(pool), len(labelled))
    assert (len(labelled), passes) == (2, 12)
    data = train_data(source, tenth, labelled, seed=0)
    assert data.tensors["rgb"].shape[0] == len(data) == 2  # each labelled image held once
    loader = depth_batches(data, 8, seed=0, passes=passes)
    batches = list(loader)
    assert len(loader) == len(batches) == 3  # the full split's 24 // 8 steps
    indices = torch.cat([b["index"] for b in batches]).tolist()
    assert sorted(indices) == sorted(source.indices[labelled].tolist() * passes)
    first, again = data.batch([0]), data.batch([2])  # the same image in two passes
    assert torch.equal(first["index"], again["index"])
    assert not torch.equal(first["rgb"], again["rgb"])


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_label_fraction_outside_0_1_is_refused(fraction):
    with pytest.raises(ConfigError, match="label_fraction"):
        label_subset(100, fraction, seed=0)


def test_too_few_labels_for_one_batch_says_what_to_do(rooms, tmp_path):
    with pytest.raises(ConfigError, match="lower the batch size or use more data"):
        run(rooms, tmp_path / "x", batch_size=32)  # the train split holds 24 images


def test_validation_is_carved_from_train_and_never_touches_test(rooms, tmp_path):
    train, held = validation_carve(27, 0.1)
    assert len(held) == 3 and len(train) == 24 and not set(train) & set(held)
    assert np.array_equal(held, validation_carve(27, 0.1)[1])  # one carve, whatever the seed
    assert validation_carve(27, 0.0)[1].size == 0
    with pytest.raises(ConfigError, match="val_fraction"):
        validation_carve(27, 1.0)
    result = run(rooms, tmp_path / "v", epochs=1)
    config = load_checkpoint(result.run_dir).meta["run_config"]
    assert config["n_val"] == 3 and "train split" in config["validation"]
    source = open_depth_dataset(rooms, "train")
    held_files = {int(source.indices[p]) for p in held}
    test_files = set(open_depth_dataset(rooms, "test").indices.tolist())
    assert held_files and not held_files & test_files


def test_validation_subset_is_evenly_spaced_and_stable():
    assert evenly_spaced(10, None).tolist() == list(range(10))
    assert evenly_spaced(10, 4).tolist() == [0, 3, 6, 9]
    assert evenly_spaced(3, 10).tolist() == [0, 1, 2]


def test_preloaded_batches_follow_seed_and_epoch_and_skip(rooms):
    source = open_depth_dataset(rooms, "train")
    data = train_data(source, QUICK.finetune, np.arange(24), seed=0)
    assert isinstance(data, DepthDataset) and data.tensors["rgb"].shape[-2:] == (32, 64)
    loader = depth_batches(data, 8, seed=0)
    loader.set_epoch(1)
    epoch1 = [b["index"].tolist() for b in loader]
    order = list(EpochBatchSampler(24, 8, seed=0, world_size=1, rank=0).__iter__())
    loader.set_epoch(0)
    assert [b["index"].tolist() for b in loader] == [source.indices[o].tolist() for o in order]
    loader.set_epoch(1)
    loader.skip_batches(2)
    assert [b["index"].tolist() for b in loader] == epoch1[2:]
    batch = next(iter(loader))
    assert batch["rgb"].dtype == torch.uint8 and batch["depth"].shape == (8, 1, 32, 64)


def test_unknown_setting_and_off_stride_size_are_refused(rooms, tmp_path):
    with pytest.raises(ConfigError, match="Unknown fine-?tun(e|ing) setting"):
        run(rooms, tmp_path / "u", learning_rate=1e-3)
    with pytest.raises(ConfigError, match="multiple of the encoder stride"):
        run(rooms, tmp_path / "u", height=40)


def test_encoder_weights_of_another_encoder_fail_clearly(rooms, tmp_path):
    from depthlib.depth.encoders import save_encoder_weights
    from depthlib.depth.unetpp import DepthUNetPlusPlus

    path = save_encoder_weights(
        DepthUNetPlusPlus("resnet34", decoder_channels=(8,) * 5), tmp_path / "r34.safetensors"
    )
    match = f"resnet34 encoder but the model uses {QUICK.finetune.encoder}"
    with pytest.raises(CheckpointError, match=match):
        run(rooms, tmp_path / "w", encoder_weights=str(path))


def test_used_run_folder_without_resume_is_refused(rooms, tmp_path):
    run(rooms, tmp_path / "d", epochs=1)
    with pytest.raises(ConfigError, match="resume"):
        run(rooms, tmp_path / "d", epochs=1)


def test_bf16_autocast_trains_and_bad_precision_is_refused(rooms, tmp_path, monkeypatch):
    import depthlib.jobs.finetune as ft

    seen = []  # (training?, dtype) of the first convolution's output, every forward pass
    real_build = ft.build_model

    def build_with_hook(cfg):
        model = real_build(cfg)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, _, out: seen.append((m.training, out.dtype)))
        return model

    monkeypatch.setattr(ft, "build_model", build_with_hook)
    result = run(rooms, tmp_path / "bf", epochs=3, lr=3e-3, warmup_epochs=0.0, precision="bf16")
    in_training = {dtype for training, dtype in seen if training}
    in_validation = {dtype for training, dtype in seen if not training}
    assert in_training == {torch.bfloat16}  # the forward pass really ran under bf16 autocast
    assert in_validation == {torch.float32}  # validation stays float32
    losses = [row["train_loss"] for row in result.train.history]
    assert losses[-1] < losses[0] and load_checkpoint(result.run_dir).meta["run_config"]["bf16"]
    assert next(result.model.parameters()).dtype == torch.float32  # master weights stay fp32
    with pytest.raises(ConfigError, match="precision"):
        run(rooms, tmp_path / "bf2", precision="fp8")
