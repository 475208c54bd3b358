"""The UNet++ depth network, on segmentation-models-pytorch.

``DepthUNetPlusPlus`` keeps smp's ``encoder`` / ``decoder`` / ``segmentation_head`` as its own
children, so its state_dict keys are exactly smp's ``UnetPlusPlus`` keys and ``model.encoder`` is
the plain smp encoder that SparK pretrains (built, trimmed and given weights by
:mod:`depthlib.depth.encoders`).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from urllib.parse import urlparse

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from torch import nn

from depthlib.data.transforms import normalize
from depthlib.depth.encoders import (
    check_encoder,
    drop_unused_stages,
    load_encoder_weights,
    offline_imagenet_hint,
    weights_source,
)
from depthlib.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    require_known_keys,
    require_multiple,
)

__all__ = ["DepthUNetPlusPlus"]

SMP_DEFAULT_DECODER = (256, 128, 64, 32, 16)
CONFIG_KEYS = ("encoder", "encoder_depth", "decoder_channels", "min_depth", "max_depth")
_HINT_OFFLINE = (
    "smp's ImageNet encoder weights need network access to the Hugging Face Hub. Pass a local "
    "safetensors file instead (--encoder-weights FILE), or train from scratch (random)."
)


class DepthUNetPlusPlus(nn.Module):
    """UNet++ that maps ImageNet-normalised RGB (B, 3, H, W) to metric depth (B, 1, H, W).

    The head is ``depth = min + (max - min) * sigmoid(logits)``: positive, so SILog's log stays
    finite; smooth, so every pixel gets a gradient (a clamp would give none outside the range);
    and matching the evaluation clip (10 m), so no capacity goes to depths the metric clips. The
    output lies in (min_depth, max_depth] even where the sigmoid underflows to 0.
    """

    def __init__(
        self,
        encoder: str = "resnet18",
        encoder_depth: int = 5,
        decoder_channels: Sequence[int] | None = None,
        min_depth: float = 0.1,
        max_depth: float = 10.0,
        encoder_weights: str | os.PathLike | None = None,
    ):
        super().__init__()
        check_encoder(encoder, encoder_depth)
        if not (0 < min_depth < max_depth):
            raise ConfigError(
                f"Need 0 < min_depth < max_depth, got {min_depth} and {max_depth}; NYU uses "
                "(0.1, 10] m."
            )
        encoder_depth = int(encoder_depth)
        if decoder_channels is None:
            decoder_channels = SMP_DEFAULT_DECODER[:encoder_depth]
        decoder_channels = [int(c) for c in decoder_channels]
        if len(decoder_channels) != encoder_depth or min(decoder_channels) < 1:
            raise ConfigError(
                f"decoder_channels must hold {encoder_depth} positive widths (one per encoder "
                f"stage), got {decoder_channels}; e.g. {list(SMP_DEFAULT_DECODER[:encoder_depth])}."
            )
        values = (encoder, encoder_depth, decoder_channels, float(min_depth), float(max_depth))
        self.config = dict(zip(CONFIG_KEYS, values, strict=True))
        source = weights_source(encoder, encoder_weights)
        # Where the encoder's initial weights came from (provenance for logs; not architecture).
        self.encoder_weights = None if source is None else str(encoder_weights)
        hub = source == "imagenet"
        net = _build_unetplusplus(encoder, encoder_depth, decoder_channels, source if hub else None)
        drop_unused_stages(net.encoder, encoder_depth)  # no stage the decoder never reads
        self.encoder = net.encoder
        self.decoder = net.decoder
        self.segmentation_head = net.segmentation_head
        self.stride = 2**encoder_depth
        if source is not None and not hub:
            load_encoder_weights(self, source, strict=True)

    @classmethod
    def from_config(cls, config: Mapping) -> DepthUNetPlusPlus:
        """Rebuild the architecture saved in a checkpoint's ``model.config`` (random weights)."""
        require_known_keys(config, CONFIG_KEYS, "UNet++ config")
        return cls(**dict(config))

    frozen_encoder = False

    def freeze_encoder(self) -> DepthUNetPlusPlus:
        """Train the decoder and head only: the encoder keeps its weights and BatchNorm statistics
        as loaded. The standard probe of what a pretrained encoder holds, free of fine-tuning."""
        self.frozen_encoder = True
        self.encoder.requires_grad_(False)
        return self.train(self.training)

    def train(self, mode: bool = True) -> DepthUNetPlusPlus:
        super().train(mode)
        if self.frozen_encoder:
            self.encoder.eval()  # BatchNorm statistics stay the encoder's own
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Depth in metres for normalised input whose sides are multiples of ``self.stride``."""
        h, w = x.shape[-2:]
        hint = "model.predict() pads any size and crops back."
        require_multiple(h, w, self.stride, "Input size", "the encoder stride", hint=hint)
        logits = self.segmentation_head(self.decoder(self.encoder(x)))
        return self.logits_to_depth(logits)

    def logits_to_depth(self, logits: torch.Tensor) -> torch.Tensor:
        lo, hi = self.config["min_depth"], self.config["max_depth"]
        depth = lo + (hi - lo) * torch.sigmoid(logits)
        return depth.clamp_min(float(np.nextafter(np.float32(lo), np.float32(np.inf))))

    @torch.no_grad()
    def predict(self, rgb, normalized: bool = False):
        """Depth of the input's size for RGB of any size.

        ``rgb``: uint8 numpy (H, W, 3) or (B, H, W, 3) → float32 numpy (H, W) / (B, H, W); or a
        tensor (B, 3, H, W) / (3, H, W), uint8 or float in [0, 1] (already ImageNet-normalised if
        ``normalized``) → tensor (B, 1, H, W) / (1, H, W) on the input's device. The image is
        reflect-padded to a multiple of the stride, run in eval mode, and cropped back.
        """
        x, unbatch, as_numpy, device = _to_input(rgb, normalized)
        param = next(self.parameters())
        x = x.to(param.device, param.dtype)
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.stride, (-w) % self.stride
        top, left = ph // 2, pw // 2
        pad = (left, pw - left, top, ph - top)
        mode = "reflect" if ph < h and pw < w else "replicate"  # reflect needs pad < size
        was_training = self.training
        self.eval()
        try:
            depth = self(F.pad(x, pad, mode=mode))[..., top : top + h, left : left + w]
        finally:
            self.train(was_training)
        out = depth[:, 0].float().cpu().numpy() if as_numpy else depth.to(device)
        return out[0] if unbatch else out


def _build_unetplusplus(encoder, encoder_depth, decoder_channels, weights) -> smp.UnetPlusPlus:
    if weights == "imagenet":
        if encoder.startswith("tu-"):
            weights = True  # smp's convention for timm encoders
        elif "imagenet" not in smp.encoders.encoders[encoder]["pretrained_settings"]:
            raise ConfigError(f"smp has no ImageNet weights for {encoder!r}; use a local file.")
        hint = f"{_HINT_OFFLINE} {offline_imagenet_hint()}"
        if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
            raise CheckpointError(f"HF_HUB_OFFLINE is set. {hint}")
        if not _hub_reachable():
            raise CheckpointError(f"The Hugging Face Hub is not reachable. {hint}")
    try:
        return smp.UnetPlusPlus(
            encoder_name=encoder,
            encoder_depth=encoder_depth,
            encoder_weights=weights,
            decoder_channels=decoder_channels,
            classes=1,
        )
    except OSError as err:  # huggingface_hub, requests and urllib errors are OSErrors
        raise CheckpointError(
            f"Downloading ImageNet weights failed ({err}). {_HINT_OFFLINE} {offline_imagenet_hint()}"
        ) from err


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One short TCP connect, so an offline machine fails in seconds instead of minutes of retries."""
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


def _to_input(rgb, normalized: bool):
    """(network input (B, 3, H, W) float, was unbatched, return numpy, original device)."""
    if isinstance(rgb, np.ndarray):
        if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
            raise DataError(
                f"Expected an RGB array (H, W, 3) or (B, H, W, 3), got shape {rgb.shape}. "
                "Convert grey or RGBA images to RGB first (PIL: image.convert('RGB'))."
            )
        unbatch = rgb.ndim == 3
        x = torch.from_numpy(np.ascontiguousarray(rgb))
        x = x.permute(2, 0, 1).unsqueeze(0) if unbatch else x.permute(0, 3, 1, 2)
        as_numpy, device = True, torch.device("cpu")
    elif isinstance(rgb, torch.Tensor):
        if rgb.ndim not in (3, 4) or rgb.shape[-3] != 3:
            raise DataError(f"Expected a tensor (B, 3, H, W) or (3, H, W), got {tuple(rgb.shape)}.")
        unbatch, as_numpy, device = rgb.ndim == 3, False, rgb.device
        x = rgb.unsqueeze(0) if unbatch else rgb
    else:
        raise DataError(
            f"predict() takes a numpy array or a torch tensor, got {type(rgb).__name__}."
        )
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise DataError(f"RGB must be uint8 or float, got {x.dtype}.")
    elif not normalized and x.numel() and float(x.max()) > 1.5:
        raise DataError(
            "Float RGB must lie in [0, 1] but its maximum is above 1.5 (0-255 floats?). "
            "Pass uint8, divide by 255, or set normalized=True for ImageNet-normalised input."
        )
    x = x.float()
    return (x if normalized else normalize(x)), unbatch, as_numpy, device
