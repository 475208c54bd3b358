"""The UNet++ depth network (on segmentation-models-pytorch) and its encoder weight files.

``DepthUNetPlusPlus`` keeps smp's ``encoder`` / ``decoder`` / ``segmentation_head`` as its own
children, so its state_dict keys are exactly smp's ``UnetPlusPlus`` keys and ``model.encoder`` is
the plain smp encoder that SparK pretrains. Encoder weights travel as safetensors files with
smp's own key names (``conv1.weight``, ``layer1.0.conv1.weight``, ...): a SparK-pretrained
encoder, an ImageNet one or another run's encoder load the same way, and nothing is unpickled.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from depthlib.atomic import atomic_path
from depthlib.data.transforms import normalize
from depthlib.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    require_known_keys,
    require_multiple,
)

__all__ = [
    "DepthUNetPlusPlus",
    "EncoderLoadReport",
    "check_encoder",
    "load_encoder_weights",
    "save_encoder_weights",
]

SMP_DEFAULT_DECODER = (256, 128, 64, 32, 16)
CONFIG_KEYS = ("encoder", "encoder_depth", "decoder_channels", "min_depth", "max_depth")
_HINT_OFFLINE = (
    "ImageNet encoder weights need network access to the Hugging Face Hub. Pass a local "
    "safetensors file instead (--encoder-weights FILE, or encoder_weights='FILE.safetensors'), "
    "or train from scratch with encoder_weights=None."
)


class DepthUNetPlusPlus(nn.Module):
    """UNet++ that maps ImageNet-normalised RGB (B, 3, H, W) to metric depth (B, 1, H, W).

    The head is ``depth = min + (max - min) * sigmoid(logits)``: bounded, so depth never reaches 0
    or a negative value and the log in SILog stays finite; smooth, so every pixel gets a gradient
    (a clamp would give none outside the range); and its range matches the evaluation clip
    (max_depth 10 m as in the NYU protocol), so the network never spends capacity on depths the
    metric would clip anyway. The lower end is nudged just above ``min_depth`` so the output
    lies in (min_depth, max_depth] even where the sigmoid underflows to 0.
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
        self.config = {
            "encoder": encoder,
            "encoder_depth": int(encoder_depth),
            "decoder_channels": decoder_channels,
            "min_depth": float(min_depth),
            "max_depth": float(max_depth),
        }
        if not (encoder_weights is None or isinstance(encoder_weights, (str, os.PathLike))):
            raise ConfigError(
                "encoder_weights must be None (random init), 'imagenet' (download) or the path "
                f"of a .safetensors encoder file, got {encoder_weights!r}."
            )
        local_file = encoder_weights not in (None, "imagenet")
        # Where the encoder's initial weights came from (provenance for logs; not architecture).
        self.encoder_weights = None if encoder_weights is None else str(encoder_weights)
        net = _build_unetplusplus(
            encoder, encoder_depth, decoder_channels, None if local_file else encoder_weights
        )
        self.encoder = net.encoder
        self.decoder = net.decoder
        self.segmentation_head = net.segmentation_head
        self.stride = 2**encoder_depth
        if local_file:
            load_encoder_weights(self, encoder_weights, strict=True)

    @classmethod
    def from_config(cls, config: Mapping) -> DepthUNetPlusPlus:
        """Rebuild the architecture saved in a checkpoint's ``model.config`` (random weights)."""
        require_known_keys(config, CONFIG_KEYS, "UNet++ config")
        return cls(**dict(config))

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
        if as_numpy:
            out = depth[:, 0].float().cpu().numpy()
            return out[0] if unbatch else out
        depth = depth.to(device)
        return depth[0] if unbatch else depth


def check_encoder(encoder: str, encoder_depth: int) -> None:
    """Refuse an encoder smp cannot build as a convnet trunk, or a depth outside 3-5 (UNet++ and
    SparK share this rule: SparK pretrains exactly the encoder UNet++ fine-tunes)."""
    if not isinstance(encoder_depth, (int, np.integer)) or not 3 <= encoder_depth <= 5:
        raise ConfigError(f"encoder_depth must be 3, 4 or 5, got {encoder_depth!r}.")
    known = encoder in smp.encoders.encoders or (
        encoder.startswith("tu-") and timm.is_model(encoder[3:])
    )
    if not known or encoder.startswith("mit_b"):
        raise ConfigError(
            f"Unknown encoder {encoder!r}. Use an smp encoder name such as resnet18, resnet34, "
            "resnet50, or a timm model with the tu- prefix such as tu-convnext_atto."
        )


def _build_unetplusplus(encoder, encoder_depth, decoder_channels, weights) -> smp.UnetPlusPlus:
    if weights == "imagenet":
        if encoder.startswith("tu-"):
            weights = True  # smp's convention for timm encoders
        elif "imagenet" not in smp.encoders.encoders[encoder]["pretrained_settings"]:
            raise ConfigError(f"smp has no ImageNet weights for {encoder!r}; use a local file.")
        if _env_true("HF_HUB_OFFLINE"):
            raise CheckpointError(f"HF_HUB_OFFLINE is set. {_HINT_OFFLINE}")
        if not _hub_reachable():
            raise CheckpointError(f"The Hugging Face Hub is not reachable. {_HINT_OFFLINE}")
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
            f"Downloading ImageNet weights failed ({err}). {_HINT_OFFLINE}"
        ) from err


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


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


# ---------------------------------------------------------------- encoder weight files


@dataclass
class EncoderLoadReport:
    """What a weight file held compared with the encoder (keys in smp's own names)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the encoder, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the encoder
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, file, model
    ignored: list[str] = field(default_factory=list)  # a whole smp model's non-encoder keys
    file_encoder: str | None = None  # encoder name stored in the file's metadata, if any

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        lines = [f"{len(self.loaded)} tensors loaded"]
        for name, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                lines.append(f"{len(items)} {name}: {_first(items)}")
        if self.mismatched:
            shown = [f"{k} file {list(f)} vs model {list(m)}" for k, f, m in self.mismatched]
            lines.append(f"{len(shown)} shape-mismatched: {_first(shown)}")
        return "; ".join(lines)


def _first(items: Sequence[str], n: int = 4) -> str:
    return ", ".join(items[:n]) + (f", ... (+{len(items) - n} more)" if len(items) > n else "")


def _encoder_of(model_or_encoder: nn.Module) -> nn.Module:
    return getattr(model_or_encoder, "encoder", model_or_encoder)


def _encoder_name(model_or_encoder: nn.Module) -> str | None:
    config = getattr(model_or_encoder, "config", None)
    return config.get("encoder") if isinstance(config, dict) else None


def save_encoder_weights(model_or_encoder: nn.Module, path: str | os.PathLike) -> Path:
    """Write the encoder's state_dict (smp key names) to a safetensors file, atomically."""
    path = Path(path)
    state = {
        k: v.detach().to("cpu").contiguous().clone()  # safetensors refuses shared storage
        for k, v in _encoder_of(model_or_encoder).state_dict().items()
    }
    metadata = {"format": "pt", "content": "depthlib encoder (smp key names)"}
    if name := _encoder_name(model_or_encoder):
        metadata["encoder"] = name
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=metadata)
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(
            f"Encoder weight file {path} does not exist. encoder_weights / --encoder-weights "
            "take a .safetensors file (or 'imagenet', or None for random init)."
        )
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        kind = (
            "a PyTorch pickle/zip file (torch.save)"
            if head[:2] == b"PK" or head[:1] == b"\x80"
            else ""
        )
        raise CheckpointError(
            f"{path} is not a safetensors file{' but ' + kind if kind else ''} ({err}). "
            "depthlib only reads safetensors and never unpickles. Convert a trusted checkpoint "
            "once with safetensors.torch.save_file(torch.load(p, weights_only=True), "
            "'encoder.safetensors'), or export with depthlib.depth.unetpp.save_encoder_weights."
        ) from err


def load_encoder_weights(
    model_or_encoder: nn.Module, path: str | os.PathLike, strict: bool = True
) -> EncoderLoadReport:
    """Load a safetensors encoder file; the report is computed here, not by smp.

    ``strict`` raises a CheckpointError when any key is missing, unexpected or of another shape
    (and loads nothing); otherwise the matching tensors are loaded and the rest reported. A file
    holding a whole smp model (keys ``encoder.*``, ``decoder.*``, ...) gives its ``encoder.*``
    part; the other keys are listed in ``report.ignored``.
    """
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    encoder = _encoder_of(model_or_encoder)
    own = encoder.state_dict()
    report = EncoderLoadReport(file_encoder=metadata.get("encoder"))
    if not set(tensors) & set(own) and any(k.startswith("encoder.") for k in tensors):
        report.ignored = sorted(k for k in tensors if not k.startswith("encoder."))
        tensors = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
    report.missing = sorted(set(own) - set(tensors))
    report.unexpected = sorted(set(tensors) - set(own))
    for key in sorted(set(own) & set(tensors)):
        if tuple(tensors[key].shape) == tuple(own[key].shape):
            report.loaded.append(key)
        else:
            report.mismatched.append((key, tuple(tensors[key].shape), tuple(own[key].shape)))
    if strict and not report.ok:
        ours = _encoder_name(model_or_encoder)
        if report.file_encoder and ours and report.file_encoder != ours:
            cause = f"the file holds a {report.file_encoder} encoder but the model uses {ours}"
        else:
            cause = "the file was probably saved from another encoder (e.g. resnet34 vs resnet18)"
        raise CheckpointError(
            f"{path} does not match the model's encoder: {report}. Likely cause: {cause}. "
            "Build the model with the file's encoder name, or pass strict=False to load only "
            "the matching tensors."
        )
    state = dict(own)  # a fresh dict: smp's load_state_dict may rename keys in place
    state.update({k: tensors[k] for k in report.loaded})
    encoder.load_state_dict(state, strict=True)
    return report
