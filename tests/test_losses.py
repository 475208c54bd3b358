"""SILog and the optional terms: hand values, valid pixels only, scale behaviour, safe gradients."""

import math

import pytest
import torch

from depthlib.depth.losses import DepthLoss, gradient_matching_loss, silog_loss
from depthlib.errors import ConfigError

P = [1.0, 2.0, 3.0, 4.0]
G = [1.5, 2.5, 3.5, 4.5]


def _batch(seed=0, shape=(2, 1, 8, 8)):
    gen = torch.Generator().manual_seed(seed)
    gt = torch.rand(shape, generator=gen) * 8 + 0.5
    pred = gt * torch.exp(0.3 * torch.randn(shape, generator=gen))
    valid = torch.rand(shape, generator=gen) > 0.3
    return pred, gt, valid


def test_silog_by_hand():
    e = [math.log(p) - math.log(g) for p, g in zip(P, G, strict=True)]
    mean_e, mean_e2 = sum(e) / 4, sum(x * x for x in e) / 4
    expected = 10 * math.sqrt(mean_e2 - 0.85 * mean_e**2)
    loss = silog_loss(torch.tensor(P).view(1, 1, 2, 2), torch.tensor(G).view(1, 1, 2, 2))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert DepthLoss()(torch.tensor(P), torch.tensor(G)).item() == pytest.approx(expected, rel=1e-5)


def test_invalid_pixels_do_not_change_the_loss_or_get_gradient():
    pred, gt, valid = _batch()
    gt = torch.where(valid, gt, torch.nan)  # holes may hold anything
    base = silog_loss(pred, gt, valid)
    wild = torch.where(valid, pred, torch.tensor(1e-9)).requires_grad_()
    assert silog_loss(wild, gt, valid).item() == pytest.approx(base.item(), rel=1e-6)
    loss = DepthLoss(l1_weight=0.5, grad_weight=0.5)
    assert loss(wild, gt, valid).item() == pytest.approx(
        loss(torch.where(valid, pred, 123.0), gt, valid).item(), rel=1e-6
    )
    loss(wild, gt, valid).backward()
    assert torch.isfinite(wild.grad).all()
    assert (wild.grad[~valid] == 0).all() and (wild.grad[valid] != 0).any()


def test_batch_is_pooled_over_pixels_as_bts_does():
    pred, gt, valid = _batch(1)
    pooled = silog_loss(pred[valid], gt[valid])
    assert silog_loss(pred, gt, valid).item() == pytest.approx(pooled.item(), rel=1e-6)
    per_image = (silog_loss(pred[0], gt[0], valid[0]) + silog_loss(pred[1], gt[1], valid[1])) / 2
    assert silog_loss(pred, gt, valid).item() != pytest.approx(per_image.item(), rel=1e-4)


def test_lambda_one_is_scale_invariant():
    pred, gt, valid = _batch(2)
    loss = silog_loss(pred, gt, valid, lam=1.0)
    for s in (0.25, 3.7):
        assert silog_loss(pred * s, gt, valid, lam=1.0).item() == pytest.approx(
            loss.item(), rel=1e-4
        )


def test_lambda_085_keeps_fifteen_percent_of_the_scale_error():
    pred, gt, valid = _batch(3)
    e = torch.log(pred[valid]).double() - torch.log(gt[valid]).double()
    for s in (1.0, 1.2):
        es = e + math.log(s)
        var, mean = es.var(unbiased=False).item(), es.mean().item()
        # loss^2 / 100 = var(e) + (1 - λ) mean(e)^2
        expected = 10 * math.sqrt(var + 0.15 * mean**2)
        assert silog_loss(pred * s, gt, valid).item() == pytest.approx(expected, rel=1e-4)
    # Under a 20 % global scale SILog moves far less than a plain log-RMSE (λ = 0) does.
    change = abs(silog_loss(pred * 1.2, gt, valid) - silog_loss(pred, gt, valid)).item()
    change_rms = abs(silog_loss(pred * 1.2, gt, valid, lam=0) - silog_loss(pred, gt, valid, lam=0))
    assert change < 0.5 * change_rms.item()


def test_gradients_finite_at_edge_cases():
    gt = torch.rand(1, 1, 6, 6) * 3 + 1
    for pred in (gt.clone(), gt * 2.0, torch.full_like(gt, 1e-12)):
        pred = pred.requires_grad_()
        DepthLoss(l1_weight=1.0, grad_weight=1.0)(pred, gt).backward()
        assert torch.isfinite(pred.grad).all()
    holes = torch.zeros_like(gt, dtype=torch.bool)
    pred = torch.rand_like(gt).requires_grad_()
    loss = DepthLoss(l1_weight=1.0, grad_weight=1.0)(pred, gt, holes)
    loss.backward()
    assert loss.item() == 0.0 and (pred.grad == 0).all()


def test_gradient_matching_is_scale_free_and_zero_for_scaled_truth():
    pred, gt, valid = _batch(4)
    assert gradient_matching_loss(gt * 2.5, gt, valid).item() == pytest.approx(0.0, abs=1e-6)
    g = gradient_matching_loss(pred, gt, valid)
    assert g.item() > 0
    assert gradient_matching_loss(pred * 3.0, gt, valid).item() == pytest.approx(g.item(), rel=1e-4)


def test_gradient_matching_by_hand_on_3x3():
    # R = ln p - ln g. x-neighbour |dR|: rows (1, 2), (0, 0), (2, 0) -> 5 / 6 over 6 pairs;
    # y-neighbour |dR|: columns (0, 2), (1, 0), (3, 0) -> 6 / 6. Loss = mean of both = 11 / 12.
    r = torch.tensor([[0.0, 1.0, 3.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=torch.float64)
    gt = torch.tensor([[2.0, 3.0, 1.5], [4.0, 2.5, 1.0], [3.5, 5.0, 2.0]], dtype=torch.float64)
    pred = gt * torch.exp(r)
    view = (1, 1, 3, 3)
    loss = gradient_matching_loss(pred.view(view), gt.view(view), scales=1)
    assert loss.item() == pytest.approx(11 / 12, rel=1e-9)
    # Hole at (0, 2): the pairs touching it drop out. x: 1, 0, 0, 2, 0 -> 3 / 5;
    # y: 0, 2, 1, 0, 0 -> 3 / 5 (column 2 keeps only rows 1-2). Loss 3 / 5.
    valid = torch.ones(3, 3, dtype=torch.bool)
    valid[0, 2] = False
    holed = pred.clone()
    holed[0, 2] = 1e-9  # whatever a hole holds
    loss = gradient_matching_loss(holed.view(view), gt.view(view), valid.view(view), scales=1)
    assert loss.item() == pytest.approx(3 / 5, rel=1e-9)


def test_depth_loss_components_and_weights():
    pred, gt, valid = _batch(5)
    parts = DepthLoss(l1_weight=0.5, grad_weight=2.0).components(pred, gt, valid)
    assert set(parts) == {"silog", "l1", "grad", "total"}
    assert parts["l1"].item() == pytest.approx((pred[valid] - gt[valid]).abs().mean().item())
    total = parts["silog"] + 0.5 * parts["l1"] + 2.0 * parts["grad"]
    assert parts["total"].item() == pytest.approx(total.item())
    assert set(DepthLoss().components(pred, gt, valid)) == {"silog", "total"}


def test_bad_arguments():
    with pytest.raises(ConfigError, match="0.85"):
        DepthLoss(silog_lambda=1.5)
    with pytest.raises(ValueError, match="resize"):
        silog_loss(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 8, 8))
