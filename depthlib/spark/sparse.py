"""Sparse convolution the SparK way: dense operators that keep features only at visible positions.

A convnet has no tokens to drop, so SparK keeps the masked image in dense layout and makes every
operator act as if masked positions did not exist (submanifold semantics):

- conv and pooling run densely, then multiply the output by the mask at the output resolution;
- BatchNorm gathers the visible positions into (N_visible, C) and normalises them with
  BatchNorm1d statistics, so batch and running statistics never see masked zeros (under DDP the
  training loop synchronises them over ranks, see :class:`SparseBatchNorm2d`);
- LayerNorm (ConvNeXt, channels-first and -last) normalises the visible positions only;
- Linear on channels-last maps (ConvNeXt MLPs) re-applies the mask, since its bias would
  otherwise write into masked positions and leak into the next convolution.

The sparse modules are subclasses of the dense ones: :func:`to_sparse` swaps the class of each
module in place (same parameters and buffers, same state_dict keys) and :func:`to_dense` swaps it
back. The mask reaches them explicitly through a :class:`SparseContext` that ``to_sparse`` attaches
to every rewritten module — not through a global — so two models can run with different masks.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from timm.layers import BatchNormAct2d
from torch import nn

from depthlib.errors import ConfigError, DataError
from depthlib.spark.masks import as_mask, scatter_visible, upsample_mask

__all__ = [
    "SparseAvgPool2d",
    "SparseBatchNorm2d",
    "SparseBatchNormAct2d",
    "SparseContext",
    "SparseConv2d",
    "SparseEncoder",
    "SparseLayerNorm",
    "SparseLinear",
    "SparseMaxPool2d",
    "to_dense",
    "to_sparse",
]


class SparseContext:
    """Holds the current patch mask of one sparse model and its upsampled copies per resolution."""

    def __init__(self) -> None:
        self._mask: torch.Tensor | None = None
        self._cache: dict[tuple, torch.Tensor] = {}

    @property
    def mask(self) -> torch.Tensor | None:
        """The active (B, 1, h, w) patch mask, or None outside :meth:`active`."""
        return self._mask

    @contextmanager
    def active(self, mask: torch.Tensor) -> Iterator[SparseContext]:
        """Run the sparse modules of this context with ``mask`` (True = visible) inside the block."""
        previous = (self._mask, self._cache)
        self._mask, self._cache = as_mask(mask), {}
        try:
            yield self
        finally:
            self._mask, self._cache = previous

    def mask_for(
        self, feature: torch.Tensor, *, channels_last: bool = False, who: str = "a sparse module"
    ) -> torch.Tensor:
        """The bool mask (B, 1, H, W) at the resolution of ``feature``; checks batch and grid."""
        if self._mask is None:
            raise ConfigError(
                f"{who} was called without a mask. Run the model inside "
                "`with ctx.active(mask):` (ctx is returned by to_sparse), "
                "or wrap it as SparseEncoder(model) and call it as encoder(x, mask)."
            )
        if feature.dim() != 4:
            raise DataError(f"{who} expects a 4-D feature map, got shape {tuple(feature.shape)}.")
        batch = feature.shape[0]
        size = tuple(feature.shape[1:3] if channels_last else feature.shape[2:4])
        if self._mask.shape[0] != batch:
            raise DataError(
                f"{who}: the mask has batch size {self._mask.shape[0]} but the features have "
                f"{batch}; make one mask per image (make_patch_mask(batch={batch}, ...))."
            )
        key = (size, feature.device)
        if key not in self._cache:
            try:
                self._cache[key] = upsample_mask(self._mask, size).to(feature.device)
            except DataError as error:
                raise DataError(f"{who}: {error}") from None
        return self._cache[key]


class _SparseModule:
    """Mixin: where a sparse module finds its mask, and what it was before the rewrite."""

    sparse_ctx: SparseContext | None = None
    sparse_name: str = ""
    dense_type: type

    def __init__(self, *args, ctx: SparseContext | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.sparse_ctx = ctx

    def _who(self) -> str:
        name = f" '{self.sparse_name}'" if self.sparse_name else ""
        return f"{type(self).__name__}{name}"

    def _mask(self, feature: torch.Tensor, channels_last: bool = False) -> torch.Tensor:
        if self.sparse_ctx is None:
            raise ConfigError(
                f"{self._who()} has no SparseContext; build sparse models with to_sparse(model) "
                "or pass ctx=SparseContext() when constructing the module."
            )
        return self.sparse_ctx.mask_for(feature, channels_last=channels_last, who=self._who())


class SparseConv2d(_SparseModule, nn.Conv2d):
    """Conv2d whose output exists only at visible positions (dense conv, then × mask)."""

    dense_type = nn.Conv2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * self._mask(out)


class SparseMaxPool2d(_SparseModule, nn.MaxPool2d):
    """MaxPool2d then × mask, as SparK. Masked zeros take part in the max: exact after ReLU."""

    dense_type = nn.MaxPool2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * self._mask(out)


class SparseAvgPool2d(_SparseModule, nn.AvgPool2d):
    """AvgPool2d then × mask, as SparK. Exact when each window lies inside one patch."""

    dense_type = nn.AvgPool2d

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        return out * self._mask(out)


def _gather(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)[mask[:, 0]]


class SparseBatchNorm2d(_SparseModule, nn.BatchNorm2d):
    """BatchNorm over visible positions only: the gathered (N_visible, C) vectors go through the
    dense forward as (N, C, 1, 1), i.e. BatchNorm1d statistics and running-stat updates.

    ``sync_statistics``: under DDP the training loop gives this class a twin whose dense forward
    all-reduces the statistics (:func:`depthlib.train.distributed.convert_sync_batchnorm`), so
    SparK's statistics span the visible positions of the whole global batch. Ranks may hold
    different numbers of visible positions; the reduced sums weigh them by count.
    """

    dense_type = nn.BatchNorm2d
    sync_statistics = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._mask(x)
        visible = super().forward(_gather(x, mask)[:, :, None, None])[:, :, 0, 0]
        return scatter_visible(visible, mask)


class SparseBatchNormAct2d(_SparseModule, BatchNormAct2d):
    """timm's BatchNorm + activation in one module (EfficientNet, MobileNet): the visible positions
    are normalised as in :class:`SparseBatchNorm2d`, then dropout and activation act on them
    only, so an activation that maps 0 elsewhere still leaves masked positions empty."""

    dense_type = BatchNormAct2d
    sync_statistics = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self._mask(x)
        # BatchNorm2d's forward (the synchronised one under DDP) on (N_visible, C, 1, 1)
        visible = super(BatchNormAct2d, self).forward(_gather(x, mask)[:, :, None, None])
        return scatter_visible(self.act(self.drop(visible))[:, :, 0, 0], mask)


class SparseLayerNorm(_SparseModule, nn.LayerNorm):
    """LayerNorm over channels at visible positions only; masked positions stay 0.

    ``data_format`` is ``"channels_first"`` for (B, C, H, W) maps (timm LayerNorm2d) and
    ``"channels_last"`` for (B, H, W, C) maps (nn.LayerNorm inside ConvNeXt blocks).
    """

    dense_type = nn.LayerNorm

    def __init__(self, *args, data_format: str = "channels_first", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if data_format not in ("channels_first", "channels_last"):
            raise ConfigError(
                f"data_format must be 'channels_first' or 'channels_last', got {data_format!r}."
            )
        self.data_format = data_format

    def _norm(self, values: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(values, self.normalized_shape, self.weight, self.bias, self.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data_format == "channels_last" and x.dim() == 2:
            return self._norm(x)  # pooled vectors: no positions, nothing to mask
        channels_last = self.data_format == "channels_last"
        visible = self._mask(x, channels_last=channels_last)[:, 0]
        if not channels_last:
            return scatter_visible(self._norm(x.permute(0, 2, 3, 1)[visible]), visible)
        out = x.new_zeros(x.shape)
        out[visible] = self._norm(x[visible])
        return out


class SparseLinear(_SparseModule, nn.Linear):
    """Linear that, on a channels-last map (B, H, W, C), keeps outputs at visible positions only.

    ConvNeXt blocks apply Linear layers to permuted maps; their bias would make masked positions
    non-zero. On 2-D (B, C) inputs (pooled vectors) it is an ordinary Linear.
    """

    dense_type = nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = super().forward(x)
        if x.dim() == 2:
            return out
        return out * self._mask(out, channels_last=True)[:, 0, :, :, None]


_SPARSE_ATTRS = ("sparse_ctx", "sparse_name", "dense_type", "data_format")

# Leaves that act per position and map 0 to 0: they keep masked positions empty as they are.
_HARMLESS_LEAVES = {
    "torch.nn": (
        "Identity ReLU ReLU6 LeakyReLU PReLU ELU CELU SELU GELU SiLU Mish Hardswish Tanh "
        "Softsign Dropout Dropout1d Dropout2d Dropout3d"
    ),
    "timm.layers": "GELU GELUTanh QuickGELU Swish Mish HardSwish Tanh PReLU DropPath DropBlock2d",
}
# Norms pool statistics over positions; a subclass with children (timm's norm + activation
# modules) computes them in its own forward, so it must have a sparse twin or be refused.
_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
# Containers whose own forward mixes positions (global pooling for channel attention).
_POSITION_MIXING_CONTAINERS = set(
    "SEModule EffectiveSEModule SqueezeExcite SqueezeExcitation EcaModule CecaModule CbamModule "
    "LightCbamModule GlobalContext GatherExcite SelectiveKernel".split()
)


def _types_from(module_name: str, names: str) -> set[type]:
    try:
        module = __import__(module_name, fromlist=["_"])
    except ImportError:
        return set()
    return {getattr(module, n) for n in names.split() if isinstance(getattr(module, n, None), type)}


def _rewrite_rules() -> dict[type, tuple[type, dict]]:
    """Exact dense type → (sparse class, extra attributes). Subclasses are not matched on purpose:
    they may override forward (e.g. timm's Conv2dSame), so they count as unknown."""
    rules: dict[type, tuple[type, dict]] = {
        nn.Conv2d: (SparseConv2d, {}),
        nn.MaxPool2d: (SparseMaxPool2d, {}),
        nn.AvgPool2d: (SparseAvgPool2d, {}),
        nn.BatchNorm2d: (SparseBatchNorm2d, {}),
        BatchNormAct2d: (SparseBatchNormAct2d, {}),
        nn.LayerNorm: (SparseLayerNorm, {"data_format": "channels_last"}),
        nn.Linear: (SparseLinear, {}),
    }
    for cls in _types_from("timm.layers", "LayerNorm2d"):
        rules[cls] = (SparseLayerNorm, {"data_format": "channels_first"})
    for cls in _types_from("timm.layers", "LayerNorm"):
        rules[cls] = (SparseLayerNorm, {"data_format": "channels_last"})
    return rules


def _unsupported_reason(module: nn.Module) -> str | None:
    """Why a module matched by type still cannot be made sparse, or None."""
    if isinstance(module, nn.MaxPool2d) and module.return_indices:
        return "return_indices=True"
    if isinstance(module, nn.LayerNorm) and len(module.normalized_shape) != 1:
        return f"normalizes over {tuple(module.normalized_shape)}, not channels only"
    return None


def to_sparse(
    module: nn.Module, *, inplace: bool = False, allow: Iterable[type] = ()
) -> tuple[nn.Module, SparseContext]:
    """Rewrite a CNN into its sparse twin; returns ``(sparse_module, ctx)``.

    Conv2d, MaxPool2d, AvgPool2d, BatchNorm2d (timm's BatchNormAct2d too), LayerNorm (timm
    LayerNorm2d and LayerNorm too) and Linear become their Sparse* subclasses sharing the same
    tensors, so state_dict keys are unchanged. With ``inplace=False`` the module is deep-copied
    first.
    Any other leaf module that is not a known position-wise, zero-preserving op (activations,
    dropout, Identity; extend with ``allow``), channel-attention containers, and norms without a
    sparse twin (e.g. timm's GroupNormAct), raise a ConfigError listing them: they would mix
    masked positions into visible ones or write into them.
    Run the result inside ``with ctx.active(mask):``, or use :class:`SparseEncoder`.
    """
    rules = _rewrite_rules()
    harmless = set(allow)
    for module_name, names in _HARMLESS_LEAVES.items():
        harmless |= _types_from(module_name, names)
    problems, already = [], []
    for name, sub in module.named_modules():
        label = f"{name or '<root>'} ({type(sub).__name__})"
        if isinstance(sub, _SparseModule):
            already.append(label)
        elif type(sub) in rules:
            reason = _unsupported_reason(sub)
            if reason:
                problems.append(f"{label}: {reason}")
        elif type(sub) in harmless:
            continue
        elif any(True for _ in sub.children()):
            if type(sub).__name__ in _POSITION_MIXING_CONTAINERS:
                problems.append(f"{label}: channel attention pools over all positions")
            elif isinstance(sub, _NORMS):
                problems.append(f"{label}: normalises over all positions in its own forward")
        else:
            problems.append(label)
    if already:
        raise ConfigError(
            f"to_sparse got a model that is already sparse ({', '.join(already[:3])}, ...); "
            "call to_dense(model) first or use the model as it is."
        )
    if problems:
        raise ConfigError(
            "to_sparse does not know how to make these modules sparse (they may mix positions or "
            "write into masked ones):\n  "
            + "\n  ".join(problems)
            + "\nUse the encoder without its head (features_only=True / an smp encoder), "
            "or pass allow=(Type, ...) for types that act per position and map 0 to 0."
        )
    if not inplace:
        module = copy.deepcopy(module)
    ctx = SparseContext()
    for name, sub in module.named_modules():
        rule = rules.get(type(sub))
        if rule is None:
            continue
        sparse_cls, attrs = rule
        original = type(sub)
        sub.__class__ = sparse_cls
        sub.dense_type = original
        sub.sparse_ctx = ctx
        sub.sparse_name = name
        for key, value in attrs.items():
            setattr(sub, key, value)
    return module, ctx


def to_dense(module: nn.Module, *, inplace: bool = False) -> nn.Module:
    """The way back: every Sparse* module becomes its original dense type (same tensors, keys)."""
    if not inplace:
        module = copy.deepcopy(module)
    for sub in module.modules():
        if isinstance(sub, _SparseModule):
            original = sub.dense_type
            for key in _SPARSE_ATTRS:
                if key in sub.__dict__:
                    delattr(sub, key)
            sub.__class__ = original
    return module


class SparseEncoder(nn.Module):
    """A CNN encoder run on visible patches only: ``SparseEncoder(encoder)(x, mask)``.

    Masks the input, then runs the rewritten encoder with ``mask`` active and returns whatever the
    encoder returns (a list of stage features for smp encoders). ``self.encoder`` has the dense
    encoder's state_dict keys; ``to_dense(self.encoder)`` gives back a plain encoder.
    """

    def __init__(self, encoder: nn.Module, *, inplace: bool = False, **to_sparse_kwargs) -> None:
        super().__init__()
        self.encoder, self.ctx = to_sparse(encoder, inplace=inplace, **to_sparse_kwargs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor):
        with self.ctx.active(mask):
            return self.encoder(x * self.ctx.mask_for(x, who="SparseEncoder input"))
