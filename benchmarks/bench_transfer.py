"""The scratch-vs-SparK experiment with several seeds: the numbers behind README's table.

    python benchmarks/bench_transfer.py                       # cpu profile, seeds 0 1 2
    python benchmarks/bench_transfer.py --seeds 0 1 2 3 --json runs/transfer.json

Runs (or reuses) every condition of ``depthlib.course.experiment.transfer_runs`` — the profile's label
fractions x {scratch, SparK} x seeds — in the same experiment folder ``depthlib reproduce`` and
notebook 04 use, so their tables pick up the extra seeds. Prints the table (mean ± std over
seeds, mean-depth baseline beside), the verdict per label fraction (goal: SparK better than
scratch by more than one std in the low-label regime), and the pretraining run's throughput.
Wall times depend on the machine's load (printed); the metrics do not.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from depthlib.atomic import to_json
from depthlib.course.experiment import (
    format_transfer_table,
    spark_encoder,
    summarize_transfer,
    transfer_runs,
    transfer_verdict,
)
from depthlib.profiles import get_profile
from depthlib.train.runlog import read_run_rows


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    print(f"profile {profile.name}; seeds {args.seeds}; load average {load()}")
    start = time.perf_counter()
    runs = transfer_runs(profile, seeds=args.seeds, progress=False)
    rows = summarize_transfer(runs)
    print(format_transfer_table(rows))
    verdicts = [transfer_verdict(rows, f) for f in profile.transfer.label_fractions]
    for verdict in verdicts:
        print(verdict["summary"])

    _, history = read_run_rows(spark_encoder(profile, progress=False).parent)
    speed = sum(r["samples_per_s"] for r in history) / len(history)
    pre = profile.pretrain
    print(
        f"SparK pretraining: {speed:.1f} images/s over {len(history)} epochs "
        f"({pre.encoder} depth {pre.encoder_depth}, {pre.height}x{pre.width}, batch "
        f"{pre.batch_size}); the SparK/dense step ratio is benchmarks/bench_spark.py's"
    )
    print(f"wall time {time.perf_counter() - start:.0f} s; load average at end {load()}")
    if args.json:
        report = {
            "profile": profile.name,
            "seeds": args.seeds,
            "rows": rows,
            "verdicts": verdicts,
            "pretrain_images_per_s": speed,
            "runs": {str(r.run_dir): r.metrics for r in runs},
        }
        with open(args.json, "w") as f:
            f.write(to_json(report))


if __name__ == "__main__":
    main()
