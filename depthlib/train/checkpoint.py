"""Checkpoints that survive a crash and never execute a pickle.

A checkpoint is a folder ``<run>/checkpoints/<name>/`` holding three files:

- ``model.safetensors``: the weights (keys of the unwrapped model), through :mod:`depthlib.weights`;
- ``state.pt``: optimizer, scheduler, RNG states, step and epoch, made of tensors, dicts, lists,
  numbers and strings only, so ``torch.load(weights_only=True)`` reads it;
- ``meta.json``: run config, metrics, history, step, epoch, time, and the model's class and config.

The folder is filled under a hidden temporary name, every file and the folder are fsync'ed, then
it is renamed into place: a kill at any moment leaves the old checkpoint or the new one, never half.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import os
import pickle
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from depthlib.atomic import atomic_write_text, fsync_dir, to_json, write_synced
from depthlib.errors import CheckpointError
from depthlib.train.distributed import unwrap_model
from depthlib.weights import load_into, load_weights, refuse_pickle, weights_bytes

__all__ = [
    "CHECKPOINT_FILES",
    "Checkpoint",
    "CheckpointStore",
    "load_checkpoint",
    "load_state",
    "model_spec",
    "resolve_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FILES = ("model.safetensors", "state.pt", "meta.json")
FORMAT = "depthlib-checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^(epoch_(?P<epoch>\d+)|step_(?P<step>\d+))$")


def model_spec(model: nn.Module, config: Any = None) -> dict:
    """``{"class": "module.Qualname", "config": {...}}`` so evaluation can rebuild the model;
    ``config`` defaults to the model's ``config`` attribute (a dataclass or a mapping)."""
    model = unwrap_model(model)
    config = getattr(model, "config", None) if config is None else config
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    config = dict(config) if isinstance(config, Mapping) else None
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "config": config}


def load_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a ``state.pt`` with ``weights_only=True``; a file needing real unpickling is refused."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # a foreign pickle's protocol warning adds nothing here
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        refuse_pickle(path, " holding Python objects, not only tensors")
        raise CheckpointError(f"{path} is not a torch file. Use another checkpoint.") from err
    except (RuntimeError, EOFError, OSError) as err:
        raise CheckpointError(
            f"{path} cannot be read ({err}); it is probably truncated or damaged. Use another "
            "checkpoint of the run (see its checkpoints/ folder)."
        ) from err


def _read_json(path: Path) -> dict:
    """A small JSON file depthlib wrote (meta, pointers); ``{}`` if it is missing or unreadable."""
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _is_checkpoint_dir(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in CHECKPOINT_FILES)


def _check_weights_only(obj: Any, where: str = "state") -> None:
    """Fail at save time (not at resume time) if ``obj`` would need unpickling to load."""
    if obj is None or isinstance(obj, (torch.Tensor, bool, int, float, str)):
        return
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is not a str or int")
            _check_weights_only(value, f"{where}[{key!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_weights_only(value, f"{where}[{i}]")
    else:
        raise TypeError(
            f"{where} is a {type(obj).__name__}; state.pt may hold only tensors, dicts, lists, "
            "numbers, strings and None so that it loads with weights_only=True"
        )


def _discard_dir(path: Path) -> None:
    """Remove a folder by renaming it to a hidden name first: a kill never leaves half of it."""
    trash = path.with_name(f".trash-{path.name}-{os.getpid()}-{time.monotonic_ns()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def save_checkpoint(folder: str | Path, weights: Mapping, state: Mapping, meta: Mapping) -> Path:
    """Write the checkpoint folder ``folder`` atomically (replacing an older one of that name)."""
    folder = Path(folder)
    _check_weights_only(dict(state))
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "name": folder.name, **meta}
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".tmp-{folder.name}-"))
    try:
        write_synced(tmp / "model.safetensors", weights_bytes(weights))
        buffer = io.BytesIO()
        torch.save(dict(state), buffer)
        write_synced(tmp / "state.pt", buffer.getvalue())
        write_synced(tmp / "meta.json", to_json(meta).encode("utf-8"))
        os.chmod(tmp, 0o755)
        fsync_dir(tmp)
        if folder.exists():
            _discard_dir(folder)
        os.rename(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(folder.parent)
    return folder


@dataclasses.dataclass
class Checkpoint:
    """A loaded checkpoint: its folder, weights (CPU tensors), training state and metadata."""

    path: Path
    weights: dict[str, torch.Tensor]
    state: dict
    meta: dict

    def restore_model(self, model: nn.Module) -> nn.Module:
        """Load the weights into the (unwrapped) ``model``, strictly: every key, every shape."""
        spec = self.meta.get("model") or {}
        hint = f"It was written for {spec.get('class')} with config {spec.get('config')}. "
        hint = (hint if spec else "") + (
            "Build the model with the same architecture, encoder and settings as the checkpoint "
            "(see its meta.json), or choose the matching checkpoint."
        )
        load_into(unwrap_model(model), self.weights, name=f"Checkpoint {self.path}", hint=hint)
        return model

    def build_model(
        self, allowed_prefixes: tuple[str, ...] = ("depthlib.depth.", "depthlib.spark.")
    ) -> nn.Module:
        """Rebuild the model named in ``meta.json`` and load the weights into it.

        Only classes from ``allowed_prefixes`` modules are imported: a checkpoint is data, so it
        must not be able to make us import arbitrary code. Uses ``cls.from_config(config)`` when
        the class has it, else ``cls(**config)``.
        """
        spec = self.meta.get("model") or {}
        qualified, config = spec.get("class") or "", spec.get("config")
        module_name, _, name = qualified.rpartition(".")
        if not module_name.startswith(allowed_prefixes) or config is None:
            raise CheckpointError(
                f"{self.path} does not say how to rebuild its model (class {qualified!r}, "
                f"config {config!r}); only {', '.join(allowed_prefixes)} classes with a config "
                "are rebuilt. Build the model yourself and call restore_model(model)."
            )
        try:
            cls = getattr(importlib.import_module(module_name), name)
        except (ImportError, AttributeError) as err:
            raise CheckpointError(
                f"{self.path} names the model class {qualified!r}, which this version of "
                f"depthlib does not have ({err}); it was written by another version. Build the "
                "model yourself and call restore_model(model), or train the run again."
            ) from err
        model = cls.from_config(config) if hasattr(cls, "from_config") else cls(**config)
        return self.restore_model(model)


def resolve_checkpoint(path: str | Path, which: str = "latest") -> Path:
    """The checkpoint folder ``path`` means: a run folder, its ``checkpoints/``, or one checkpoint.

    ``which`` is ``"latest"`` or ``"best"`` when ``path`` names a run. A single file is refused
    with a message (a pickle is never loaded; a depthlib file is resolved to its folder).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"No checkpoint at {path}. Pass the run folder given as --out when training, or one "
            "folder under its checkpoints/."
        )
    if path.is_file():
        if path.name in CHECKPOINT_FILES and _is_checkpoint_dir(path.parent):
            return path.parent
        refuse_pickle(path)
        raise CheckpointError(
            f"{path} is a single file, not a depthlib checkpoint folder (model.safetensors + "
            "state.pt + meta.json). Pass the run folder given as --out, or load bare encoder "
            "weights with load_encoder_weights(model, path) (--encoder-weights FILE)."
        )
    if _is_checkpoint_dir(path):
        return path
    store_dir = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    store = CheckpointStore(store_dir)
    found = store.best() if which == "best" else store.latest()
    if found is None:
        raise CheckpointError(
            f"No {which} checkpoint in {path}. Train first (checkpoints are written every epoch), "
            "or pass the folder of an existing run."
        )
    return found


def load_checkpoint(
    path: str | Path, which: str = "latest", map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load a checkpoint folder (see :func:`resolve_checkpoint`) without executing any pickle."""
    folder = resolve_checkpoint(path, which)
    meta = _read_json(folder / "meta.json")
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{folder} was not written by depthlib (its meta.json has no format)."
        )
    weights = load_weights(folder / "model.safetensors")
    state = load_state(folder / "state.pt", map_location=map_location)
    return Checkpoint(path=folder, weights=weights, state=state, meta=meta)


class CheckpointStore:
    """The ``checkpoints/`` folder of a run: names, the latest/best pointers and retention.

    Names: ``epoch_0003`` after three finished epochs, ``step_00000150`` for a checkpoint written
    mid-epoch (interruption or time budget). ``latest.json`` and ``best.json`` point to folders.
    After each save only the newest ``keep_last`` epoch checkpoints, the latest and the best
    survive; a mid-epoch checkpoint is removed as soon as a newer one exists.
    """

    def __init__(self, root: str | Path, keep_last: int = 2):
        self.root = Path(root)
        self.keep_last = max(1, int(keep_last))

    @staticmethod
    def epoch_name(epoch: int) -> str:
        return f"epoch_{epoch:04d}"

    @staticmethod
    def step_name(step: int) -> str:
        return f"step_{step:08d}"

    def _pointer(self, kind: str) -> Path | None:
        folder = self.root / str(_read_json(self.root / f"{kind}.json").get("name"))
        return folder if _is_checkpoint_dir(folder) else None

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (by step, from their names and meta)."""
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.iterdir() if _NAME.match(p.name) and _is_checkpoint_dir(p)]

        def step_of(p: Path) -> tuple[int, int]:
            meta = _read_json(p / "meta.json")
            return int(meta.get("step", -1)), int(meta.get("epoch", -1))

        return sorted(found, key=step_of)

    def latest(self) -> Path | None:
        """The checkpoint ``latest.json`` names, else the one with the highest step."""
        return self._pointer("latest") or ([None, *self.checkpoints()])[-1]

    def best(self) -> Path | None:
        return self._pointer("best")

    def save(
        self, name: str, weights: Mapping, state: Mapping, meta: Mapping, *, best: bool = False
    ) -> Path:
        """Write a checkpoint, move the pointers to it, then apply retention."""
        folder = save_checkpoint(self.root / name, weights, state, meta)
        pointer = to_json({k: meta.get(k) for k in ("step", "epoch")} | {"name": name})
        atomic_write_text(self.root / "latest.json", pointer)
        if best:
            atomic_write_text(self.root / "best.json", pointer)
        self._prune(current=folder)
        return folder

    def _prune(self, current: Path) -> None:
        best = self.best()
        keep = {current.name} | ({best.name} if best is not None else set())
        epochs = sorted(p.name for p in self.root.iterdir() if p.name.startswith("epoch_"))
        keep.update(epochs[-self.keep_last :])
        for path in self.root.iterdir():
            if path.name.startswith((".tmp-", ".trash-")) and path.is_dir():
                shutil.rmtree(path, ignore_errors=True)  # left over by a killed process
            elif _NAME.match(path.name) and path.name not in keep and path.is_dir():
                _discard_dir(path)

    def clear(self) -> None:
        """Remove every checkpoint and pointer (a fresh run in a used folder)."""
        if self.root.is_dir():
            _discard_dir(self.root)
