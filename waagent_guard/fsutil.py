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
import errno
import logging
import os
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO, Callable, Literal, Optional

from waagent_guard.errors import write_failure

log = logging.getLogger(__name__)


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
        log.warning("%s: read did not finish in %g s; going on without it", path, timeout)
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
