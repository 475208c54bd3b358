"""SparK pretraining of the UNet++ encoder on unlabelled images: the task and ``pretrain()``.

``pretrain(data, profile)`` preloads an unlabelled pool (:mod:`depthlib.pretrain_data`: the rooms
generator with a seed of its own, a labelled file's train RGB, or a folder of images), trains
:class:`depthlib.spark.SparK` with the one training loop (:func:`depthlib.train.fit`: AdamW,
warmup + cosine, weight decay 0.04 → 0.2 as SparK, checkpoints, exact resume) and writes
``<out>/encoder.safetensors``, which ``DepthUNetPlusPlus(..., encoder_weights=path)`` and
``depthlib finetune --encoder-weights`` load with strict=True.

Augmentation is SparK's: random-resized crop (area 0.67–1, aspect 3/4–4/3) and horizontal flip,
done on the whole uint8 batch at once with one ``affine_grid``/``grid_sample`` (no per-image
work). Crops, flips and masks of a batch come from a generator seeded by the batch's own seed,
so a resumed run is exact whatever else consumed random numbers.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save
from torch import nn

from depthlib import distributed as dist
from depthlib.atomic import atomic_write
from depthlib.data.transforms import normalize
from depthlib.errors import ConfigError, DataError
from depthlib.masking import kept_patch_count
from depthlib.pretrain_data import (
    MAX_PRELOAD_BYTES,
    ImagePool,
    PretrainBatches,
    load_image_pool,
    unlabelled_rooms_seed,
)
from depthlib.profiles import PretrainConfig, Profile, data_dir, get_profile, runs_dir
from depthlib.rng import seed_everything
from depthlib.spark import SparK
from depthlib.train import TrainConfig, TrainResult, fit

__all__ = [
    "DEFAULT_DECODER_WIDTH",
    "ENCODER_FILENAME",
    "PretrainResult",
    "ReconstructionFigures",
    "SparkTask",
    "build_spark",
    "load_reconstructions",
    "pretrain",
    "random_resized_crop",
    "reconstruction_figure",
]

ENCODER_FILENAME = "encoder.safetensors"
DEFAULT_DECODER_WIDTH = 128  # SparK: 768; see the benchmark for CPU widths
WEIGHT_DECAY_END = 0.2  # SparK: 0.04 → 0.2 along a cosine
CROP_SCALE = (0.67, 1.0)  # SparK's RandomResizedCrop(scale=(0.67, 1))
CROP_RATIO = (3 / 4, 4 / 3)


def random_resized_crop(
    rgb: torch.Tensor,
    generator: torch.Generator,
    scale: tuple[float, float] = CROP_SCALE,
    ratio: tuple[float, float] = CROP_RATIO,
    flip: float = 0.5,
) -> torch.Tensor:
    """Per image: a window of ``scale`` × the area and ``ratio`` × the aspect (clamped to the
    image), placed uniformly, mirrored with probability ``flip``, resampled bilinearly back to
    the input size. uint8 (B, 3, H, W) → float (B, 3, H, W) in [0, 1] on ``rgb``'s device. The
    random numbers come from ``generator`` (CPU) only."""
    b = rgb.shape[0]
    u = torch.rand(b, 5, generator=generator, dtype=torch.float64)
    area = scale[0] + (scale[1] - scale[0]) * u[:, 0]
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[:, 1]
    aspect = torch.exp(log_r)  # crop aspect relative to the image's
    width = torch.sqrt(area * aspect).clamp(max=1.0)  # fractions of the image side
    height = torch.sqrt(area / aspect).clamp(max=1.0)
    cx = (1 - width) * (2 * u[:, 2] - 1)  # centre in [-1, 1] coordinates, window inside
    cy = (1 - height) * (2 * u[:, 3] - 1)
    mirror = torch.where(u[:, 4] < flip, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 2] = width * mirror, cx
    theta[:, 1, 1], theta[:, 1, 2] = height, cy
    x = rgb.float() / 255.0
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class SparkTask:
    """The pretraining Task for :func:`depthlib.train.fit`: a batch ``{"rgb", "seed"}`` →
    augmented, normalised, masked (the model's mask ratio) → SparK's masked-patch loss.

    ``augment``: SparK's crop + flip (False: the images as they are). ``on_epoch_end``: an
    optional ``callback(model, epoch) -> Mapping | None`` (e.g. :class:`ReconstructionFigures`);
    a returned mapping is merged into the epoch's log row.
    """

    def __init__(
        self,
        augment: bool = True,
        on_epoch_end: Callable[[nn.Module, int], Mapping | None] | None = None,
    ):
        self.augment = augment
        self.callback = on_epoch_end

    def inputs(self, model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised images, mask) of a batch: the same for the same batch seed."""
        spark = dist.unwrap_model(model)
        rgb = batch["rgb"]
        generator = torch.Generator().manual_seed(int(batch["seed"]))
        x = random_resized_crop(rgb, generator) if self.augment else rgb.float() / 255.0
        b, _, h, w = x.shape
        mask = spark.random_mask(b, h, w, generator=generator).to(x.device)
        return normalize(x), mask

    def training_step(self, model: nn.Module, batch: Mapping) -> tuple[torch.Tensor, dict]:
        images, mask = self.inputs(model, batch)
        loss, _ = model(images, mask)
        return loss, {}

    def on_epoch_end(self, model: nn.Module, epoch: int, row: Mapping) -> Mapping | None:
        return self.callback(model, epoch) if self.callback is not None else None


def reconstruction_figure(recon: Mapping[str, torch.Tensor], title: str | None = None):
    """Rows = images; columns = input, masked input, prediction, composite (paper's layout)."""
    from matplotlib.figure import Figure

    columns = ("input", "masked", "prediction", "composite")
    n = recon["input"].shape[0]
    fig = Figure(figsize=(2.2 * len(columns), 1.8 * n * recon["input"].shape[-2] / 128 + 0.4))
    axes = fig.subplots(n, len(columns), squeeze=False)
    for r in range(n):
        for c, key in enumerate(columns):
            axes[r, c].imshow(recon[key][r].permute(1, 2, 0).float().cpu().numpy())
            axes[r, c].set_axis_off()
            if r == 0:
                axes[r, c].set_title(key, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


class ReconstructionFigures:
    """An ``on_epoch_end`` callback: reconstruct fixed images under a fixed mask, save
    ``<directory>/epoch_XXXX.png`` (and the tensors as ``epoch_XXXX.safetensors``, so figures
    comparing epochs need no retraining) and log the loss on them as ``recon_loss``.

    The images are the first of the pool (training images: there is no held-out unlabelled
    set); the mask comes from ``seed``, so every epoch's figure shows the same hidden patches.
    """

    def __init__(
        self,
        images: torch.Tensor,
        directory: str | os.PathLike,
        seed: int = 0,
        save: bool = True,
    ):
        self.images, self.directory = images, Path(directory)
        self.seed, self.save = int(seed), save

    def __call__(self, model: nn.Module, epoch: int) -> dict:
        from depthlib.viz import save_figure

        spark = dist.unwrap_model(model)
        device = next(spark.parameters()).device
        b, _, h, w = self.images.shape
        mask = spark.random_mask(b, h, w, generator=torch.Generator().manual_seed(self.seed))
        recon = spark.reconstruct(self.images.to(device), mask.to(device))
        if self.save:
            fig = reconstruction_figure(
                recon, f"SparK reconstructions, epoch {epoch} (loss {recon['loss']:.3f})"
            )
            save_figure(fig, f"epoch_{epoch:04d}", self.directory)
            tensors = {k: v.detach().cpu().contiguous() for k, v in recon.items() if k != "loss"}
            path = self.directory / f"epoch_{epoch:04d}.safetensors"
            atomic_write(path, lambda f: f.write(save(tensors)))
        return {"recon_loss": float(recon["loss"])}


def load_reconstructions(run_dir: str | os.PathLike) -> dict[int, dict[str, torch.Tensor]]:
    """``{epoch: reconstruction}`` saved by a pretraining run's :class:`ReconstructionFigures`
    (the dict :meth:`SparK.reconstruct` returns, without the loss), oldest epoch first."""
    directory = Path(run_dir) / "reconstructions"
    files = sorted(directory.glob("epoch_*.safetensors"))
    if not files:
        raise DataError(
            f"No saved reconstructions in {directory}: pretrain with figures=True (the default) "
            "to record them each epoch."
        )
    return {int(f.stem.split("_")[1]): load_file(str(f)) for f in files}


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
    decoder_width: int

    @property
    def interrupted(self) -> bool:
        return self.train.interrupted


def build_spark(cfg: PretrainConfig, decoder_width: int | None = None) -> SparK:
    """The profile's SparK model (random weights)."""
    return SparK(
        cfg.encoder,
        encoder_depth=cfg.encoder_depth,
        decoder_width=_decoder_width(cfg, decoder_width),
        mask_ratio=cfg.mask_ratio,
        sync_batchnorm=dist.world_size() > 1,
    )


def _decoder_width(cfg: PretrainConfig, override: int | None) -> int:
    if override is not None:
        return int(override)
    return int(getattr(cfg, "decoder_width", DEFAULT_DECODER_WIDTH))


def _check_size(cfg: PretrainConfig) -> None:
    """Fail before any data work: the size must tile into patches, and the mask ratio must
    leave at least one patch visible and hide at least one."""
    patch = 2**cfg.encoder_depth
    if cfg.height % patch or cfg.width % patch:
        raise ConfigError(
            f"The pretraining size {cfg.height}x{cfg.width} must be a multiple of the patch size "
            f"{patch} (= 2**encoder_depth {cfg.encoder_depth}); change height/width."
        )
    n = (cfg.height // patch) * (cfg.width // patch)
    if kept_patch_count(n, cfg.mask_ratio) == n:
        raise ConfigError(
            f"mask_ratio {cfg.mask_ratio} hides none of the {n} patches of a "
            f"{cfg.height}x{cfg.width} image, so there is nothing to reconstruct; raise it "
            "(SparK: 0.6)."
        )


def pretrain(
    data: str | os.PathLike = "rooms",
    profile: str | Profile | None = None,
    encoder: str | None = None,
    mask_ratio: float | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    epochs: int | None = None,
    n_images: int | None = None,
    progress: bool = True,
    *,
    decoder_width: int | None = None,
    overwrite: bool = False,
    device: str = "auto",
    time_budget_s: float | None = None,
    figures: bool = True,
    cache_rooms: bool = True,
    max_preload_bytes: float = MAX_PRELOAD_BYTES,
    **overrides: Any,
) -> PretrainResult:
    """SparK-pretrain the profile's encoder on ``data`` and export it.

    ``data``: "rooms" (the generator, ``n_images`` rooms with the unlabelled seed), a labelled
    .mat/.h5 file (its train split's RGB), or a folder of images. ``encoder``, ``mask_ratio``,
    ``epochs``, ``n_images`` and any other ``PretrainConfig`` field in ``overrides`` replace the
    profile's value; ``decoder_width`` defaults to the profile's (or 128). ``out``: the run folder
    (default ``runs/spark-<encoder>-<profile>``), which gets ``checkpoints/``, logs,
    ``reconstructions/epoch_XXXX.png`` (with ``figures``) and, once the run is complete,
    ``encoder.safetensors``. ``resume`` continues the run there. ``cache_rooms``: render the rooms
    pool once into ``$DEPTHLIB_DATA`` (else in memory every time). ``max_preload_bytes`` caps the
    preloaded uint8 pool (N·3·H·W bytes). ``time_budget_s`` is a safety stop only: the schedule
    is planned from ``epochs``.
    """
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    changes = {k: v for k, v in overrides.items() if v is not None}
    for name, value in (
        ("encoder", encoder),
        ("mask_ratio", mask_ratio),
        ("epochs", epochs),
        ("n_images", n_images),
    ):
        if value is not None:
            changes[name] = value
    fields = {f.name for f in dataclasses.fields(PretrainConfig)}
    unknown = sorted(set(changes) - fields)
    if unknown:
        raise ConfigError(
            f"Unknown pretraining setting(s) {unknown}; valid ones are the PretrainConfig fields: "
            f"{', '.join(sorted(fields))}."
        )
    cfg = dataclasses.replace(prof.pretrain, **changes)
    _check_size(cfg)
    width = _decoder_width(cfg, decoder_width)
    run_dir = Path(out) if out is not None else runs_dir() / f"spark-{cfg.encoder}-{prof.name}"

    seed_everything(cfg.seed)  # the model's initial weights depend on the seed only
    model = build_spark(cfg, width)  # first: a bad encoder name fails before any data work
    size = (cfg.height, cfg.width)
    rooms_seed = unlabelled_rooms_seed(prof.rooms.seed)
    rooms_cache = None
    if cache_rooms and str(data) == "rooms":
        name = f"unlabelled-rooms-n{cfg.n_images}-{cfg.height}x{cfg.width}-seed{rooms_seed}.mat"
        rooms_cache = data_dir() / name
    pool = load_image_pool(
        data,
        size,
        cfg.n_images,
        rooms_seed=rooms_seed,
        rooms_cache=rooms_cache,
        seed=cfg.seed,
        progress=progress,
        max_preload_bytes=max_preload_bytes,
    )
    if progress and pool.skipped:
        print(f"Skipped {len(pool.skipped)} unreadable file(s), e.g. {pool.skipped[0]}.")
    if progress and len(pool) < cfg.n_images:
        print(f"Using all {len(pool)} images of {pool.source} (n_images is {cfg.n_images}).")
    loader = PretrainBatches(pool.images, cfg.batch_size, seed=cfg.seed)
    callback = ReconstructionFigures(
        pool.images[: min(4, len(pool))], run_dir / "reconstructions", seed=cfg.seed, save=figures
    )
    task = SparkTask(on_epoch_end=callback)
    extra = {} if hasattr(cfg, "weight_decay_end") else {"weight_decay_end": WEIGHT_DECAY_END}
    train_config = TrainConfig.from_profile(cfg, time_budget_s=time_budget_s, log_every=5, **extra)
    run_config = {
        "task": "pretrain",
        "profile": prof.name,
        "data": str(data),
        "source": pool.source,
        "n_images": len(pool),
        "n_skipped": len(pool.skipped),
        "input_size": list(size),
        "pretrain": dataclasses.asdict(cfg),
        "decoder_width": width,
    }
    result = fit(
        model,
        task,
        loader,
        train_config,
        out_dir=run_dir,
        resume=resume,
        device=device,
        progress=progress,
        overwrite=overwrite,
        run_config=run_config,
    )
    encoder_path = None
    if result.stop_reason in ("completed", "already_complete") and dist.is_main_process():
        encoder_path = model.export_encoder(run_dir / ENCODER_FILENAME)
        if progress:
            print(f"Encoder weights: {encoder_path}")
    return PretrainResult(result, model, run_dir, encoder_path, pool, cfg, width)
