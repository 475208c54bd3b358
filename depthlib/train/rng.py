"""Seeding and saving the random number generators (torch, CUDA, numpy, python).

A resumed run must draw the same random numbers (dropout, masks, augmentations) as the run it
continues, so checkpoints store every global RNG state. They are stored as tensors, lists and
numbers, never as numpy objects, so ``state.pt`` still loads with ``weights_only=True``.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["capture_rng_state", "restore_rng_state", "seed_everything"]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices): call it before building the model, too."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 -- the global RNG that legacy code draws from
    torch.manual_seed(seed)


def capture_rng_state() -> dict:
    """The torch, CUDA, numpy and python RNG states as tensors/lists/numbers (weights_only-safe)."""
    np_state = np.random.get_state(legacy=False)  # noqa: NPY002 -- saving the legacy global RNG
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(np_state["bit_generator"]),
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "python": {
            "version": int(py_version),
            "internal": torch.tensor(py_internal, dtype=torch.int64),
            "gauss_next": py_gauss,
        },
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: Mapping) -> None:
    """Inverse of :func:`capture_rng_state` (CUDA states only when the device count matches)."""
    torch.set_rng_state(state["torch"].cpu())
    npy = state["numpy"]
    np.random.set_state(  # noqa: NPY002 -- restoring the legacy global RNG
        {
            "bit_generator": npy["bit_generator"],
            "state": {"key": npy["key"].numpy().astype(np.uint32), "pos": npy["pos"]},
            "has_gauss": npy["has_gauss"],
            "gauss": npy["gauss"],
        }
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["internal"]), py["gauss_next"]))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
