"""SparK: masked image modeling for the very encoder UNet++ fine-tunes, with its masks and loss.

Whole patches of the encoder's total stride are hidden, so at the deepest feature map a patch is
one position and the mask is aligned at every scale: bool ``(B, 1, H/patch, W/patch)``, True =
visible. The sparse encoder (:func:`~depthlib.spark.sparse.to_sparse`, smp's state_dict keys)
sees the visible patches only, the densifier and light decoder (:mod:`depthlib.spark.decoder`)
predict the pixels from its features at strides 4 … patch (ResNet layer1–4, ConvNeXt stages
0–3), and the loss is the MSE to per-patch normalised pixels on the masked patches only. Images
are ImageNet-normalised float (B, 3, H, W), sides multiples of the patch; they are the target.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from depthlib.data.transforms import denormalize, normalize
from depthlib.depth.encoders import build_encoder, save_encoder_weights
from depthlib.errors import ConfigError, DataError, require_known_keys, require_multiple
from depthlib.spark.decoder import Densify, LightDecoder, decoder_widths
from depthlib.spark.sparse import SparseContext, to_sparse, upsample_mask

__all__ = [
    "SparK",
    "kept_patch_count",
    "make_patch_mask",
    "masked_patch_loss",
    "normalize_patches",
    "patchify",
    "reconstruct",
    "unpatchify",
]

CONFIG_KEYS = ("encoder", "encoder_depth", "decoder_width", "mask_ratio", "masking", "gather")
MASKINGS = ("sparse", "zero-out")


def kept_patch_count(num_patches: int, ratio: float) -> int:
    """How many of ``num_patches`` stay visible at mask ``ratio``: round(n·(1−ratio)), as SparK
    (Python's round, half to even, on purpose: it is what SparK's code does)."""
    if not 0.0 <= float(ratio) < 1.0:
        raise ConfigError(
            f"mask ratio must be in [0, 1), got {ratio!r}: it is the fraction of patches hidden."
        )
    keep = round(num_patches * (1.0 - float(ratio)))
    if keep < 1:
        raise ConfigError(
            f"mask ratio {ratio} keeps no patch of {num_patches}; "
            "lower the ratio or use a larger image / smaller patch."
        )
    return keep


def make_patch_mask(
    batch: int,
    height: int,
    width: int,
    patch: int,
    ratio: float,
    *,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """A random SparK patch mask ``(batch, 1, height/patch, width/patch)``, True = visible: each
    image keeps exactly :func:`kept_patch_count` patches, the first of an argsort of noise. From
    ``seed``, from a ``generator`` (a fresh mask per call: a training loop) or torch's global RNG.
    """
    if seed is not None and generator is not None:
        raise ConfigError("pass either seed or generator to make_patch_mask, not both.")
    if batch < 1 or patch < 1:
        raise ConfigError(f"batch and patch must be >= 1, got batch={batch}, patch={patch}.")
    require_multiple(height, width, patch, "image size", "the patch size", ConfigError)
    h, w = height // patch, width // patch
    keep = kept_patch_count(h * w, ratio)
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    on = generator.device if generator is not None else device
    noise = torch.rand(batch, h * w, generator=generator, device=on)
    mask = torch.zeros(batch, h * w, dtype=torch.bool, device=noise.device)
    mask = mask.scatter_(1, noise.argsort(dim=1)[:, :keep], True).view(batch, 1, h, w)
    return mask if device is None else mask.to(device)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) → (B, h·w, patch·patch·C) patch vectors, row-major grid, MAE/SparK layout."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, -1, patch * patch * c)


def unpatchify(tokens: torch.Tensor, patch: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, h·w, patch·patch·C) → (B, C, h·patch, w·patch)."""
    (b, _, d), (h, w) = tokens.shape, grid
    x = tokens.reshape(b, h, w, patch, patch, d // (patch * patch))
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, -1, h * patch, w * patch)


def normalize_patches(
    patches: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-patch normalisation of (B, L, p·p·C) vectors: ``((x - mean) / std, mean, std)``, over
    all values of a patch, ``std = sqrt(unbiased var + eps)``, as SparK (and MAE's
    ``norm_pix_loss``)."""
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + eps) ** 0.5
    return (patches - mean) / std, mean, std


def masked_patch_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, patch: int
) -> torch.Tensor:
    """SparK's loss: MSE between the prediction and the per-patch normalised target, averaged
    per patch over its p·p·3 values, then over the masked patches only (True in ``mask`` =
    visible, so it does not count). ``prediction``/``target``: (B, 3, H, W)."""
    goal, _, _ = normalize_patches(patchify(target, patch))
    per_patch = (patchify(prediction, patch) - goal).square().mean(dim=-1)  # (B, L)
    hidden = (~mask).reshape(mask.shape[0], -1).to(per_patch.dtype)
    return (per_patch * hidden).sum() / hidden.sum().clamp_min(1.0)


class SparK(nn.Module):
    """SparK around an smp encoder (``resnet18/34/50``, ``tu-efficientnet_lite0``,
    ``tu-convnext_atto``) of ``encoder_depth`` stages (3–5; patch = 2**depth). ``decoder_width``:
    the light decoder's first width (SparK: 768, halved per scale). ``masking``: "sparse" (SparK)
    or "zero-out", the control that tests notebook 02's lesson downstream: the same masks,
    densifier, decoder and loss, but a dense encoder and densify norms that take the zeroed
    pixels for data. ``gather``: convolution kinds the sparse encoder computes on visible
    positions only (``("1x1",)``; :class:`~depthlib.spark.sparse.SparseContext`): same numbers."""

    def __init__(
        self,
        encoder: str = "resnet18",
        encoder_depth: int = 5,
        decoder_width: int = 128,
        mask_ratio: float = 0.6,
        masking: str = "sparse",
        gather: tuple[str, ...] = (),
    ):
        super().__init__()
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio!r}; SparK uses 0.6.")
        if masking not in MASKINGS:
            raise ConfigError(f"masking must be one of {MASKINGS}, got {masking!r}.")
        if gather and masking != "sparse":
            raise ConfigError("gather applies to the sparse encoder; zero-out runs it dense.")
        values = (encoder, encoder_depth, decoder_width, float(mask_ratio), masking, list(gather))
        self.config = dict(zip(CONFIG_KEYS, values, strict=True))
        self.patch = 2**encoder_depth
        self.mask_ratio = float(mask_ratio)
        dense = build_encoder(encoder, encoder_depth)  # checks the name and depth first
        channels = list(dense.out_channels)
        if masking == "sparse":
            self.encoder, self.sparse_ctx = to_sparse(dense, inplace=True, gather=gather)
        else:  # the context only brings the mask to each feature's size (mask tokens, input)
            self.encoder, self.sparse_ctx = dense, SparseContext()
        # smp features: [input, stride 2, stride 4, ..., stride 2**depth]; deepest first, down to 4.
        self.feature_indices = list(range(encoder_depth, 1, -1))
        widths = decoder_widths(decoder_width, encoder_depth)
        self.densify = Densify(
            [channels[k] for k in self.feature_indices],
            widths[: len(self.feature_indices)],
            self.sparse_ctx,
            layer_norm=not any(isinstance(m, nn.BatchNorm2d) for m in self.encoder.modules()),
            sparse=masking == "sparse",
        )
        self.decoder = LightDecoder(widths)

    @classmethod
    def from_config(cls, config: Mapping) -> SparK:
        """Rebuild from a checkpoint's ``model.config`` (random weights)."""
        require_known_keys(config, CONFIG_KEYS, "SparK config")
        return cls(**dict(config))

    def random_mask(self, batch: int, height: int, width: int, **kwargs) -> torch.Tensor:
        """A mask for (height, width) images at this model's patch size and mask ratio; keywords
        (``generator``, ``seed``, ``device``) as :func:`make_patch_mask`."""
        return make_patch_mask(batch, height, width, self.patch, self.mask_ratio, **kwargs)

    def _check(self, images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The one place images and mask are checked; returns the mask on the images' device."""
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise DataError(
                f"SparK takes ImageNet-normalised float images (B, 3, H, W), got "
                f"{images.dtype} {tuple(images.shape)}; use depthlib.data.transforms.normalize(rgb)."
            )
        b, _, h, w = images.shape
        require_multiple(h, w, self.patch, "Image size", "the patch size")
        if mask is None:
            return self.random_mask(b, h, w, device=images.device)
        grid = (b, 1, h // self.patch, w // self.patch)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != grid:
            got = f"{mask.dtype} {tuple(mask.shape)}" if torch.is_tensor(mask) else type(mask)
            raise DataError(
                f"the mask for {b} images of {h}x{w} must be a bool tensor {grid} (True = "
                f"visible, {self.patch}-px patches), got {got}; use model.random_mask(...)."
            )
        return mask.to(images.device)

    def features(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The encoder's features (smp's list: input, stride 2, …, stride 2**depth) on the visible
        patches; with sparse masking, masked positions are exactly 0 at every scale."""
        mask = self._check(images, mask)
        with self.sparse_ctx.active(mask):
            return self.encoder(images * self.sparse_ctx.mask_for(images))

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, prediction)``: the masked-patch loss and the decoder's (B, 3, H, W) output in
        per-patch-normalised units. ``mask`` None: one drawn from torch's global RNG."""
        mask = self._check(images, mask)
        with self.sparse_ctx.active(mask):
            features = self.encoder(images * self.sparse_ctx.mask_for(images))
            skips = self.densify([features[k] for k in self.feature_indices])
        prediction = self.decoder(skips)
        return masked_patch_loss(prediction, images, mask, self.patch), prediction

    def export_encoder(self, path: str | os.PathLike) -> Path:
        """Write the encoder's weights (smp key names, encoder name in the metadata) as
        safetensors, for ``load_encoder_weights(UnetPlusPlus.encoder, path)``."""
        return save_encoder_weights(self, path)


@torch.no_grad()
def reconstruct(model: SparK, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Figure material from one forward pass in eval mode (running statistics untouched): RGB in
    [0, 1] ``input``, ``masked`` (hidden patches black), ``prediction`` (de-normalised with each
    patch's true mean and std, as the paper), ``composite`` (hidden patches predicted), the pixel
    ``mask`` and the ``loss``. ``images``: uint8 RGB or ImageNet-normalised float."""
    if images.dtype == torch.uint8:
        images = normalize(images)
    was_training = model.training
    model.eval()
    try:
        loss, prediction = model(images, mask)
    finally:
        model.train(was_training)
    p = model.patch
    _, mean, std = normalize_patches(patchify(images, p))
    restored = unpatchify(patchify(prediction, p) * std + mean, p, mask.shape[-2:])
    pixels = upsample_mask(mask, images.shape[-2:]).to(images.device)
    shown, predicted = denormalize(images), denormalize(restored)
    return {
        "input": shown,
        "masked": shown * pixels,
        "prediction": predicted,
        "composite": torch.where(pixels, shown, predicted),
        "mask": pixels,
        "loss": loss,
    }
