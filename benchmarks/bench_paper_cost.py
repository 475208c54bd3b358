"""What the paper profile costs per step: FLOPs, memory and this CPU's time, so a GPU's time can be
estimated without claiming one.

The paper profile is the report's recipe (UNet++ resnet34 at 480x640, batch 32, 15 epochs) and a
SparK pretraining of resnet34 at 224x288 (batch 64, 100 epochs). No GPU was at hand, so this
measures what does not depend on one: the floating-point operations of one training image
(forward + backward, counted by ``torch.utils.flop_counter``), the activation memory of the step
(``depthlib.train.memory.step_bytes``: what ``micro_batch="auto"`` plans with), and the CPU's
time per image of a real step. A GPU's time is then FLOPs / (its sustained FLOP/s), stated as
such. Random weights (no Hub download): cost does not depend on the weights.

    python benchmarks/bench_paper_cost.py            # ~3 min on 2 cores; writes the results file
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from provenance import REPO, provenance, refuse_to_replace
from torch.utils.flop_counter import FlopCounterMode

from depthlib.atomic import atomic_write_text, to_json
from depthlib.depth.losses import DepthLoss
from depthlib.jobs.finetune import build_model
from depthlib.jobs.pretrain import build_spark
from depthlib.profiles import get_profile
from depthlib.spark.model import make_patch_mask
from depthlib.train.memory import GiB, step_bytes

RESULTS = REPO / "benchmarks" / "results" / "paper_step_cost.json"
# Images per fine-tuning epoch: NYU's official labelled train split, and BTS's "sync" export
# (its list file has about 24k pairs; the round figure is enough for an hours estimate).
EPOCH_IMAGES = {"labeled_795": 795, "bts_sync_24k": 24_000}
# Assumed sustained training throughputs for the GPU estimate (not measured here): what mixed
# precision reaches on a mid-range and a large GPU for convnets, as a range to scale from.
ASSUMED_TFLOPS = (20, 60)


def _gpu_hours(flop_per_image: float, epochs: int) -> dict:
    """Hours = FLOPs / an assumed sustained rate: an estimate to scale, never a measurement."""
    return {
        f"{name}_at_{rate}_tflops": round(flop_per_image * n * epochs / (rate * 1e12) / 3600, 2)
        for name, n in EPOCH_IMAGES.items()
        for rate in ASSUMED_TFLOPS
    }


def _timed(step, repeats: int) -> float:
    """Fastest of ``repeats`` after a warm-up: on a shared CPU the least disturbed run."""
    step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return min(times)


def finetune_cost(micro: int, repeats: int) -> dict:
    cfg = dataclasses.replace(get_profile("paper").finetune, encoder_weights="random")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    loss_fn = DepthLoss()
    size = (cfg.height, cfg.width)

    def step(n=micro):
        x = torch.randn(n, 3, *size)
        gt = torch.rand(n, 1, *size) * 9 + 0.5
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), gt, gt > 0).backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step(1)
    activations, fixed = step_bytes(model, torch.zeros(1, 3, *size), 1)
    seconds = _timed(step, repeats) / micro
    return {
        "model": f"UNet++ {cfg.encoder}, decoder {list(cfg.decoder_channels)}, {size[0]}x{size[1]}",
        "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "train_gflop_per_image": round(counter.get_total_flops() / 1e9, 1),
        "activation_gib_per_image": round(activations / GiB, 2),
        "weights_grads_adamw_gib": round(fixed / GiB, 2),
        "batch_32_gib": round((32 * activations + fixed) / GiB, 1),
        "cpu_s_per_image": round(seconds, 2),
        "cpu_micro_batch": micro,
        "epochs": cfg.epochs,
        "cpu_h_15_epochs": {
            k: round(seconds * n * cfg.epochs / 3600, 1) for k, n in EPOCH_IMAGES.items()
        },
        "gpu_h_15_epochs_estimate": _gpu_hours(counter.get_total_flops(), cfg.epochs),
    }


def pretrain_cost(micro: int, repeats: int) -> dict:
    cfg = get_profile("paper").pretrain
    torch.manual_seed(0)
    model = build_spark(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    size, patch = (cfg.height, cfg.width), 2**cfg.encoder_depth

    def step(n=micro):
        x = torch.randn(n, 3, *size)
        mask = make_patch_mask(n, *size, patch, cfg.mask_ratio, seed=0)
        optimizer.zero_grad(set_to_none=True)
        model(x, mask)[0].backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step(1)
    seconds = _timed(step, repeats) / micro
    return {
        "model": f"SparK {cfg.encoder}, decoder width {cfg.decoder_width}, {size[0]}x{size[1]}",
        "train_gflop_per_image": round(counter.get_total_flops() / 1e9, 1),
        "cpu_s_per_image": round(seconds, 3),
        "cpu_micro_batch": micro,
        "images_per_run": cfg.n_images * cfg.epochs,
        "cpu_h_per_run": round(seconds * cfg.n_images * cfg.epochs / 3600, 1),
        "gpu_h_per_run_estimate": {
            f"at_{rate}_tflops": round(
                counter.get_total_flops() * cfg.n_images * cfg.epochs / (rate * 1e12) / 3600, 2
            )
            for rate in ASSUMED_TFLOPS
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default=str(RESULTS))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = refuse_to_replace(args.out, args.overwrite)
    record = {
        "provenance": provenance(),
        "finetune": finetune_cost(micro=2, repeats=args.repeats),
        "pretrain": pretrain_cost(micro=8, repeats=args.repeats),
    }
    print(json.dumps(record, indent=2))
    print(f"wrote {atomic_write_text(out, to_json(record))}")


if __name__ == "__main__":
    main()
