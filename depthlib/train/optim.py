"""AdamW with decay-free norms/biases, and a per-iteration warmup + cosine schedule.

Why no weight decay on norms and biases: decay pulls a parameter towards zero. For a conv or
linear weight that acts as a regulariser of the function's complexity, but a BatchNorm/LayerNorm
scale or a bias only sets the scale or offset of a feature; shrinking it fights the
normalisation (a BN-preceded conv is scale-invariant, so the decay ends up just shrinking the
norm's gain) and costs accuracy without regularising. Every recipe the course follows (SparK,
ConvNeXt, Goyal et al. 2017) therefore exempts 1-D parameters and biases, and SparK also exempts
its learned mask tokens. A model can name more exemptions with a timm-style
``no_weight_decay()`` method returning parameter names.

The schedule is stepped once per optimizer step (not per epoch): with the course's small
epochs, a per-epoch schedule would change the learning rate in a handful of coarse jumps.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from depthlib.train.distributed import unwrap_model

__all__ = ["WarmupCosine", "lr_factor", "make_optimizer", "param_groups"]

DEFAULT_NO_DECAY_KEYS = ("mask_token", "pos_embed", "cls_token")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into a decayed group and a decay-free group (see module doc)."""
    target = unwrap_model(model)
    named_exempt = set(getattr(target, "no_weight_decay", lambda: ())())
    decay, no_decay = [], []
    for name, param in target.named_parameters():
        if not param.requires_grad:
            continue
        exempt = (
            param.ndim <= 1
            or name.endswith(".bias")
            or name in named_exempt
            or any(k in name for k in DEFAULT_NO_DECAY_KEYS)
        )
        (no_decay if exempt else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": float(weight_decay), "name": "decay"},
        {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW (betas 0.9, 0.999) over :func:`param_groups` of ``model``."""
    groups = param_groups(model, weight_decay)
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999))


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate for the update with 0-based index ``step``.

    Linear warmup ``(step + 1) / warmup_steps`` (the first update is already non-zero), then a
    cosine from 1 down to ``min_ratio`` reached at ``total_steps``.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupCosine:
    """Sets every group's ``lr`` (and optionally ``weight_decay``) from the step count.

    Its whole state is the step count, so it checkpoints as ``{"step": n}`` (weights_only-safe).
    ``weight_decay_end`` moves decayed groups from their initial decay to that value along a
    cosine (SparK raises decay from 0.04 to 0.2 over pretraining); decay-free groups stay at 0.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        total_steps: int,
        warmup_steps: int,
        min_ratio: float = 0.0,
        weight_decay_end: float | None = None,
    ):
        self.optimizer = optimizer
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_ratio = float(min_ratio)
        self.weight_decay_end = weight_decay_end
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self.base_wds = [g["weight_decay"] for g in optimizer.param_groups]
        self.step_count = 0
        self._apply()

    def _apply(self) -> None:
        factor = lr_factor(
            self.step_count,
            warmup_steps=self.warmup_steps,
            total_steps=self.total_steps,
            min_ratio=self.min_ratio,
        )
        progress = min(1.0, self.step_count / max(1, self.total_steps))
        for group, lr, wd in zip(
            self.optimizer.param_groups, self.base_lrs, self.base_wds, strict=True
        ):
            group["lr"] = lr * factor
            if self.weight_decay_end is not None and wd > 0:
                cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
                group["weight_decay"] = (
                    self.weight_decay_end + (wd - self.weight_decay_end) * cosine
                )

    def step(self) -> None:
        self.step_count += 1
        self._apply()

    @property
    def lr(self) -> float:
        """The learning rate of the first group (what progress bars and logs show)."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict:
        return {"step": self.step_count}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self._apply()
