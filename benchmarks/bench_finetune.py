"""The cpu profile's fine-tune on the rooms set against its quality target, plus predict speed.

Target (issue 3): on the rooms test split, with at most 10 minutes of training on 2 cores,
δ1 >= 0.93, AbsRel <= 0.08, and AbsRel at least 3x better than the train mean-depth baseline of
the same run. Also reported: training and inference images/s, and the time of one prediction at
480x640 with a resnet34 UNet++ (the paper profile's network; target <= 1.5 s).

    python benchmarks/bench_finetune.py                      # cpu profile, 600 s safety budget
    python benchmarks/bench_finetune.py --threads 1 --epochs 4 --out runs/bench-short
    python benchmarks/bench_finetune.py --encoder-weights runs/transfer-cpu-<hash>/spark/encoder.safetensors

The schedule is planned from the profile's epochs (it must END inside the budget); the budget is
only a safety stop, and the output says whether it cut the run. The load average is printed at
start and end: other processes on a 2-core machine slow everything, so numbers measured under
load are pessimistic.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from depthlib.data.rooms import rooms_for_profile
from depthlib.depth.metrics import MeanDepthBaseline, format_table
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.jobs.finetune import finetune
from depthlib.jobs.predict import Predictor
from depthlib.profiles import get_profile, runs_dir

TARGET = {"delta1": 0.93, "abs_rel": 0.08, "baseline_ratio": 3.0, "predict_s": 1.5}
BASELINE = MeanDepthBaseline.name


def load() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def time_predict(model, rgb: np.ndarray, input_size, repeats: int = 5) -> float:
    """Median seconds of one image's prediction after one warm-up call."""
    predict = Predictor(model, input_size or "native")
    predict([rgb])
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict([rgb])
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--budget", type=float, default=600.0, help="safety stop, seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, help="override the profile's epochs")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--out", help="run folder (default: runs/bench-finetune-<profile>)")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--skip-train", action="store_true", help="only the predict timings")
    parser.add_argument(
        "--encoder-weights",
        help="start from these encoder weights (e.g. the SparK encoder of `depthlib reproduce`: "
        "runs/transfer-<profile>-<hash>/spark/encoder.safetensors); default: from scratch",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    cfg = profile.finetune
    report: dict = {"profile": profile.name, "threads": args.threads, "load_start": load()}
    report["encoder_weights"] = args.encoder_weights
    print(f"profile {profile.name}: {cfg}")
    print(f"threads {args.threads}, load average at start {report['load_start']}")

    if not args.skip_train:
        data = rooms_for_profile(profile)
        out = Path(args.out) if args.out else runs_dir() / f"bench-finetune-{profile.name}"
        result = finetune(
            data,
            profile,
            out=out,
            encoder_weights=args.encoder_weights,
            epochs=args.epochs,
            seed=args.seed,
            overwrite=True,
            time_budget_s=args.budget,
        )
        train = result.train
        history = train.history
        train_s = sum(row["epoch_time_s"] for row in history)
        samples = result.n_train // cfg.batch_size * cfg.batch_size * len(history)
        rows = result.evaluation["rows"]
        model, base = rows["model"], rows[BASELINE]
        report |= {
            "stop_reason": train.stop_reason,
            "epochs": len(history),
            "steps": train.step,
            "train_loop_s": round(train.elapsed_s, 1),
            "train_steps_s": round(train_s, 1),
            "validation_s": round(train.elapsed_s - train_s, 1),
            "train_images_per_s": round(samples / train_s, 2),
            "inference_images_per_s": round(result.evaluation["inference_images_per_s"], 1),
            "rows": rows,
        }
        print(f"\nrooms test split ({model['n_images']} images), input {cfg.height}x{cfg.width}:")
        print(format_table(rows))
        ratio = base["abs_rel"] / model["abs_rel"]
        checks = {
            f"δ1 {model['delta1']:.3f} >= {TARGET['delta1']}": model["delta1"] >= TARGET["delta1"],
            f"AbsRel {model['abs_rel']:.3f} <= {TARGET['abs_rel']}": model["abs_rel"]
            <= TARGET["abs_rel"],
            f"AbsRel {ratio:.2f}x better than the mean-depth baseline (>= 3x)": ratio
            >= TARGET["baseline_ratio"],
            f"training loop {train.elapsed_s:.0f} s <= 600 s, schedule completed "
            f"({train.stop_reason})": train.elapsed_s <= 600 and train.stop_reason == "completed",
        }
        report["checks"] = checks
        print(
            f"\ntrain: {len(history)} epochs, {train.step} steps, {train_s:.0f} s in steps + "
            f"{train.elapsed_s - train_s:.0f} s validation/checkpoints = {train.elapsed_s:.0f} s; "
            f"{report['train_images_per_s']} images/s"
        )
        print(f"inference at {cfg.height}x{cfg.width}: {report['inference_images_per_s']} images/s")
        for text, ok in checks.items():
            print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
        rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
        report["predict_480x640_trained_s"] = time_predict(
            result.model.cpu(), rgb, (cfg.height, cfg.width)
        )
        print(
            f"predict 480x640 with the trained model (input {cfg.height}x{cfg.width}, resized "
            f"back): {report['predict_480x640_trained_s']:.3f} s"
        )

    paper = get_profile("paper").finetune
    torch.manual_seed(0)
    r34 = DepthUNetPlusPlus(paper.encoder, decoder_channels=paper.decoder_channels).eval()
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    seconds = time_predict(r34, rgb, None)
    report["predict_480x640_resnet34_s"] = seconds
    ok = seconds <= TARGET["predict_s"]
    print(
        f"predict 480x640 at full resolution, UNet++ {paper.encoder} decoder "
        f"{paper.decoder_channels}, float32: {seconds:.2f} s [{'PASS' if ok else 'FAIL'} <= 1.5 s]"
    )
    report["load_end"] = load()
    print(f"load average at end {report['load_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
