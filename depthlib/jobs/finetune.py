"""Supervised fine-tuning of the UNet++ depth model: data preparation, the task, ``finetune()``.

On a CPU the budget is the step time, so nothing else may cost: the train split is read and
resized to the profile's (height, width) once, into uint8/float tensors, and every batch is cut
from them and augmented on tensors (flip, mild colour jitter) by ``DepthDataset.batch``. Batch
order and augmentation are functions of (seed, epoch, position) only, so a run resumed from a
checkpoint, even mid-epoch, sees the same batches as an uninterrupted one.

Each epoch is validated on the test split at the training resolution (a fixed, evenly spaced
subset of ``val_images`` when the profile sets one, to keep epochs cheap); metrics are taken
against the ground truth at its own size, as the protocol says. At the end the final weights are
evaluated on the whole test split beside the train-set baselines (:mod:`depthlib.jobs.evaluate`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from depthlib.data.dataset import DepthDataset, evenly_spaced, open_depth_dataset
from depthlib.data.nyu import NYULabeled
from depthlib.data.rooms import rooms_for_profile
from depthlib.data.transforms import Augment
from depthlib.depth.losses import DepthLoss
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import ConfigError, require_multiple
from depthlib.jobs.evaluate import EvalSet, auto_eigen_crop, evaluate, load_eval_set, score_model
from depthlib.jobs.run import job_settings, run_training
from depthlib.profiles import FinetuneConfig, Profile, runs_dir
from depthlib.train import PreloadedBatches, TrainResult, seed_everything
from depthlib.train.distributed import (
    is_main_process,
    main_process_first,
    resolve_device,
    use_bf16,
)

__all__ = [
    "DepthTask",
    "FinetuneResult",
    "build_model",
    "depth_batches",
    "finetune",
    "label_subset",
    "prepare_train_data",
    "subset_passes",
]


class _Subset:
    """Some positions of a reader, as a reader (what ``DepthDataset`` wraps)."""

    def __init__(self, source, positions: Sequence[int]):
        self.source, self.positions = source, [int(p) for p in positions]
        self.image_size = getattr(source, "image_size", None)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> dict:
        return self.source[self.positions[i]]


def label_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a seeded ``fraction`` of ``n`` labelled images (at least one)."""
    if not 0 < fraction <= 1:
        raise ConfigError(
            f"label_fraction must be in (0, 1], got {fraction}; e.g. 0.1 keeps 10% of the labels."
        )
    if fraction == 1:
        return np.arange(n)
    k = max(1, round(n * fraction))
    rng = np.random.default_rng([int(seed), 0x1ABE1])
    return np.sort(rng.choice(n, size=k, replace=False))


def subset_passes(n: int, subset: int) -> int:
    """How often a labelled subset is repeated per epoch so that an epoch of a low-label run has
    the full split's number of steps: the same optimisation budget per epoch for every label
    fraction (and a shared x-axis for learning curves)."""
    return max(1, round(n / max(1, subset)))


def prepare_train_data(source, cfg: FinetuneConfig, label_fraction: float, seed: int):
    """The (subset of the) train split, resized and preloaded, with tensor augmentation.

    A subset is repeated :func:`subset_passes` times; each copy gets its own augmentation."""
    positions = label_subset(len(source), label_fraction, seed)
    positions = np.tile(positions, subset_passes(len(source), len(positions)))
    augment = Augment(flip=0.5, brightness=cfg.jitter, contrast=cfg.jitter, saturation=cfg.jitter)
    return DepthDataset(
        _Subset(source, positions),
        transform=augment,
        size=(cfg.height, cfg.width),
        train=True,
        seed=seed,
        preload=True,
    )


def depth_batches(dataset: DepthDataset, batch_size: int, seed: int = 0) -> PreloadedBatches:
    """Training batches cut from a preloaded :class:`DepthDataset`, augmented per (epoch, sample)."""
    if dataset.tensors is None:
        raise ConfigError("depth_batches needs a DepthDataset created with preload=True.")

    def cut(positions, epoch, _batch_seed):
        dataset.set_epoch(epoch)
        return dataset.batch(positions)

    return PreloadedBatches(len(dataset), batch_size, cut, seed=seed)


class DepthTask:
    """Loss on a batch; protocol metrics on the validation set after each epoch.

    With ``bf16`` the forward pass runs under bfloat16 autocast (weights, optimizer and loss stay
    float32; bf16 has float32's range, so no loss scaling is needed). Validation and evaluation
    always run in float32.
    """

    def __init__(
        self,
        loss: DepthLoss,
        val_set: EvalSet | None = None,
        *,
        eigen_crop: bool = False,
        batch_size: int = 16,
        bf16: bool = False,
    ):
        self.loss, self.val_set = loss, val_set
        self.eigen_crop, self.batch_size, self.bf16 = eigen_crop, batch_size, bf16

    def training_step(self, model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        image = batch["image"]
        with torch.autocast(image.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            pred = model(image)
        parts = self.loss.components(pred.float(), batch["depth"], batch["valid"])
        total = parts.pop("total")
        extras = {k: float(v.detach()) for k, v in parts.items()} if len(parts) > 1 else {}
        return total, extras

    def validate(self, model: nn.Module, epoch: int) -> dict[str, float]:
        if self.val_set is None:
            return {}
        metrics = score_model(
            model, self.val_set, batch_size=self.batch_size, eigen_crop=self.eigen_crop
        )
        metrics.pop("n_skipped", None)
        metrics.pop("seconds", None)
        return metrics


@dataclass
class FinetuneResult:
    """What :func:`finetune` returns: the training result, the model (final weights), the run
    folder, and the final evaluation on the whole test split (None if not run)."""

    train: TrainResult
    model: nn.Module
    run_dir: Path
    data: Path
    evaluation: dict | None
    n_train: int

    @property
    def interrupted(self) -> bool:
        return self.train.interrupted


def build_model(cfg: FinetuneConfig, encoder_weights=None) -> DepthUNetPlusPlus:
    """The profile's UNet++ (encoder weights: None, 'imagenet' or a safetensors file)."""
    return DepthUNetPlusPlus(
        cfg.encoder,
        encoder_depth=cfg.encoder_depth,
        decoder_channels=cfg.decoder_channels,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        encoder_weights=encoder_weights,
    )


def finetune(
    data: str | os.PathLike | None = None,
    profile: str | Profile | None = None,
    *,
    encoder_weights: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    time_budget_s: float | None = None,
    final_eval: bool = True,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune the profile's UNet++ on ``data`` (default: the profile's rooms set).

    Any ``FinetuneConfig`` field in ``overrides`` (``encoder``, ``epochs``, ``label_fraction``,
    ``seed``, ...) replaces the profile's value. ``encoder_weights``: None (random), 'imagenet'
    or a safetensors encoder file (e.g. from SparK pretraining). ``out``: the run folder
    (default ``runs/finetune-<encoder>-<profile>``); ``resume`` continues the run there. With
    ``final_eval`` the final weights are evaluated on the whole test split (with baselines) and
    the result is written to ``<run>/evaluation.json``.
    """
    prof, cfg = job_settings(profile, "finetune", **overrides)
    stride = 2**cfg.encoder_depth
    require_multiple(
        cfg.height, cfg.width, stride, "The training size", "the encoder stride", ConfigError
    )
    bf16 = use_bf16(cfg.precision, resolve_device(device))
    if data is None:
        data = main_process_first(lambda: rooms_for_profile(prof, progress=progress))
    data_path = Path(data)
    train_source = open_depth_dataset(data_path, "train")
    if not isinstance(train_source, NYULabeled):
        raise ConfigError(
            f"{data_path} is a one-split folder export; fine-tuning needs a labeled-layout file "
            "with a split (NYU's labeled .mat + splits.mat, or a rooms file from depthlib synth)."
        )
    test_source = open_depth_dataset(data_path, "test")
    run_dir = Path(out) if out is not None else runs_dir() / f"finetune-{cfg.encoder}-{prof.name}"

    seed_everything(cfg.seed)  # the model's initial weights depend on the seed only
    model = build_model(cfg, encoder_weights)
    train_set = prepare_train_data(train_source, cfg, cfg.label_fraction, cfg.seed)
    n_labelled = len(label_subset(len(train_source), cfg.label_fraction, cfg.seed))
    val_positions = evenly_spaced(len(test_source), cfg.val_images)
    val_set = load_eval_set(test_source, (cfg.height, cfg.width), val_positions)
    loss = DepthLoss(l1_weight=cfg.l1_weight, grad_weight=cfg.grad_weight)
    task = DepthTask(
        loss,
        val_set,
        eigen_crop=auto_eigen_crop(test_source),
        batch_size=cfg.eval_batch_size,
        bf16=bf16,
    )
    run_config = {
        "task": "finetune",
        "profile": prof.name,
        "data": str(data_path),
        "input_size": [cfg.height, cfg.width],
        "finetune": dataclasses.asdict(cfg),
        "encoder_weights": None if encoder_weights is None else str(encoder_weights),
        "n_train": n_labelled,
        "subset_passes": len(train_set) // n_labelled,
        "n_val": len(val_set),
        "bf16": bf16,
    }
    batches = depth_batches(train_set, cfg.batch_size, seed=cfg.seed)
    result = run_training(
        model, task, batches, cfg, run_dir, run_config, resume=resume, overwrite=overwrite,
        device=device, progress=progress, time_budget_s=time_budget_s, best_metric="abs_rel",
    )  # fmt: skip
    evaluation = None
    if final_eval and not result.interrupted and is_main_process():  # rank 0 under torchrun
        evaluation = evaluate(
            model,
            data_path,
            "test",
            input_size=(cfg.height, cfg.width),
            batch_size=cfg.eval_batch_size,
            out=run_dir / "evaluation.json",
            progress=progress,
        )
    return FinetuneResult(result, model, run_dir, data_path, evaluation, n_labelled)
