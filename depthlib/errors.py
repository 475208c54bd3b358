"""User-facing errors.

A ``DepthlibError`` is a mistake the user can fix (a wrong path, a file of the wrong kind, a bad
value). Its message says what was wrong and what to do; the CLI prints it without a traceback.
Programming errors stay ordinary exceptions.
"""


class DepthlibError(Exception):
    """A user error with a message that says what was wrong and what to do."""


class DataError(DepthlibError, ValueError):
    """A dataset file or folder is missing, unreadable or not in the expected layout."""


class ConfigError(DepthlibError, ValueError):
    """A setting, profile name or argument value is not valid."""


class CheckpointError(DepthlibError, ValueError):
    """A checkpoint or weight file is missing, unsafe or does not match the model."""
