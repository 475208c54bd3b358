"""What every training job does the same way: a profile section with the caller's changes, and
one call of the shared loop with the job's provenance in its run folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import nn

from depthlib.profiles import Profile, get_profile, with_overrides
from depthlib.train import TrainConfig, TrainResult, fit

__all__ = ["job_settings", "run_training"]

WHAT = {"finetune": "fine-tuning", "pretrain": "pretraining"}


def job_settings(profile: str | Profile | None, section: str, **overrides: Any):
    """``(profile, settings)``: the profile's ``section`` ("finetune"/"pretrain") with every
    non-None override applied (unknown names are refused, naming the valid ones)."""
    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    return prof, with_overrides(getattr(prof, section), WHAT[section], **overrides)


def run_training(
    model: nn.Module,
    task,
    batches,
    settings,
    run_dir: Path,
    run_config: Mapping,
    *,
    resume: bool,
    overwrite: bool,
    device: str,
    progress: bool,
    time_budget_s: float | None,
    **train: Any,
) -> TrainResult:
    """``fit`` with the job's settings (lr, epochs, schedule, clipping, seed, ...) as a
    :class:`TrainConfig`; ``train`` adds loop-only settings (e.g. the metric that picks the best
    checkpoint). ``time_budget_s`` is a safety stop only: the schedule is planned from epochs."""
    config = TrainConfig.from_profile(settings, time_budget_s=time_budget_s, log_every=5, **train)
    return fit(
        model,
        task,
        batches,
        config,
        out_dir=run_dir,
        resume=resume,
        device=device,
        progress=progress,
        overwrite=overwrite,
        run_config=run_config,
    )
