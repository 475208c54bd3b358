"""Patch masks for masked image modeling, and the three ways a network can see a masked image.

SparK masks whole patches whose side is the encoder's total stride (32 for a 5-stage ResNet), so
that at the deepest feature map every patch is exactly one position and the mask stays aligned
at every scale. A mask is a bool tensor ``(B, 1, h, w)`` over the patch grid, ``True`` = visible.

The three strategies of the course, as plain functions on a batch:

- zero-out: the masked pixels are overwritten with 0 (or a fill value) and a dense network sees
  them as data (:func:`zero_out`);
- drop: the masked patches are removed, as MAE/ViT do with tokens (:func:`drop_patches`,
  :func:`restore_patches`);
- sparse: only visible positions exist (SparK). Kept in dense layout as ``features * mask`` plus
  the mask (:func:`sparsify`), or as a ``(N_visible, C)`` list (:func:`gather_visible`,
  :func:`scatter_visible`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from depthlib.errors import ConfigError, DataError, require_multiple

__all__ = [
    "DroppedPatches",
    "as_mask",
    "drop_patches",
    "gather_visible",
    "kept_patch_count",
    "make_patch_mask",
    "mask_at",
    "patch_size_for_depth",
    "patchify",
    "restore_patches",
    "scatter_visible",
    "sparsify",
    "unpatchify",
    "upsample_mask",
    "zero_out",
]


def patch_size_for_depth(encoder_depth: int) -> int:
    """The SparK patch side for an encoder with ``encoder_depth`` stride-2 stages: 2**depth."""
    if not isinstance(encoder_depth, int) or not 1 <= encoder_depth <= 6:
        raise ConfigError(
            f"encoder_depth must be an integer from 1 to 6, got {encoder_depth!r}; "
            "smp encoders use 5 (patch 32) or 4 (patch 16)."
        )
    return 2**encoder_depth


def kept_patch_count(num_patches: int, ratio: float) -> int:
    """How many of ``num_patches`` stay visible at mask ``ratio``: round(n·(1−ratio)), as SparK.

    Python's ``round`` (half to even) is used on purpose: it is what SparK's code does.
    """
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
    """A random SparK patch mask ``(batch, 1, height/patch, width/patch)``, True = visible.

    Each image keeps exactly :func:`kept_patch_count` patches, chosen by argsort of uniform noise.
    Pass ``seed`` for a reproducible mask, or a ``generator`` to draw a fresh mask per step from
    one seeded stream (a training loop); with neither, torch's global RNG is used.
    """
    if seed is not None and generator is not None:
        raise ConfigError("pass either seed or generator to make_patch_mask, not both.")
    if batch < 1 or patch < 1:
        raise ConfigError(f"batch and patch must be >= 1, got batch={batch}, patch={patch}.")
    require_multiple(height, width, patch, "image size", "the patch size", ConfigError)
    grid_h, grid_w = height // patch, width // patch
    keep = kept_patch_count(grid_h * grid_w, ratio)
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    noise_device = generator.device if generator is not None else device
    noise = torch.rand(batch, grid_h * grid_w, generator=generator, device=noise_device)
    kept = noise.argsort(dim=1)[:, :keep]
    mask = torch.zeros(batch, grid_h * grid_w, dtype=torch.bool, device=noise.device)
    mask.scatter_(1, kept, True)
    mask = mask.view(batch, 1, grid_h, grid_w)
    return mask if device is None else mask.to(device)


def as_mask(mask: torch.Tensor) -> torch.Tensor:
    """Check that ``mask`` is a bool (B, 1, h, w) or (B, h, w) mask; return it as (B, 1, h, w)."""
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise DataError(
            f"a mask must be a bool tensor (True = visible), got {got}; "
            "build one with make_patch_mask or convert with mask.bool()."
        )
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise DataError(
            f"a mask must have shape (B, 1, h, w) or (B, h, w), got {tuple(mask.shape)}."
        )
    return mask


def upsample_mask(mask: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """Nearest upsampling of a ``(B, 1, h, w)`` mask to ``size`` = (H, W), integer factors only.

    Integer factors keep every patch a whole block of positions at every feature scale, which is
    what makes the sparse operators exact; anything else is refused.
    """
    mask = as_mask(mask)
    out_h, out_w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    grid_h, grid_w = mask.shape[-2:]
    if out_h % grid_h or out_w % grid_w or out_h < grid_h or out_w < grid_w:
        raise DataError(
            f"mask grid {grid_h}x{grid_w} does not divide the size {out_h}x{out_w}; "
            "the feature map must be an integer multiple of the patch grid "
            "(input sides a multiple of the patch size, patch = encoder stride)."
        )
    fh, fw = out_h // grid_h, out_w // grid_w
    if fh == 1 and fw == 1:
        return mask
    return mask.repeat_interleave(fh, dim=2).repeat_interleave(fw, dim=3)


def mask_at(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The patch mask at the resolution of ``features`` (B, C, H, W), batch sizes checked: the one
    place a mask is brought to a feature map's size."""
    if features.dim() != 4:
        raise DataError(f"expected a batch (B, C, H, W), got shape {tuple(features.shape)}.")
    mask = as_mask(mask)
    if mask.shape[0] != features.shape[0]:
        raise DataError(
            f"mask batch size {mask.shape[0]} does not match the batch size {features.shape[0]}; "
            "make one mask per image."
        )
    return upsample_mask(mask, features.shape[-2:]).to(features.device)


def zero_out(
    images: torch.Tensor, mask: torch.Tensor, value: float | torch.Tensor = 0.0
) -> torch.Tensor:
    """Strategy 1: overwrite masked pixels with ``value`` (a scalar or a per-channel (C,) tensor).

    A dense network cannot tell these pixels from real ones: that is the problem SparK solves.
    """
    pixel_mask = mask_at(images, mask)
    fill = torch.as_tensor(value, dtype=images.dtype, device=images.device)
    if fill.dim() == 1:
        fill = fill.view(1, -1, 1, 1)
    return torch.where(pixel_mask, images, fill)


def patchify(images: torch.Tensor, patch: int) -> torch.Tensor:
    """(B, C, H, W) → (B, h·w, patch·patch·C) patch vectors, row-major grid, MAE/SparK layout."""
    b, c, h, w = images.shape
    require_multiple(h, w, patch, "image size", "the patch size")
    gh, gw = h // patch, w // patch
    x = images.reshape(b, c, gh, patch, gw, patch)
    return torch.einsum("bchpwq->bhwpqc", x).reshape(b, gh * gw, patch * patch * c)


def unpatchify(tokens: torch.Tensor, patch: int, grid: tuple[int, int]) -> torch.Tensor:
    """Inverse of :func:`patchify`: (B, h·w, patch·patch·C) → (B, C, h·patch, w·patch)."""
    b, n, d = tokens.shape
    gh, gw = grid
    if n != gh * gw or d % (patch * patch):
        raise DataError(
            f"tokens of shape {tuple(tokens.shape)} do not fit grid {gh}x{gw} with patch {patch}."
        )
    c = d // (patch * patch)
    x = tokens.reshape(b, gh, gw, patch, patch, c)
    return torch.einsum("bhwpqc->bchpwq", x).reshape(b, c, gh * patch, gw * patch)


@dataclass
class DroppedPatches:
    """Strategy 2's result: only the visible patches, as a token sequence, and where they were.

    ``tokens`` (B, n_visible, patch·patch·C); ``positions`` (B, n_visible) row-major indices into
    the ``grid`` (h, w), ascending; ``patch`` the patch side in pixels.
    """

    tokens: torch.Tensor
    positions: torch.Tensor
    grid: tuple[int, int]
    patch: int


def drop_patches(images: torch.Tensor, mask: torch.Tensor) -> DroppedPatches:
    """Strategy 2 (MAE/ViT): keep only the visible patches as tokens, plus their positions.

    The patch side is inferred from the image and mask grid sizes. Every image must keep the same
    number of patches (a sequence batch is rectangular); :func:`make_patch_mask` guarantees it.
    """
    mask = as_mask(mask)
    b, _, h, w = images.shape
    gh, gw = mask.shape[-2:]
    if mask.shape[0] != b:
        raise DataError(f"mask batch size {mask.shape[0]} does not match the batch size {b}.")
    if h % gh or w % gw or h // gh != w // gw:
        raise DataError(
            f"image {h}x{w} is not a whole number of square patches on the mask grid {gh}x{gw}."
        )
    patch = h // gh
    flat = mask.reshape(b, gh * gw).to(images.device)
    counts = flat.sum(dim=1)
    if not bool((counts == counts[0]).all()):
        raise DataError(
            f"drop_patches needs the same number of visible patches in every image, got "
            f"{counts.tolist()}; use make_patch_mask, which keeps an exact count per image."
        )
    n_visible = int(counts[0])
    positions = flat.nonzero()[:, 1].view(b, n_visible)
    all_tokens = patchify(images, patch)
    index = positions.unsqueeze(-1).expand(-1, -1, all_tokens.shape[-1])
    return DroppedPatches(all_tokens.gather(1, index), positions, (gh, gw), patch)


def restore_patches(dropped: DroppedPatches, fill: float = 0.0) -> torch.Tensor:
    """Back from tokens to an image (B, C, H, W); dropped patches are filled with ``fill``.

    Use ``fill=float('nan')`` to show the missing patches as holes in a figure.
    """
    tokens, positions = dropped.tokens, dropped.positions
    b, _, d = tokens.shape
    gh, gw = dropped.grid
    full = tokens.new_full((b, gh * gw, d), fill)
    full.scatter_(1, positions.unsqueeze(-1).expand(-1, -1, d), tokens)
    return unpatchify(full, dropped.patch, dropped.grid)


def sparsify(features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Strategy 3 (SparK) in dense layout: ``(features * pixel_mask, pixel_mask)``.

    The pixel mask is the patch mask upsampled to the features' size. Sparse operators read it to
    know where features exist; zeros at masked positions are only a storage convention.
    """
    pixel_mask = mask_at(features, mask)
    return features * pixel_mask, pixel_mask


def gather_visible(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Strategy 3 as a list: the (N_visible, C) feature vectors, ordered by (batch, row, column).

    ``mask`` is upsampled to the features' size if it is a coarser patch grid.
    """
    pixel_mask = mask_at(features, mask)
    return features.permute(0, 2, 3, 1)[pixel_mask[:, 0]]


def scatter_visible(values: torch.Tensor, mask: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Inverse of :func:`gather_visible`: (N_visible, C) → (B, C, H, W) with ``fill`` elsewhere.

    ``mask`` must be at the target resolution (use :func:`upsample_mask` first).
    """
    mask = as_mask(mask)
    visible = mask[:, 0].to(values.device)
    n_visible = int(visible.sum())
    if values.dim() != 2 or values.shape[0] != n_visible:
        raise DataError(
            f"values of shape {tuple(values.shape)} do not match the mask's {n_visible} "
            "visible positions; scatter with the same mask you gathered with."
        )
    b, h, w = visible.shape
    out = values.new_full((b, h, w, values.shape[1]), fill)
    out[visible] = values
    return out.permute(0, 3, 1, 2)
