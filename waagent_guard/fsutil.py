"""Atomic, durable file writes and bounded reads.

Files we do not own (`/etc/waagent.conf`) and files we must not lose
(`state.json`, bundles, textfile metrics) are written the same way: a temporary
file in the same directory, the original's mode and owner, fsync, rename over
the target, fsync of the directory. A crash at any point leaves either the old
file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from waagent_guard.errors import write_failure


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: Path, *, mode: int | None = None, keep_owner: bool = True
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` atomically when the block ends cleanly.

    Mode and owner are copied from an existing `path` (unless `mode` is given);
    a new file gets `mode` or 0o644. On any error the temporary file is removed
    and `path` is untouched.
    """
    path = Path(path)
    directory = path.parent
    try:
        existing = os.stat(path)
    except FileNotFoundError:
        existing = None
    except OSError as error:
        raise write_failure(f"{path}: cannot write it: {error.strerror or error}"
                            + ("; run as root" if isinstance(error, PermissionError) else ""),
                            error) from error
    target_mode = mode if mode is not None else (existing.st_mode & 0o7777 if existing else 0o644)
    try:
        fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as error:
        raise write_failure(
            f"{path}: cannot create a temporary file in {directory}: {error.strerror}"
            + ("; run as root" if isinstance(error, PermissionError) else ""),
            error,
        ) from error
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), target_mode)
            if keep_owner and existing is not None and os.geteuid() == 0:
                os.fchown(handle.fileno(), existing.st_uid, existing.st_gid)
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp_path, path)
        fsync_directory(directory)
    except OSError as error:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()
        reason = "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        raise write_failure(
            f"{path}: write failed ({reason}); the original is unchanged", error
        ) from error
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temp_path.unlink()
        raise


def atomic_write(path: Path, data: bytes, *, mode: int | None = None) -> None:
    """Replace `path` with `data` atomically and durably (see `atomic_writer`)."""
    with atomic_writer(path, mode=mode) as handle:
        handle.write(data)


def read_bounded(path: Path, limit: int) -> tuple[bytes, bool]:
    """Read at most `limit` bytes of a regular file; returns (data, truncated)."""
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        return data[:limit], True
    return data, False


def make_directory(path: Path, *, mode: int, hint: str) -> None:
    """mkdir -p; a failure names the directory and `hint` (the fix); exit 77 or 73."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as error:
        raise write_failure(
            f"{path}: cannot create the directory ({error.strerror or error}); {hint}", error
        ) from error
