"""Sparse vs dense convolution on one ResNet stage: multiply-adds and CPU wall time.

For a 3×3 conv (C → C, stride 1) at several mask ratios, compares
- masked-dense (what SparK runs: a dense conv, then × mask) with
- a true submanifold conv (depthlib.course.sparse_reference: gather active sites, matmul, scatter).
MACs count the multiply-adds each performs; times are medians under torch.no_grad().

    python benchmarks/bench_sparse_conv.py                  # the table of the README
    python benchmarks/bench_sparse_conv.py --channels 64 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import platform

import torch

from depthlib.course.sparse_reference import markdown_table, measure_sparse_vs_dense


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, nargs="+", default=[128, 256])
    parser.add_argument(
        "--size",
        type=int,
        default=28,
        help="feature map side (28 = stage 3, stride 8 of a 224 image)",
    )
    parser.add_argument("--patch", type=int, default=4, help="mask patch side on this map")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.4, 0.6, 0.75, 0.9])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    load_before = os.getloadavg()[0]
    rows = []
    for channels in args.channels:
        rows += measure_sparse_vs_dense(
            channels,
            args.size,
            args.batch,
            tuple(args.ratios),
            patch=args.patch,
            repeats=args.repeats,
            num_threads=args.threads,
        )
    print(
        f"3x3 conv C->C, batch {args.batch}, {args.size}x{args.size} map, mask patches of "
        f"{args.patch}x{args.patch} positions; torch {torch.__version__}, {args.threads} threads, "
        f"{platform.machine()}, load average {load_before:.2f} -> {os.getloadavg()[0]:.2f}.\n"
        f"Times: median / fastest of {args.repeats} alternating runs, no_grad.\n"
    )
    print(markdown_table(rows))
    exact = all(abs(r["macs_fraction"] - r["visible"]) < 1e-9 for r in rows)
    for key, label in (("sparse_over_dense", "median"), ("sparse_over_dense_min", "fastest")):
        fast = sorted({r["ratio"] for r in rows if r[key] < 1})
        print(f"sparse faster than masked-dense ({label} times) at mask ratios: {fast}")
    print(f"MAC fraction == visible fraction in every row: {exact}")


if __name__ == "__main__":
    main()
