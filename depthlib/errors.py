"""User-facing errors, and the few input rules several modules share.

A ``DepthlibError`` is a mistake the user can fix (a wrong path, a file of the wrong kind, a bad
value). Its message says what was wrong and what to do; the CLI prints it without a traceback.
Programming errors stay ordinary exceptions. The rules below raise one message each, wherever
they are checked.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class DepthlibError(Exception):
    """A user error with a message that says what was wrong and what to do."""


class DataError(DepthlibError, ValueError):
    """A dataset file or folder is missing, unreadable or not in the expected layout."""


class ConfigError(DepthlibError, ValueError):
    """A setting, profile name or argument value is not valid."""


class CheckpointError(DepthlibError, ValueError):
    """A checkpoint or weight file is missing, unsafe or does not match the model."""


def require_multiple(
    height: int, width: int, multiple: int, what: str, why: str, error=DataError, hint: str = ""
) -> None:
    """Refuse a ``height`` x ``width`` that does not tile into ``multiple``-pixel blocks.

    Encoders halve the size at every stage and SparK masks whole patches of the total stride, so
    every size the course feeds a network must be a multiple of it. ``what`` names the size
    ("Image size", "The training size"), ``why`` the multiple ("the encoder stride").
    """
    if height % multiple or width % multiple:
        up = (-(-height // multiple) * multiple, -(-width // multiple) * multiple)
        raise error(
            f"{what} {height}x{width} is not a multiple of {why} {multiple}; resize, crop or pad "
            f"it to a multiple, e.g. {up[0]}x{up[1]}.{' ' + hint if hint else ''}"
        )


def require_known_keys(config: Mapping, known: Iterable[str], what: str) -> None:
    """Refuse settings whose names are not among ``known`` (a typo would silently do nothing)."""
    known = list(known)
    unknown = sorted(set(config) - set(known))
    if unknown:
        raise ConfigError(
            f"Unknown {what} setting(s) {unknown}; valid ones are: {', '.join(known)}."
        )
