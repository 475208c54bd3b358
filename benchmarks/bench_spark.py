"""SparK pretraining throughput on the CPU, against a plain dense step of the same network.

Run: ``python benchmarks/bench_spark.py [--encoder resnet18] [--depths 5,4] [--widths 128]
[--size 96x128] [--batch 32] [--repeats 7] [--threads 2]``.

For each (encoder depth, decoder width) it times one optimizer step (forward, backward, AdamW):

- **spark**: ``SparkTask.training_step`` as pretraining runs it: crop/flip augmentation, a fresh
  mask, the sparse encoder (conv × mask, gather/scatter BatchNorm), densify with mask tokens,
  the light decoder, the masked-patch loss;
- **dense**: the same weights after ``to_dense`` (plain smp encoder, plain BatchNorm densify,
  no mask tokens, no masking), the same decoder, the patch loss over all patches, same
  augmentation. This is what the network costs without SparK's sparse bookkeeping.

The SparK step cannot be cheaper than the dense one here: "sparse" convolution is a dense
convolution followed by a multiplication (no real sparse kernels), so the ratio is SparK's
overhead. The two steps alternate and each time is the median over ``repeats`` steps, so load
changes hit both alike. On a machine whose cores are shared with other jobs all numbers are
pessimistic; the load average is printed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from depthlib.data.transforms import normalize, random_resized_crop
from depthlib.jobs.pretrain import SparkTask
from depthlib.spark.model import SparK, masked_patch_loss
from depthlib.spark.sparse import to_dense


def _interleaved(steps: dict, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, calling them in turn ``repeats`` times, so a
    change in the machine's load hits all of them alike (the ratio stays fair)."""
    for step in steps.values():
        step()  # warm-up: allocator, oneDNN kernels
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def measure(encoder: str, depth: int, width: int, size, batch: int, repeats: int):
    """(spark s/step, dense s/step, augmentation s/step, parameters) for one configuration."""
    torch.manual_seed(0)
    spark = SparK(encoder, encoder_depth=depth, decoder_width=width)
    dense = to_dense(spark)
    rgb = torch.randint(0, 256, (batch, 3, *size), dtype=torch.uint8)
    task = SparkTask()
    seeds = iter(range(10**9))

    spark_opt = torch.optim.AdamW(spark.parameters(), lr=1e-4)
    dense_opt = torch.optim.AdamW(dense.parameters(), lr=1e-4)
    all_hidden = torch.zeros(batch, 1, size[0] // spark.patch, size[1] // spark.patch, dtype=bool)

    def spark_step():
        loss, _ = task.training_step(spark, {"rgb": rgb, "seed": next(seeds)})
        spark_opt.zero_grad(set_to_none=True)
        loss.backward()
        spark_opt.step()

    def dense_step():
        generator = torch.Generator().manual_seed(next(seeds))
        x = normalize(random_resized_crop(rgb, generator))
        features = dense.encoder(x)
        parts = zip(
            dense.feature_indices, dense.densify.norms, dense.densify.projections, strict=True
        )
        skips = [project(norm(features[k])) for k, norm, project in parts]  # all positions seen
        loss = masked_patch_loss(dense.decoder(skips), x, all_hidden, dense.patch)
        dense_opt.zero_grad(set_to_none=True)
        loss.backward()
        dense_opt.step()

    def augment_only():
        random_resized_crop(rgb, torch.Generator().manual_seed(next(seeds)))

    spark.train()
    dense.train()
    t = _interleaved({"spark": spark_step, "dense": dense_step, "aug": augment_only}, repeats)
    return t["spark"], t["dense"], t["aug"], sum(p.numel() for p in spark.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--depths", default="5,4", help="encoder depths (patch = 2**depth)")
    parser.add_argument("--widths", default="128", help="decoder widths, comma-separated")
    parser.add_argument("--size", default="96x128", help="HxW (the cpu profile's)")
    parser.add_argument("--batch", type=int, default=32, help="the cpu profile's batch size")
    parser.add_argument("--repeats", type=int, default=7, help="timed steps of each kind")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    depths = [int(v) for v in args.depths.split(",")]
    widths = [int(v) for v in args.widths.split(",")]

    print(
        f"SparK pretraining step vs dense step: {args.encoder}, {size[0]}x{size[1]}, batch "
        f"{args.batch}, {args.threads} threads, torch {torch.__version__}"
    )
    print(f"load average before: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    header = (
        f"{'depth':>5} {'patch':>5} {'width':>5} {'params':>8} | {'spark s':>8} {'img/s':>6} | "
        f"{'dense s':>8} {'img/s':>6} | {'ratio':>5} | {'aug s':>6}"
    )
    print(header)
    print("-" * len(header))
    for depth in depths:
        for width in widths:
            t_spark, t_dense, t_aug, n = measure(
                args.encoder, depth, width, size, args.batch, args.repeats
            )
            print(
                f"{depth:>5} {2**depth:>5} {width:>5} {n / 1e6:>7.1f}M | {t_spark:>8.3f} "
                f"{args.batch / t_spark:>6.1f} | {t_dense:>8.3f} {args.batch / t_dense:>6.1f} | "
                f"{t_spark / t_dense:>5.2f} | {t_aug:>6.3f}",
                flush=True,
            )
    print(f"load average after: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(
        "ratio = SparK step time / dense step time (>1: SparK's masking, gather/scatter "
        "BatchNorm and mask tokens cost that much more). The CPU may be shared: pessimistic."
    )


if __name__ == "__main__":
    main()
