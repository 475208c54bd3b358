"""The "zero-out problem" in numbers, and proof that sparse operators avoid it (notebook 02).

Zeroing the masked pixels and running a dense convnet is the obvious way to pretrain it on masked
images, and it goes wrong in two ways this module measures:

- every dense conv writes outputs into masked positions next to visible ones, so the mask pattern
  is smeared away layer after layer (:func:`conv_footprints`, :func:`smearing_per_layer`);
- dense BatchNorm counts the masked zeros as data, so its mean and variance are shifted
  (:func:`batchnorm_shift`), and after it no masked position is zero any more
  (:func:`encoder_stage_zeros`).

The sparse operators of :mod:`depthlib.spark.sparse` keep masked positions empty and statistics exact;
:func:`sparse_conv_exactness` checks them against the independent reference submanifold conv.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from depthlib.course.sparse_reference import measure_sparse_vs_dense, submanifold_conv2d
from depthlib.errors import ConfigError, DataError
from depthlib.spark.masks import (
    as_mask,
    gather_visible,
    make_patch_mask,
    mask_at,
    upsample_mask,
    zero_out,
)
from depthlib.spark.sparse import SparseEncoder, to_sparse

__all__ = [
    "batchnorm_shift",
    "conv_footprints",
    "encoder_stage_zeros",
    "fraction_nonzero",
    "resnet_stage_convs",
    "resnet_stage_smearing",
    "smearing_per_layer",
    "sparse_conv_exactness",
    "sparse_timing_sweep",
    "summarize_timing",
    "timing_settings",
]


def fraction_nonzero(features: torch.Tensor, where: torch.Tensor) -> float:
    """Fraction of the positions marked in ``where`` (B, 1, H, W) where any channel is non-zero."""
    where = as_mask(where)
    total = int(where.sum())
    if total == 0:
        raise DataError("fraction_nonzero got no position to look at (an all-False selection).")
    nonzero = features.detach().ne(0).any(dim=1, keepdim=True)
    return int((nonzero & where).sum()) / total


@torch.no_grad()
def conv_footprints(mask: torch.Tensor, layers: int = 3, kernel: int = 3) -> dict:
    """Where outputs exist after 1..``layers`` stacked k×k convs: dense vs sparse (SparK's).

    ``mask`` (1, 1, H, W) marks the visible positions of one feature map. The kernels are all
    ones, so a dense output is non-zero exactly where its window touches a visible input (random
    kernels give the same footprint, up to exact cancellations). Returns ``{"input": (H, W),
    "dense": [(H, W), ...], "sparse": [(H, W), ...]}`` bool maps, and ``dense_written`` /
    ``sparse_written``: per layer, how many masked positions received an output.
    """
    if layers < 1 or kernel < 1 or kernel % 2 == 0:
        raise ConfigError(f"need layers >= 1 and an odd kernel, got {layers=}, {kernel=}.")
    visible = as_mask(mask)
    if visible.shape[0] != 1:
        raise DataError(
            f"conv_footprints draws one map: pass a (1, 1, H, W) mask, got {tuple(visible.shape)}."
        )
    conv = nn.Conv2d(1, 1, kernel, padding=kernel // 2, bias=False)
    conv.weight.fill_(1.0)
    sparse_conv, ctx = to_sparse(conv)
    dense = sparse = visible.float()
    out = {"input": visible[0, 0].clone(), "dense": [], "sparse": []}
    with ctx.active(visible):
        for _ in range(layers):
            dense, sparse = conv(dense), sparse_conv(sparse)
            out["dense"].append(dense[0, 0] != 0)
            out["sparse"].append(sparse[0, 0] != 0)
    masked = ~out["input"]
    for key in ("dense", "sparse"):
        out[f"{key}_written"] = [int((m & masked).sum()) for m in out[key]]
    return out


def resnet_stage_convs(encoder: str = "resnet18", stage: int = 1, seed: int = 0) -> list[nn.Conv2d]:
    """The 3×3 stride-1 convs (C → C) of one stage of a randomly initialised smp ResNet, in order.

    Built offline (no ImageNet weights) under ``seed`` without touching torch's global RNG.
    """
    import segmentation_models_pytorch as smp

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = smp.encoders.get_encoder(encoder, weights=None)
    layer = getattr(model, f"layer{stage}", None)
    if layer is None:
        raise ConfigError(f"{encoder} has no stage {stage}; ResNet stages are 1 to 4.")
    convs = [
        m
        for m in layer.modules()
        if isinstance(m, nn.Conv2d)
        and m.kernel_size == (3, 3)
        and m.stride == (1, 1)
        and m.in_channels == m.out_channels
    ]
    if not convs:
        raise ConfigError(f"stage {stage} of {encoder} has no 3x3 stride-1 C->C convolution.")
    return convs


@torch.no_grad()
def smearing_per_layer(
    convs: Sequence[nn.Conv2d], features: torch.Tensor, mask: torch.Tensor
) -> list[dict]:
    """Run zero-filled ``features`` through conv → ReLU layers, densely and as SparK's sparse conv.

    Per layer: ``dense_masked_nonzero`` / ``sparse_masked_nonzero`` (fraction of masked positions
    with a non-zero output) and ``visible_changed`` (fraction of visible positions whose dense
    output differs from the sparse one: the smeared values flow back into real features).
    BatchNorm and the residual additions are left out to show the convolutions' share alone.
    """
    if not convs:
        raise ConfigError("smearing_per_layer needs at least one convolution.")
    pixel = mask_at(features, mask)
    masked, visible = ~pixel, pixel
    if not bool(masked.any()) or not bool(visible.any()):
        raise DataError("the mask must hide some positions and keep some visible.")
    dense_stack = nn.Sequential(*(m for conv in convs for m in (conv, nn.ReLU())))
    sparse_stack, ctx = to_sparse(dense_stack)
    dense = sparse = features * pixel
    rows = []
    with ctx.active(pixel):
        for i in range(len(convs)):
            dense = dense_stack[2 * i + 1](dense_stack[2 * i](dense))
            sparse = sparse_stack[2 * i + 1](sparse_stack[2 * i](sparse))
            scale = float(sparse.abs().max()) or 1.0
            changed = (dense - sparse).abs() > 1e-5 * scale
            rows.append(
                {
                    "layer": i + 1,
                    "dense_masked_nonzero": fraction_nonzero(dense, masked),
                    "sparse_masked_nonzero": fraction_nonzero(sparse, masked),
                    "visible_changed": fraction_nonzero(changed, visible),
                }
            )
    return rows


def resnet_stage_smearing(
    encoder: str = "resnet18",
    stage: int = 1,
    height: int = 224,
    width: int = 320,
    patch: int = 32,
    ratio: float = 0.6,
    seed: int = 0,
) -> list[dict]:
    """:func:`smearing_per_layer` on the 3×3 convs of one random ResNet stage, fed non-negative
    random features (like post-ReLU activations) at that stage's resolution (stride 2**(stage+1))
    of a ``height``×``width`` image masked with SparK patches of side ``patch``."""
    stride = 2 ** (stage + 1)
    if height % patch or width % patch or patch % stride:
        raise ConfigError(
            f"image {height}x{width} must be a multiple of the patch {patch}, and the patch a "
            f"multiple of the stage stride {stride}."
        )
    generator = torch.Generator().manual_seed(seed)
    convs = resnet_stage_convs(encoder, stage, seed)
    grid = make_patch_mask(1, height, width, patch, ratio, generator=generator)
    size = (1, convs[0].in_channels, height // stride, width // stride)
    features = torch.rand(size, generator=generator)
    return smearing_per_layer(convs, features, grid)


@torch.no_grad()
def batchnorm_shift(features: torch.Tensor, mask: torch.Tensor) -> dict:
    """Batch statistics of dense vs sparse BatchNorm on zero-filled ``features`` (B, C, H, W).

    The truth is BatchNorm1d on the visible positions only, gathered as (N_visible, C). All norms
    run one training step with momentum 1, so their running statistics are exactly the batch
    statistics they used (mean, unbiased variance). Returns per-channel lists ``visible_mean``,
    ``visible_var`` (the truth), ``dense_mean``, ``dense_var``, ``sparse_mean``, ``sparse_var``,
    ``dense_mean_over_truth`` (= the visible fraction: the zeros dilute the mean);
    ``visible_fraction``; ``sparse_stats_exact`` / ``sparse_output_exact`` (sparse BN equals the
    truth to 1e-5, outputs 0 at masked positions) and ``dense_output_error`` (the largest error
    of dense BN's output at visible positions).
    """
    if features.dim() != 4:
        raise DataError(f"expected features (B, C, H, W), got {tuple(features.shape)}.")
    pixel = mask_at(features, mask)
    zero_filled = features * pixel
    channels = features.shape[1]
    dense_bn = nn.BatchNorm2d(channels, momentum=1.0).train()
    sparse_bn, ctx = to_sparse(dense_bn)
    truth_bn = nn.BatchNorm1d(channels, momentum=1.0).train()
    visible = gather_visible(features, pixel)  # (N_visible, C): all that sparse BN should see
    if visible.shape[0] < 2:
        raise DataError("batchnorm_shift needs at least two visible positions.")
    truth = truth_bn(visible)
    dense_out = dense_bn(zero_filled)
    with ctx.active(pixel):
        sparse_out = sparse_bn(zero_filled)

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return bool(torch.allclose(a, b, rtol=1e-5, atol=1e-5))

    return {
        "channels": channels,
        "visible_fraction": float(pixel.float().mean()),
        "visible_mean": truth_bn.running_mean.tolist(),
        "visible_var": truth_bn.running_var.tolist(),
        "dense_mean": dense_bn.running_mean.tolist(),
        "dense_var": dense_bn.running_var.tolist(),
        "sparse_mean": sparse_bn.running_mean.tolist(),
        "sparse_var": sparse_bn.running_var.tolist(),
        "dense_mean_over_truth": (dense_bn.running_mean / truth_bn.running_mean).tolist(),
        "sparse_stats_exact": same(sparse_bn.running_mean, truth_bn.running_mean)
        and same(sparse_bn.running_var, truth_bn.running_var),
        "sparse_output_exact": same(gather_visible(sparse_out, pixel), truth)
        and fraction_nonzero(sparse_out, ~pixel) == 0.0,
        "dense_output_error": float((gather_visible(dense_out, pixel) - truth).abs().max()),
    }


@torch.no_grad()
def encoder_stage_zeros(encoder: nn.Module, images: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """Dense encoder on the zero-filled input vs its sparse twin (:class:`SparseEncoder`), by stage.

    ``images`` (B, 3, H, W) are network inputs (normalised); both run in training mode (batch
    statistics), as in pretraining, on copies: ``encoder`` is left untouched. For each stage after
    the input: ``stage``, ``shape`` (C, H, W), ``stride``, ``dense_masked_nonzero``,
    ``sparse_masked_nonzero``, ``sparse_masked_max_abs``, ``sparse_masked_zero`` (bool),
    ``sparse_visible_nonzero`` and, for the first image, ``dense_map`` / ``sparse_map``: the mean
    |feature| over channels (H, W)."""
    pixel = mask_at(images, mask)
    grid = as_mask(mask)
    dense_model = copy.deepcopy(encoder).train()
    sparse_model = SparseEncoder(encoder).train()
    dense_features = dense_model(zero_out(images, pixel))
    sparse_features = sparse_model(images, grid)
    if torch.is_tensor(dense_features):
        dense_features, sparse_features = [dense_features], [sparse_features]
    rows = []
    for stage, (dense, sparse) in enumerate(zip(dense_features, sparse_features, strict=True)):
        if stage == 0 and dense.shape[-2:] == images.shape[-2:] and dense.shape[1] == 3:
            continue  # smp encoders return the input itself first
        if dense.numel() == 0:
            continue
        here = mask_at(sparse, grid)
        masked_values = sparse.permute(0, 2, 3, 1)[~here[:, 0]]
        max_abs = float(masked_values.abs().max()) if masked_values.numel() else 0.0
        rows.append(
            {
                "stage": stage,
                "shape": tuple(sparse.shape[1:]),
                "stride": images.shape[-1] // sparse.shape[-1],
                "dense_masked_nonzero": fraction_nonzero(dense, ~here),
                "sparse_masked_nonzero": fraction_nonzero(sparse, ~here),
                "sparse_masked_max_abs": max_abs,
                "sparse_masked_zero": max_abs == 0.0,
                "sparse_visible_nonzero": fraction_nonzero(sparse, here),
                "dense_map": dense[0].abs().mean(0),
                "sparse_map": sparse[0].abs().mean(0),
            }
        )
    return rows


# (kernel, stride, dilation): a ResNet 3x3, its stride-2 3x3, a 1x1, the 7x7 stem, a dilated 3x3.
EXACTNESS_CASES = ((3, 1, 1), (3, 2, 1), (1, 1, 1), (7, 2, 1), (3, 1, 2))


@torch.no_grad()
def sparse_conv_exactness(
    cases: Sequence[tuple[int, int, int]] = EXACTNESS_CASES,
    channels: int = 16,
    height: int = 32,
    width: int = 48,
    patch: int = 8,
    ratio: float = 0.6,
    batch: int = 2,
    seed: int = 0,
) -> list[dict]:
    """SparK's masked-dense conv (:class:`depthlib.spark.sparse.SparseConv2d`) against the independent
    reference :func:`submanifold_conv2d`, for each (kernel, stride, dilation) with "same" padding.

    Rows: kernel, stride, dilation, ``max_abs_diff`` on active output sites, ``max_abs_inactive``
    (largest |output| of either at inactive sites), ``exact`` (diff <= 1e-5 and inactive == 0).
    """
    generator = torch.Generator().manual_seed(seed)
    grid = make_patch_mask(batch, height, width, patch, ratio, generator=generator)
    x = torch.randn(batch, channels, height, width, generator=generator)
    pixel = upsample_mask(grid, (height, width))
    x = x * pixel
    rows = []
    for kernel, stride, dilation in cases:
        conv = nn.Conv2d(
            channels, channels, kernel, stride, dilation * (kernel // 2), dilation=dilation
        )
        with torch.no_grad():
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * 0.1)
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))
        sparse_conv, ctx = to_sparse(conv)
        with ctx.active(grid):
            emulated = sparse_conv(x)
        reference, active = submanifold_conv2d(
            x, pixel, conv.weight, conv.bias, stride, conv.padding, dilation
        )
        active = active[:, None].expand_as(emulated)
        diff = float((emulated - reference)[active].abs().max())
        inactive = max(float(emulated[~active].abs().max()), float(reference[~active].abs().max()))
        rows.append(
            {
                "kernel": kernel,
                "stride": stride,
                "dilation": dilation,
                "max_abs_diff": diff,
                "max_abs_inactive": inactive,
                "exact": diff <= 1e-5 and inactive == 0.0,
            }
        )
    return rows


def timing_settings(profile=None) -> dict:
    """Sizes of the sparse-vs-dense timing in notebook 02 for a profile (name or Profile).

    ``quick``: one tiny layer, a second or two. Otherwise the benchmark's setting: a ResNet
    stage-2 map of a 224 image (28×28, mask patches of 4×4 positions), batch 16, 128 and 256
    channels.
    """
    from depthlib.profiles import Profile, get_profile

    prof = profile if isinstance(profile, Profile) else get_profile(profile)
    if prof.name == "quick":
        return {"channels": (32,), "size": 16, "batch": 2, "patch": 4, "repeats": 3}
    return {"channels": (128, 256), "size": 28, "batch": 16, "patch": 4, "repeats": 7}


def sparse_timing_sweep(
    profile=None, ratios: Sequence[float] = (0.4, 0.6, 0.75, 0.9), num_threads: int | None = None
) -> list[dict]:
    """Run :func:`measure_sparse_vs_dense` at the :func:`timing_settings` of ``profile``."""
    s = timing_settings(profile)
    rows = []
    for channels in s["channels"]:
        rows += measure_sparse_vs_dense(
            channels,
            s["size"],
            s["batch"],
            tuple(ratios),
            patch=s["patch"],
            repeats=s["repeats"],
            num_threads=num_threads,
        )
    return rows


def summarize_timing(rows: Sequence[dict]) -> dict:
    """The facts in :func:`measure_sparse_vs_dense` rows that do not depend on the machine's
    speed (``macs_equal_visible``: multiply-adds ∝ visible fraction; ``exact``: max abs diff
    <= 1e-5), and the mask ratios where sparse was faster (median and fastest times)."""
    return {
        "macs_equal_visible": all(abs(r["macs_fraction"] - r["visible"]) < 1e-9 for r in rows),
        "exact": all(r["max_abs_diff"] <= 1e-5 for r in rows),
        "sparse_faster_at": sorted({r["ratio"] for r in rows if r["sparse_over_dense"] < 1}),
        "sparse_faster_at_fastest": sorted(
            {r["ratio"] for r in rows if r["sparse_over_dense_min"] < 1}
        ),
    }
