"""Depth: the UNet++ depth network and its encoder weight files, the training losses, and the NYU
evaluation protocol's metrics and baselines."""

from depthlib.depth.encoders import load_encoder_weights, save_encoder_weights
from depthlib.depth.losses import DepthLoss, silog_loss
from depthlib.depth.metrics import MeanDepthBaseline, MetricAccumulator, compute_metrics
from depthlib.depth.unetpp import DepthUNetPlusPlus

__all__ = [
    "DepthLoss",
    "DepthUNetPlusPlus",
    "MeanDepthBaseline",
    "MetricAccumulator",
    "compute_metrics",
    "load_encoder_weights",
    "save_encoder_weights",
    "silog_loss",
]
