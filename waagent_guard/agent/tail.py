"""Following /var/log/waagent.log by path, and reading its recent past.

`LogTailer` owns reading new complete lines across every way the log gets rotated:
rename + create (logrotate's default), rename then compress, copytruncate, delete and
recreate, and a file that does not exist yet. Rotation is noticed by comparing
(st_dev, st_ino) of the path with the open descriptor. The old descriptor is drained to
its end before the tailer switches, and it stays open afterwards: a writer that has not
reopened its log yet (until logrotate's postrotate tells it to, or one that never does)
keeps appending to the file rotated away -- renamed, compressed and deleted, or deleted
-- and those lines are read from the kept descriptor, until the file has not grown for
LINGER_SECONDS (issue 14: closing it at once lost up to 60 % of the lines under a heavy
writer). So no line is lost or repeated, whatever `max_bytes` slice the caller reads.
Truncation is noticed when the file shrinks below the read offset or when the bytes
just before the offset changed (a truncated file that already grew past the old offset).

Inherent windows (no reader can close them): with copytruncate, lines written between
logrotate's copy and its truncate are in neither file, and lines the tailer had not yet
read when the truncate happened are only in the copy; a file rotated away twice between
two `read_lines` calls is never seen.

`read_recent` owns reading the last bytes of the log and of its rotated predecessors
(`waagent.log.1`, `waagent.log.2.gz`, `waagent.log-20240101`, `waagent.log-2024-01-01-<epoch>.gz`).
Lines are returned without their newline, decoded as UTF-8 with replacement characters.
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import re
import stat
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Optional

from waagent_guard.errors import InputError, PermissionDeniedError
from waagent_guard.fsutil import open_regular, read_file

logger = logging.getLogger(__name__)

MAX_LINE_BYTES = 1024 * 1024  # a longer line is returned in pieces of this size
READ_CHUNK_BYTES = 256 * 1024
# What a reader that must stay responsive takes per call (`read_lines(max_bytes=...)`).
READ_SLICE_BYTES = 4 * 1024 * 1024
MARK_BYTES = 64  # bytes before the offset re-checked on every read, to notice a rewrite
# A file rotated away stays open and read while its writer still appends to it (a
# writer reopens its log only when told, e.g. by logrotate's postrotate), until it has
# not grown for this long; at most MAX_ROTATED_OPEN of them (the oldest go first).
LINGER_SECONDS = 5.0
MAX_ROTATED_OPEN = 8
MAX_DECOMPRESSED_BYTES = 512 * 1024 * 1024  # stop reading a (hostile) .gz beyond this
_GZIP_MAGIC = b"\x1f\x8b"
_ROTATED_SUFFIX = re.compile(
    r"(?:\.(?P<number>\d{1,4})|-\d{8}(?:\d{2})?(?:-\d+)?|-\d{4}-\d\d-\d\d(?:-\d+)?)(?:\.gz)?"
)


def _decode_lines(data: bytes) -> list[str]:
    return data.decode("utf-8", "replace").split("\n")


def _open_error(path: Path, error: OSError) -> Exception:
    if isinstance(error, PermissionError):
        return PermissionDeniedError(
            f"{path}: permission denied reading the agent log; run waagent-guard as root"
            " or grant it read access"
        )
    return InputError(f"{path}: cannot read the agent log: {error.strerror or error}")


@dataclass
class _Followed:
    """One open log file and how far it has been read."""

    fd: int
    identity: tuple[int, int]
    offset: int = 0
    partial: bytes = b""
    mark: bytes = b""
    skip_to_newline: bool = False
    quiet_since: float = 0.0  # for a rotated file: when it last grew


class LogTailer:
    """Rotation-safe follower of one log path; see the module docstring."""

    def __init__(
        self,
        path: Path,
        *,
        from_start: bool = False,
        max_line_bytes: int = MAX_LINE_BYTES,
        linger_seconds: float = LINGER_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.max_line_bytes = max(1, max_line_bytes)
        self.linger_seconds = linger_seconds
        self.more_pending = False  # the last bounded read_lines() left data behind
        self._monotonic = monotonic
        self._file: Optional[_Followed] = None
        # Files rotated away that their writers may still append to, oldest first.
        self._rotated: list[_Followed] = []
        if self._open_path() and not from_start:
            followed = self._file
            assert followed is not None
            try:
                size = os.fstat(followed.fd).st_size
                followed.mark = os.pread(
                    followed.fd, min(MARK_BYTES, size), size - min(MARK_BYTES, size)
                )
            except OSError as error:
                self.close()  # no descriptor is left behind by a tailer never returned
                raise _open_error(self.path, error) from error
            followed.offset = size
            # Starting in the middle of a line: its start is not ours, skip to the next one.
            followed.skip_to_newline = bool(followed.mark) and not followed.mark.endswith(b"\n")

    def __enter__(self) -> LogTailer:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    @property
    def draining(self) -> bool:
        """Whether a rotated-away file is still followed (its writer may still append)."""
        return bool(self._rotated)

    def read_lines(self, max_bytes: Optional[int] = None) -> list[str]:
        """Complete lines written since the last call (without newlines).

        Lines come in file order; lines a writer still appends to a file rotated
        away come before the new file's lines of the same call. With `max_bytes`,
        stop after about that much (memory stays bounded on a huge backlog);
        `more_pending` then says another call has more to read.
        """
        lines: list[str] = []
        for block in self.read_blocks(max_bytes):
            lines.extend(block.split("\n"))
        return lines

    def read_blocks(self, max_bytes: Optional[int] = None) -> list[str]:
        """What `read_lines` returns, as blocks: each one or more lines joined by "\n".

        `[line for block in read_blocks() for line in block.split("\n")]` is exactly
        `read_lines()`; a reader that works on whole slices (agent/ingest.py) takes
        the blocks as they were decoded, without a str per line.
        """
        lines: list[str] = []
        budget = [max_bytes]
        self.more_pending = False
        now = self._monotonic()
        # The files rotated away first: a writer that has not reopened its log yet
        # still appends there (logrotate's create mode until postrotate, a daemon that
        # keeps its descriptor). Each is followed until it stopped growing for a while.
        try:
            if self._drain_rotated(lines, budget, now):
                self._follow_path(lines, budget, now)
        except (InputError, PermissionDeniedError, OSError):
            if not lines:
                raise
            # Lines already read (a rotated file's last ones, the start of the new one)
            # are not lost with the error: they are returned now; the next call meets
            # the error again.
            logger.debug("%s: cannot read the new file yet; returning what was read",
                         self.path)
        return lines

    def _drain_rotated(self, lines: list[str], budget: list[Optional[int]], now: float) -> bool:
        """Read the files rotated away; False when the budget ran out first."""
        for old in list(self._rotated):
            complete, grew = self._drain(old, lines, budget)
            if not complete:
                self.more_pending = True
                return False
            if grew:
                old.quiet_since = now
            elif now - old.quiet_since >= self.linger_seconds:
                self._retire(old, lines)
        return True

    def _follow_path(self, lines: list[str], budget: list[Optional[int]], now: float) -> None:
        """Read the file at the path, following it to a new one (see `read_blocks`)."""
        # A few switches per call at most: each one needs a new file at the path.
        for _ in range(4):
            if self._file is None and not self._open_path():
                break
            followed = self._file
            assert followed is not None
            if not self._drain(followed, lines, budget)[0]:
                self.more_pending = True
                break
            current = self._path_identity()
            if current is None or current == followed.identity:
                break  # unchanged, or renamed/deleted and not recreated yet: keep the fd
            # The path names another file now: whatever reached the old one came first,
            # and what its writer still appends is read from the kept descriptor.
            if not self._drain(followed, lines, budget)[0]:
                self.more_pending = True
                break
            logger.info("%s: rotated; following the new file (and the old one while it grows)",
                        self.path)
            followed.quiet_since = now
            self._rotated.append(followed)
            self._file = None
            while len(self._rotated) > MAX_ROTATED_OPEN:
                self._retire(self._rotated[0], lines)

    def close(self) -> None:
        for old in self._rotated:
            os.close(old.fd)
        self._rotated = []
        if self._file is not None:
            os.close(self._file.fd)
        self._file = None

    def _retire(self, old: _Followed, lines: list[str]) -> None:
        if old.partial:
            lines.append(old.partial.decode("utf-8", "replace"))  # its last, unterminated line
        os.close(old.fd)
        self._rotated.remove(old)

    def _open_path(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except FileNotFoundError:
            return False
        except OSError as error:
            raise _open_error(self.path, error) from error
        try:
            status = os.fstat(fd)
        except OSError as error:
            os.close(fd)
            raise _open_error(self.path, error) from error
        if not stat.S_ISREG(status.st_mode):
            os.close(fd)
            raise InputError(
                f"{self.path}: not a regular file; point agent.log_path at the agent log"
            )
        identity = (status.st_dev, status.st_ino)
        for old in self._rotated:
            if old.identity == identity:  # renamed back: carry on where it was
                os.close(fd)
                self._rotated.remove(old)
                self._file = old
                return True
        self._file = _Followed(fd=fd, identity=identity)
        return True

    def _path_identity(self) -> Optional[tuple[int, int]]:
        try:
            status = os.stat(self.path)
        except OSError:
            return None
        return (status.st_dev, status.st_ino)

    def _drain(
        self, followed: _Followed, lines: list[str], budget: list[Optional[int]]
    ) -> tuple[bool, bool]:
        """Read to the end of the file (complete) or until `budget[0]` bytes are spent.

        Returns (complete, whether any byte was read).
        """
        fd = followed.fd
        grew = False
        if self._was_truncated(followed):
            logger.info("%s: truncated (copytruncate); reading from the start", self.path)
            followed.offset = 0
            followed.partial = b""
            followed.mark = b""
            followed.skip_to_newline = False
        while True:
            size = READ_CHUNK_BYTES
            if budget[0] is not None:
                if budget[0] <= 0:
                    return False, grew
                size = min(size, budget[0])  # a small slice is honoured, not rounded up
            try:
                chunk = os.pread(fd, size, followed.offset)
            except OSError as error:
                if error.errno in (errno.EAGAIN, errno.EINTR):
                    return True, grew
                raise _open_error(self.path, error) from error
            if not chunk:
                return True, grew
            grew = True
            if budget[0] is not None:
                budget[0] -= len(chunk)
            followed.offset += len(chunk)
            followed.mark = (followed.mark + chunk[-MARK_BYTES:])[-MARK_BYTES:]
            self._consume(followed, chunk, lines)

    def _was_truncated(self, followed: _Followed) -> bool:
        if os.fstat(followed.fd).st_size < followed.offset:
            return True
        mark = followed.mark
        return bool(mark) and os.pread(followed.fd, len(mark), followed.offset - len(mark)) != mark

    def _consume(self, followed: _Followed, chunk: bytes, lines: list[str]) -> None:
        data = followed.partial + chunk if followed.partial else chunk
        if followed.skip_to_newline:
            newline = data.find(b"\n")
            if newline < 0:
                followed.partial = b""
                return
            data = data[newline + 1 :]
            followed.skip_to_newline = False
        limit = self.max_line_bytes
        end = data.rfind(b"\n")
        if end >= 0:
            if end <= limit:
                lines.append(data[:end].decode("utf-8", "replace"))  # one block of lines
            else:
                for raw in data[:end].split(b"\n"):
                    lines.extend(self._pieces(raw))
            data = data[end + 1 :]
        # Bounded memory: a line that never ends is handed out in pieces.
        while len(data) > limit:
            lines.append(data[:limit].decode("utf-8", "replace"))
            data = data[limit:]
        followed.partial = data

    def _pieces(self, raw: bytes) -> list[str]:
        limit = self.max_line_bytes
        if len(raw) <= limit:
            return [raw.decode("utf-8", "replace")]
        return [raw[at : at + limit].decode("utf-8", "replace") for at in range(0, len(raw), limit)]


def rotated_logs(path: Path) -> list[Path]:
    """Rotated copies of `path` beside it, oldest first (by mtime, then rotation number)."""
    path = Path(path)
    found: list[tuple[float, int, str, Path]] = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError as error:
        logger.warning("%s: cannot list rotated logs: %s", path.parent, error.strerror)
        return []
    for entry in entries:
        if not entry.name.startswith(path.name) or entry.name == path.name:
            continue
        match = _ROTATED_SUFFIX.fullmatch(entry.name[len(path.name) :])
        if match is None:
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        number = int(match.group("number")) if match.group("number") else 0
        found.append((mtime, -number, entry.name, Path(entry.path)))
    found.sort()
    return [item[3] for item in found]


def _plain_tail(path: Path, budget: int) -> bytes:
    # One byte more than the budget: when the file is longer, data[0] is the byte before
    # the tail, which tells whether the tail starts at a line start.
    data, _ = read_file(path, budget + 1, oversize="tail")
    if len(data) <= budget:
        return data
    newline = data.find(b"\n")
    return data[newline + 1 :] if newline >= 0 else b""


def _gzip_tail(path: Path, budget: int) -> bytes:
    # Keep one byte more than the budget: the byte before the tail tells whether the
    # tail starts at a line start (as `_plain_tail` reads the byte before `start`).
    tail = bytearray()
    total = 0
    with os.fdopen(open_regular(path), "rb") as raw, gzip.GzipFile(fileobj=raw) as handle:
        while True:
            chunk = handle.read(READ_CHUNK_BYTES)
            if not chunk:
                break
            total += len(chunk)
            tail += chunk
            if len(tail) > budget + 1:
                del tail[: len(tail) - budget - 1]
            if total > MAX_DECOMPRESSED_BYTES:
                logger.warning("%s: stopped after %d decompressed bytes", path, total)
                break
    if len(tail) <= budget:
        return bytes(tail)
    newline = tail.find(b"\n")
    return bytes(tail[newline + 1 :]) if newline >= 0 else b""


def _tail_bytes(path: Path, budget: int) -> bytes:
    magic = read_file(path, 2, oversize="truncate")[0]
    return _gzip_tail(path, budget) if magic == _GZIP_MAGIC else _plain_tail(path, budget)


def _split(data: bytes) -> list[str]:
    if not data:
        return []
    lines = _decode_lines(data)
    if lines[-1] == "":
        lines.pop()
    return lines


def read_recent(path: Path, *, max_bytes: int, include_rotated: bool = False) -> Iterator[str]:
    """The last `max_bytes` of the log as lines, oldest first, starting at a line start.

    With `include_rotated`, bytes left in the budget go to rotated files, newest first,
    and their tails come out before the current log's. Unreadable rotated files are
    skipped with a warning; an unreadable current log raises a typed error.
    """
    path = Path(path)
    budget = max(0, max_bytes)
    blocks: list[bytes] = []
    try:
        current = _plain_tail(path, budget)
    except FileNotFoundError:
        current = b""
    except OSError as error:
        raise _open_error(path, error) from error
    blocks.append(current)
    budget -= len(current)
    if include_rotated:
        for rotated in reversed(rotated_logs(path)):
            if budget <= 0:
                break
            try:
                data = _tail_bytes(rotated, budget)
            except (OSError, EOFError, zlib.error) as error:
                logger.warning("%s: skipped, cannot read it: %s", rotated, error)
                continue
            blocks.append(data)
            budget -= len(data)
    for block in reversed(blocks):
        yield from _split(block)
