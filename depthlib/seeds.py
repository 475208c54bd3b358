"""Every seed of a run, derived from its parts and a named stream, never added or guessed.

``derive_seed(seed, epoch)`` never makes run seed 1 / epoch 0 repeat seed 0 / epoch 1 (as
``seed + epoch`` would), and a stream name keeps one kind of draw apart from every other. The
numbers are arbitrary but fixed: changing one changes every run's draws of that kind.
"""

from __future__ import annotations

import numpy as np

__all__ = ["derive_seed", "generator"]

ORDER = 0  # an epoch's sample order: derive_seed(seed, epoch, ORDER)
WORKERS = 1  # an epoch's DataLoader worker seeds
BATCH = 0x5BA4C  # a preloaded batch's own draws (SparK's crops, flips and mask)
STREAMED_IMAGE = 0x57EA  # a streamed pretraining image's draws (the same, per image)
VALIDATION = 0x7A1  # the validation carve: one per split, whatever the run's seed
LABELS = 0x1ABE1  # which images of the train split keep their labels
POOL = 0x9E7A  # which images a pretraining pool takes from a file or folder
UNLABELLED_ROOMS = 1_000_003  # the unlabelled rooms pool's seed, from the labelled set's
HELD_OUT_ROOMS = 2_000_003  # the held-out rooms that score pretraining, from the labelled set's


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed for a place in a run, e.g. (seed, epoch, ORDER)."""
    state = np.random.SeedSequence([int(p) for p in parts]).generate_state(2)
    return int((int(state[0]) << 32 | int(state[1])) & (2**63 - 1))


def generator(*parts: int) -> np.random.Generator:
    """A numpy generator for a place in a run, e.g. (seed, epoch, draw) or (seed, LABELS)."""
    return np.random.default_rng([int(p) for p in parts])
