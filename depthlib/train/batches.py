"""Batch order as a pure function of (seed, epoch), so a resumed run sees the same batches.

A plain shuffled ``DataLoader`` draws its permutation (and its workers' seeds) from the global
RNG when an epoch starts, so the order depends on everything that consumed random numbers
before, and a run resumed from a checkpoint would see other batches than the uninterrupted one.
Two sources feed the loop instead: :class:`PreloadedBatches` cuts batches from tensors already
in memory (the CPU path of both jobs: nothing but the network may cost), and
:func:`epoch_loader` wraps any Dataset in a DataLoader (workers, streaming).

Both go over the data ``passes`` times an epoch (a small label subset, repeated to a full
split's steps) by yielding draws ``0 .. passes * n - 1``: draw ``d`` is sample ``d % n``, and a
dataset keys its augmentation by the draw, so each repetition gets its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from depthlib.errors import ConfigError, DataError
from depthlib.seeds import BATCH, ORDER, WORKERS, derive_seed
from depthlib.train import distributed

__all__ = [
    "EpochBatchSampler",
    "EpochDataLoader",
    "PreloadedBatches",
    "batch_size_of",
    "check_sharded",
    "epoch_loader",
    "grouped",
    "to_device",
]


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of draws (``passes`` per sample of ``n``) for one rank, in an order that depends
    only on ``(seed, epoch)``, sharded over ranks like ``DistributedSampler``. The tail that does
    not fill a batch on every rank is dropped (DDP needs equal step counts).

    rank / world_size None: this process's, when used (so a sampler built before the process
    group is joined still shards correctly once it is).
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        passes: int = 1,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        if n <= 0:
            raise DataError("The dataset is empty: there is nothing to train on. Check its path.")
        if batch_size < 1 or passes < 1:
            raise ConfigError(
                f"batch_size and passes must be at least 1, got {batch_size}, {passes}."
            )
        self.n, self.batch_size, self.seed = int(n) * int(passes), int(batch_size), int(seed)
        self._rank, self._world_size = rank, world_size
        self.epoch = self.start = 0  # start: the batch the next iteration begins at
        self._check_world()

    @property
    def world_size(self) -> int:
        return distributed.world_size() if self._world_size is None else int(self._world_size)

    @property
    def rank(self) -> int:
        return distributed.rank() if self._rank is None else int(self._rank)

    def _check_world(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is outside world size {self.world_size}.")
        if self.n < self.world_size:
            raise ConfigError(
                f"The data has {self.n} samples but {self.world_size} processes train on it; "
                "use fewer processes (torchrun --nproc_per_node) or more data."
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (also cancels a pending skip)."""
        self.epoch, self.start = int(epoch), 0

    def skip_batches(self, count: int) -> None:
        """Make the next iteration start at batch ``count`` of the epoch (resuming mid-epoch)."""
        self.start = int(count)

    def __len__(self) -> int:
        self._check_world()
        return self.n // self.world_size // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        self._check_world()
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, ORDER))
        mine = torch.randperm(self.n, generator=g).tolist()[self.rank :: self.world_size]
        start, self.start = self.start, 0
        for b in range(start, len(self)):
            yield mine[b * self.batch_size : (b + 1) * self.batch_size]


class EpochDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochBatchSampler` whose worker seeds follow ``(seed, epoch)``."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):  # per-epoch augmentation; workers get this copy
            self.dataset.set_epoch(epoch)
        # Worker processes seed torch/numpy/random from a base seed drawn from this generator
        # when an epoch's iterator starts, so augmentations in workers are reproducible too.
        self.generator.manual_seed(derive_seed(self.batch_sampler.seed, epoch, WORKERS))

    def skip_batches(self, count: int) -> None:
        self.batch_sampler.skip_batches(count)


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    passes: int = 1,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    **loader_kwargs,
) -> EpochDataLoader:
    """A DataLoader whose batches are a function of ``(seed, epoch)`` (and rank/world size).

    ``passes``: every sample that many times an epoch (see the module docstring). A dataset
    that builds whole batches (``__getitems__``) takes ``collate_fn=default_convert``.
    ``persistent_workers`` is refused: persistent workers keep their first seed, which would
    break exact resumption.
    """
    if loader_kwargs.get("persistent_workers"):
        raise ConfigError(
            "persistent_workers=True keeps the workers' random seeds across epochs, so a resumed "
            "run would augment differently; leave it off."
        )
    sampler = EpochBatchSampler(len(dataset), batch_size, seed=seed, passes=passes, rank=rank,
                                world_size=world_size)  # fmt: skip
    loader = EpochDataLoader(dataset, batch_sampler=sampler, num_workers=num_workers,
                             generator=torch.Generator(), **loader_kwargs)  # fmt: skip
    loader.set_epoch(0)
    return loader


class PreloadedBatches:
    """Batches cut from ``n`` samples already in memory, ``passes`` times each an epoch, in an
    order that depends only on ``(seed, epoch)``.

    ``make_batch(draws, epoch, batch_seed)`` makes one batch from the sampler's draws (a list of
    ints; draw d is sample d % n); ``batch_seed`` is a function of (seed, epoch, batch, rank)
    only, for whatever the batch draws at random (SparK's crops and masks). A loader as ``fit``
    needs it: ``len``, ``set_epoch``, ``skip_batches`` (resume mid-epoch without touching the
    skipped batches) and iteration.
    """

    def __init__(
        self, n: int, batch_size: int, make_batch: Callable, *, seed: int = 0, passes: int = 1
    ):
        self.make_batch, self.seed = make_batch, int(seed)
        self.sampler = EpochBatchSampler(n, batch_size, seed=seed, passes=passes)
        if len(self.sampler) == 0:
            raise ConfigError(
                f"{self.sampler.n} training samples an epoch do not fill one batch of "
                f"{batch_size}; lower the batch size or use more data (more images, a larger "
                "label fraction)."
            )

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def skip_batches(self, count: int) -> None:
        self.sampler.skip_batches(count)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator:
        epoch, rank = self.sampler.epoch, distributed.rank()
        for b, draws in enumerate(self.sampler, start=self.sampler.start):
            yield self.make_batch(draws, epoch, derive_seed(self.seed, epoch, b, rank, BATCH))


def to_device(batch: Any, device: torch.device) -> Any:
    """Tensors in a batch (a tensor, or dicts/lists/tuples of them) moved to ``device``."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=device.type == "cuda")
    if isinstance(batch, Mapping):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def batch_size_of(batch: Any) -> int | None:
    """Leading dimension of the first tensor in a batch (for samples/s), or None."""
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, torch.Tensor) or not isinstance(values, Iterable):
        values = [values]
    return next((int(v.shape[0]) for v in values if isinstance(v, torch.Tensor) and v.ndim), None)


def check_sharded(loader: Any, world_size: int) -> None:
    """Refuse a loader that would feed every process the whole dataset in a multi-process run:
    one over a sampler that does not shard (a plain shuffle), or one sharded for another number
    of processes. A loader whose sampling cannot be seen (a custom iterable) is trusted."""
    owner = getattr(loader, "batch_sampler", None) or getattr(loader, "sampler", None)
    if world_size <= 1 or owner is None:
        return
    while not isinstance(owner, (EpochBatchSampler, DistributedSampler)):
        if getattr(owner, "sampler", None) is None:
            raise ConfigError(
                f"With {world_size} processes every rank would train on the whole dataset: the "
                f"loader's sampler ({type(owner).__name__}) does not shard it. Use "
                "depthlib.train.batches.epoch_loader(...) or a DistributedSampler."
            )
        owner = owner.sampler  # a BatchSampler's sampler decides the order
    replicas = owner.world_size if isinstance(owner, EpochBatchSampler) else owner.num_replicas
    if replicas != world_size:
        raise ConfigError(
            f"The training loader is sharded for {replicas} process(es) but {world_size} are "
            f"running; build it with world_size={world_size} (or leave rank/world_size unset so "
            "it follows the process group)."
        )


def grouped(batches: Iterable, size: int) -> Iterable[list]:
    """Consecutive groups of ``size`` micro-batches (a last, incomplete group is dropped)."""
    group: list = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
