"""The cpu profile's fine-tune on the rooms set against its quality target, and the levers tried.

Target: on the rooms test split, within at most 5 minutes of fine-tuning on 2 cores, δ1 >= 0.90
and AbsRel <= 0.10, measured beside the train split's mean-depth baseline of the same run (and
the depth boundary errors, which say whether edges are where the true ones are). Choose levers by
the validation curve each record carries (rooms carved from the train split), not by the test.

    python benchmarks/bench_finetune.py                              # the cpu profile as it is
    python benchmarks/bench_finetune.py --set lr=1e-3 --set height=96 --set width=128 --label hi
    python benchmarks/bench_finetune.py --rooms 3449 --set epochs=6 --label pool3449  # more rooms
    python benchmarks/bench_finetune.py --speed                      # step-time levers only
    python benchmarks/bench_finetune.py --jsonl benchmarks/results/finetune_levers.jsonl ...

``--set`` takes any FinetuneConfig field (tuples as 128,64,32,16). ``--speed`` times one training
step and inference of the profile's model in float32 / bf16 autocast, channels_last, and with
torch.compile (its start-up cost and how many steps repay it). Each run appends one JSON line to
``--jsonl`` with its provenance (commit, date, machine, load). Time one job at a time: the two
cores are shared, and the load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from functools import partial
from pathlib import Path

import torch
from provenance import provenance

from depthlib.depth.metrics import MeanDepthBaseline, format_table
from depthlib.jobs.finetune import build_model, finetune
from depthlib.profiles import FinetuneConfig, get_profile, runs_dir
from depthlib.train.distributed import bf16_is_fast

TARGET = {"delta1": 0.90, "abs_rel": 0.10, "seconds": 300.0}


def parse_settings(items: list[str]) -> dict:
    """``["lr=1e-3", "decoder_channels=64,32,16,8"]`` -> typed FinetuneConfig overrides."""
    defaults = FinetuneConfig()
    out = {}
    for item in items:
        key, _, text = item.partition("=")
        if not hasattr(defaults, key):
            raise SystemExit(f"--set {item}: {key} is not a FinetuneConfig field")
        like = getattr(defaults, key)
        if isinstance(like, tuple):
            out[key] = tuple(int(v) for v in text.split(","))
        elif isinstance(like, bool):
            out[key] = text.lower() in ("1", "true", "yes")
        elif isinstance(like, (int, float)) and not isinstance(like, bool):
            out[key] = type(like)(float(text)) if isinstance(like, int) else float(text)
        elif like is None:
            out[key] = None if text == "none" else int(text)
        else:
            out[key] = text
    return out


def quality(args, profile) -> dict:
    settings = parse_settings(args.set)
    if args.rooms:  # a larger pool: the same 654 test rooms, more training rooms
        profile = dataclasses.replace(
            profile, rooms=dataclasses.replace(profile.rooms, n=args.rooms)
        )
    out = Path(args.out) if args.out else runs_dir() / f"bench-finetune-{args.label}"
    result = finetune(
        None, profile, out=out, overwrite=True, time_budget_s=args.budget, **settings
    )  # fmt: skip
    train, rows = result.train, result.evaluation["rows"]
    steps_s = sum(row["epoch_time_s"] for row in train.history)
    cfg = dataclasses.replace(profile.finetune, **settings)
    images = train.step * cfg.batch_size
    model, base = rows["model"], rows[MeanDepthBaseline.name]
    record = {
        "label": args.label,
        "settings": settings,
        "rooms": dataclasses.asdict(profile.rooms),
        "ground_truth": result.evaluation.get("ground_truth"),
        "finetune": dataclasses.asdict(cfg),
        "stop_reason": train.stop_reason,
        "epochs": len(train.history),
        "train_loop_s": round(train.elapsed_s, 1),
        "train_steps_s": round(steps_s, 1),
        "train_images_per_s": round(images / steps_s, 1),
        "inference_images_per_s": round(result.evaluation["inference_images_per_s"], 1),
        "model": {k: model[k] for k in ("delta1", "abs_rel", "rmse", "dbe_acc", "dbe_comp")},
        "baseline": {k: base[k] for k in ("delta1", "abs_rel", "rmse", "dbe_acc", "dbe_comp")},
        "curve": [(r["epoch"], r.get("val_delta1"), r.get("val_abs_rel")) for r in train.history],
    }
    print(format_table(rows))
    checks = {
        f"δ1 {model['delta1']:.3f} >= {TARGET['delta1']}": model["delta1"] >= TARGET["delta1"],
        f"AbsRel {model['abs_rel']:.3f} <= {TARGET['abs_rel']}": model["abs_rel"]
        <= TARGET["abs_rel"],
        f"fine-tuning {train.elapsed_s:.0f} s <= {TARGET['seconds']:.0f} s, schedule "
        f"{train.stop_reason}": train.elapsed_s <= TARGET["seconds"]
        and train.stop_reason == "completed",
    }
    for text, ok in checks.items():
        print(f"  [{'PASS' if ok else 'FAIL'}] {text}")
    print(
        f"{record['epochs']} epochs, {record['train_images_per_s']} train images/s, "
        f"{record['inference_images_per_s']} inference images/s"
    )
    return record | {"checks": {k: bool(v) for k, v in checks.items()}}


def _median_time(step, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _train_step(net, opt, x, target, bf16: bool):
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            pred = net(x)
        loss = (pred.float() - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def speed(args, profile) -> dict:
    """Seconds per training step and inference images/s of the profile's model, per lever."""
    cfg = dataclasses.replace(profile.finetune, **parse_settings(args.set))
    x = torch.randn(cfg.batch_size, 3, cfg.height, cfg.width)
    target = torch.rand(cfg.batch_size, 1, cfg.height, cfg.width) * 5 + 1
    out = {
        "encoder": cfg.encoder,
        "encoder_depth": cfg.encoder_depth,
        "decoder_channels": list(cfg.decoder_channels),
        "batch": cfg.batch_size,
        "size": [cfg.height, cfg.width],
        "bf16_fast": bf16_is_fast(torch.device("cpu")),
    }
    variants = {
        "fp32": {},
        "bf16": {"bf16": True},
        "bf16+channels_last": {"bf16": True, "cl": True},
    }
    variants["bf16+compile"] = {"bf16": True, "compile": True}
    for name, v in variants.items():
        torch.manual_seed(0)
        model = build_model(cfg).train()
        if v.get("cl"):
            model = model.to(memory_format=torch.channels_last)
        xin = x.contiguous(memory_format=torch.channels_last) if v.get("cl") else x
        net = torch.compile(model) if v.get("compile") else model
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        step = _train_step(net, opt, xin, target, bool(v.get("bf16")))
        t0 = time.perf_counter()
        step()  # warm-up (compilation for torch.compile)
        first = time.perf_counter() - t0
        per_step = _median_time(step, args.repeats)
        net.eval()
        with (
            torch.no_grad(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=bool(v.get("bf16"))),
        ):
            net(xin)
            infer = _median_time(partial(net, xin), args.repeats)
        out[name] = {
            "first_step_s": round(first, 2),
            "step_s": round(per_step, 3),
            "train_images_per_s": round(cfg.batch_size / per_step, 1),
            "inference_images_per_s": round(cfg.batch_size / infer, 1),
        }
        print(f"{name:20s} {out[name]}")
    base, comp = out["bf16"], out["bf16+compile"]
    saved = base["step_s"] - comp["step_s"]
    extra = comp["first_step_s"] - base["first_step_s"]
    out["compile_repaid_after_steps"] = round(extra / saved) if saved > 0 else None
    print(
        f"torch.compile: start-up {extra:.1f} s, repaid after {out['compile_repaid_after_steps']} steps"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--label", default="profile", help="name of this run in the records")
    parser.add_argument("--rooms", type=int, help="rooms in the set (past 1449: more train rooms)")
    parser.add_argument("--budget", type=float, default=900.0, help="safety stop, seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="run folder (default: runs/bench-finetune-<label>)")
    parser.add_argument("--jsonl", help="append the record to this JSON-lines file")
    parser.add_argument("--speed", action="store_true", help="step-time levers instead of a run")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    profile = get_profile(args.profile)
    start = provenance()
    print(f"{start}\nprofile {profile.name}, settings {parse_settings(args.set)}")
    record = speed(args, profile) if args.speed else quality(args, profile)
    record = {"provenance": start, "load_end": provenance()["load"], **record}
    print(f"load average at end {record['load_end']}")
    if args.jsonl:
        Path(args.jsonl).parent.mkdir(parents=True, exist_ok=True)
        with open(args.jsonl, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=str) + "\n")


if __name__ == "__main__":
    main()
