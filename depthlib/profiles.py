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
    decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8)
    height: int = 96  # network input size during training
    width: int = 128
    epochs: int = 10
    batch_size: int = 16
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
    val_images: int | None = None  # test images validated after each epoch (None: all)
    eval_batch_size: int = 16
    sync_batchnorm: bool = False  # under torchrun: BatchNorm statistics over all processes
    precision: str = "fp32"  # "bf16": bfloat16 autocast in training; "auto": bf16 where fast


@dataclass(frozen=True)
class PretrainConfig:
    """SparK self-supervised pretraining of the same encoder."""

    encoder: str = "resnet18"
    encoder_depth: int = 5
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
class TransferConfig:
    """The experiment: UNet++ from scratch vs from SparK weights, same fine-tune budget.

    Each run is the profile's fine-tune with ``epochs`` epochs; with a label fraction below 1 the
    subset is repeated so that an epoch has the full split's number of steps (same budget, same
    x-axis for the curves). ``seeds`` is what ``reproduce`` runs; the benchmark adds seeds.
    """

    label_fractions: tuple[float, ...] = (1.0, 0.1)
    seeds: tuple[int, ...] = (0,)
    epochs: int = 5


@dataclass(frozen=True)
class Profile:
    name: str
    rooms: RoomsConfig = field(default_factory=RoomsConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)

    def with_(self, **changes) -> Profile:
        """A copy with some top-level fields replaced."""
        return replace(self, **changes)


PROFILES: dict[str, Profile] = {
    "quick": Profile(
        name="quick",
        rooms=RoomsConfig(n=40, height=48, width=64),
        finetune=FinetuneConfig(
            encoder_depth=4,
            decoder_channels=(32, 16, 16, 8),
            height=32,
            width=64,
            epochs=2,
            batch_size=8,
        ),
        pretrain=PretrainConfig(
            encoder_depth=4,
            height=32,
            width=64,
            n_images=32,
            epochs=2,
            batch_size=8,
            decoder_width=32,
        ),
        transfer=TransferConfig(epochs=1),
    ),
    "cpu": Profile(
        name="cpu",
        # Measured on 2 cores (benchmarks/bench_finetune.py): bf16 autocast 48 img/s at 64x96
        # (float32 25), so 20 epochs of the 795 rooms end in about 6 minutes.
        # Four encoder stages (total stride 16): at 64x96 SparK then masks 4x6 patches of 16 px
        # (five stages would leave 2x3 patches of 32 px), and the pretrained encoder transfers
        # only when pretraining and fine-tuning use the same depth.
        finetune=FinetuneConfig(
            encoder_depth=4,
            decoder_channels=(128, 64, 32, 16),
            height=64,
            width=96,
            epochs=20,
            precision="auto",
            val_images=100,
        ),
        # Pretraining at the fine-tuning size (patches of 16 px, 4x6 of them, 10 visible):
        # 4000 unlabelled rooms x 6 epochs fit the reproduce budget on 2 cores.
        pretrain=PretrainConfig(encoder_depth=4, height=64, width=96, epochs=6),
        transfer=TransferConfig(epochs=5),
    ),
    "paper": Profile(
        name="paper",
        rooms=RoomsConfig(n=1449, height=480, width=640),
        # The course report: UNet++ with an ImageNet encoder, 15 epochs, lr 1e-4, batch 32, NYU 795/654.
        finetune=FinetuneConfig(
            encoder="resnet34",
            decoder_channels=(256, 128, 64, 32, 16),
            height=480,
            width=640,
            epochs=15,
            batch_size=32,
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
