"""Does the streamed data path keep up with the model? Throughput with 0, 1 and 2 workers.

Writes a BTS-layout export of synthetic 480x640 pairs (JPEG colour, 16-bit PNG depth, the
real files' size and formats), then streams it as ``finetune`` does for folder exports (resize
just above the training size, random crop, flip, jitter, one decode per sample) and measures:

- images/s of the data path alone, per number of DataLoader workers;
- data time per step (waiting for the next batch) against the model's step time, in a few real
  training steps of the profile's UNet++.

    python benchmarks/bench_data.py                  # cpu profile, 400 pairs
    python benchmarks/bench_data.py --pairs 2000 --json benchmarks/results/data_path.json

On 2 cores, workers compete with the model for the same cores: more workers is not always faster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from provenance import provenance, refuse_to_replace

from depthlib.atomic import atomic_write_text, to_json
from depthlib.data.dataset import open_depth_dataset
from depthlib.data.transforms import normalize
from depthlib.jobs.finetune import build_model, depth_batches, train_data
from depthlib.profiles import get_profile


def write_export(root: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        scene = root / f"scene_{i % 10:02d}"
        scene.mkdir(parents=True, exist_ok=True)
        rgb = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
        rgb = np.cumsum(rgb, axis=1, dtype=np.uint32).astype(np.uint8)  # texture, not noise
        Image.fromarray(rgb).save(scene / f"rgb_{i:05d}.jpg", quality=90)
        depth = (1000 + 4000 * rng.random((480, 640))).astype(np.uint16)
        Image.fromarray(depth).save(scene / f"sync_depth_{i:05d}.png")
        lines.append(f"/{scene.name}/rgb_{i:05d}.jpg /{scene.name}/sync_depth_{i:05d}.png 518.8579")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    return root / "train.txt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--steps", type=int, default=8, help="training steps timed per setting")
    parser.add_argument("--json", help="also write the numbers here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --json")
    args = parser.parse_args()
    out = refuse_to_replace(args.json, args.overwrite) if args.json else None
    torch.set_num_threads(2)
    cfg = get_profile(args.profile).finetune
    report = {
        "provenance": provenance(),
        "profile": args.profile,
        "model": f"UNet++ {cfg.encoder}, {cfg.height}x{cfg.width}, batch {cfg.batch_size}, bf16",
        "pairs": args.pairs,
        "steps_timed": args.steps,
    }
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        source = open_depth_dataset(write_export(Path(tmp), args.pairs))
        print(f"wrote {args.pairs} pairs of 480x640 in {time.perf_counter() - t0:.0f} s")
        data = train_data(source, cfg, np.arange(len(source)), seed=0)
        model = build_model(cfg).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for workers in (0, 1, 2):
            loader = depth_batches(data, cfg.batch_size, seed=0, num_workers=workers)
            t0 = time.perf_counter()
            n = sum(len(b["rgb"]) for b in loader)
            data_rate = n / (time.perf_counter() - t0)
            waits, steps = [], []
            it = iter(loader)
            for _ in range(args.steps):
                t0 = time.perf_counter()
                batch = next(it)
                t1 = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = model(normalize(batch["rgb"])).float().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
                waits.append(t1 - t0)
                steps.append(time.perf_counter() - t1)
            report[f"workers_{workers}"] = {
                "data_images_per_s": round(data_rate, 1),
                "data_wait_per_step_s": round(float(np.median(waits)), 3),
                "model_step_s": round(float(np.median(steps)), 3),
            }
            print(f"{workers} worker(s): {report[f'workers_{workers}']}")
    report["load_end"] = "/".join(f"{v:.2f}" for v in os.getloadavg())
    if out:
        print(f"wrote {atomic_write_text(out, to_json(report))}")


if __name__ == "__main__":
    main()
