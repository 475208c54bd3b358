"""Sparse convolution the SparK way: dense operators that keep features only at visible positions.

A convnet has no tokens to drop, so masked images stay in dense layout and every operator acts as
if masked positions did not exist (submanifold semantics): conv and pooling run densely, then
multiply by the mask at their output's resolution; BatchNorm and LayerNorm normalise the visible
positions only (statistics never see masked zeros); Linear on channels-last maps (ConvNeXt MLPs)
re-applies the mask its bias would break. :func:`to_sparse` swaps module classes in place (same
tensors, same state_dict keys), :func:`to_dense` swaps them back; the mask reaches the modules
through their :class:`SparseContext`, not a global, so two models can run different masks.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import timm.layers
import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn

from depthlib.errors import ConfigError, DataError

__all__ = [
    "SparseAvgPool2d",
    "SparseBatchNorm2d",
    "SparseBatchNormAct2d",
    "SparseContext",
    "SparseConv2d",
    "SparseLayerNorm",
    "SparseLinear",
    "SparseMaxPool2d",
    "conv_kind",
    "to_dense",
    "to_sparse",
    "upsample_mask",
]


def upsample_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The patch mask (B, 1, h, w) at a feature map's size (H, W), each patch a whole block of
    positions: integer factors only, which is what makes the sparse operators exact."""
    (h, w), (out_h, out_w) = mask.shape[-2:], size
    if out_h % h or out_w % w:
        raise DataError(
            f"mask grid {h}x{w} does not divide the size {out_h}x{out_w}; input sides must be "
            "a multiple of the patch size (patch = the encoder's total stride)."
        )
    return mask.repeat_interleave(out_h // h, dim=2).repeat_interleave(out_w // w, dim=3)


GATHER_KINDS = ("1x1",)  # convolutions that can run on the visible positions only


def conv_kind(conv: nn.Conv2d) -> str:
    """ "1x1" (pointwise, stride 1), "depthwise" (groups = channels) or "full"."""
    if conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.groups == 1:
        return "1x1"
    return "depthwise" if conv.groups > 1 and conv.groups == conv.in_channels else "full"


class SparseContext:
    """The patch mask of one sparse model while it runs; the caller (SparK) checked it once.
    ``gather``: the convolution kinds (see :func:`conv_kind`) that compute on the visible
    positions only (gather, compute, scatter) instead of densely then × mask; the same numbers,
    faster where the visible share is small and the layer is compute-bound (a CPU's 1×1s)."""

    mask: torch.Tensor | None = None

    def __init__(self, gather: Iterable[str] = ()):
        self.gather = frozenset(gather)
        unknown = self.gather - set(GATHER_KINDS)
        if unknown:
            raise ConfigError(
                f"gather computes only {GATHER_KINDS} convolutions on visible positions, got "
                f"{sorted(unknown)}; the others run masked dense (faster for them on a CPU)."
            )

    @contextmanager
    def active(self, mask: torch.Tensor) -> Iterator[SparseContext]:
        """Run the sparse modules of this context with ``mask`` (True = visible) in the block."""
        previous, self.mask = self.mask, mask
        try:
            yield self
        finally:
            self.mask = previous

    def mask_for(self, feature: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        """The bool mask (B, 1, H, W) at the resolution of ``feature``, inside :meth:`active`."""
        if self.mask is None:
            raise ConfigError("No active mask: run the model inside `with ctx.active(mask):`.")
        size = feature.shape[1:3] if channels_last else feature.shape[-2:]
        return upsample_mask(self.mask, size).to(feature.device)


class _SparseModule:
    """Mixin: a sparse module finds its mask in its context; ``dense_type`` is the way back."""

    sparse_ctx: SparseContext | None = None
    dense_type: type

    def __init__(self, *args, ctx: SparseContext | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sparse_ctx = ctx

    def _mask(self, feature: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        if self.sparse_ctx is None or self.sparse_ctx.mask is None:
            raise ConfigError(
                f"{type(self).__name__} ran without a mask: build it with to_sparse(model) and "
                "run it inside `with ctx.active(mask):` (SparK's forward does both)."
            )
        return self.sparse_ctx.mask_for(feature, channels_last)


class _MaskedOutput(_SparseModule):
    """The dense forward, then × mask at the output's resolution (SparK's conv and pooling)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * self._mask(out)


class SparseConv2d(_MaskedOutput, nn.Conv2d):
    """Conv2d whose output exists only at visible positions: masked dense, or for a 1×1 whose
    kind the context gathers, a matrix product on the visible positions' vectors only."""

    dense_type = nn.Conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ctx = self.sparse_ctx
        if ctx is None or not ctx.gather or conv_kind(self) not in ctx.gather:
            return super().forward(x)
        mask = self._mask(x)
        return _scatter(F.linear(_gather(x, mask), self.weight[:, :, 0, 0], self.bias), mask)


class SparseMaxPool2d(_MaskedOutput, nn.MaxPool2d):
    """MaxPool2d then × mask. Masked zeros take part in the max: exact after a ReLU."""

    dense_type = nn.MaxPool2d


class SparseAvgPool2d(_MaskedOutput, nn.AvgPool2d):
    """AvgPool2d then × mask. Exact when each window lies inside one patch."""

    dense_type = nn.AvgPool2d


def _gather(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) → the (N_visible, C) vectors at the mask's visible positions."""
    return x.permute(0, 2, 3, 1)[mask[:, 0]]


def _scatter(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_gather`: (N_visible, C) → (B, C, H, W), zeros elsewhere."""
    b, _, h, w = mask.shape
    out = values.new_zeros(b, h, w, values.shape[1])
    out[mask[:, 0]] = values
    return out.permute(0, 3, 1, 2)


class SparseBatchNorm2d(_SparseModule, nn.BatchNorm2d):
    """BatchNorm over visible positions only: the gathered (N_visible, C) vectors go through the
    dense forward as (N, C, 1, 1), i.e. BatchNorm1d statistics. ``sync_statistics``: under DDP
    the loop swaps in a twin whose dense forward all-reduces them over the global batch
    (:func:`depthlib.train.distributed.convert_sync_batchnorm`)."""

    dense_type = nn.BatchNorm2d
    sync_statistics = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._mask(x)
        visible = super().forward(_gather(x, mask)[:, :, None, None])[:, :, 0, 0]
        return _scatter(visible, mask)


class SparseBatchNormAct2d(_SparseModule, BatchNormAct2d):
    """timm's BatchNorm + activation in one module (EfficientNet, MobileNet): normalised as
    :class:`SparseBatchNorm2d`, then dropout and activation act on the visible positions only, so
    an activation that maps 0 elsewhere still leaves masked positions empty."""

    dense_type = BatchNormAct2d
    sync_statistics = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._mask(x)
        # BatchNorm2d's forward (the synchronised one under DDP) on (N_visible, C, 1, 1)
        visible = super(BatchNormAct2d, self).forward(_gather(x, mask)[:, :, None, None])
        return _scatter(self.act(self.drop(visible))[:, :, 0, 0], mask)


class SparseLayerNorm(_SparseModule, nn.LayerNorm):
    """LayerNorm over channels at visible positions only; masked positions stay 0.

    ``data_format``: "channels_first" for (B, C, H, W) maps (timm's LayerNorm2d), "channels_last"
    for (B, H, W, C) maps (LayerNorm inside ConvNeXt blocks).
    """

    dense_type = nn.LayerNorm

    def __init__(self, *args, data_format: str = "channels_first", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.data_format = data_format

    def _norm(self, values: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(values, self.normalized_shape, self.weight, self.bias, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_first":
            mask = self._mask(x)
            return _scatter(self._norm(_gather(x, mask)), mask)
        if x.dim() == 2:
            return self._norm(x)  # pooled vectors: no positions, nothing to mask
        visible = self._mask(x, channels_last=True)[:, 0]
        out = x.new_zeros(x.shape)
        out[visible] = self._norm(x[visible])
        return out


class SparseLinear(_SparseModule, nn.Linear):
    """Linear that keeps outputs at visible positions only on a channels-last map (B, H, W, C)
    (ConvNeXt's MLPs: the bias would fill masked positions); on (B, C) vectors a plain Linear."""

    dense_type = nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if x.dim() == 2:
            return out
        return out * self._mask(out, channels_last=True)[:, 0, :, :, None]


def _types(module, names: str) -> set[type]:
    return {getattr(module, n) for n in names.split() if isinstance(getattr(module, n, None), type)}


# Leaves that act per position and map 0 to 0: they keep masked positions empty as they are.
_HARMLESS_LEAVES = _types(
    nn,
    "Identity ReLU ReLU6 LeakyReLU PReLU ELU CELU SELU GELU SiLU Mish Hardswish Tanh Softsign "
    "Dropout Dropout1d Dropout2d Dropout3d",
) | _types(
    timm.layers, "GELU GELUTanh QuickGELU Swish Mish HardSwish Tanh PReLU DropPath DropBlock2d"
)
# Norms pool statistics over positions; a subclass with children (timm's norm + activation
# modules) computes them in its own forward, so it must have a sparse twin or be refused.
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
# Containers whose own forward mixes positions (global pooling for channel attention).
_POSITION_MIXING_CONTAINERS = set(
    "SEModule EffectiveSEModule SqueezeExcite SqueezeExcitation EcaModule CecaModule CbamModule "
    "LightCbamModule GlobalContext GatherExcite SelectiveKernel".split()
)
# Exact dense type → (sparse class, data_format). Subclasses are not matched on purpose: they may
# override forward (e.g. timm's Conv2dSame), so they count as unknown.
_RULES: dict[type, tuple[type, str | None]] = {
    nn.Conv2d: (SparseConv2d, None),
    nn.MaxPool2d: (SparseMaxPool2d, None),
    nn.AvgPool2d: (SparseAvgPool2d, None),
    nn.BatchNorm2d: (SparseBatchNorm2d, None),
    BatchNormAct2d: (SparseBatchNormAct2d, None),
    nn.Linear: (SparseLinear, None),
    nn.LayerNorm: (SparseLayerNorm, "channels_last"),
    timm.layers.LayerNorm: (SparseLayerNorm, "channels_last"),
    timm.layers.LayerNorm2d: (SparseLayerNorm, "channels_first"),
}


def _problem(name: str, module: nn.Module, harmless: set[type]) -> str | None:
    """Why ``module`` cannot be made sparse, or None."""
    label = f"{name or '<root>'} ({type(module).__name__})"
    if isinstance(module, nn.MaxPool2d) and module.return_indices:
        return f"{label}: return_indices=True"
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return f"{label}: normalizes over {tuple(module.normalized_shape)}, not channels only"
    if type(module) in _RULES or type(module) in harmless:
        return None
    if not any(True for _ in module.children()):
        return label  # an unknown leaf
    if type(module).__name__ in _POSITION_MIXING_CONTAINERS:
        return f"{label}: channel attention pools over all positions"
    if isinstance(module, _NORMS):
        return f"{label}: normalises over all positions in its own forward"
    return None


def to_sparse(
    module: nn.Module, *, inplace: bool = False, allow: Iterable[type] = (),
    gather: Iterable[str] = (),
) -> tuple[nn.Module, SparseContext]:  # fmt: skip
    """Rewrite a CNN into its sparse twin, ``(sparse_module, ctx)``: Conv2d, pooling, BatchNorm2d
    (and timm's BatchNormAct2d), LayerNorm (and timm's) and Linear become Sparse* subclasses
    sharing their tensors and state_dict keys (``inplace=False`` deep-copies first). Leaves that
    are not known position-wise, zero-preserving ops (extend with ``allow``), channel attention
    and norms without a sparse twin are refused, listed: they would mix masked positions into
    visible ones. Run the result on ``x * mask`` inside ``with ctx.active(mask):``. ``gather``:
    the convolution kinds that compute on visible positions only (:class:`SparseContext`)."""
    already = [n or "<root>" for n, m in module.named_modules() if isinstance(m, _SparseModule)]
    if already:
        raise ConfigError(
            f"to_sparse got a model that is already sparse ({', '.join(already[:3])}, ...); "
            "call to_dense(model) first or use the model as it is."
        )
    harmless = _HARMLESS_LEAVES | set(allow)
    problems = [p for n, m in module.named_modules() if (p := _problem(n, m, harmless))]
    if problems:
        raise ConfigError(
            "to_sparse does not know how to make these modules sparse (they may mix positions or "
            "write into masked ones):\n  "
            + "\n  ".join(problems)
            + "\nUse the encoder without its head (features_only=True / an smp encoder), "
            "or pass allow=(Type, ...) for types that act per position and map 0 to 0."
        )
    ctx = SparseContext(gather)
    if not inplace:
        module = copy.deepcopy(module)
    for sub in module.modules():
        if type(sub) in _RULES:
            sparse_cls, data_format = _RULES[type(sub)]
            sub.dense_type, sub.sparse_ctx = type(sub), ctx
            sub.__class__ = sparse_cls
            if data_format is not None:
                sub.data_format = data_format
    return module, ctx


def to_dense(module: nn.Module, *, inplace: bool = False) -> nn.Module:
    """The way back: every Sparse* module becomes its original dense type (same tensors, keys)."""
    if not inplace:
        module = copy.deepcopy(module)
    for sub in module.modules():
        if isinstance(sub, _SparseModule):
            original = sub.dense_type
            for key in ("sparse_ctx", "dense_type", "data_format"):
                sub.__dict__.pop(key, None)
            sub.__class__ = original
    return module
