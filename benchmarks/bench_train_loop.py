"""Cost of the training loop's bookkeeping: checkpoint save/load and per-step overhead.

Run: ``python benchmarks/bench_train_loop.py [--encoder resnet18] [--steps 20]``. Measures, on
the UNet++ depth model with random weights and inputs:

- saving one checkpoint (weights + AdamW state + RNG + meta, fsync'ed) and loading it back;
- seconds per step of ``fit`` against a bare loop doing the same forward/backward/AdamW step,
  so the loop's overhead (NaN guard, grad-norm, schedule, logging) is visible.

Checkpoint cost is dominated by the disk; on a shared machine all numbers are pessimistic.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from depthlib.depth.losses import DepthLoss
from depthlib.depth.unetpp import DepthUNetPlusPlus
from depthlib.profiles import TrainConfig
from depthlib.train import Task, fit
from depthlib.train.batches import epoch_loader
from depthlib.train.checkpoint import CheckpointStore, load_checkpoint
from depthlib.train.rng import capture_rng_state


class _Data(torch.utils.data.Dataset):
    def __init__(self, n: int, h: int, w: int):
        g = torch.Generator().manual_seed(0)
        self.rgb = torch.randn(n, 3, h, w, generator=g)
        self.depth = 0.5 + 9 * torch.rand(n, 1, h, w, generator=g)

    def __len__(self):
        return len(self.rgb)

    def __getitem__(self, i):
        return {"rgb": self.rgb[i], "depth": self.depth[i]}


class _DepthTask(Task):
    def __init__(self):
        self.loss = DepthLoss()

    def training_step(self, model, batch):
        return self.loss(model(batch["rgb"]), batch["depth"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", default="64x96")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    h, w = (int(v) for v in args.size.split("x"))

    torch.manual_seed(0)
    model = DepthUNetPlusPlus(args.encoder, decoder_channels=(128, 64, 32, 16, 8))
    n_params = sum(p.numel() for p in model.parameters())
    task, data = _DepthTask(), _Data(args.steps * args.batch, h, w)

    batches = list(epoch_loader(data, args.batch))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    task.training_step(model, batches[0]).backward()  # warm-up: allocator, oneDNN kernels

    def bare_loop() -> float:
        """The same work as fit's steps, without any bookkeeping."""
        start = time.perf_counter()
        for batch in batches:
            opt.zero_grad(set_to_none=True)
            task.training_step(model, batch).backward()
            opt.step()
        return (time.perf_counter() - start) / len(batches)

    with tempfile.TemporaryDirectory() as tmp:
        bare_loop()  # also fills the AdamW state, so the checkpoint below has its real size
        store = CheckpointStore(Path(tmp) / "s")
        state = {"optimizer": opt.state_dict(), "rng": capture_rng_state(), "step": 1, "epoch": 1}
        start = time.perf_counter()
        store.save("epoch_0001", model.state_dict(), state, {"step": 1, "epoch": 1})
        save_s = time.perf_counter() - start
        ckpt_bytes = sum(f.stat().st_size for f in (store.root / "epoch_0001").iterdir())
        start = time.perf_counter()
        load_checkpoint(store.root).restore_model(model)
        load_s = time.perf_counter() - start

        # alternate the two so that load from other processes hits both alike; keep the fastest
        bare, fitted = [], []
        config = TrainConfig(epochs=1, lr=1e-3, warmup_epochs=0.2, log_every=5)
        for rep in range(args.repeats):
            bare.append(bare_loop())
            loader = epoch_loader(data, args.batch)
            start = time.perf_counter()
            fit(model, task, loader, config, Path(tmp) / f"r{rep}", progress=False)
            fitted.append((time.perf_counter() - start - save_s) / len(batches))

    print(f"UNet++ {args.encoder}: {n_params / 1e6:.1f} M parameters, batch {args.batch}, {h}x{w}")
    print(f"checkpoint: {ckpt_bytes / 1e6:.0f} MB, save {save_s:.2f} s, load {load_s:.2f} s")
    print(f"bare loop: {min(bare):.3f} s/step (fastest of {args.repeats}; all {_fmt(bare)})")
    print(f"fit without its checkpoint: {min(fitted):.3f} s/step (all {_fmt(fitted)})")
    print(f"overhead of fit per step: {min(fitted) - min(bare):+.3f} s")


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.3f}" for v in values)


if __name__ == "__main__":
    main()
