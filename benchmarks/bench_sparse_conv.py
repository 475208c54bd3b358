"""Sparse vs masked-dense convolution on a CPU: one conv, every conv of the encoder, the whole step.

SparK runs its encoder "masked dense": each convolution computes every position, then multiplies
the output by the mask. A true sparse convolution gathers the visible positions, computes only
there and scatters back. Which is faster depends on the layer, so this measures three levels:

1. ``--part conv``: a 3×3 conv (C → C) alone at several mask ratios, against the teaching
   reference ``depthlib.course.sparse_reference.submanifold_conv2d`` (no_grad; the table in docs/benchmarks.md).
2. ``--part layers``: every convolution of the SparK encoder (default EfficientNet-Lite0, the cpu
   profile's) at its own input shape, forward + backward, masked dense vs gathered (1×1: a matrix
   product on the visible vectors, as ``SparK(gather=("1x1",))`` runs it; depthwise and full k×k:
   the reference gather conv). Summed per layer kind and stage: where does gathering pay?
3. ``--part step``: a whole SparK pretraining step (forward, backward, AdamW) with
   ``gather=()`` and ``gather=("1x1",)``, fp32 and bf16, and the encoder's forward + backward
   alone. Checks that both give the same loss.

Times are medians of alternating repeats (a load change hits both alike). Run it alone on the
machine; ``--json`` appends a record with provenance.

    python benchmarks/bench_sparse_conv.py --part step --part layers --json benchmarks/results/sparse_compute.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections import defaultdict

import torch
import torch.nn.functional as F
from bench_spark import _interleaved as _alternate  # warm-up, then alternate: median times
from provenance import provenance

from depthlib.course.sparse_reference import (
    markdown_table,
    measure_sparse_vs_dense,
    submanifold_conv2d,
)
from depthlib.data.transforms import normalize
from depthlib.spark.model import SparK, make_patch_mask
from depthlib.spark.sparse import SparseConv2d, _gather, _scatter, conv_kind, upsample_mask


def encoder_convs(model: SparK, images: torch.Tensor, mask: torch.Tensor) -> list[dict]:
    """Every conv of the sparse encoder with the shape of the input it sees."""
    found = []

    def hook(module, args):
        found.append({"conv": module, "shape": tuple(args[0].shape)})

    handles = [m.register_forward_pre_hook(hook) for m in model.encoder.modules()
               if isinstance(m, SparseConv2d)]  # fmt: skip
    with torch.no_grad():
        model.features(images, mask)
    for h in handles:
        h.remove()
    return found


def layer_times(layer: dict, patch_mask: torch.Tensor, repeats: int) -> dict:
    """Forward + backward of one conv at its shape: masked dense vs gathered."""
    conv, shape = layer["conv"], layer["shape"]
    weight = conv.weight.detach().clone().requires_grad_(True)
    bias = None if conv.bias is None else conv.bias.detach().clone().requires_grad_(True)
    mask_in = upsample_mask(patch_mask, shape[-2:])
    x = (torch.randn(shape) * mask_in).requires_grad_(True)
    kind = conv_kind(conv)

    def masked():
        out = F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        (out * upsample_mask(patch_mask, out.shape[-2:])).sum().backward()

    def gathered():
        if kind == "1x1":
            out = _scatter(F.linear(_gather(x, mask_in), weight[:, :, 0, 0], bias), mask_in)
        else:
            out, _ = submanifold_conv2d(x, mask_in, weight, bias, conv.stride, conv.padding,
                                        conv.dilation, conv.groups)  # fmt: skip
        out.sum().backward()

    t = _alternate({"masked": masked, "gathered": gathered}, repeats)
    return {
        "kind": kind,
        "kernel": conv.kernel_size[0],
        "stride": conv.stride[0],
        "in_hw": list(shape[-2:]),
        "channels": [conv.in_channels, conv.out_channels],
        **t,
    }


def part_layers(args) -> dict:
    torch.manual_seed(0)
    h, w = args.size
    model = SparK(args.encoder, encoder_depth=4, decoder_width=64)
    images = normalize(torch.randint(0, 256, (args.batch, 3, h, w), dtype=torch.uint8))
    mask = make_patch_mask(args.batch, h, w, model.patch, args.ratio, seed=0)
    rows = []
    for layer in encoder_convs(model, images, mask):
        row = layer_times(layer, mask, args.repeats)
        row["stage_stride"] = h // layer["shape"][-2]  # the stride of the map it reads
        rows.append(row)
    groups: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    for r in rows:
        g = groups[(r["kind"], r["stage_stride"])]
        g[0], g[1], g[2] = g[0] + r["masked"], g[1] + r["gathered"], g[2] + 1
    summary = [{"kind": k, "reads_stride": s, "layers": n, "masked_ms": round(1e3 * a, 2),
                "gathered_ms": round(1e3 * b, 2), "gathered_over_masked": round(b / a, 3)}
               for (k, s), (a, b, n) in sorted(groups.items())]  # fmt: skip
    print(f"\nLayers of {args.encoder} at {h}x{w}, batch {args.batch}, mask {args.ratio}: "
          "forward + backward, summed per kind and the stride of the map each reads")  # fmt: skip
    print(
        "| kind | reads stride | layers | masked dense (ms) | gathered (ms) | gathered / masked |"
    )
    print("|---|---|---|---|---|---|")
    for r in summary:
        print(f"| {r['kind']} | {r['reads_stride']} | {r['layers']} | {r['masked_ms']} | "
              f"{r['gathered_ms']} | {r['gathered_over_masked']} |")  # fmt: skip
    return {"layers": summary}


def part_step(args) -> dict:
    h, w = args.size
    rgb = torch.randint(0, 256, (args.batch, 3, h, w), dtype=torch.uint8)
    images = normalize(rgb)
    results = {}
    for precision in args.precision:
        bf16 = precision == "bf16"
        steps, losses = {}, {}
        for name, gather in (("masked dense", ()), ("gather 1x1", ("1x1",))):
            torch.manual_seed(0)
            model = SparK(args.encoder, encoder_depth=4, decoder_width=args.decoder_width,
                          mask_ratio=args.ratio, gather=gather)  # fmt: skip
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            mask = model.random_mask(args.batch, h, w, seed=1)
            with torch.no_grad():
                losses[name] = float(model(images, mask)[0])

            def step(model=model, opt=opt, mask=mask, bf16=bf16):
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    loss, _ = model(images, mask)
                opt.zero_grad()
                loss.float().backward()
                opt.step()

            def encoder_only(model=model, mask=mask, bf16=bf16):
                with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
                    with model.sparse_ctx.active(mask):
                        feats = model.encoder(images * model.sparse_ctx.mask_for(images))
                sum(f.float().sum() for f in feats[2:]).backward()

            steps[f"{name} step"] = step
            steps[f"{name} encoder"] = encoder_only
        t = _alternate(steps, args.repeats)
        step_ratio = t["masked dense step"] / t["gather 1x1 step"]
        enc_ratio = t["masked dense encoder"] / t["gather 1x1 encoder"]
        same = abs(losses["gather 1x1"] - losses["masked dense"]) <= 1e-5 * losses["masked dense"]
        results[precision] = {k: round(1e3 * v, 1) for k, v in t.items()} | {
            "step_speedup": round(step_ratio, 3), "encoder_speedup": round(enc_ratio, 3),
            "same_loss": same, "losses": losses}  # fmt: skip
        print(f"\n{precision}: SparK step at {h}x{w}, batch {args.batch}, mask {args.ratio}: "
              f"masked dense {1e3 * t['masked dense step']:.0f} ms, gather 1x1 "
              f"{1e3 * t['gather 1x1 step']:.0f} ms ({step_ratio:.2f}x); encoder forward + "
              f"backward {1e3 * t['masked dense encoder']:.0f} vs "
              f"{1e3 * t['gather 1x1 encoder']:.0f} ms ({enc_ratio:.2f}x); same loss: {same}")  # fmt: skip
    return {"step": results}


def part_conv(args) -> dict:
    rows = []
    for channels in args.channels:
        rows += measure_sparse_vs_dense(channels, 28, 16, (0.4, 0.6, 0.75, 0.9), patch=4,
                                        repeats=args.repeats, num_threads=args.threads)  # fmt: skip
    print("\n3x3 conv C->C, batch 16, 28x28 map, mask patches of 4x4 positions, no_grad:\n")
    print(markdown_table(rows))
    return {"conv": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", action="append", choices=("conv", "layers", "step"))
    parser.add_argument("--encoder", default="tu-efficientnet_lite0")
    parser.add_argument("--size", type=lambda s: tuple(int(v) for v in s.split("x")),
                        default=(64, 96), help="image size HxW (the cpu profile's: 64x96)")  # fmt: skip
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ratio", type=float, default=0.6, help="mask ratio")
    parser.add_argument("--decoder-width", type=int, default=128)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="append the measurements to this JSON-lines file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = provenance()
    print(f"torch {torch.__version__}, {args.threads} threads, {platform.machine()}, "
          f"{start['cpu']}, load {start['load']}")  # fmt: skip
    record = {"provenance": start, "settings": {k: v for k, v in vars(args).items() if k != "json"}}
    for part in args.part or ["conv"]:
        record |= {"conv": part_conv, "layers": part_layers, "step": part_step}[part](args)
    record["load_end"] = "/".join(f"{v:.2f}" for v in os.getloadavg())
    if args.json:
        with open(args.json, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")


if __name__ == "__main__":
    main()
