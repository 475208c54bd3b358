"""Batch order as a pure function of (seed, epoch), so a resumed run sees the same batches.

Two sources feed the loop: :class:`PreloadedBatches` cuts batches from tensors already in memory
(the CPU path of both jobs: nothing but the network may cost), and :func:`epoch_loader` wraps
any Dataset in a DataLoader (workers, streaming) with the same ordering guarantees.

A plain shuffled ``DataLoader`` draws its permutation (and its workers' seeds) from the global
RNG when an epoch starts, so the order depends on everything that consumed random numbers
before. Resuming from a checkpoint then shows the model different batches than the
uninterrupted run would have. :class:`EpochBatchSampler` derives the permutation from
``(seed, epoch)`` alone and shards it over ranks like ``DistributedSampler``;
:func:`epoch_loader` wraps it in a DataLoader whose worker seeds also depend only on
``(seed, epoch)``. The training loop calls ``set_epoch`` every epoch and ``skip_batches`` when
resuming mid-epoch, which skips indices without loading the skipped samples.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from depthlib.errors import ConfigError, DataError
from depthlib.train import distributed

__all__ = [
    "EpochBatchSampler",
    "EpochDataLoader",
    "PreloadedBatches",
    "batch_size_of",
    "check_sharded",
    "derive_seed",
    "epoch_batches",
    "epoch_loader",
    "grouped",
    "steps_per_epoch",
    "to_device",
]

BATCH_STREAM = 0x5BA4C  # tells a batch's seed apart from an epoch's


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed for a place in a run, e.g. (seed, epoch) or (seed, epoch, batch,
    rank); unlike ``seed + epoch`` it never makes run seed 1 / epoch 0 repeat seed 0 / epoch 1."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))


class EpochBatchSampler(Sampler[list[int]]):
    """Index batches for one rank; the order depends only on ``(seed, epoch)``.

    Without ``drop_last`` the permutation is padded cyclically so every rank gets the same number
    of batches (DDP needs equal step counts); with it, the tail that does not fill a batch on
    every rank is dropped.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ):
        # None = this process's rank / world size when used (so a sampler built before the
        # process group is joined still shards correctly once it is).
        self._rank, self._world_size = rank, world_size
        if n <= 0:
            raise DataError("The dataset is empty: there is nothing to train on. Check its path.")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {batch_size}.")
        self.n, self.batch_size = int(n), int(batch_size)
        self.seed, self.shuffle, self.drop_last = int(seed), bool(shuffle), bool(drop_last)
        self.epoch = 0
        self._skip = 0
        self._check_world()

    @property
    def world_size(self) -> int:
        w = self._world_size
        return distributed.world_size() if w is None else int(w)

    @property
    def rank(self) -> int:
        return distributed.rank() if self._rank is None else int(self._rank)

    def _check_world(self) -> None:
        if not 0 <= self.rank < self.world_size:
            raise ConfigError(f"rank {self.rank} is outside world size {self.world_size}.")
        if self.n < self.world_size:
            raise ConfigError(
                f"The dataset has {self.n} samples but {self.world_size} processes train on it; "
                "use fewer processes (torchrun --nproc_per_node) or more data."
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next iteration yields (also cancels a pending skip)."""
        self.epoch = int(epoch)
        self._skip = 0

    def skip_batches(self, count: int) -> None:
        """Make the next iteration start at batch ``count`` of the epoch (resuming mid-epoch)."""
        self._skip = int(count)

    def _indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 0))
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.drop_last:
            order = order[: self.n // self.world_size * self.world_size]
        else:
            total = math.ceil(self.n / self.world_size) * self.world_size
            order = (order * math.ceil(total / self.n))[:total]
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        self._check_world()
        per_rank = (
            self.n // self.world_size if self.drop_last else math.ceil(self.n / self.world_size)
        )
        return (
            per_rank // self.batch_size if self.drop_last else math.ceil(per_rank / self.batch_size)
        )

    def __iter__(self) -> Iterator[list[int]]:
        self._check_world()
        indices = self._indices()
        start, self._skip = self._skip, 0
        for b in range(start, len(self)):
            yield indices[b * self.batch_size : (b + 1) * self.batch_size]


class EpochDataLoader(DataLoader):
    """A DataLoader over an :class:`EpochBatchSampler` whose worker seeds follow ``(seed, epoch)``."""

    def set_epoch(self, epoch: int) -> None:
        self.batch_sampler.set_epoch(epoch)
        if hasattr(self.dataset, "set_epoch"):  # per-epoch augmentation; workers get this copy
            self.dataset.set_epoch(epoch)
        # Worker processes seed torch/numpy/random from a base seed drawn from this generator
        # when an epoch's iterator starts, so augmentations in workers are reproducible too.
        self.generator.manual_seed(derive_seed(self.batch_sampler.seed, epoch, 1))

    def skip_batches(self, count: int) -> None:
        self.batch_sampler.skip_batches(count)


def epoch_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
    num_workers: int = 0,
    rank: int | None = None,
    world_size: int | None = None,
    **loader_kwargs,
) -> EpochDataLoader:
    """A DataLoader whose batches are a function of ``(seed, epoch)`` (and rank/world size).

    Pass it to ``fit`` directly (the loop calls ``set_epoch``) or build one per epoch with
    ``lambda e: epoch_loader(ds, 16, seed=0, epoch=e)``. ``persistent_workers`` is refused:
    persistent workers keep their first seed, which would break exact resumption.
    """
    if loader_kwargs.get("persistent_workers"):
        raise ConfigError(
            "persistent_workers=True keeps the workers' random seeds across epochs, so a resumed "
            "run would augment differently; leave it off."
        )
    sampler = EpochBatchSampler(
        len(dataset),
        batch_size,
        seed=seed,
        shuffle=shuffle,
        drop_last=drop_last,
        rank=rank,
        world_size=world_size,
    )
    loader = EpochDataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        generator=torch.Generator(),
        **loader_kwargs,
    )
    loader.set_epoch(epoch)
    return loader


class PreloadedBatches:
    """Batches cut from data already in memory, in an order that depends only on ``(seed, epoch)``.

    ``cut(positions, epoch, batch_seed)`` makes one batch from the positions of the sampler (a
    list of ints); ``batch_seed`` is a function of (seed, epoch, batch, rank) only, for whatever
    the batch draws at random (augmentation, masks). What ``fit`` needs from a loader: ``len``,
    ``set_epoch`` and ``skip_batches`` (resume mid-epoch without touching the skipped batches).
    """

    def __init__(self, n: int, batch_size: int, cut: Callable, seed: int = 0):
        self.cut, self.seed = cut, int(seed)
        self.sampler = EpochBatchSampler(n, batch_size, seed=seed, drop_last=True)
        if len(self.sampler) == 0:
            raise ConfigError(
                f"{n} training samples do not fill one batch of {batch_size}; lower the batch "
                "size or use more data (more images, a larger label fraction)."
            )
        self.epoch = self.start = 0

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)
        self.epoch, self.start = int(epoch), 0

    def skip_batches(self, count: int) -> None:
        self.sampler.skip_batches(count)
        self.start = int(count)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator:
        b, self.start = self.start, 0
        for positions in self.sampler:
            seed = derive_seed(self.seed, self.epoch, b, distributed.rank(), BATCH_STREAM)
            yield self.cut(positions, self.epoch, seed)
            b += 1


# --------------------------------------------------------------------------- feeding the loop
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
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim else None
    values = batch.values() if isinstance(batch, Mapping) else batch
    if isinstance(values, Iterable) and not isinstance(values, (str, bytes)):
        for v in values:
            if isinstance(v, torch.Tensor) and v.ndim:
                return int(v.shape[0])
    return None


def _is_epoch_function(loader: Any) -> bool:
    """A function ``epoch -> iterable`` rather than an iterable of batches."""
    return callable(loader) and not hasattr(loader, "__iter__")


def steps_per_epoch(loader: Any, override: int | None = None) -> int:
    """Batches per epoch: ``override``, else ``len()`` of the (epoch-0) loader."""
    if override:
        return override
    data = loader(0) if _is_epoch_function(loader) else loader
    try:
        n = len(data)
    except TypeError:
        raise ConfigError(
            "The training data has no len(), so the schedule cannot know an epoch's length; set "
            "TrainConfig.steps_per_epoch."
        ) from None
    if n == 0:
        world = distributed.world_size()
        shard = f" (each of the {world} processes gets 1/{world} of it)" if world > 1 else ""
        raise ConfigError(
            f"The training loader yields no batches: the dataset{shard} is smaller than one "
            "batch with drop_last. Lower the batch size, use fewer processes or more data."
        )
    return n


def _samplers(loader: Any) -> list[Any]:
    """The samplers a loader (or an ``epoch -> loader`` function's epoch 0) draws from."""
    data = loader(0) if _is_epoch_function(loader) else loader
    found, todo = [], [data]
    while todo:
        owner = todo.pop()
        if isinstance(owner, (Sampler, DistributedSampler)):
            found.append(owner)
        for name in ("batch_sampler", "sampler"):
            inner = getattr(owner, name, None)
            if inner is not None and inner is not owner:
                todo.append(inner)
    return found


def check_sharded(loader: Any, world_size: int) -> None:
    """Refuse a loader that would feed every process the whole dataset in a multi-process run.

    Sharded: an :class:`EpochBatchSampler` or ``DistributedSampler`` for ``world_size``
    replicas. A DataLoader over any other sampler (plain shuffle) is refused; loaders whose
    sampling cannot be seen (custom iterables) are trusted.
    """
    if world_size <= 1:
        return
    samplers = _samplers(loader)
    for sampler in samplers:
        replicas = getattr(sampler, "world_size", getattr(sampler, "num_replicas", None))
        if isinstance(sampler, (EpochBatchSampler, DistributedSampler)):
            if replicas != world_size:
                raise ConfigError(
                    f"The training loader is sharded for {replicas} process(es) but "
                    f"{world_size} are running; build it with world_size={world_size} (or leave "
                    "rank/world_size unset so it follows the process group)."
                )
            return
    if samplers:
        raise ConfigError(
            f"With {world_size} processes every rank would train on the whole dataset: the "
            f"loader's sampler ({type(samplers[0]).__name__}) does not shard it. Use "
            "depthlib.train.batches.epoch_loader(...) or a DistributedSampler."
        )


def epoch_batches(loader: Any, epoch: int, skip: int, limit: int | None) -> Iterable:
    """The batches of ``epoch`` (0-based), starting after the first ``skip`` ones."""
    data = loader(epoch) if _is_epoch_function(loader) else loader
    for owner in (data, getattr(data, "batch_sampler", None), getattr(data, "sampler", None)):
        if hasattr(owner, "set_epoch"):
            owner.set_epoch(epoch)
            break
    skipper = getattr(data, "skip_batches", None) or getattr(
        getattr(data, "batch_sampler", None), "skip_batches", None
    )
    if skip and skipper is not None:
        skipper(skip)  # skip indices without loading the samples
        it = iter(data)
    else:
        it = iter(data)
        for _ in range(skip):
            next(it, None)
    if limit is None:
        return it
    return itertools.islice(it, max(0, limit - skip))


def grouped(batches: Iterable, size: int) -> Iterable[list]:
    """Consecutive groups of ``size`` micro-batches (a last, incomplete group is dropped)."""
    group: list = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
