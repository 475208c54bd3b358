"""CPU speed of the UNet++ depth model: predict at 480x640, one training step, and what trimming
the encoder's unused stages saves.

Run: ``python benchmarks/bench_model_speed.py [--threads 2] [--repeats 3]``. Prints the median
and the fastest of ``repeats`` timed runs after one warm-up. Random weights and inputs: speed does not depend
on them. On a shared machine the numbers are pessimistic.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from depthlib.depth.losses import DepthLoss
from depthlib.depth.unetpp import DepthUNetPlusPlus


def _median_time(fn, repeats: int) -> tuple[float, float]:
    """(median, fastest) seconds; on a shared CPU the fastest is the least disturbed run."""
    fn()  # warm-up: allocator, oneDNN kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times)


def bench_predict(encoder: str, decoder_channels, repeats: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = DepthUNetPlusPlus(encoder, decoder_channels=decoder_channels)
    rgb = np.random.default_rng(0).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
    return _median_time(lambda: model.predict(rgb), repeats)


def bench_train_step(encoder, decoder_channels, batch, height, width, repeats):
    torch.manual_seed(0)
    model = DepthUNetPlusPlus(encoder, decoder_channels=decoder_channels).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = DepthLoss()
    x = torch.randn(batch, 3, height, width)
    gt = torch.rand(batch, 1, height, width) * 9 + 0.5
    valid = torch.rand_like(gt) > 0.1

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), gt, valid)
        loss.backward()
        optimizer.step()

    return _median_time(step, repeats)


def bench_trim(repeats: int, batch: int = 16, size=(64, 96)) -> dict[str, float]:
    """Forward + backward of the cpu profile's 4-stage Lite0 encoder, as smp builds it (every timm
    block, the last two at stride 32 computed for nothing) and trimmed to the four stages used."""
    from segmentation_models_pytorch.encoders import get_encoder

    from depthlib.depth.encoders import build_encoder

    x = torch.randn(batch, 3, *size)
    out = {}
    for name, encoder in (
        ("as smp builds it", get_encoder("tu-efficientnet_lite0", depth=4, weights=None)),
        ("trimmed", build_encoder("tu-efficientnet_lite0", 4)),
    ):
        encoder.train()

        def step(encoder=encoder):
            encoder.zero_grad(set_to_none=True)
            sum(f.float().mean() for f in encoder(x)).backward()

        params = sum(p.numel() for p in encoder.parameters()) / 1e6
        out[name] = (_median_time(step, repeats)[0], params)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, median of {args.repeats}")
    for enc, dec in (("resnet34", (256, 128, 64, 32, 16)), ("resnet34", (128, 64, 32, 16, 8))):
        t, fastest = bench_predict(enc, dec, args.repeats)
        print(
            f"predict 480x640 batch 1, {enc}, decoder {dec}: median {t:.2f} s, fastest "
            f"{fastest:.2f} s ({1 / t:.2f} images/s at the median)"
        )
    trim = bench_trim(max(args.repeats, 5))
    for name, (t, params) in trim.items():
        print(f"Lite0 encoder, 4 stages, {name}: {params:.2f} M parameters, fwd+bwd batch 16 "
              f"64x96 median {t * 1000:.0f} ms")  # fmt: skip
    full, cut = trim["as smp builds it"][0], trim["trimmed"][0]
    print(f"trimming saves {100 * (1 - cut / full):.0f}% of the encoder's step time")
    dec, batch = (128, 64, 32, 16, 8), 16
    t, fastest = bench_train_step("resnet18", dec, batch, 96, 128, args.repeats)
    print(
        f"train step resnet18, decoder {dec}, batch {batch}, 96x128: median {t:.2f} s, "
        f"fastest {fastest:.2f} s ({batch / t:.1f} images/s at the median)"
    )


if __name__ == "__main__":
    main()
