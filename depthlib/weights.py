"""Weight files: safetensors in and out, one pickle refusal, one strict key match.

Every tensor file depthlib writes or reads goes through here: a checkpoint's ``model.safetensors``,
an exported encoder, SparK's saved reconstructions. safetensors holds tensors and a str-to-str
header only, so reading one runs no code; a pickle (``torch.save``) can run any code, so it is
refused with the way to convert it. Loading into a module is strict by default, and a mismatch
names what differs instead of leaving half a model loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from torch import nn

from depthlib.atomic import atomic_write
from depthlib.errors import CheckpointError, ConfigError

__all__ = [
    "KeyMatch",
    "Weights",
    "load_into",
    "load_weights",
    "match_keys",
    "read_weights",
    "refuse_pickle",
    "save_weights",
    "weights_bytes",
]

Weights = str | os.PathLike | Mapping[str, torch.Tensor]  # a file, or tensors by name


def _contiguous_cpu(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies; tensors sharing storage (tied weights) are cloned, as safetensors
    refuses aliases."""
    out, seen = {}, set()
    for key, value in tensors.items():
        tensor = value.detach().to("cpu")
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen and tensor.numel() > 0:
            tensor = tensor.clone()
        seen.add(ptr)
        out[key] = tensor.contiguous()
    return out


def weights_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] = ()) -> bytes:
    """The safetensors file of ``tensors`` (with ``metadata`` in its header), as bytes."""
    return safetensors.torch.save(
        _contiguous_cpu(tensors), metadata={"format": "pt", **dict(metadata)}
    )


def save_weights(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] = ()
) -> Path:
    """Write ``tensors`` to the safetensors file ``path`` atomically (old file or new, not half)."""
    data = weights_bytes(tensors, metadata)
    return atomic_write(path, lambda f: f.write(data))


def refuse_pickle(path: str | os.PathLike, detail: str = "") -> None:
    """Raise the one pickle refusal if ``path`` is a pickle or a ``torch.save`` zip; else return."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        raise CheckpointError(
            f"{path} is a pickle (a torch.save file){detail}. depthlib never unpickles weights: "
            "loading a pickle can run arbitrary code. If you trust the file, convert it to "
            "safetensors once in a Python session of your own: safetensors.torch.save_file("
            "torch.load(path, weights_only=True), 'weights.safetensors')."
        )


def read_weights(source: Weights) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors (on the CPU) and the str-to-str header of a safetensors file; a mapping of
    names to tensors gives its tensors and ``{}``."""
    if isinstance(source, Mapping):
        bad = [k for k, v in source.items() if not isinstance(v, torch.Tensor)]
        if bad:
            raise ConfigError(f"Weights must map names to tensors; {bad[:3]} are not tensors.")
        return dict(source), {}
    if not isinstance(source, (str, os.PathLike)):
        raise ConfigError(
            "Weights must be the path (str or os.PathLike) of a .safetensors file or a mapping "
            f"of names to tensors, got {type(source).__name__} {str(source)[:60]!r}."
        )
    path = Path(source).expanduser()
    if not path.is_file():
        raise CheckpointError(f"No weight file at {path}: pass an existing .safetensors file.")
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (safetensors.SafetensorError, OSError, ValueError) as err:
        refuse_pickle(path)
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({err}); it is probably truncated or "
            "damaged. Use another copy (another checkpoint of the run, or export it again)."
        ) from err


def load_weights(source: Weights) -> dict[str, torch.Tensor]:
    """The tensors of :func:`read_weights`."""
    return read_weights(source)[0]


@dataclass
class KeyMatch:
    """How a set of tensors compares with a module's state_dict (key names as the module's)."""

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the module, not in the tensors
    unexpected: list[str] = field(default_factory=list)  # in the tensors, not in the module
    mismatched: list[str] = field(default_factory=list)  # "key: file (..) vs model (..)"
    ignored: list[str] = field(default_factory=list)  # set aside by the caller before matching

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def __str__(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded"]
        for name, items in [("missing key(s)", self.missing), ("unexpected key(s)",
                            self.unexpected), ("shape mismatch(es)", self.mismatched)]:  # fmt: skip
            if items:
                more = f", ... (+{len(items) - 4} more)" if len(items) > 4 else ""
                parts.append(f"{len(items)} {name}: {', '.join(items[:4])}{more}")
        return "; ".join(parts)


def match_keys(expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor]) -> KeyMatch:
    """Compare ``given`` tensors with the ``expected`` state_dict, key by key and shape by shape."""
    match = KeyMatch(
        missing=sorted(k for k in expected if k not in given),
        unexpected=sorted(k for k in given if k not in expected),
    )
    for key in (k for k in expected if k in given):
        file, model = tuple(given[key].shape), tuple(expected[key].shape)
        if file == model:
            match.loaded.append(key)
        else:
            match.mismatched.append(f"{key}: file {file} vs model {model}")
    return match


def load_into(
    module: nn.Module, source: Weights, *, strict: bool = True, name: str = "", hint: str = ""
) -> KeyMatch:
    """Copy the tensors of ``source`` (a file or a mapping) into ``module``.

    Strict (the default): any missing, unexpected or other-shaped key raises CheckpointError
    naming a few of each, and nothing is loaded. Not strict: the tensors whose name and shape
    match are loaded, the rest is left as it is and reported in the returned :class:`KeyMatch`.
    """
    tensors = load_weights(source)
    own = module.state_dict()
    match = match_keys(own, tensors)
    if strict and not match.ok:
        where = name or ("The state_dict given" if isinstance(source, Mapping) else f"{source}")
        raise CheckpointError(
            f"{where} does not match this model ({type(module).__name__}): {match}. {hint}".strip()
        )
    state = dict(own)  # a fresh dict: smp's load_state_dict may rename keys in place
    state.update({k: tensors[k] for k in match.loaded})
    module.load_state_dict(state, strict=True)
    return match
