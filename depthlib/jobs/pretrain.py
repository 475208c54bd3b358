"""SparK pretraining of the UNet++ encoder on unlabelled images: the task and ``pretrain()``.

``pretrain(data, profile)`` preloads an unlabelled pool (:mod:`depthlib.data.pools`: the rooms
generator with a seed of its own, a labelled file's train RGB, or a folder of images), trains
:class:`depthlib.spark.SparK` with the one training loop (AdamW, warmup + cosine, weight decay
0.04 → 0.2 as SparK, checkpoints, exact resume) and writes ``<out>/encoder.safetensors``, which
``DepthUNetPlusPlus(..., encoder_weights=path)`` and ``depthlib finetune --encoder-weights`` load
with strict=True.

Augmentation is SparK's random-resized crop and flip on the whole uint8 batch at once
(:func:`depthlib.data.transforms.random_resized_crop`). Crops, flips and masks of a batch come
from a generator seeded by the batch's own seed, so a resumed run is exact whatever else
consumed random numbers.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthlib.data.dataset import MAX_PRELOAD_BYTES
from depthlib.data.pools import (
    ImagePool,
    StreamedImages,
    held_out_rooms_seed,
    load_image_pool,
    rooms_pool,
    unlabelled_rooms_seed,
)
from depthlib.data.transforms import normalize, random_resized_crop
from depthlib.depth.encoders import load_encoder_weights, offline_imagenet_hint, weights_source
from depthlib.errors import ConfigError, DataError, require_multiple
from depthlib.profiles import (
    PretrainConfig,
    Profile,
    data_dir,
    job_settings,
    printable_path,
    runs_dir,
)
from depthlib.spark.model import SparK, kept_patch_count, masked_patch_loss, reconstruct
from depthlib.train import PreloadedBatches, Task, TrainResult, epoch_loader, fit, seed_everything
from depthlib.train.distributed import is_main_process, resolve_device, unwrap_model, use_bf16
from depthlib.weights import load_weights, save_weights

__all__ = [
    "ENCODER_FILENAME",
    "HeldOutScore",
    "PretrainResult",
    "Reconstructions",
    "SparkTask",
    "build_spark",
    "held_out_loss",
    "image_batches",
    "load_reconstructions",
    "pretrain",
]

ENCODER_FILENAME = "encoder.safetensors"


def image_batches(images: torch.Tensor, batch_size: int, seed: int = 0) -> PreloadedBatches:
    """Batches ``{"rgb": uint8 (B, 3, H, W), "seed": int}`` cut from a preloaded pool; the seed
    (a function of the batch's place only) drives its crops, flips and mask in the task."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[1] != 3:
        raise DataError(
            f"SparK batches are cut from uint8 RGB (N, 3, H, W), got {images.dtype} "
            f"{tuple(images.shape)}."
        )

    def make_batch(draws, _epoch, batch_seed):
        return {"rgb": images[draws], "seed": batch_seed}

    return PreloadedBatches(len(images), batch_size, make_batch, seed=seed)


class SparkTask(Task):
    """The pretraining Task: a batch ``{"rgb", "seed"}`` → augmented, normalised, masked (the
    model's mask ratio) → SparK's masked-patch loss. ``augment``: SparK's crop + flip (False: the
    images as they are). ``bf16``: the step under bfloat16 autocast (the loss in float32).
    ``on_epoch_end``: callbacks ``callback(model, epoch) -> Mapping`` (e.g.
    :class:`Reconstructions`, :class:`HeldOutScore`), merged into the epoch's log row."""

    def __init__(self, augment: bool = True, on_epoch_end=(), bf16: bool = False):
        self.augment, self.bf16 = augment, bf16
        self.callbacks = [on_epoch_end] if callable(on_epoch_end) else list(on_epoch_end)

    def inputs(self, model: nn.Module, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised images, mask) of a batch: the same for the same batch seed."""
        rgb, seed = batch["rgb"], batch["seed"]  # a seed per batch, or per image when streamed
        seed = int(seed.reshape(-1)[0]) if isinstance(seed, torch.Tensor) else int(seed)
        generator = torch.Generator().manual_seed(seed)
        x = random_resized_crop(rgb, generator) if self.augment else rgb.float() / 255.0
        b, _, h, w = x.shape
        mask = unwrap_model(model).random_mask(b, h, w, generator=generator).to(x.device)
        return normalize(x), mask

    def training_step(self, model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
        images, mask = self.inputs(model, batch)
        if not self.bf16:
            return model(images, mask)[0], {}
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            _, prediction = model(images, mask)
        return masked_patch_loss(prediction.float(), images, mask, unwrap_model(model).patch), {}

    def on_epoch_end(self, model: nn.Module, epoch: int, row) -> dict | None:
        merged: dict = {}
        for callback in self.callbacks:
            merged.update(callback(model, epoch) or {})
        return merged or None


@torch.no_grad()
def held_out_loss(
    model: SparK, images: torch.Tensor, seed: int = 0, batch_size: int = 64
) -> dict[str, float]:
    """SparK's masked-patch loss on ``images`` (uint8, never trained on) as they are, each under
    a mask fixed by ``seed`` and its place, averaged over hidden patches:

    - ``held_out``: eval-mode BatchNorm (the running statistics: how the encoder is exported);
    - ``held_out_batch_stats``: train-mode BatchNorm (batch statistics, as in training; the
      running statistics are put back afterwards);
    - ``flat``: a prediction of 0 in per-patch-normalised units (each patch's mean colour, no
      texture), the score with nothing learnt: about 1.0.
    """
    spark = unwrap_model(model)
    device, was_training = next(spark.parameters()).device, spark.training
    buffers = {name: b.clone() for name, b in spark.named_buffers()}
    totals = dict.fromkeys(("held_out", "held_out_batch_stats", "flat"), 0.0)
    hidden_total = 0.0
    try:
        for start in range(0, len(images), batch_size):
            x = normalize(images[start : start + batch_size].to(device))
            b, _, h, w = x.shape
            g = torch.Generator().manual_seed(seed * 1_000_003 + start)
            mask = spark.random_mask(b, h, w, generator=g).to(device)
            hidden = float((~mask).sum())  # the loss is a mean over hidden patches: re-weight
            for key, train_mode in (("held_out", False), ("held_out_batch_stats", True)):
                spark.train(train_mode)
                totals[key] += float(spark(x, mask)[0]) * hidden
            flat = masked_patch_loss(torch.zeros_like(x), x, mask, spark.patch)
            totals["flat"] += float(flat) * hidden
            hidden_total += hidden
    finally:
        for name, b in spark.named_buffers():
            b.copy_(buffers[name])
        spark.train(was_training)
    return {k: v / hidden_total for k, v in totals.items()}


class HeldOutScore:
    """An ``on_epoch_end`` callback: :func:`held_out_loss` on a held-out pool, logged each epoch
    as ``held_out``, ``held_out_batch_stats`` and ``flat``."""

    def __init__(self, images: torch.Tensor, seed: int = 0):
        self.images, self.seed = images, int(seed)

    def __call__(self, model: nn.Module, epoch: int) -> dict:
        return held_out_loss(unwrap_model(model), self.images, self.seed)


class Reconstructions:
    """An ``on_epoch_end`` callback: reconstruct fixed images under a fixed mask, save the tensors
    as ``<directory>/epoch_XXXX.safetensors`` (figures comparing epochs need no retraining) and
    log the loss on them as ``recon_loss``: four images are a picture, not a measurement
    (:class:`HeldOutScore` measures). :func:`pretrain` shows held-out images when it has them;
    the mask comes from ``seed``, so every epoch shows the same hidden patches."""

    def __init__(self, images: torch.Tensor, directory, seed: int = 0, save: bool = True):
        self.images, self.directory = images, Path(directory)
        self.seed, self.save = int(seed), save

    def __call__(self, model: nn.Module, epoch: int) -> dict:
        spark = unwrap_model(model)
        device = next(spark.parameters()).device
        b, _, h, w = self.images.shape
        mask = spark.random_mask(b, h, w, generator=torch.Generator().manual_seed(self.seed))
        recon = reconstruct(spark, self.images.to(device), mask.to(device))
        if self.save:
            tensors = {k: v for k, v in recon.items() if k != "loss"}
            save_weights(self.directory / f"epoch_{epoch:04d}.safetensors", tensors)
        return {"recon_loss": float(recon["loss"])}


def load_reconstructions(run_dir: str | os.PathLike) -> dict[int, dict[str, torch.Tensor]]:
    """``{epoch: reconstruction}`` saved by a pretraining run (the dict
    :func:`~depthlib.spark.model.reconstruct` returns, without the loss), oldest epoch first."""
    directory = Path(run_dir) / "reconstructions"
    files = sorted(directory.glob("epoch_*.safetensors"))
    if not files:
        raise DataError(
            f"No saved reconstructions in {directory}: pretrain with figures=True (the default) "
            "to record them each epoch."
        )
    return {int(f.stem.split("_")[1]): load_weights(f) for f in files}


@dataclass
class PretrainResult:
    """What :func:`pretrain` returns. ``encoder_path`` is None when the run stopped early
    (interrupt, time budget): resume it to finish and export."""

    train: TrainResult
    model: SparK
    run_dir: Path
    encoder_path: Path | None
    pool: ImagePool
    config: PretrainConfig

    @property
    def interrupted(self) -> bool:
        return self.train.interrupted


def build_spark(cfg: PretrainConfig) -> SparK:
    """The profile's SparK model; its encoder starts as ``cfg.encoder_weights`` says (random,
    ImageNet: continued pretraining on the target domain, or another run's file)."""
    model = SparK(
        cfg.encoder, cfg.encoder_depth, cfg.decoder_width, cfg.mask_ratio, cfg.masking, cfg.gather
    )
    source = weights_source(cfg.encoder, cfg.encoder_weights)
    if source == "imagenet":
        raise ConfigError(
            f"SparK can start from ImageNet weights only where they come without network. "
            f"{offline_imagenet_hint()} Or pass a safetensors encoder file."
        )
    if source is not None:
        load_encoder_weights(model.encoder, source, strict=True)
    return model


def _check_size(cfg: PretrainConfig) -> None:
    """Fail before any data work: the size must tile into patches, and the mask ratio must
    leave at least one patch visible and hide at least one."""
    patch = 2**cfg.encoder_depth
    require_multiple(
        cfg.height, cfg.width, patch, "The pretraining size", "the patch size", ConfigError
    )
    n = (cfg.height // patch) * (cfg.width // patch)
    if kept_patch_count(n, cfg.mask_ratio) == n:
        raise ConfigError(
            f"mask_ratio {cfg.mask_ratio} hides none of the {n} patches of a "
            f"{cfg.height}x{cfg.width} image, so there is nothing to reconstruct; raise it "
            "(SparK: 0.6)."
        )


def _held_out_split(
    pool: ImagePool, data, cfg: PretrainConfig, prof: Profile, cache: bool, progress: bool
) -> tuple[ImagePool, torch.Tensor | None]:
    """(training pool, held-out uint8 images or None). Rooms: ``cfg.held_out`` rooms of a seed of
    their own, so no room is in both. A file or folder: its last ``cfg.held_out`` images (at most
    a tenth of them), which training then leaves out."""
    k = cfg.held_out
    if k == 0:
        return pool, None
    if str(data) == "rooms":
        seed, size = held_out_rooms_seed(prof.rooms.seed), (cfg.height, cfg.width)
        path = data_dir() / f"held-out-rooms-n{k}-{cfg.height}x{cfg.width}-seed{seed}.mat"
        held = rooms_pool(k, size, seed, cache=path if cache else None, progress=progress)
        return pool, held.images
    k = min(k, len(pool) // 10)  # a file or folder gives up at most a tenth of its images
    if k == 0:
        if progress:
            print(f"No held-out images: {len(pool)} images are too few to give a tenth up.")
        return pool, None
    if progress:
        print(
            f"Holding out the last {k} of {len(pool)} images of {pool.source} (never trained on)."
        )
    if pool.images is not None:
        return dataclasses.replace(pool, images=pool.images[:-k]), pool.images[-k:]
    held = ImagePool(None, pool.source, k, files=pool.files[-k:], size=pool.size)
    return dataclasses.replace(pool, files=pool.files[:-k]), held.first(k)


def pretrain(
    data: str | os.PathLike = "rooms",
    profile: str | Profile | None = None,
    *,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    device: str = "auto",
    figures: bool = True,
    cache_rooms: bool = True,
    max_preload_bytes: float = MAX_PRELOAD_BYTES,
    **overrides: Any,
) -> PretrainResult:
    """SparK-pretrain the profile's encoder on ``data`` and export it.

    ``data``: "rooms" (the generator, ``n_images`` rooms with the unlabelled seed), a labelled
    .mat/.h5 file (its train split's RGB), or a folder of images. Any ``PretrainConfig`` field in
    ``overrides`` (``encoder``, ``mask_ratio``, ``epochs``, ``n_images``, ``decoder_width``, ...)
    replaces the profile's value. ``out``: the run folder (default
    ``runs/spark-<encoder>-<profile>``), which gets ``checkpoints/``, logs,
    ``reconstructions/epoch_XXXX.safetensors`` (with ``figures``) and, once the run is complete,
    ``encoder.safetensors``. ``cache_rooms``: render the rooms pool once into ``$DEPTHLIB_DATA``.
    ``max_preload_bytes`` caps the preloaded uint8 pool (N·3·H·W bytes).
    """
    prof, cfg = job_settings(profile, "pretrain", **overrides)
    _check_size(cfg)
    if cfg.micro_batch == "auto":
        raise ConfigError("Pretraining takes a divisor of batch_size as micro_batch, not 'auto'.")
    micro = cfg.micro_batch or cfg.batch_size  # the loop adds micro-batches up to batch_size
    run_dir = Path(out) if out is not None else runs_dir() / f"spark-{cfg.encoder}-{prof.name}"

    seed_everything(cfg.seed)  # the model's initial weights depend on the seed only
    model = build_spark(cfg)  # first: a bad encoder name fails before any data work
    size = (cfg.height, cfg.width)
    rooms_seed = unlabelled_rooms_seed(prof.rooms.seed)
    name = f"unlabelled-rooms-n{cfg.n_images}-{cfg.height}x{cfg.width}-seed{rooms_seed}.mat"
    rooms_cache = data_dir() / name if cache_rooms and str(data) == "rooms" else None
    pool = load_image_pool(
        data, size, cfg.n_images, rooms_seed=rooms_seed, rooms_cache=rooms_cache, seed=cfg.seed,
        progress=progress, max_preload_bytes=max_preload_bytes,
    )  # fmt: skip
    if progress and pool.skipped:
        print(f"Skipped {len(pool.skipped)} unreadable file(s), e.g. {pool.skipped[0]}.")
    pool, held_out = _held_out_split(pool, data, cfg, prof, cache_rooms, progress)
    if progress and len(pool) < cfg.n_images:
        print(f"Training on {len(pool)} images of {pool.source} (n_images is {cfg.n_images}).")
    if pool.images is None:  # streamed: one decode per image, in DataLoader workers
        streamed = StreamedImages(pool.files, pool.size, seed=cfg.seed)
        batches = epoch_loader(streamed, micro, seed=cfg.seed, num_workers=cfg.num_workers)
    else:
        batches = image_batches(pool.images, micro, seed=cfg.seed)
    shown = held_out[:4] if held_out is not None else pool.first(4)
    callbacks = [Reconstructions(shown, run_dir / "reconstructions", seed=cfg.seed, save=figures)]
    if held_out is not None:
        callbacks.append(HeldOutScore(held_out, seed=cfg.seed))
    bf16 = use_bf16(cfg.precision, resolve_device(device))
    run_config = {
        "task": "pretrain",
        "profile": prof.name,
        "data": str(data),
        "source": pool.source,
        "n_images": len(pool),
        "n_skipped": len(pool.skipped),
        "input_size": list(size),
        "held_out": 0 if held_out is None else len(held_out),
        "bf16": bf16,
        "pretrain": dataclasses.asdict(cfg),
    }
    result = fit(model, SparkTask(on_epoch_end=callbacks, bf16=bf16), batches, cfg, run_dir, resume=resume,
                 device=device, progress=progress, overwrite=overwrite, run_config=run_config)  # fmt: skip
    encoder_path = None
    if result.stop_reason in ("completed", "already_complete") and is_main_process():
        encoder_path = model.export_encoder(run_dir / ENCODER_FILENAME)
        if progress:
            print(f"Encoder weights: {printable_path(encoder_path)}")
    return PretrainResult(result, model, run_dir, encoder_path, pool, cfg)
