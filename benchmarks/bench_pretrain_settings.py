"""Which SparK pretraining setting learns most in the cpu profile's minutes? Measured on held-out rooms.

Run (one job at a time on the machine; each candidate takes about ``--budget`` seconds of steps):

    python benchmarks/bench_pretrain_settings.py --jsonl benchmarks/results/pretrain_settings.jsonl \\
        --candidate today --candidate grid8x12 ...

Each candidate is a set of ``PretrainConfig`` changes to the cpu profile (image size and so the
patch grid, batch, learning rate, mask ratio, decoder width, precision). It is pretrained with
``depthlib.jobs.pretrain`` for as many epochs as fit in ``--budget`` seconds of optimizer steps
(from a timed probe of its step), except ``today``, which keeps the profile's epochs as the
reference, and candidates that name their epochs (a change that leaves the step's cost alone). Every epoch scores the held-out rooms (a seed of their own: never trained on) under
fixed masks; at the end the encoder is also scored on the **same** held-out rooms at 64x96, so
candidates of different sizes are compared on one pool. Each finished candidate appends a JSON
line (provenance, settings, step time, the per-epoch held-out curve) and is skipped on a rerun:
the search resumes where it stopped. The choice is made on these held-out rooms, never on the
labelled test split.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path

import torch
from provenance import provenance

from depthlib.data.pools import held_out_rooms_seed, rooms_pool
from depthlib.jobs.pretrain import SparkTask, held_out_loss, pretrain
from depthlib.profiles import data_dir, get_profile, job_settings
from depthlib.spark.model import SparK

CANDIDATES: dict[str, dict] = {
    "today": {},  # the profile as it is: 64x96, 4x6 patches, fp32, its own epochs
    "today-budget": {},  # the same setting for the whole budget: more steps, same grid
    "grid6x8": {"height": 96, "width": 128, "precision": "bf16"},
    "grid8x12": {"height": 128, "width": 192, "precision": "bf16"},
    "grid8x12-b16": {"height": 128, "width": 192, "precision": "bf16", "batch_size": 16},
    # at the fine-tuning size, the full budget (what won above): learning rate and decoder width
    # (a learning rate does not change the step's cost: the same epochs as today-budget)
    "64x96-lr4e-3": {"lr": 4e-3, "epochs": 8},
    "64x96-lr1e-3": {"lr": 1e-3, "epochs": 8},
    "64x96-w256": {"decoder_width": 256},
}
COMMON_SIZE = (64, 96)


def step_seconds(cfg, repeats: int = 6) -> float:
    """Median seconds of one optimizer step of ``cfg`` (SparK forward, backward, AdamW)."""
    torch.manual_seed(0)
    model = SparK(
        cfg.encoder, cfg.encoder_depth, cfg.decoder_width, cfg.mask_ratio, cfg.masking, cfg.gather
    )
    task = SparkTask(bf16=cfg.precision == "bf16")
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    rgb = torch.randint(0, 256, (cfg.batch_size, 3, cfg.height, cfg.width), dtype=torch.uint8)
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss, _ = task.training_step(model, {"rgb": rgb, "seed": i})
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def run_candidate(name: str, changes: dict, probe: float, args) -> dict:
    profile = get_profile("cpu")
    _, cfg = job_settings(profile, "pretrain", **changes)
    steps_per_epoch = math.ceil(cfg.n_images / cfg.batch_size)
    fit_budget = max(1, round(args.budget / probe / steps_per_epoch))
    epochs = cfg.epochs if name == "today" or "epochs" in changes else fit_budget
    out = Path(args.runs) / name
    result = pretrain("rooms", profile, out=out, progress=False, figures=False, resume=True,
                      held_out=args.held_out, **(changes | {"epochs": epochs}))  # fmt: skip
    if result.train.stop_reason not in ("completed", "already_complete"):
        raise SystemExit(f"{name} stopped ({result.train.stop_reason}); rerun to resume it.")
    history = result.train.history
    common = rooms_pool(args.held_out, COMMON_SIZE, held_out_rooms_seed(profile.rooms.seed),
                        cache=data_dir() / f"held-out-rooms-n{args.held_out}-64x96-seed"
                        f"{held_out_rooms_seed(profile.rooms.seed)}.mat", progress=False)  # fmt: skip
    result.model.to("cpu")
    at_common = held_out_loss(result.model, common.images, seed=cfg.seed)
    step_times = [row["epoch_time_s"] / steps_per_epoch for row in history]
    return {
        "candidate": name,
        "changes": changes,
        "size": [cfg.height, cfg.width],
        "grid": [cfg.height // 16, cfg.width // 16],
        "epochs": epochs,
        "steps": result.train.step,
        "probe_step_s": round(probe, 4),
        "median_step_s": round(statistics.median(step_times), 4),
        "steps_s": round(sum(row["epoch_time_s"] for row in history), 1),
        "curve": [
            {
                k: round(row[k], 4)
                for k in ("epoch", "train_loss", "held_out", "held_out_batch_stats", "flat")
                if k in row
            }
            for row in history
        ],  # fmt: skip
        "final_held_out": round(history[-1]["held_out"], 4),
        "at_64x96": {k: round(v, 4) for k, v in at_common.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--candidate", action="append", choices=list(CANDIDATES),
                        help="a candidate to run (repeatable; default: all)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=360.0, help="seconds of steps each")
    parser.add_argument("--held-out", type=int, default=256, help="held-out rooms scored")
    parser.add_argument("--runs", default="runs/pretrain-settings", help="run folders")
    parser.add_argument("--jsonl", required=True, help="results file (appended; resumable)")
    args = parser.parse_args()
    path = Path(args.jsonl)
    done = set()
    if path.exists():
        done = {json.loads(line)["candidate"] for line in path.read_text().splitlines() if line}
    todo = [name for name in args.candidate or list(CANDIDATES) if name not in done]
    print(f"already in {path}, skipped: {sorted(done)}" if done else "", flush=True)
    # Every step time first, back to back, so that they are measured under one load; the
    # runs then take as many epochs as those times fit in the budget.
    probes = {}
    for name in todo:
        probes[name] = step_seconds(job_settings(get_profile("cpu"), "pretrain",
                                                 **CANDIDATES[name])[1])  # fmt: skip
        print(f"{name}: {probes[name]:.3f} s a step", flush=True)
    for name in todo:
        start = provenance()
        record = run_candidate(name, CANDIDATES[name], probes[name], args)
        record = {"provenance": start, "load_end": provenance()["load"], "budget_s": args.budget,
                  "held_out_rooms": args.held_out, **record}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        print(f"{name}: held-out {record['final_held_out']:.3f} at its size, "
              f"{record['at_64x96']['held_out']:.3f} at 64x96 (flat "
              f"{record['at_64x96']['flat']:.3f}), {record['steps_s']:.0f} s of steps", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
