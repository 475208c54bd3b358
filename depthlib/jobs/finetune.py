"""Supervised fine-tuning of the UNet++ depth model: data preparation, the task, ``finetune()``.

On a CPU the budget is the step time, so nothing else may cost: the labelled images are read
and resized to the profile's (height, width) once, into tensors, and every batch is cut from them
and augmented on tensors (flip, mild colour jitter). A label subset is held once and its
repetition lives in the batch sampler (``passes``). Batch order and augmentation are functions of
(seed, epoch, draw) only, so a run resumed from a checkpoint, even mid-epoch, sees the same
batches as an uninterrupted one.

Each epoch is validated on a seeded share of the train split held out from training
(``val_fraction``; at most ``val_images`` of it, evenly spaced), at the training resolution and
against the ground truth at its own size, as the protocol says: curves and choices never look at
the test split. At the end the final weights are evaluated once on the whole test split beside
the train-set baselines (:mod:`depthlib.jobs.evaluate`).
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
from torch.utils.data import default_convert

from depthlib.data.dataset import DepthDataset, evenly_spaced, open_splits, stream_size
from depthlib.data.nyu import NYULabeled
from depthlib.data.rooms import rooms_for_profile
from depthlib.data.transforms import Augment, normalize
from depthlib.depth.losses import DepthLoss
from depthlib.depth.metrics import EvalSet, score_model
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.errors import ConfigError, require_multiple
from depthlib.jobs.evaluate import auto_eigen_crop, evaluate, load_eval_set
from depthlib.profiles import FinetuneConfig, Profile, job_settings, runs_dir
from depthlib.seeds import LABELS, VALIDATION, generator
from depthlib.train import PreloadedBatches, Task, TrainResult, epoch_loader, fit, seed_everything
from depthlib.train.distributed import (
    is_main_process,
    main_process_first,
    resolve_device,
    use_bf16,
)
from depthlib.train.memory import choose_micro_batch

__all__ = [
    "DepthTask",
    "FinetuneResult",
    "build_model",
    "depth_batches",
    "finetune",
    "label_subset",
    "subset_passes",
    "train_data",
    "validation_carve",
]


def validation_carve(n: int, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, validation positions) of a train split of ``n`` images: a seeded
    ``fraction`` held out for curves and choices, so the test split is used once, at the end.
    One carve for every run of a split, whatever the run's seed."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {fraction}; e.g. 0.1.")
    k = max(1, round(n * fraction)) if fraction else 0
    if k >= n:
        raise ConfigError(f"val_fraction {fraction} leaves no training image of {n}.")
    held = np.zeros(n, bool)
    held[generator(VALIDATION, n).choice(n, size=k, replace=False)] = True
    return np.flatnonzero(~held), np.flatnonzero(held)


def label_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Sorted positions of a seeded ``fraction`` of ``n`` labelled images (at least one)."""
    if not 0 < fraction <= 1:
        raise ConfigError(
            f"label_fraction must be in (0, 1], got {fraction}; e.g. 0.1 keeps 10% of the labels."
        )
    if fraction == 1:
        return np.arange(n)
    k = max(1, round(n * fraction))
    return np.sort(generator(seed, LABELS).choice(n, size=k, replace=False))


def subset_passes(n: int, subset: int) -> int:
    """How often a labelled subset is repeated per epoch so that an epoch of a low-label run has
    the full split's number of steps: the same optimisation budget per epoch for every label
    fraction (and a shared x-axis for learning curves)."""
    return max(1, round(n / max(1, subset)))


def train_data(source, cfg: FinetuneConfig, positions: Sequence[int], seed: int) -> DepthDataset:
    """The labelled ``positions`` of a reader with the training augmentation: a labelled file
    preloaded at the training size; a folder export (tens of thousands of pairs) streamed, each
    pair resized just above the training size and randomly cropped to it."""
    size, stream = (cfg.height, cfg.width), not isinstance(source, NYULabeled)
    jitter = {"brightness": cfg.jitter, "contrast": cfg.jitter, "saturation": cfg.jitter}
    return DepthDataset(
        source,
        positions,
        size=stream_size(source.image_size, size) if stream else size,
        augment=Augment(crop=size if stream else None, flip=0.5, **jitter),
        seed=seed,
        preload=not stream,
    )


def depth_batches(
    data: DepthDataset, batch_size: int, *, seed: int = 0, passes: int = 1, num_workers: int = 0
):
    """Training batches of ``data``, every image ``passes`` times an epoch: cut from its
    tensors when preloaded, else built whole in ``num_workers`` DataLoader workers."""
    if data.tensors is None:
        return epoch_loader(data, batch_size, seed=seed, passes=passes, num_workers=num_workers,
                            collate_fn=default_convert)  # fmt: skip

    def make_batch(draws, epoch, _batch_seed):
        data.set_epoch(epoch)
        return data.batch(draws)

    return PreloadedBatches(len(data), batch_size, make_batch, seed=seed, passes=passes)


class DepthTask(Task):
    """Loss on a batch; protocol metrics on the validation set after each epoch.

    With ``bf16`` the forward pass runs under bfloat16 autocast (weights, optimizer and loss stay
    float32; bf16 has float32's range, so no loss scaling is needed); with ``channels_last`` the
    batches are NHWC, as the model is then. Validation and evaluation always run in float32.
    """

    def __init__(
        self,
        loss: DepthLoss,
        val_set: EvalSet | None = None,
        *,
        eigen_crop: bool = False,
        batch_size: int = 16,
        bf16: bool = False,
        channels_last: bool = False,
    ):
        self.loss, self.val_set = loss, val_set
        self.eigen_crop, self.batch_size, self.bf16 = eigen_crop, batch_size, bf16
        self.layout = torch.channels_last if channels_last else torch.contiguous_format

    def training_step(self, model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        image = normalize(batch["rgb"]).contiguous(memory_format=self.layout)
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
        return {k: v for k, v in metrics.items() if k not in ("n_skipped", "seconds")}


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


def build_model(cfg: FinetuneConfig) -> DepthUNetPlusPlus:
    """The profile's UNet++, its encoder initialised as ``cfg.encoder_weights`` says."""
    return DepthUNetPlusPlus(
        cfg.encoder,
        encoder_depth=cfg.encoder_depth,
        decoder_channels=cfg.decoder_channels,
        min_depth=cfg.min_depth,
        max_depth=cfg.max_depth,
        encoder_weights=cfg.encoder_weights,
    )


def finetune(
    data: str | os.PathLike | None = None,
    profile: str | Profile | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    final_eval: bool = True,
    test_data: str | os.PathLike | None = None,
    **overrides: Any,
) -> FinetuneResult:
    """Fine-tune the profile's UNet++ on ``data`` (default: the profile's rooms set): a labelled
    file (NYU's labeled .mat + splits.mat, a rooms file) whose two splits are used, or a folder
    export's train list (DenseDepth's nyu2_train.csv, BTS's train list) with its test list
    (``test_data``, or the one beside it). Folder exports are streamed through DataLoader
    workers (``num_workers``); labelled files are preloaded.

    Any ``FinetuneConfig`` field in ``overrides`` (``encoder``, ``encoder_weights``, ``epochs``,
    ``label_fraction``, ``seed``, ...) replaces the profile's value; ``encoder_weights`` is
    "random", "imagenet" or a safetensors encoder file (e.g. from SparK). ``out``: the run folder
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
    train_source, test_source = open_splits(data_path, test_data)
    stream = not isinstance(train_source, NYULabeled)  # one file per sample: read on the fly
    run_dir = Path(out) if out is not None else runs_dir() / f"finetune-{cfg.encoder}-{prof.name}"

    seed_everything(cfg.seed)  # the model's initial weights depend on the seed only
    model = build_model(cfg)
    if cfg.freeze_encoder:
        model.freeze_encoder()
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    example, on = torch.zeros(1, 3, cfg.height, cfg.width), resolve_device(device)
    micro, plan = choose_micro_batch(model, example, cfg.batch_size, cfg.micro_batch, on)
    if progress and micro < cfg.batch_size:
        print(plan)
    cfg = dataclasses.replace(cfg, micro_batch=micro)  # "auto" resolved: what the loop runs
    pool, held_out = validation_carve(len(train_source), cfg.val_fraction)
    labelled = pool[label_subset(len(pool), cfg.label_fraction, cfg.seed)]
    passes = subset_passes(len(pool), len(labelled))
    train_set = train_data(train_source, cfg, labelled, cfg.seed)
    val_positions = held_out[evenly_spaced(len(held_out), cfg.val_images)]
    val_set = None
    if len(val_positions):
        val_data = DepthDataset(train_source, val_positions, size=(cfg.height, cfg.width))
        val_set = load_eval_set(val_data)
    loss = DepthLoss(l1_weight=cfg.l1_weight, grad_weight=cfg.grad_weight)
    task = DepthTask(
        loss,
        val_set,
        eigen_crop=auto_eigen_crop(train_source),
        batch_size=cfg.eval_batch_size,
        bf16=bf16,
        channels_last=cfg.channels_last,
    )
    run_config = {
        "task": "finetune",
        "profile": prof.name,
        "data": str(data_path),
        "test_data": str(getattr(test_source, "list_path", data_path)),
        "streamed": stream,
        "input_size": [cfg.height, cfg.width],
        "finetune": dataclasses.asdict(cfg),
        "n_train": len(labelled),
        "subset_passes": passes,
        "n_val": len(val_positions),
        "validation": f"{cfg.val_fraction:.0%} of the train split, held out (seeded)",
        "bf16": bf16,
        "micro_batch": micro,
    }
    batches = depth_batches(
        train_set, micro, seed=cfg.seed, passes=passes, num_workers=cfg.num_workers
    )
    result = fit(model, task, batches, cfg, run_dir, resume=resume, device=device,
                 progress=progress, overwrite=overwrite, run_config=run_config)  # fmt: skip
    evaluation = None
    if final_eval and not result.interrupted and is_main_process():  # rank 0 under torchrun
        test_path = getattr(test_source, "list_path", data_path)
        evaluation = evaluate(
            model,
            test_path,
            "test",
            train_data=data_path if stream else None,
            input_size=(cfg.height, cfg.width),
            batch_size=cfg.eval_batch_size,
            out=run_dir / "evaluation.json",
            progress=progress,
        )
    return FinetuneResult(result, model, run_dir, data_path, evaluation, len(labelled))
