"""The guard's typed errors: each carries an exit code and a message for a person.

Code below the command line raises these; `cli.main` is the one place that prints
them and turns them into an exit status (a traceback only with `--debug`).
Exit codes follow sysexits(3) so they never collide with the health codes
0/1/2 that `status` and `doctor` return.
"""

from __future__ import annotations

EX_USAGE = 64
EX_DATAERR = 65
EX_NOINPUT = 66
EX_UNAVAILABLE = 69
EX_SOFTWARE = 70
EX_CANTCREAT = 73
EX_IOERR = 74
EX_TEMPFAIL = 75
EX_NOPERM = 77
EX_CONFIG = 78


class GuardError(Exception):
    """Base of every error the guard reports to a person."""

    exit_code: int = EX_SOFTWARE

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(GuardError):
    """A command-line flag or argument is wrong."""

    exit_code = EX_USAGE


class ConfigError(GuardError):
    """A configuration file (the guard's or the agent's) is invalid."""

    exit_code = EX_CONFIG


class InputError(GuardError):
    """An input file is missing or malformed."""

    exit_code = EX_DATAERR


class PermissionDeniedError(GuardError):
    """The guard lacks the privilege to do what was asked."""

    exit_code = EX_NOPERM


class ServiceError(GuardError):
    """A service manager command failed or timed out."""

    exit_code = EX_UNAVAILABLE


class WriteError(GuardError):
    """A file could not be written; nothing was left half-written."""

    exit_code = EX_CANTCREAT


def write_failure(message: str, error: OSError) -> GuardError:
    """The error for a failed write: permission problems exit 77, the rest 73."""
    if isinstance(error, PermissionError):
        return PermissionDeniedError(message)
    return WriteError(message)


class SecretLeakError(GuardError):
    """A secret survived redaction; the output was deleted."""

    exit_code = EX_SOFTWARE
