"""SparK: masked image modeling for the very encoder UNet++ fine-tunes.

``SparK(encoder)`` wraps an smp encoder (``resnet18/34/50``, or a timm ConvNeXt as
``tu-convnext_atto``) rewritten by :func:`depthlib.spark.sparse.to_sparse`: whole patches of the
encoder's total stride are hidden, the encoder computes on the visible patches only (masked
positions stay exactly 0 at every stage), the features are densified per scale and a light UNet
decoder (:mod:`depthlib.spark.decoder`) predicts the pixels; the loss is the MSE to per-patch
normalised pixels, on the masked patches only.

Which encoder stages feed the decoder: smp encoders return ``[input, stride 2, stride 4, ...,
stride 2**depth]``. SparK uses the hierarchical features at strides 4 … total stride (ResNet
layer1–layer4, ConvNeXt stages 0–3), so the input and the stride-2 stem feature are not used
(smp's ConvNeXt has no stride-2 feature at all, its stem is stride 4; the ResNet stem conv still
learns, through layer1). Encoder depth 5 → strides 4, 8, 16, 32; depth 4 → 4, 8, 16.

Images are ImageNet-normalised float (B, 3, H, W) with sides multiples of the patch size; the
reconstruction target is that same normalised input, as in SparK. Masks are bool
``(B, 1, H/patch, W/patch)``, True = visible (see :mod:`depthlib.spark.masks`).

The encoder keeps smp's state_dict keys (the sparse modules are subclasses sharing the tensors),
so :meth:`SparK.export_encoder` writes a file that ``UnetPlusPlus(...).encoder`` loads with
``strict=True`` (:func:`depthlib.depth.unetpp.load_encoder_weights`).
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
from depthlib.profiles import PretrainConfig
from depthlib.spark.decoder import Densify, LightDecoder, decoder_widths
from depthlib.spark.masks import as_mask, make_patch_mask, patchify, unpatchify, upsample_mask
from depthlib.spark.sparse import SparseContext, to_sparse

__all__ = [
    "CONFIG_KEYS",
    "SparK",
    "masked_patch_loss",
    "normalize_patches",
]

CONFIG_KEYS = ("encoder", "encoder_depth", "decoder_width", "mask_ratio", "masking")
MASKINGS = ("sparse", "zero-out")
PATCH_NORM_EPS = 1e-6


def normalize_patches(
    patches: torch.Tensor, eps: float = PATCH_NORM_EPS
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-patch normalisation of (B, L, p·p·C) vectors: ``((x - mean) / std, mean, std)``.

    Mean and variance over all values of a patch (channels together), ``std = sqrt(var + eps)``
    with the unbiased variance, exactly as SparK's code (and MAE's ``norm_pix_loss``) does.
    """
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + eps) ** 0.5
    return (patches - mean) / std, mean, std


def masked_patch_loss(
    prediction: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    patch: int,
    eps: float = PATCH_NORM_EPS,
) -> torch.Tensor:
    """SparK's loss: MSE between the prediction and the per-patch normalised target, averaged
    per patch over its p·p·3 values, then over the masked patches only (True in ``mask`` =
    visible, so it does not count). ``prediction``/``target``: (B, 3, H, W)."""
    mask = as_mask(mask)
    if prediction.shape != target.shape:
        raise DataError(
            f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} differ."
        )
    goal, _, _ = normalize_patches(patchify(target, patch), eps)
    per_patch = (patchify(prediction, patch) - goal).square().mean(dim=-1)  # (B, L)
    hidden = (~mask).reshape(mask.shape[0], -1).to(per_patch.dtype)
    if hidden.shape != per_patch.shape:
        raise DataError(
            f"mask grid {tuple(mask.shape[-2:])} does not match the {patch}-px patches of "
            f"{tuple(target.shape[-2:])} images."
        )
    return (per_patch * hidden).sum() / hidden.sum().clamp_min(1.0)


class SparK(nn.Module):
    """Sparse masked image modeling around an smp encoder; see the module docstring.

    ``encoder``: smp encoder name; ``encoder_depth``: its stages (3–5; patch = 2**depth);
    ``decoder_width``: the light decoder's first width (SparK: 768; halved per scale);
    ``mask_ratio``: fraction of patches hidden when ``forward`` draws the mask itself;
    ``masking``: "sparse" (SparK) or "zero-out", the control that tests notebook 02's lesson
    downstream: the same masks, densifier (mask tokens included), decoder and loss, but a dense
    encoder and dense densify norms that take the zeroed pixels for data.
    Defaults are :class:`~depthlib.profiles.PretrainConfig`'s. Under DDP the training loop
    synchronises the sparse BatchNorm statistics over ranks.
    """

    def __init__(
        self,
        encoder: str = PretrainConfig.encoder,
        encoder_depth: int = PretrainConfig.encoder_depth,
        decoder_width: int = PretrainConfig.decoder_width,
        mask_ratio: float = PretrainConfig.mask_ratio,
        masking: str = PretrainConfig.masking,
    ):
        super().__init__()
        if not 0.0 < float(mask_ratio) < 1.0:
            raise ConfigError(f"mask_ratio must be in (0, 1), got {mask_ratio!r}; SparK uses 0.6.")
        if masking not in MASKINGS:
            raise ConfigError(f"masking must be one of {MASKINGS}, got {masking!r}.")
        self.config = {
            "encoder": encoder,
            "encoder_depth": encoder_depth,
            "decoder_width": decoder_width,
            "mask_ratio": float(mask_ratio),
            "masking": masking,
        }
        self.patch = 2**encoder_depth
        self.mask_ratio = float(mask_ratio)
        dense = build_encoder(encoder, encoder_depth)  # checks the name and depth first
        channels = list(dense.out_channels)
        if masking == "sparse":
            self.encoder, self.sparse_ctx = to_sparse(dense, inplace=True)
        else:  # the context only brings the mask to each feature's size (mask tokens, input)
            self.encoder, self.sparse_ctx = dense, SparseContext()
        # smp features: [input, stride 2, stride 4, ..., stride 2**depth]; deepest first, down to 4.
        self.feature_indices = list(range(encoder_depth, 1, -1))
        widths = decoder_widths(decoder_width, encoder_depth)
        has_batchnorm = any(isinstance(m, nn.BatchNorm2d) for m in self.encoder.modules())
        self.densify = Densify(
            [channels[k] for k in self.feature_indices],
            widths[: len(self.feature_indices)],
            self.sparse_ctx,
            norm="batch" if has_batchnorm else "layer",
            sparse=masking == "sparse",
        )
        self.decoder = LightDecoder(decoder_width, encoder_depth)

    @classmethod
    def from_config(cls, config: Mapping) -> SparK:
        """Rebuild from a checkpoint's ``model.config`` (random weights)."""
        require_known_keys(config, CONFIG_KEYS, "SparK config")
        return cls(**dict(config))

    # ------------------------------------------------------------------ masks and checks
    def random_mask(
        self,
        batch: int,
        height: int,
        width: int,
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        ratio: float | None = None,
    ) -> torch.Tensor:
        """A SparK mask for (height, width) images: exactly round(n·(1−ratio)) visible patches."""
        return make_patch_mask(
            batch,
            height,
            width,
            self.patch,
            self.mask_ratio if ratio is None else ratio,
            generator=generator,
            device=device,
        )

    def _check(self, images: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise DataError(
                f"SparK takes ImageNet-normalised float images (B, 3, H, W), got "
                f"{images.dtype} {tuple(images.shape)}; use depthlib.data.normalize(rgb)."
            )
        b, _, h, w = images.shape
        require_multiple(h, w, self.patch, "Image size", "the patch size")
        if mask is None:
            return self.random_mask(b, h, w, device=images.device)
        mask = as_mask(mask).to(images.device)
        if tuple(mask.shape) != (b, 1, h // self.patch, w // self.patch):
            raise DataError(
                f"mask of shape {tuple(mask.shape)} does not fit {b} images of {h}x{w} with "
                f"{self.patch}-px patches; expected {(b, 1, h // self.patch, w // self.patch)}. "
                "Use model.random_mask(...)."
            )
        return mask

    # ------------------------------------------------------------------ the network
    def _features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The sparse encoder on the visible pixels; call inside ``sparse_ctx.active(mask)``."""
        return self.encoder(images * self.sparse_ctx.mask_for(images, who="SparK input"))

    def _predict(self, images, mask) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encoder, densify and decoder under one active mask (already checked)."""
        with self.sparse_ctx.active(mask):
            features = self._features(images)
            skips = self.densify([features[k] for k in self.feature_indices])
        return self.decoder(skips), features

    def encode(self, images: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
        """The sparse encoder's features (smp's list) on the masked images; masked positions are
        exactly 0 at every scale."""
        with self.sparse_ctx.active(self._check(images, mask)):
            return self._features(images)

    def predict_pixels(
        self, images: torch.Tensor, mask: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(decoder output (B, 3, H, W) in per-patch-normalised units, sparse features)."""
        return self._predict(images, self._check(images, mask))

    def forward(
        self, images: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict]:
        """``(loss, extras)``: the masked-patch loss, and ``extras`` = prediction (B, 3, H, W)
        and the mask used (drawn from torch's global RNG when ``mask`` is None)."""
        mask = self._check(images, mask)
        prediction, _ = self._predict(images, mask)
        loss = masked_patch_loss(prediction, images, mask, self.patch)
        return loss, {"prediction": prediction, "mask": mask}

    # ------------------------------------------------------------------ figures
    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """Figure material, like the paper's: RGB in [0, 1] (B, 3, H, W) for ``input``,
        ``masked`` (hidden patches black), ``prediction`` (de-normalised per patch with the
        target's own mean/std, so colours are comparable) and ``composite`` (visible patches from
        the input, hidden ones from the prediction), plus the pixel ``mask`` (True = visible) and
        the ``loss``. ``images``: uint8 RGB (normalised here) or ImageNet-normalised float.
        Runs in eval mode (BatchNorm running statistics are not touched)."""
        if images.dtype == torch.uint8:
            images = normalize(images)
        mask = self._check(images, mask)
        was_training = self.training
        self.eval()
        try:
            prediction, _ = self._predict(images, mask)
        finally:
            self.train(was_training)
        grid = (images.shape[-2] // self.patch, images.shape[-1] // self.patch)
        _, mean, std = normalize_patches(patchify(images, self.patch))
        restored = unpatchify(patchify(prediction, self.patch) * std + mean, self.patch, grid)
        pixels = upsample_mask(mask, images.shape[-2:])
        shown = denormalize(images)
        predicted = denormalize(restored)
        return {
            "input": shown,
            "masked": shown * pixels,
            "prediction": predicted,
            "composite": torch.where(pixels, shown, predicted),
            "mask": pixels,
            "loss": masked_patch_loss(prediction, images, mask, self.patch),
        }

    # ------------------------------------------------------------------ export
    def export_encoder(self, path: str | os.PathLike) -> Path:
        """Write the encoder's weights as safetensors with smp's key names (plus the encoder
        name in the metadata), for ``load_encoder_weights(UnetPlusPlus.encoder, path)``."""
        return save_encoder_weights(self, path)
