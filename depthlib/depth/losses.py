"""Training losses for metric depth: SILog, plus optional L1 and gradient-matching terms.

SILog (Eigen et al. 2014, as BTS and AdaBins train with it)::

    e = ln p - ln g over valid pixels,  loss = 10 * sqrt(mean(e^2) - lambda * mean(e)^2),  lambda 0.85

so ``loss^2 / 100 = var(e) + (1 - lambda) * mean(e)^2``: a global scale error (a constant added
to ``e``) costs only 15 % of what it would in a plain log-RMSE, yet the network still learns
absolute depth. Pixels are pooled over the whole batch, as BTS and AdaBins do (not per image).
"""

from __future__ import annotations

import torch

from depthlib.errors import ConfigError

__all__ = ["DepthLoss", "gradient_matching_loss", "silog_loss"]


def _prepare(pred, gt, valid):
    if pred.shape != gt.shape:
        raise ValueError(
            f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} differ; resize the prediction "
            "(or crop the target) before the loss."
        )
    ok = torch.isfinite(gt) & (gt > 0)
    if valid is not None:
        if valid.shape != gt.shape:
            raise ValueError(f"valid {tuple(valid.shape)} must have gt's shape {tuple(gt.shape)}.")
        ok &= valid.bool()
    return ok


def silog_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    lam: float = 0.85,
    scale: float = 10.0,
    eps: float = 1e-6,
) -> torch.Tensor:
    """``scale * sqrt(mean(e^2) - lam * mean(e)^2)``, e = ln p - ln g, valid pixels of the batch.

    Depths are clamped to ``eps`` before the log, the radicand to ``eps**2`` (rounding can make it
    negative when pred == gt). No valid pixel gives a graph-connected 0: no crash, no step.
    """
    ok = _prepare(pred, gt, valid)
    if not ok.any():
        return pred.sum() * 0.0
    # Index first, log after: invalid pixels (0, NaN) never enter the graph, not even as NaN grads.
    e = torch.log(pred[ok].clamp_min(eps)) - torch.log(gt[ok].clamp_min(eps))
    radicand = (e * e).mean() - lam * e.mean() ** 2
    return scale * torch.sqrt(radicand.clamp_min(eps * eps))


def gradient_matching_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    valid: torch.Tensor | None = None,
    scales: int = 4,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Multi-scale gradient matching on log depth (MegaDepth, MiDaS): sharp, scale-free edges.

    ``R = ln p - ln g``; the loss is the mean of ``|R(x+1) - R(x)|`` and ``|R(y+1) - R(y)|`` over
    neighbour pairs whose both pixels are valid, averaged over ``scales`` resolutions (each half
    the previous, by striding). A global scale of ``p`` adds a constant to ``R`` and cancels.
    """
    ok = _prepare(pred, gt, valid)
    # Substitute 1 at invalid pixels first, so neither NaN values nor NaN gradients can leak.
    p, g = torch.where(ok, pred, 1.0), torch.where(ok, gt, 1.0)
    r = torch.log(p.clamp_min(eps)) - torch.log(g.clamp_min(eps))
    r = torch.where(ok, r, 0.0)
    r, ok = r.reshape(-1, 1, *r.shape[-2:]), ok.reshape(-1, 1, *ok.shape[-2:])
    total, used = pred.sum() * 0.0, 0
    for k in range(scales):
        step = 2**k
        rk, mk = r[..., ::step, ::step], ok[..., ::step, ::step]
        for dim in (-1, -2):
            n = rk.shape[dim] - 1
            if n < 1:
                continue
            both = mk.narrow(dim, 1, n) & mk.narrow(dim, 0, n)
            if both.any():
                diff = (rk.narrow(dim, 1, n) - rk.narrow(dim, 0, n)).abs()
                total = total + diff[both].mean()
                used += 1
    return total / max(used, 1)


class DepthLoss:
    """The training loss: ``SILog + l1_weight * L1 + grad_weight * gradient matching``.

    SILog alone by default (BTS/AdaBins; the course's measured recipe). L1 (metres, valid pixels)
    pulls directly on absolute depth; gradient matching sharpens depth edges.
    """

    def __init__(
        self, silog_lambda: float = 0.85, l1_weight: float = 0.0, grad_weight: float = 0.0
    ):
        if not 0.0 <= silog_lambda <= 1.0:
            raise ConfigError(
                f"silog_lambda must lie in [0, 1] (BTS/AdaBins use 0.85), got {silog_lambda}."
            )
        self.silog_lambda, self.l1_weight, self.grad_weight = silog_lambda, l1_weight, grad_weight

    def components(self, pred, gt, valid=None) -> dict[str, torch.Tensor]:
        """Each active term before weighting (for logging), plus ``total``."""
        parts = {"silog": silog_loss(pred, gt, valid, self.silog_lambda)}
        total = parts["silog"]
        if self.l1_weight:
            ok = _prepare(pred, gt, valid)
            parts["l1"] = (pred[ok] - gt[ok]).abs().mean() if ok.any() else pred.sum() * 0.0
            total = total + self.l1_weight * parts["l1"]
        if self.grad_weight:
            parts["grad"] = gradient_matching_loss(pred, gt, valid)
            total = total + self.grad_weight * parts["grad"]
        parts["total"] = total
        return parts

    def __call__(self, pred, gt, valid=None) -> torch.Tensor:
        return self.components(pred, gt, valid)["total"]
