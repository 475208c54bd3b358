"""Process-group helpers: who am I, and do all processes agree?

The training loop runs unchanged in one process or under ``torchrun`` (DistributedDataParallel).
These helpers answer its few questions either way (rank, world size, is this rank 0, the plain
model inside a DDP wrapper, does any rank want to stop), degrading to the single-process answer
without a process group. :func:`init_distributed` joins the group torchrun describes (gloo on
CPU, nccl on GPU); :func:`prepare_model` synchronises BatchNorms and wraps the model in DDP.
The BatchNorm over ranks lives here, not beside SparK's sparse one, because the loop converts
plain BatchNorms too and may not import SparK. The device and precision are chosen here too.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from depthlib.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "TORCHRUN_VARIABLES", "AllReduceSum", "DistributedInfo", "StopSignals", "SyncBatchNorm2d",
    "any_rank", "barrier", "bf16_is_fast", "cleanup_distributed", "convert_sync_batchnorm",
    "init_distributed", "is_distributed", "is_main_process", "launched_by_torchrun",
    "main_process_first", "mean_over_ranks", "prepare_model", "rank", "resolve_device", "synced",
    "torchrun_process", "unwrap_model", "use_bf16", "world_size",
]  # fmt: skip

# What torchrun exports to every process it starts; the first three say "launched by torchrun".
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
_TORCHRUN_MARKERS = TORCHRUN_VARIABLES[:3]
TORCHRUN_HINT = (
    "torchrun --nproc_per_node=N -m depthlib finetune ...  (multi-node: add --nnodes=M "
    "--node_rank=K --rdzv_backend=c10d --rdzv_endpoint=HOST:PORT)"
)


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of training processes (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0: the only process that writes logs, checkpoints, figures and progress bars."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def any_rank(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is true on at least one rank.

    Used for decisions that must be collective: a NaN loss, a stop signal or an exhausted time
    budget seen by one rank must stop all of them at the same step, or the others would block
    forever in the next gradient all-reduce. ``device`` must suit the backend (cuda for nccl).
    """
    if not is_distributed():
        return bool(flag)
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel/DataParallel wrapper (else ``model`` itself)."""
    wrappers = (nn.parallel.DistributedDataParallel, nn.DataParallel)
    while isinstance(model, wrappers):
        model = model.module
    return model


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands: global rank, world size, rank on its node, backend, device."""

    rank: int
    world_size: int
    local_rank: int
    backend: str | None
    device: torch.device


def launched_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """True when the environment carries torchrun's rank variables (RANK/WORLD_SIZE/LOCAL_RANK)."""
    env = os.environ if env is None else env
    return any(env.get(name) for name in _TORCHRUN_MARKERS)


def _read_torchrun_env(env: Mapping[str, str]) -> tuple[int, int, int]:
    missing = [name for name in TORCHRUN_VARIABLES if not env.get(name)]
    if missing:
        present = [name for name in TORCHRUN_VARIABLES if env.get(name)]
        raise ConfigError(
            f"The torchrun environment is incomplete: {', '.join(present)} set but "
            f"{', '.join(missing)} missing. Launch with torchrun, which sets all of "
            f"{', '.join(TORCHRUN_VARIABLES)}:\n  {TORCHRUN_HINT}\nor unset "
            f"{', '.join(present)} to train in a single process."
        )
    try:
        rank_, world, local = (int(env[n]) for n in _TORCHRUN_MARKERS)
    except ValueError:
        values = ", ".join(f"{n}={env[n]!r}" for n in _TORCHRUN_MARKERS)
        raise ConfigError(
            f"torchrun variables must be integers, got {values}. Launch with: {TORCHRUN_HINT}"
        ) from None
    if world < 1 or not 0 <= rank_ < world or local < 0:
        raise ConfigError(
            f"Inconsistent torchrun environment: RANK={rank_}, WORLD_SIZE={world}, "
            f"LOCAL_RANK={local} (need 0 ≤ RANK < WORLD_SIZE). Launch with: {TORCHRUN_HINT}"
        )
    return rank_, world, local


def init_distributed(env: Mapping[str, str] | None = None) -> DistributedInfo:
    """Join the process group torchrun describes in ``env`` (default ``os.environ``).

    Backend: nccl when CUDA is available (each process takes GPU ``LOCAL_RANK``), else gloo on
    CPU. Idempotent: a second call (or a group someone else initialised) returns the current
    state. Without torchrun's variables it returns the single-process answer and initialises
    nothing; a half-set environment raises :class:`ConfigError` naming what is missing.
    """
    env = os.environ if env is None else env
    if is_distributed():
        local = int(env["LOCAL_RANK"]) if str(env.get("LOCAL_RANK", "")).isdigit() else 0
        backend = dist.get_backend()
        return DistributedInfo(rank(), world_size(), local, backend, _device_for(backend, local))
    if not launched_by_torchrun(env):
        return DistributedInfo(0, 1, 0, None, _device_for(None, 0))
    rank_, world, local = _read_torchrun_env(env)
    use_cuda = torch.cuda.is_available() and dist.is_nccl_available()
    backend = "nccl" if use_cuda else "gloo"
    if use_cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(
                f"LOCAL_RANK {local} but this node has {torch.cuda.device_count()} GPU(s); "
                "start at most one process per GPU (torchrun --nproc_per_node)."
            )
        torch.cuda.set_device(local)
    dist.init_process_group(backend, init_method="env://", rank=rank_, world_size=world)
    return DistributedInfo(rank_, world, local, backend, _device_for(backend, local))


def _device_for(backend: str | None, local_rank: int) -> torch.device:
    if backend == "nccl" or (backend is None and torch.cuda.is_available()):
        return torch.device("cuda", local_rank if backend == "nccl" else 0)
    return torch.device("cpu")


def cleanup_distributed() -> None:
    """Leave the process group (a no-op without one); call once at the end of a script."""
    if is_distributed():
        dist.destroy_process_group()


@contextlib.contextmanager
def torchrun_process():
    """For a command: under torchrun, join the process group first (a half-set environment is a
    clean error), let only rank 0 print to stdout, and leave the group at the end; else nothing."""
    if not launched_by_torchrun():
        yield
        return
    init_distributed()
    with contextlib.ExitStack() as stack:
        stack.callback(cleanup_distributed)
        if not is_main_process():
            stack.enter_context(
                contextlib.redirect_stdout(stack.enter_context(open(os.devnull, "w")))
            )
        yield


def mean_over_ranks(values: Sequence[float], device: torch.device | str = "cpu") -> list[float]:
    """The mean of each value over all ranks (the values themselves in a single process).

    One all-reduce for a step's loss and logged scalars: logs then describe the global batch,
    and a NaN on any rank makes the mean NaN everywhere, so all ranks stop together.
    """
    if not is_distributed() or world_size() == 1:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return (tensor / world_size()).tolist()


class AllReduceSum(torch.autograd.Function):
    """Differentiable all-reduce (sum): the gradient of a sum over ranks is summed over ranks."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        out = tensor.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone(memory_format=torch.contiguous_format)
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span the global batch of all ranks.

    ``nn.SyncBatchNorm`` refuses CPU tensors, so gloo runs (CPU clusters, tests) use this:
    per-channel sums and counts are all-reduced, which makes the forward and the gradients those
    of one BatchNorm over the concatenated batch (ranks may hold different counts). Outside
    training or a multi-process group it is a plain BatchNorm2d; its state_dict keys are
    BatchNorm2d's. Subclasses that call ``super().forward`` on a reshaped input (SparK's sparse
    BatchNorm on its visible positions) get the same synchronisation through :func:`synced`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and is_distributed() and world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        count = torch.tensor([x.numel() // x.shape[1]], dtype=x.dtype, device=x.device)
        sums = AllReduceSum.apply(torch.cat([x.sum((0, 2, 3)), count]))
        total = sums[-1]
        mean = sums[:-1] / total
        centred = x - mean[None, :, None, None]
        var = AllReduceSum.apply(centred.square().sum((0, 2, 3))) / total
        out = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            out = out * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum
                factor = 1.0 / float(self.num_batches_tracked) if momentum is None else momentum
                self.running_mean.lerp_(mean.detach(), factor)
                unbiased = var.detach() * total / (total - 1).clamp_min(1)
                self.running_var.lerp_(unbiased, factor)
        return out


_SYNCED: dict[type, type] = {}


def synced(cls: type) -> type:
    """The twin of a BatchNorm2d subclass whose dense statistics are all-reduced: ``cls`` first in
    the method order, so its own forward runs and its ``super().forward`` is SyncBatchNorm2d's."""
    if cls is nn.BatchNorm2d:
        return SyncBatchNorm2d
    if cls not in _SYNCED:
        _SYNCED[cls] = type(f"Synced{cls.__name__}", (cls, SyncBatchNorm2d), {})
    return _SYNCED[cls]


def convert_sync_batchnorm(
    model: nn.Module, device: torch.device | str = "cpu", *, dense: bool = True
) -> int:
    """Synchronise the BatchNorm statistics of ``model`` over ranks, in place; returns how many
    layers were converted.

    A BatchNorm2d subclass that sets ``sync_statistics = True`` (SparK's sparse BatchNorm: its
    statistics are those of the whole batch's visible positions) is always converted to its
    :func:`synced` twin; with ``dense``, plain ``nn.BatchNorm2d`` becomes ``nn.SyncBatchNorm``
    on CUDA or :class:`SyncBatchNorm2d` elsewhere. Only classes are swapped (same parameters and
    buffers), so an optimizer or a checkpoint made before stays valid.
    """
    cuda = torch.device(device).type == "cuda"
    converted = 0
    for module in unwrap_model(model).modules():
        cls = type(module)
        if cls is nn.BatchNorm2d and dense:
            module.__class__ = nn.SyncBatchNorm if cuda else SyncBatchNorm2d
            if cuda:
                module.process_group = None
        elif isinstance(module, nn.BatchNorm2d) and getattr(cls, "sync_statistics", False):
            module.__class__ = synced(cls)
        else:
            continue
        converted += 1
    return converted


def prepare_model(
    model: nn.Module, device: torch.device | str, *, sync_batchnorm: bool = False
) -> nn.Module:
    """The model ready for this process: on ``device``; with more than one rank, BatchNorms
    synchronised (those that ask for it always, dense ones with ``sync_batchnorm``) and wrapped
    in DistributedDataParallel, which also broadcasts rank 0's weights so every rank starts
    equal. A model that is already wrapped is returned as is."""
    device = torch.device(device)
    model.to(device)
    if world_size() == 1 or isinstance(model, nn.parallel.DistributedDataParallel):
        return model
    convert_sync_batchnorm(model, device, dense=sync_batchnorm)
    return nn.parallel.DistributedDataParallel(
        model,
        device_ids=[device.index] if device.type == "cuda" else None,
        # The same parameters take part in every step (also SparK's, whatever the mask), so the
        # graph is static: DDP learns once which parameters get no gradient (e.g. the encoder
        # stages an encoder_depth < 5 UNet++ never calls) instead of searching every step.
        static_graph=True,
    )


def main_process_first(make: Callable[[], T]) -> T:
    """``make()`` on rank 0 first, then on the others (which then find its cached result, e.g. a
    rendered dataset file); a plain call in a single process."""
    if is_main_process():
        result = make()
    barrier()
    if not is_main_process():
        result = make()
    return result


class StopSignals:
    """While active, the first SIGINT/SIGTERM only sets ``reason`` (``"SIGINT"``/``"SIGTERM"``),
    so training stops after a whole step (with a checkpoint) instead of inside one; every rank
    then agrees to stop through :func:`any_rank`. Handlers can only be installed from the main
    thread; elsewhere this is inert."""

    def __init__(self):
        self.reason: str | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.reason is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: abort now
        self.reason = signal.Signals(signum).name

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → cuda when available, else cpu; plain "cuda" in a process group → this
    process's GPU (``LOCAL_RANK``, which :func:`init_distributed` made current)."""
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if str(device) == "auto" else device
    )
    if device.type == "cuda" and device.index is None and is_distributed():
        device = torch.device("cuda", torch.cuda.current_device())
    return device


PRECISIONS = ("fp32", "bf16", "auto")


def bf16_is_fast(device: torch.device) -> bool:
    """Whether bfloat16 matrix units exist: AMX or AVX512-BF16 on a CPU (where bf16 convolutions
    measured 2-2.5x faster than float32 on this course's CPU); an Ampere or newer GPU."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
        return any(getattr(torch.cpu, name, lambda: False)() for name in probes)
    return False


def use_bf16(precision: str, device: torch.device) -> bool:
    """Resolve a precision setting for a device ("auto": bf16 only where it is fast)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}.")
    return precision == "bf16" or (precision == "auto" and bf16_is_fast(device))
