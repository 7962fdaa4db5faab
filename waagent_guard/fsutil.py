"""Atomic, durable file writes, and the one bounded reader of files we do not own.

Files we do not own (`/etc/waagent.conf`) and files we must not lose
(`state.json`, bundles, textfile metrics) are written the same way: a temporary
file in the same directory, the original's mode and owner, fsync, rename over
the target, fsync of the directory. A crash at any point leaves either the old
file or the new one, never a mix.

Files we do not own and only read (waagent.conf, guard.toml, the pidfile,
etc/localtime, os-release, DHCP leases, /proc, extension state, logs) are read
through `read_file`: regular files only, opened without blocking, at most the
cap the caller states, within a deadline. Every refusal is an `OSError` whose
message says why. The streaming readers (the log tailer, the bundle's sources)
open through `open_regular`, the same checks.
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
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Literal, Optional

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
        ours = os.fstat(fd)
    except OSError as error:
        os.close(fd)
        with contextlib.suppress(OSError):
            temp_path.unlink()
        raise write_failure(
            f"{path}: write failed ({error.strerror or error}); the original is unchanged", error
        ) from error
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
    except OSError as error:  # (a GuardError from _exchange_in is not one: it says it landed)
        _discard_temp(temp_path, (ours.st_dev, ours.st_ino))
        reason = "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        raise write_failure(
            f"{path}: write failed ({reason}); the original is unchanged", error
        ) from error
    except BaseException:
        _discard_temp(temp_path, (ours.st_dev, ours.st_ino))
        raise
    # The new content is in place: a failure now must not say "unchanged" (a caller
    # would roll back a state that did change). It only risks the rename after a crash.
    try:
        fsync_directory(directory)
    except OSError as error:
        logger.warning(
            "%s: written, but syncing its directory failed (%s): the change may not survive "
            "a crash of the machine", path, error.strerror or error,
        )


def _discard_temp(temp_path: Path, ours: tuple[int, int]) -> None:
    """Remove our temporary file, and only ours: after a failed swap-back, the name may
    hold another writer's file, which must stay (at that name, for them to find)."""
    try:
        if _identity(temp_path) == ours:
            temp_path.unlink()
        else:
            logger.warning("%s is another program's file after a failed exchange: left there",
                           temp_path)
    except FileNotFoundError:
        pass
    except OSError as error:  # never hides the error being reported
        logger.warning("%s: temporary file not removed: %s", temp_path, error.strerror or error)


def _exchange_in(temp_path: Path, path: Path, displaced_ok: Callable[[Path], bool]) -> None:
    ours = _identity(temp_path)
    if not exchange_paths(temp_path, path):
        os.replace(temp_path, path)  # no RENAME_EXCHANGE here: `before_replace` was the check
        return
    try:
        good = displaced_ok(temp_path)
    except Exception:  # a check that fails is a "no": give their file back
        good = False
    # From here on our content is at `path`: no failure may say "unchanged".
    if good:
        try:
            os.unlink(temp_path)
        except OSError as error:  # the old copy, under our temporary name: the next clean-up's
            logger.warning("%s: written; the replaced copy %s was not removed: %s",
                           path, temp_path.name, error.strerror or error)
        return
    # Replaced between the check and the exchange: `temp_path` holds their file. Put it
    # back; if yet another file landed at `path` meanwhile, that newest one stays.
    try:
        exchange_paths(temp_path, path)
        if _identity(temp_path) != ours:
            exchange_paths(temp_path, path)
    except OSError as error:
        raise _gave_back_failed(temp_path, path, error) from error
    with contextlib.suppress(FileNotFoundError):
        os.unlink(temp_path)
    raise TargetChanged(str(path))


def _gave_back_failed(temp_path: Path, path: Path, error: OSError) -> Exception:
    """Their file could not be put back: ours is in place and theirs sits at our temporary
    name, which the stale-edit clean-up would delete. Move it to a name it leaves alone,
    and say where it is."""
    kept = path.with_name(f"{path.name}.displaced-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    where = str(temp_path)
    with contextlib.suppress(OSError):
        os.rename(temp_path, kept)
        where = str(kept)
    return write_failure(
        f"{path}: written, but another program replaced the file during the edit and its "
        f"version could not be put back ({error.strerror or error}); it is kept as {where}: "
        "compare the two and merge by hand",
        error,
    )


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


# --- the one reader of files the guard does not own ----------------------------------------

# A read slower than this (a hung network filesystem, a trickling FUSE file) is an error.
READ_TIMEOUT_SECONDS = 5.0
# Whether reads outside /proc and /sys run in a short-lived thread, so that even a read
# stuck in the kernel (a hung NFS mount) returns ReadTimedOut. That costs a thread per
# read (0.1-0.6 ms): one-shot commands turn it on (`isolate_reads`); the daemon reads
# on its loop without it, and a loop stuck in the kernel is the systemd watchdog's
# (WatchdogSec=60: the guard is restarted).
_isolate = False


def isolate_reads(enabled: bool) -> None:
    """Run reads of files outside /proc and /sys in a thread (see `read_file`)."""
    global _isolate
    _isolate = enabled
READ_CHUNK = 64 * 1024
_NODE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


class FileRefused(OSError):
    """A file that exists but is not read: its `strerror` says why (and names no secret)."""

    def __init__(self, path: str | os.PathLike[str], reason: str, code: int = errno.EINVAL) -> None:
        super().__init__(code, reason, os.fspath(path))


class NotRegularFile(FileRefused):
    """A FIFO, device, socket, directory (or, with nofollow, a symlink): never read."""

    def __init__(self, path: str | os.PathLike[str], kind: str) -> None:
        super().__init__(path, f"is {kind}, not a regular file; it is never read",
                         errno.EISDIR if kind == "a directory" else errno.EINVAL)
        self.kind = kind


class FileTooLarge(FileRefused):
    """Larger than the cap the caller stated."""

    def __init__(self, path: str | os.PathLike[str], limit: int) -> None:
        super().__init__(path, f"larger than {limit} bytes, not read", errno.EFBIG)
        self.limit = limit


class ReadTimedOut(FileRefused):
    """The read did not finish before the deadline (a hung or very slow filesystem)."""

    def __init__(self, path: str | os.PathLike[str], seconds: float) -> None:
        super().__init__(path, f"read did not finish in {seconds:g} s (a hung filesystem?)",
                         errno.ETIMEDOUT)


class UndecodableFile(FileRefused):
    """Bytes that are not text in the encoding the caller asked for (strict decoding)."""

    def __init__(self, path: str | os.PathLike[str], encoding: str, position: int) -> None:
        super().__init__(path, f"not {encoding.upper()} text (byte {position})", errno.EILSEQ)


def node_kind(mode: int) -> Optional[str]:
    """None for a regular file, else what it is ("a FIFO (named pipe)", ...)."""
    if stat.S_ISREG(mode):
        return None
    for test, kind in _NODE_KINDS:
        if test(mode):
            return kind
    return "not a regular file"


def open_regular(path: str | os.PathLike[str], *, nofollow: bool = False) -> int:
    """A read-only descriptor on a regular file, or an OSError; never blocks on a FIFO.

    O_NONBLOCK makes opening a FIFO return at once, O_NOCTTY keeps a terminal from
    becoming ours, O_NOFOLLOW (when asked) refuses a final symlink (ELOOP); fstat
    on the open descriptor then refuses anything but a regular file
    (`NotRegularFile`). Every reader of files the guard does not own opens this way.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    if nofollow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(path, flags)
    except OSError as error:
        if nofollow and error.errno == errno.ELOOP and os.path.islink(path):
            raise NotRegularFile(path, "a symbolic link") from error
        if error.errno == errno.ENXIO:  # a socket (or a device with no driver)
            try:
                kind = node_kind(os.stat(path).st_mode)
            except OSError:
                kind = None
            if kind is not None:
                raise NotRegularFile(path, kind) from error
        raise
    except ValueError as error:  # a NUL in a path read from a guest file
        raise FileRefused(os.fspath(path).replace("\0", "\\0"),
                          "the path holds a NUL byte; no such file can exist") from error
    try:
        kind = node_kind(os.fstat(fd).st_mode)
        if kind is not None:
            raise NotRegularFile(path, kind)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_fd(fd: int, path: str | os.PathLike[str], limit: int, deadline: float,
             timeout: float, clock: Callable[[], float]) -> bytes:
    """Up to limit + 1 bytes in chunks, checking the deadline between chunks."""
    chunks: list[bytes] = []
    total = 0
    while total <= limit:
        try:
            chunk = os.read(fd, min(READ_CHUNK, limit + 1 - total))
        except BlockingIOError:  # O_NONBLOCK on a file that has no data yet: nothing more
            break
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
        if clock() > deadline:
            raise ReadTimedOut(path, timeout)
    return b"".join(chunks)


def _read_now(path: str | os.PathLike[str], limit: int, nofollow: bool, timeout: float,
              clock: Callable[[], float], tail: bool) -> bytes:
    deadline = clock() + timeout
    fd = open_regular(path, nofollow=nofollow)
    try:
        if tail:
            # The last limit + 1 bytes of what fstat says (0 for /proc: read from the start).
            size = os.fstat(fd).st_size
            if size > limit + 1:
                os.lseek(fd, size - limit - 1, os.SEEK_SET)
        return _read_fd(fd, path, limit, deadline, timeout, clock)
    finally:
        os.close(fd)


def _is_kernel_file(path: str | os.PathLike[str]) -> bool:
    """/proc and /sys answer from memory: no thread is needed to bound them."""
    text = os.fspath(path)
    return text.startswith(("/proc/", "/sys/"))


def read_file(
    path: str | os.PathLike[str],
    max_bytes: int,
    *,
    oversize: Literal["error", "truncate", "tail"] = "error",
    nofollow: bool = False,
    timeout: Optional[float] = READ_TIMEOUT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    isolate: Optional[bool] = None,
) -> tuple[bytes, bool]:
    """The one bounded reader of files the guard does not own: (data, truncated).

    - only a regular file is read (`NotRegularFile` for a FIFO, device, socket,
      directory; a symlink with `nofollow`); opening never blocks;
    - at most `max_bytes` (the caller states the cap): more is `FileTooLarge`, or,
      with `oversize="truncate"`, the first `max_bytes` and truncated=True, with
      `oversize="tail"` the last `max_bytes` (logs). The size is never trusted for
      the cap: /proc files say 0 and have content;
    - within `timeout` seconds: a slow read is `ReadTimedOut` (checked between
      64 KiB chunks); with `isolate` (default: `isolate_reads`, on for one-shot
      commands), outside /proc and /sys, open and read run in a short-lived thread, so
      even a read stuck in a hung filesystem returns `ReadTimedOut` to the caller (the
      stuck thread is left behind);
    - every failure is an OSError (`FileNotFoundError`, `PermissionError`, or a
      `FileRefused` whose strerror says why), so callers' `except OSError` holds.
    """
    if max_bytes < 0:
        raise ValueError("max_bytes must be >= 0")
    tail = oversize == "tail"
    threaded = _isolate if isolate is None else isolate
    if timeout is None or not threaded or _is_kernel_file(path):
        data = _read_now(path, max_bytes, nofollow, timeout or float("inf"), clock, tail)
    else:
        data = _read_in_thread(path, max_bytes, nofollow, timeout, clock, tail)
    if len(data) > max_bytes:
        if oversize == "error":
            raise FileTooLarge(path, max_bytes)
        return (data[-max_bytes:] if max_bytes else b"") if tail else data[:max_bytes], True
    return data, False


def _read_in_thread(path: str | os.PathLike[str], limit: int, nofollow: bool, timeout: float,
                    clock: Callable[[], float], tail: bool) -> bytes:
    result: list[bytes] = []
    failure: list[BaseException] = []

    def work() -> None:
        try:
            result.append(_read_now(path, limit, nofollow, timeout, clock, tail))
        except BaseException as error:
            failure.append(error)

    worker = threading.Thread(target=work, name="wg-read", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        logger.warning("%s: read did not finish in %g s; going on without it", path, timeout)
        raise ReadTimedOut(path, timeout)
    if failure:
        raise failure[0]
    return result[0]


def read_text(
    path: str | os.PathLike[str],
    max_bytes: int,
    *,
    encoding: str = "utf-8",
    errors: Literal["strict", "replace", "surrogateescape"] = "replace",
    oversize: Literal["error", "truncate", "tail"] = "error",
    nofollow: bool = False,
    timeout: Optional[float] = READ_TIMEOUT_SECONDS,
) -> str:
    """`read_file` decoded: `errors="strict"` turns bad bytes into `UndecodableFile`."""
    data, _ = read_file(path, max_bytes, oversize=oversize, nofollow=nofollow, timeout=timeout)
    try:
        return data.decode(encoding, errors)
    except UnicodeDecodeError as error:
        raise UndecodableFile(path, encoding, error.start) from error


def read_bounded(path: Path, limit: int) -> tuple[bytes, bool]:
    """At most `limit` bytes of a regular file: (data, truncated) (`read_file`, truncating)."""
    return read_file(path, limit, oversize="truncate")


def make_directory(path: Path, *, mode: int, hint: str) -> None:
    """mkdir -p; a failure names the directory and `hint` (the fix); exit 77 or 73."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except OSError as error:
        raise write_failure(
            f"{path}: cannot create the directory ({error.strerror or error}); {hint}", error
        ) from error
