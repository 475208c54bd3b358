"""SparK's densifier and light decoder: from sparse encoder features back to pixels.

Densify, per scale: normalise the visible features (sparse BatchNorm, or LayerNorm for ConvNeXt),
put a learned mask token wherever the map is empty, project to the decoder's width (1×1 at the
deepest scale, 3×3 elsewhere). The light decoder is a UNet that *adds* the skips instead of
concatenating them; it is thrown away after pretraining: only the encoder is kept.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from timm.layers import LayerNorm2d
from torch import nn

from depthlib.errors import ConfigError
from depthlib.spark.sparse import SparseBatchNorm2d, SparseContext, SparseLayerNorm

__all__ = ["Densify", "LightDecoder", "decoder_widths"]


def decoder_widths(width: int, blocks: int) -> list[int]:
    """``width`` halved per block, ``blocks + 1`` values (the last feeds the 1×1 output conv)."""
    if not isinstance(width, int) or width < 2**blocks:
        raise ConfigError(
            f"decoder_width must be an integer of at least {2**blocks} (it is halved {blocks} "
            f"times), got {width!r}; SparK uses 768, small CPU runs 64-256."
        )
    return [width // 2**i for i in range(blocks + 1)]


class UNetBlock(nn.Module):
    """×2 upsampling (ConvTranspose2d k4 s2 p1), then conv3×3-BN-ReLU6-conv3×3-BN (SparK)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cin, kernel_size=4, stride=2, padding=1, bias=True)
        self.conv = nn.Sequential(
            nn.Conv2d(cin, cin, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(cin),
            nn.ReLU6(inplace=True),
            nn.Conv2d(cin, cout, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x))


class LightDecoder(nn.Module):
    """One UNet block per width step, deepest scale first, skip-add, then 1×1 → RGB.

    ``forward(skips)`` takes the densified features deepest first, each at the width of the block
    that reads it; there may be fewer skips than blocks (the last blocks get none).
    """

    def __init__(self, widths: Sequence[int]):
        super().__init__()
        self.widths = list(widths)
        self.blocks = nn.ModuleList(
            UNetBlock(cin, cout)
            for cin, cout in zip(self.widths[:-1], self.widths[1:], strict=True)
        )
        self.head = nn.Conv2d(self.widths[-1], 3, kernel_size=1)
        # SparK's init: convs N(0, .02²) (timm's trunc_normal_, whose ±2 bounds are absolute,
        # i.e. no real truncation), transposed convs Kaiming fan-out, norms 1/0.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.bias is not None:
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        x = skips[0]
        for i, block in enumerate(self.blocks):
            if 0 < i < len(skips):
                x = x + skips[i]
            x = block(x)
        return self.head(x)


class Densify(nn.Module):
    """Per scale (encoder ``channels`` deepest first → decoder ``widths``): norm → mask token
    where empty → projection. The norms (BatchNorm, or LayerNorm if ``layer_norm``) are sparse
    modules on the encoder's ``ctx`` (run inside ``ctx.active(mask)``), or dense ones over every
    position for the zero-out control (``sparse=False``)."""

    def __init__(
        self,
        channels: Sequence[int],
        widths: Sequence[int],
        ctx: SparseContext,
        layer_norm: bool = False,
        sparse: bool = True,
    ):
        super().__init__()
        self.ctx = ctx
        if sparse:
            norms = [
                SparseLayerNorm(c, eps=1e-6, ctx=ctx)
                if layer_norm
                else SparseBatchNorm2d(c, ctx=ctx)
                for c in channels
            ]
        else:  # the zero-out control: statistics over every position, zeros included
            norms = [
                LayerNorm2d(c, eps=1e-6) if layer_norm else nn.BatchNorm2d(c) for c in channels
            ]
        self.norms = nn.ModuleList(norms)
        # Named mask_token* so the optimizer exempts them from weight decay, as SparK does.
        self.mask_tokens = nn.ParameterList(nn.Parameter(torch.zeros(1, c, 1, 1)) for c in channels)
        for token in self.mask_tokens:
            nn.init.trunc_normal_(token, std=0.02, a=-0.04, b=0.04)
        self.projections = nn.ModuleList(
            nn.Conv2d(c, w, kernel_size=1 if i == 0 else 3, padding=0 if i == 0 else 1)
            for i, (c, w) in enumerate(zip(channels, widths, strict=True))
        )

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Sparse features deepest first → dense decoder inputs, deepest first."""
        out = []
        for feature, norm, token, projection in zip(
            features, self.norms, self.mask_tokens, self.projections, strict=True
        ):
            normed = norm(feature)  # a sparse norm refuses to run without an active mask
            filled = torch.where(self.ctx.mask_for(feature), normed, token.to(feature.dtype))
            out.append(projection(filled))
        return out
