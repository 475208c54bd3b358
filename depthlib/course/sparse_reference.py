"""A true submanifold sparse convolution, written independently of :mod:`depthlib.spark.sparse`.

Features live only at active sites (an (N_active, C) list); each active output gathers its k×k
neighbourhood through an index map, so inactive neighbours contribute nothing: the semantics
SparK emulates with "dense conv, then × mask". Notebook 02 uses it to prove that emulation exact
and, with ``benchmarks/bench_sparse_conv.py``, to count and time a real sparse kernel's work.
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from depthlib.errors import ConfigError, DataError
from depthlib.spark.model import make_patch_mask
from depthlib.spark.sparse import upsample_mask

__all__ = [
    "active_output_sites",
    "dense_conv_macs",
    "markdown_table",
    "measure_sparse_vs_dense",
    "sparse_conv_macs",
    "submanifold_conv2d",
]


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def active_output_sites(mask: torch.Tensor, stride: int | tuple[int, int] = 1) -> torch.Tensor:
    """Active output sites (B, H/s, W/s) of a submanifold conv: an output is active when any input
    of its s×s block is (for stride 1, the input sites themselves)."""
    active = mask[:, 0]
    sh, sw = _pair(stride)
    h, w = active.shape[-2:]
    if h % sh or w % sw:
        raise ConfigError(f"feature size {h}x{w} is not divisible by the stride {(sh, sw)}.")
    if (sh, sw) == (1, 1):
        return active
    return active.view(-1, h // sh, sh, w // sw, sw).any(dim=4).any(dim=2)


def submanifold_conv2d(
    x: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Convolve only at active sites; returns ``(out (B, C_out, Ho, Wo), out_active (B, Ho, Wo))``.

    ``mask`` marks the active input sites at the resolution of ``x``; ``out`` is zero at inactive
    outputs. The output must have size (H/stride, W/stride), i.e. "same" padding.
    """
    active = mask[:, 0].to(x.device)
    b, c_in, h, w = x.shape
    if active.shape != (b, h, w):
        raise DataError(
            f"mask {tuple(active.shape)} does not match the features' (B, H, W) = {(b, h, w)}."
        )
    c_out, c_in_group, kh, kw = weight.shape
    if c_in_group * groups != c_in or c_out % groups:
        raise ConfigError(f"weight {tuple(weight.shape)} does not fit {c_in} channels, {groups=}.")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    out_h = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if h % sh or w % sw or (out_h, out_w) != (h // sh, w // sw):
        raise ConfigError(
            f"submanifold_conv2d needs 'same' padding: input {h}x{w}, stride {(sh, sw)} gives "
            f"{out_h}x{out_w} instead of {h // sh}x{w // sw}; use padding = dilation*(k-1)//2."
        )
    out_active = active_output_sites(active[:, None], (sh, sw))

    # The sparse representation: one row per active input site, plus a zero row for "nothing".
    n_in = int(active.sum())
    feats = torch.cat([x.permute(0, 2, 3, 1)[active], x.new_zeros(1, c_in)])
    index = torch.full((b, h, w), n_in, dtype=torch.long, device=x.device)
    index[active] = torch.arange(n_in, device=x.device)
    index = F.pad(index, (pw, pw, ph, ph), value=n_in)

    # Each active output site's neighbourhood, looked up in the index map: (M, kh*kw) rows.
    bi, oy, ox = out_active.nonzero(as_tuple=True)
    ky = torch.arange(kh, device=x.device) * dh
    kx = torch.arange(kw, device=x.device) * dw
    rows = index[
        bi[:, None, None],
        (oy * sh)[:, None, None] + ky[None, :, None],
        (ox * sw)[:, None, None] + kx[None, None, :],
    ].reshape(len(bi), kh * kw)
    columns = feats[rows]  # (M, kh*kw, C_in)

    # One matmul per group over the gathered columns only.
    m, k = len(bi), kh * kw
    cols = columns.view(m, k, groups, c_in_group).permute(2, 0, 1, 3).reshape(groups, m, -1)
    kernel = weight.view(groups, c_out // groups, c_in_group, k).permute(0, 3, 2, 1)
    values = torch.bmm(cols, kernel.reshape(groups, k * c_in_group, -1))
    values = values.permute(1, 0, 2).reshape(m, c_out)
    if bias is not None:
        values = values + bias

    out = x.new_zeros(b, h // sh, w // sw, c_out)
    out[bi, oy, ox] = values
    return out.permute(0, 3, 1, 2), out_active


def dense_conv_macs(weight: torch.Tensor, batch: int, out_size: tuple[int, int]) -> int:
    """Multiply-adds of a dense conv: every output position, every kernel tap."""
    c_out, c_in_group, kh, kw = weight.shape
    return batch * out_size[0] * out_size[1] * c_out * c_in_group * kh * kw


def sparse_conv_macs(weight: torch.Tensor, out_active: torch.Tensor) -> int:
    """Multiply-adds :func:`submanifold_conv2d` performs: active outputs × kernel taps."""
    c_out, c_in_group, kh, kw = weight.shape
    return int(out_active.sum()) * c_out * c_in_group * kh * kw


def _interleaved_times(functions, repeats: int) -> list[list[float]]:
    """Seconds per run of each function, run in alternation so that a shared CPU's load spikes
    hit all of them alike; one warm-up call each first."""
    for fn in functions:
        fn()
    times: list[list[float]] = [[] for _ in functions]
    for _ in range(repeats):
        for fn, bucket in zip(functions, times, strict=True):
            start = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - start)
    return times


def measure_sparse_vs_dense(
    channels: int = 128,
    size: int | tuple[int, int] = 28,
    batch: int = 16,
    ratios: tuple[float, ...] = (0.4, 0.6, 0.75, 0.9),
    *,
    patch: int = 4,
    kernel: int = 3,
    repeats: int = 5,
    num_threads: int | None = None,
    seed: int = 0,
) -> list[dict]:
    """MACs and CPU time of one k×k conv (C→C, stride 1): masked-dense vs :func:`submanifold_conv2d`.

    ``patch``: the mask patch side in pixels *of this feature map* (4 for the 28×28 stage-3 map of
    a 224 image with 32-pixel patches). One row per ratio (keys: see :func:`markdown_table`);
    times are medians (``_min``: fastest) of ``repeats`` alternating runs under no_grad with
    ``num_threads`` threads; sparse_over_dense < 1 means sparse is faster.
    """
    height, width = _pair(size)
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=generator)
    weight = torch.randn(channels, channels, kernel, kernel, generator=generator) * 0.05
    bias = torch.randn(channels, generator=generator)
    padding = kernel // 2
    old_threads = torch.get_num_threads()
    rows = []
    try:
        if num_threads is not None:
            torch.set_num_threads(num_threads)
        for ratio in ratios:
            grid = make_patch_mask(batch, height, width, patch, ratio, generator=generator)
            pixel_mask = upsample_mask(grid, (height, width))
            xm = x * pixel_mask

            def masked_dense(xm=xm, pixel_mask=pixel_mask):
                return F.conv2d(xm, weight, bias, padding=padding) * pixel_mask

            def sparse(xm=xm, pixel_mask=pixel_mask):
                return submanifold_conv2d(xm, pixel_mask, weight, bias, padding=padding)

            with torch.no_grad():
                dense_out = masked_dense()
                sparse_out, out_active = sparse()
                dense_t, sparse_t = _interleaved_times((masked_dense, sparse), repeats)
            dense_s, sparse_s = statistics.median(dense_t), statistics.median(sparse_t)
            dense_macs = dense_conv_macs(weight, batch, (height, width))
            sparse_macs = sparse_conv_macs(weight, out_active)
            rows.append(
                {
                    "ratio": ratio,
                    "visible": int(pixel_mask.sum()) / pixel_mask.numel(),
                    "channels": channels,
                    "size": f"{height}x{width}",
                    "batch": batch,
                    "dense_gmacs": dense_macs / 1e9,
                    "sparse_gmacs": sparse_macs / 1e9,
                    "macs_fraction": sparse_macs / dense_macs,
                    "dense_ms": dense_s * 1e3,
                    "sparse_ms": sparse_s * 1e3,
                    "sparse_over_dense": sparse_s / dense_s,
                    "dense_ms_min": min(dense_t) * 1e3,
                    "sparse_ms_min": min(sparse_t) * 1e3,
                    "sparse_over_dense_min": min(sparse_t) / min(dense_t),
                    "max_abs_diff": float((dense_out - sparse_out).abs().max()),
                }
            )
    finally:
        torch.set_num_threads(old_threads)
    return rows


def markdown_table(rows: list[dict]) -> str:
    """The rows of :func:`measure_sparse_vs_dense` as a markdown table (times: median / fastest)."""
    header = (
        "| channels | map | mask ratio | visible | dense GMAC | sparse GMAC | MAC fraction "
        "| masked-dense ms | sparse ms | sparse/dense time | max abs diff |"
    )
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        lines.append(
            f"| {r['channels']} | {r['size']} | {r['ratio']:.2f} | {r['visible']:.3f} "
            f"| {r['dense_gmacs']:.3f} | {r['sparse_gmacs']:.3f} | {r['macs_fraction']:.3f} "
            f"| {r['dense_ms']:.1f} / {r['dense_ms_min']:.1f} "
            f"| {r['sparse_ms']:.1f} / {r['sparse_ms_min']:.1f} "
            f"| {r['sparse_over_dense']:.2f} / {r['sparse_over_dense_min']:.2f} "
            f"| {r['max_abs_diff']:.1e} |"
        )
    return "\n".join(lines)
