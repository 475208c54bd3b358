"""Will a training step fit in memory? A pre-flight estimate, and the micro-batch that fits.

A step that does not fit is not an exception: the kernel's OOM killer ends the process with signal
9 and no message (the report's recipe, UNet++ resnet34 at 480x640 with batch 32, needs about 40 GB).
So before the first step the activations of one image are measured with forward hooks (every
module's output is kept for the backward pass, roughly twice over with its gradient) and the step
is planned in micro-batches whose gradients accumulate to the whole batch, which trains the same
model as the large batch would (BatchNorm statistics aside, which see micro-batches).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from depthlib.errors import ConfigError

__all__ = ["available_bytes", "choose_micro_batch", "step_bytes"]

GiB = 2**30
BACKWARD_FACTOR = 2.0  # saved activations + their gradients during the backward pass
HEADROOM = 0.8  # of the available memory a step may plan to use


def available_bytes(device: torch.device) -> int:
    """Memory a new allocation can get now: free GPU memory, or Linux's MemAvailable."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


@torch.no_grad()
def step_bytes(model: nn.Module, example: torch.Tensor, micro_batch: int) -> tuple[int, int]:
    """``(activation bytes of a micro-batch, bytes of weights + gradients + AdamW state)`` for
    ``model`` on ``example`` (one image, (1, C, H, W)), measured by one forward pass in eval mode
    (nothing in the model changes)."""
    sizes: list[int] = []

    def keep(_module, _inputs, output):
        outs = output if isinstance(output, (list, tuple)) else [output]
        sizes.extend(o.numel() * o.element_size() for o in outs if isinstance(o, torch.Tensor))

    leaves = [m for m in model.modules() if not any(True for _ in m.children())]
    hooks = [m.register_forward_hook(keep) for m in leaves]
    was_training = model.training
    model.eval()
    try:
        model(example)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return int(sum(sizes) * BACKWARD_FACTOR * micro_batch), int(4 * weights)


def choose_micro_batch(
    model: nn.Module, example: torch.Tensor, batch_size: int, setting, device: torch.device
) -> tuple[int, str]:
    """``(micro-batch, a line saying why)`` for ``setting`` = None (the whole batch), an int that
    divides ``batch_size``, or "auto" (the largest divisor that fits). A plan that cannot fit is
    a ConfigError with the numbers, raised before any training time is spent."""
    free = available_bytes(device)
    one, fixed = step_bytes(model, example, 1)

    def need(m: int) -> int:
        return one * m + fixed

    divisors = [m for m in range(batch_size, 0, -1) if batch_size % m == 0]
    if setting == "auto":
        fitting = [m for m in divisors if need(m) <= HEADROOM * free]
        if not fitting:
            raise ConfigError(
                f"Even one image per step needs about {need(1) / GiB:.1f} GiB but "
                f"{free / GiB:.1f} GiB is available; lower the training size or use a larger "
                "machine (a GPU)."
            )
        chosen = fitting[0]
    else:
        chosen = batch_size if setting in (None, 0) else int(setting)
        if chosen < 1 or batch_size % chosen:
            raise ConfigError(
                f"micro_batch {setting} must divide the batch size {batch_size} (one of "
                f"{sorted(divisors)}), or be 'auto'."
            )
        if need(chosen) > free:
            fits = [m for m in divisors if need(m) <= HEADROOM * free]
            hint = f"--micro-batch {fits[0]}" if fits else "a smaller training size"
            raise ConfigError(
                f"A step of {chosen} images needs about {need(chosen) / GiB:.1f} GiB but "
                f"{free / GiB:.1f} GiB is available: it would be killed by the system without a "
                f"message. Use {hint} (or --micro-batch auto): gradients accumulate to the same "
                f"batch of {batch_size}."
            )
    steps = batch_size // chosen
    line = (
        f"memory: about {need(chosen) / GiB:.1f} GiB per step of {chosen} image(s) "
        f"({free / GiB:.1f} GiB available); {steps} micro-batch(es) per batch of {batch_size}"
    )
    return chosen, line
