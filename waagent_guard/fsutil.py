"""Atomic, durable file writes and bounded reads.

Files we do not own (`/etc/waagent.conf`) and files we must not lose
(`state.json`, bundles, textfile metrics) are written the same way: a temporary
file in the same directory, the original's mode and owner, fsync, rename over
the target, fsync of the directory. A crash at any point leaves either the old
file or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Optional

from waagent_guard.errors import write_failure

logger = logging.getLogger(__name__)

# The temporary file `atomic_writer` creates beside `path`: `.<name>.<pid>.<8 random>.tmp`
# (before issue 14 without the pid). `remove_stale_temps` recognises exactly these.
_TEMP_RANDOM = r"[a-z0-9_]{8}"


def temp_prefix(path: Path) -> str:
    return f".{path.name}.{os.getpid()}."


def _temp_pattern(path: Path) -> re.Pattern[str]:
    return re.compile(rf"\.{re.escape(path.name)}\.(?:(?P<pid>\d{{1,10}})\.)?{_TEMP_RANDOM}\.tmp")


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # another thread of ours may be writing it
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove the temporary files a killed writer of `path` left beside it; returns them.

    Only names `atomic_writer` gives (`.<name>.<pid>.XXXXXXXX.tmp`, or the older
    `.<name>.XXXXXXXX.tmp`), only regular files (never followed), only in `path`'s own
    directory, and only when the writing process is gone. Each removal is logged; a
    failure to list or remove is logged and skipped (never raises).
    """
    path = Path(path)
    pattern = _temp_pattern(path)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError as error:
        logger.warning("%s: cannot look for stale temporary files: %s", path.parent,
                       error.strerror or error)
        return removed
    for entry in entries:
        match = pattern.fullmatch(entry.name)
        if match is None:
            continue
        pid = match.group("pid")
        if pid is not None and _process_alive(int(pid)):
            continue
        try:
            if not stat.S_ISREG(entry.stat(follow_symlinks=False).st_mode):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:
            continue
        except OSError as error:
            logger.warning("%s: cannot remove this stale temporary file: %s", entry.path,
                           error.strerror or error)
            continue
        logger.warning("%s: removed a temporary file left by an interrupted edit of %s",
                       entry.path, path)
        removed.append(Path(entry.path))
    return removed


class TargetChanged(Exception):
    """The file being replaced is no longer the one the caller read (see `atomic_writer`)."""


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_renameat2: Optional[Callable[..., int]] = None
with contextlib.suppress(OSError, AttributeError):
    _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2


def exchange_paths(first: Path, second: Path) -> bool:
    """Swap two existing names atomically (renameat2 RENAME_EXCHANGE); False if unsupported."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                  _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(second))


def _identity(path: Path) -> tuple[int, int]:
    status = os.lstat(path)
    return (status.st_dev, status.st_ino)


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(
    path: Path,
    *,
    mode: int | None = None,
    keep_owner: bool = True,
    before_replace: Optional[Callable[[], None]] = None,
    displaced_ok: Optional[Callable[[Path], bool]] = None,
) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces `path` atomically when the block ends cleanly.

    Mode and owner are copied from an existing `path` (unless `mode` is given);
    a new file gets `mode` or 0o644. `before_replace` runs after the data is
    durable, just before the rename: raising there abandons the write. On any
    error the temporary file is removed and `path` is untouched.

    With `displaced_ok`, the new file is swapped in with RENAME_EXCHANGE where the
    file system has it, and `displaced_ok(name)` is asked about the file it displaced
    (now at `name`): when False -- someone replaced `path` after `before_replace`
    looked -- their file is swapped back and TargetChanged raised, so no one's
    update is lost in that last window either.
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
        fd, temp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=directory)
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
        if before_replace is not None:
            before_replace()
        if displaced_ok is not None and existing is not None:
            _exchange_in(temp_path, path, displaced_ok)
        else:
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


def _exchange_in(temp_path: Path, path: Path, displaced_ok: Callable[[Path], bool]) -> None:
    ours = _identity(temp_path)
    if not exchange_paths(temp_path, path):
        os.replace(temp_path, path)  # no RENAME_EXCHANGE here: `before_replace` was the check
        return
    try:
        good = displaced_ok(temp_path)
    except Exception:  # a check that fails is a "no": give their file back
        good = False
    if good:
        os.unlink(temp_path)
        return
    # Replaced between the check and the exchange: `temp_path` holds their file. Put it
    # back; if yet another file landed at `path` meanwhile, that newest one stays.
    exchange_paths(temp_path, path)
    if _identity(temp_path) != ours:
        exchange_paths(temp_path, path)
    os.unlink(temp_path)
    raise TargetChanged(str(path))


def atomic_write(
    path: Path,
    data: bytes,
    *,
    mode: int | None = None,
    before_replace: Optional[Callable[[], None]] = None,
    displaced_ok: Optional[Callable[[Path], bool]] = None,
) -> None:
    """Replace `path` with `data` atomically and durably (see `atomic_writer`)."""
    with atomic_writer(
        path, mode=mode, before_replace=before_replace, displaced_ok=displaced_ok
    ) as handle:
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
