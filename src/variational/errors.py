"""One hierarchy of errors a user can act on.

Every error the library raises for bad input, a bad file or an impossible problem is a
`VariationalError`. The command line prints these as one line naming the cause (exit status 2);
any other exception is a bug and shows its traceback.

The subclasses also derive from `ValueError` where the cause is a value the caller passed, so code
written against the built-in type keeps working.
"""

from __future__ import annotations

__all__ = [
    "VariationalError",
    "ConfigError",
    "DataError",
    "CheckpointError",
    "RunLockedError",
    "OutputError",
    "ModelError",
    "SolveError",
    "FitError",
]


class VariationalError(Exception):
    """Base class: an error the user can act on, printed as one line without a traceback."""


class ConfigError(VariationalError, ValueError):
    """An option, config field or config file that is invalid, naming the field."""


class DataError(VariationalError, ValueError):
    """A data set or data file that is missing, malformed or unusable."""


class CheckpointError(VariationalError, ValueError):
    """A checkpoint, weights or run file that is missing, damaged or of another kind."""


class RunLockedError(VariationalError):
    """A run directory already has a writer (another training or resume process)."""


class OutputError(VariationalError, OSError):
    """An output path that cannot be written (no permission, a file where a folder should be, disk full)."""


class ModelError(VariationalError, ValueError):
    """A user's model (log density, spec, model file) that cannot be used as written."""


class SolveError(VariationalError, ValueError):
    """A variational problem that has no answer of the kind asked for, or could not be solved."""


class FitError(VariationalError):
    """A fit whose result cannot be trusted (not finite, diverged, improper posterior)."""
