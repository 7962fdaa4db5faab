"""Reading one plan entry into redacted member spools: files, rotated .gz, zips, commands.

Every read is bounded: at most the size seen by fstat (a growing file is read as
it was), at most the cap (the tail of logs, the head of the rest), in fixed
chunks through a `Redactor` into a spool (memory up to 1 MiB, then a temp
file in the output's directory). Files are opened with O_NOFOLLOW|O_NONBLOCK
after an lstat says they are regular, and fstat must agree: FIFOs, devices and
swapped-in symlinks are never read. Source trouble (vanished, unreadable,
corrupt) becomes a `Skipped` with the reason; trouble writing the spool is a
`WriteError` (the disk is full: the whole bundle stops).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import logging
import os
import re
import stat
import tempfile
import threading
import time
import zipfile
import zlib
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, BinaryIO, Callable, Optional, Union, cast

from waagent_guard import fsutil
from waagent_guard.bundle.catalogue import NEVER_COLLECT, SECRET_REASON
from waagent_guard.bundle.plan import CommandEntry, FileEntry, ListingEntry, Skipped, is_secret
from waagent_guard.bundle.walk import resolve_in_root
from waagent_guard.errors import WriteError
from waagent_guard.execute import CommandOutcome as CommandOutcome
from waagent_guard.execute import run_command as run_command
from waagent_guard.redact import (
    DEFAULT_MAX_LINE_BYTES,
    DEFAULT_RULES,
    MARKER,
    WHOLE_FILE_RULE,
    Redactor,
    Rule,
)
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

CHUNK = 64 * 1024
PUMP_CHUNK = 1024 * 1024  # the redactor's gate scans a chunk per literal: fewer, bigger calls
SPOOL_MEMORY = 1024 * 1024
MAX_CLEAN_RANGES = 256 * 1024  # per member: 4 MiB of offsets; further runs are gated again
STDERR_TAIL = 4096
GZIP_RATIO_LIMIT = 200  # decompressed bytes per compressed byte before we call it a bomb
LISTING_LIMIT = 10000

Opener = Callable[[Path], int]


def open_regular(path: Path) -> int:
    """Open for reading without following a final symlink or blocking on a FIFO.

    The guard's one opener (`fsutil.open_regular`, O_NOFOLLOW here): anything but a
    regular file is refused with `NotRegularFile`.
    """
    return fsutil.open_regular(path, nofollow=True)


class MemberSink:
    """A spool for one member that counts and hashes; write failures are `WriteError`s.

    `clean` holds (start, end) offset pairs, flat, of the runs the redactor's gate found
    nothing in (`Redactor.clean_ranges`): the verification does not gate them again
    (waagent_guard/bundle/verify.py). `crc` (crc32 of every byte written) lets it check
    that what `tarfile` reads back is what was written.
    """

    def __init__(self, directory: Optional[Path]) -> None:
        spool = tempfile.SpooledTemporaryFile(  # noqa: SIM115 (closed by owner)
            max_size=SPOOL_MEMORY, dir=None if directory is None else str(directory)
        )
        self.file = cast(BinaryIO, spool)
        self.size = 0
        self.digest = hashlib.sha256()
        self.crc = 0
        self.clean: array[int] = array("q")

    def write(self, data: bytes, clean: Sequence[tuple[int, int]] = ()) -> None:
        if not data:
            return
        try:
            self.file.write(data)
        except OSError as error:
            raise _write_error(error, "spooling a member") from error
        for start, end in clean:
            if len(self.clean) >= 2 * MAX_CLEAN_RANGES:
                break
            self.clean.append(self.size + start)
            self.clean.append(self.size + end)
        self.size += len(data)
        self.digest.update(data)
        self.crc = zlib.crc32(data, self.crc)

    def close(self) -> None:
        self.file.close()


def _write_error(error: OSError, doing: str) -> WriteError:
    reason = "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
    return WriteError(f"{doing}: {reason}")


@dataclass
class Collected:
    """A finished member: redacted content in `sink`, with what the manifest says about it."""

    member: str
    source: str
    kind: str  # file | command | listing
    sink: MemberSink
    truncated: bool
    redactions: dict[str, int]
    mtime: float
    notes: list[str] = field(default_factory=list)


Result = Union[Collected, Skipped]


class LineFilter:
    """Keep only lines matching `pattern` (bounded: over-long lines are dropped)."""

    def __init__(self, pattern: str, max_line_bytes: int) -> None:
        self.pattern = re.compile(pattern.encode())
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()
        self._dropping = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        for piece in data.splitlines(keepends=True):
            complete = piece.endswith(b"\n")
            if not self._dropping:
                self._partial += piece
                if len(self._partial) > self.max_line_bytes:
                    self._partial.clear()
                    self._dropping = True
            if complete:
                if not self._dropping and self.pattern.search(self._partial):
                    out.append(bytes(self._partial))
                self._partial.clear()
                self._dropping = False
        return b"".join(out)

    def finish(self) -> bytes:
        line = bytes(self._partial)
        self._partial.clear()
        return line if line and not self._dropping and self.pattern.search(line) else b""


def pump(read: Callable[[int], bytes], limit: int, redactor: Redactor, sink: MemberSink, *,
         skip_first_line: bool = False, line_filter: Optional[LineFilter] = None) -> int:
    """Copy up to `limit` bytes from `read` through the redactor; returns the bytes read."""
    consumed = 0
    skipping = skip_first_line
    while consumed < limit:
        chunk = read(min(PUMP_CHUNK, limit - consumed))
        if not chunk:
            break
        consumed += len(chunk)
        if skipping:
            newline = chunk.find(b"\n")
            if newline < 0:
                continue
            chunk = chunk[newline + 1:]
            skipping = False
        if line_filter is not None:
            chunk = line_filter.feed(chunk)
        out = redactor.feed(chunk)
        sink.write(out, redactor.clean_ranges(out))
    if line_filter is not None:
        sink.write(redactor.feed(line_filter.finish()))
    return consumed


@dataclass
class SourceReader:
    """Turns plan entries into `Collected` members or `Skipped` reasons."""

    sysroot: Sysroot
    spool_dir: Optional[Path]
    rules: Sequence[Rule] = DEFAULT_RULES
    opener: Opener = open_regular
    runner: Optional[CommandRunner] = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    never_collect: tuple[str, ...] = NEVER_COLLECT
    _prefetch: Optional[_Prefetch] = field(default=None, init=False, repr=False)

    def redactor(self, *, starts_mid_stream: bool = False) -> Redactor:
        return Redactor(self.rules, max_line_bytes=self.max_line_bytes,
                        starts_mid_stream=starts_mid_stream)

    def read(self, entry: Union[FileEntry, CommandEntry, ListingEntry],
             cap: int) -> Iterator[Result]:
        if isinstance(entry, FileEntry):
            yield from self._file(entry, cap)
        elif isinstance(entry, CommandEntry):
            yield from self._command(entry, cap)
        else:
            yield self._listing(entry, cap)

    # --- files
    def _file(self, entry: FileEntry, cap: int) -> Iterator[Result]:
        path = self.sysroot.path(entry.real)
        try:
            before = os.lstat(path)
        except FileNotFoundError:
            yield Skipped(entry.source, "vanished before it was read", entry.item)
            return
        except OSError as error:
            yield Skipped(entry.source, f"unreadable: {error.strerror}", entry.item)
            return
        if not stat.S_ISREG(before.st_mode):
            yield Skipped(entry.source, "not a regular file when read, never opened", entry.item)
            return
        try:
            fd = self.opener(path)
        except FileNotFoundError:
            yield Skipped(entry.source, "vanished before it was read", entry.item)
            return
        except OSError as error:
            if error.errno == errno.ELOOP or (isinstance(error, fsutil.NotRegularFile)
                                              and error.kind == "a symbolic link"):
                reason = "became a symlink while read, not followed"
            elif isinstance(error, fsutil.NotRegularFile):
                reason = f"replaced while read ({error.kind}), never read"
            else:
                reason = f"unreadable: {error.strerror or error}"
            yield Skipped(entry.source, reason, entry.item)
            return
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or (info.st_dev, info.st_ino) != (
                before.st_dev, before.st_ino
            ):
                yield Skipped(entry.source, "replaced while read, not read", entry.item)
                return
            if entry.decode == "gzip":
                yield self._gzip(entry, fd, info, cap)
            elif entry.decode == "zip":
                yield from self._zip(entry, fd, cap)
            else:
                # Bounded by the size seen before opening: later growth is not read.
                yield self._plain(entry, fd, before.st_size, cap)
        except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as error:
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            yield Skipped(entry.source, f"read failed: {reason}", entry.item)
        finally:
            os.close(fd)

    def _collected(self, entry: FileEntry, member: str, sink: MemberSink, redactor: Redactor,
                   truncated: bool, notes: list[str]) -> Collected:
        sink, counts = self._checked(sink, redactor, notes)
        return Collected(member, entry.source, "file", sink, truncated, counts, entry.mtime, notes)

    def _checked(self, sink: MemberSink, redactor: Redactor,
                 notes: list[str]) -> tuple[MemberSink, dict[str, int]]:
        """The member, or a one-line stand-in when a secret survived its line redaction.

        A mutated ovf-env.xml or *.settings can defeat the line rules; the file is then
        redacted as a whole (and says so) instead of failing the whole support set.
        """
        if redactor.leaked is None:
            return sink, dict(redactor.counts)
        sink.close()
        whole = MemberSink(self.spool_dir)
        whole.write(MARKER[:-1] + f": whole file, a {redactor.leaked} secret survived "
                    "line redaction]\n".encode())
        notes.append(f"redacted as a whole: a {redactor.leaked} secret survived line redaction")
        return whole, {WHOLE_FILE_RULE: 1}

    def _plain(self, entry: FileEntry, fd: int, size: int, cap: int) -> Result:
        truncated = size > cap
        start = size - cap if truncated and entry.keep == "tail" else 0
        length = min(size, cap)
        os.lseek(fd, start, os.SEEK_SET)
        redactor = self.redactor(starts_mid_stream=start > 0)
        sink = MemberSink(self.spool_dir)
        try:
            consumed = pump(lambda n: os.read(fd, n), length, redactor, sink,
                            skip_first_line=start > 0)
            notes: list[str] = []
            if consumed < length:
                truncated = True
                notes.append(f"shrank while read: {consumed} of {length} bytes")
            if truncated:
                notes.append(f"kept the {entry.keep} {min(length, consumed)} of {size} bytes")
            sink.write(redactor.finish(keep_partial_line=not (truncated and entry.keep == "head")))
        except BaseException:
            sink.close()
            raise
        return self._collected(entry, entry.member, sink, redactor, truncated, notes)

    def _gzip(self, entry: FileEntry, fd: int, info: os.stat_result, cap: int) -> Result:
        limit = max(info.st_size * GZIP_RATIO_LIMIT, CHUNK)
        total = 0
        with _gunzip(fd, info.st_size) as stream:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                if total > limit:
                    return Skipped(entry.source, f"decompresses to more than {limit} bytes "
                                   "(a gzip bomb?)", entry.item)
        os.lseek(fd, 0, os.SEEK_SET)
        truncated = total > cap
        skip = total - cap if truncated else 0
        redactor = self.redactor(starts_mid_stream=skip > 0)
        sink = MemberSink(self.spool_dir)
        try:
            with _gunzip(fd, info.st_size) as stream:
                remaining = skip
                while remaining > 0:
                    remaining -= len(stream.read(min(CHUNK, remaining))) or remaining
                pump(stream.read, min(total, cap), redactor, sink, skip_first_line=skip > 0)
            sink.write(redactor.finish())
        except BaseException:
            sink.close()
            raise
        notes = ["decompressed from gzip; stored as plain text"]
        if truncated:
            notes.append(f"kept the tail {cap} of {total} decompressed bytes")
        return self._collected(entry, entry.member, sink, redactor, truncated, notes)

    def _zip(self, entry: FileEntry, fd: int, cap: int) -> Iterator[Result]:
        with os.fdopen(os.dup(fd), "rb") as handle, zipfile.ZipFile(handle) as archive:
            for info in archive.infolist():
                name = f"{entry.source}:{info.filename}"
                parts = PurePosixPath(info.filename).parts
                if info.is_dir():
                    continue
                if not parts or PurePosixPath(info.filename).is_absolute() or ".." in parts:
                    yield Skipped(name, "unsafe name inside the zip, not read", entry.item)
                    continue
                if is_secret(info.filename, self.never_collect):
                    yield Skipped(name, SECRET_REASON, entry.item)
                    continue
                redactor = self.redactor()
                sink = MemberSink(self.spool_dir)
                try:
                    with archive.open(info) as stream:
                        pump(stream.read, cap, redactor, sink)
                    truncated = info.file_size > cap
                    sink.write(redactor.finish(keep_partial_line=not truncated))
                except BaseException:
                    sink.close()
                    raise
                member = f"{entry.member}/{'/'.join(parts)}"
                notes = ["extracted from the zip; stored as plain text"]
                yield self._collected(entry, member, sink, redactor, truncated, notes)

    # --- commands
    def prefetch(self, entries: Sequence[Union[FileEntry, CommandEntry, ListingEntry]]) -> None:
        """Run the commands among `entries` on a thread, ahead of `read` (see `_Prefetch`)."""
        commands = [entry for entry in entries if isinstance(entry, CommandEntry)]
        if commands:
            self._prefetch = _Prefetch(commands, self._run)

    def close(self) -> None:
        if self._prefetch is not None:
            self._prefetch.close()
            self._prefetch = None

    def _run(self, entry: CommandEntry) -> _Ran:
        runner = self.runner or run_command
        out = tempfile.TemporaryFile(dir=self.spool_dir)  # noqa: SIM115 (the caller closes)
        try:
            err = tempfile.TemporaryFile(dir=self.spool_dir)  # noqa: SIM115
        except BaseException:
            out.close()
            raise
        try:
            return out, err, runner(entry.argv, entry.timeout, cast(BinaryIO, out),
                                    cast(BinaryIO, err))
        except BaseException:
            out.close()
            err.close()
            raise

    def _command(self, entry: CommandEntry, cap: int) -> Iterator[Result]:
        source = " ".join(entry.argv)
        ran = self._prefetch.take(entry) if self._prefetch is not None else None
        out, err, outcome = ran if ran is not None else self._run(entry)
        with out, err:
            if outcome.error is not None:
                yield Skipped(source, f"not run: {outcome.error}", entry.item)
                return
            err.seek(0, os.SEEK_END)
            err_size = err.tell()
            err.seek(max(0, err_size - STDERR_TAIL))
            stderr = err.read(STDERR_TAIL)
            if entry.ok_returncodes is not None and outcome.returncode not in entry.ok_returncodes:
                last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
                yield Skipped(source, f"failed with exit status {outcome.returncode}: "
                              f"{last[0][:300]}", entry.item)
                return
            size = out.seek(0, os.SEEK_END)
            truncated = size > cap
            out.seek(size - cap if truncated else 0)
            redactor = self.redactor(starts_mid_stream=truncated)
            sink = MemberSink(self.spool_dir)
            try:
                line_filter = (LineFilter(entry.line_filter, self.max_line_bytes)
                               if entry.line_filter else None)
                pump(out.read, min(size, cap), redactor, sink, skip_first_line=truncated,
                     line_filter=line_filter)
                sink.write(redactor.finish())
            except BaseException:
                sink.close()
                raise
        notes = [f"exit status {outcome.returncode}"]
        sink, counts = self._checked(sink, redactor, notes)
        if entry.line_filter:
            notes.append(f"only lines matching {entry.line_filter}")
        if truncated:
            notes.append(f"kept the tail {cap} of {size} bytes")
        yield Collected(entry.member, source, "command", sink, truncated, counts, time.time(),
                        notes)
        if stderr:
            yield self._bytes_member(entry.member.removesuffix(".txt") + ".stderr.txt",
                                     f"{source} (stderr)", "command", stderr,
                                     err_size > STDERR_TAIL, [f"the last {STDERR_TAIL} bytes"])

    # --- listings
    def _listing(self, entry: ListingEntry, cap: int) -> Result:
        text = render_listing(self.sysroot, entry.directory)
        if text is None:
            return Skipped(entry.directory, "directory missing or unreadable", entry.item)
        return self._bytes_member(entry.member, entry.directory, "listing", text[:cap],
                                  len(text) > cap, ["ls -alF style, made by the guard"])

    def _bytes_member(self, member: str, source: str, kind: str, data: bytes, truncated: bool,
                      notes: list[str]) -> Collected:
        redactor = self.redactor(starts_mid_stream=truncated and kind == "command")
        sink = MemberSink(self.spool_dir)
        try:
            sink.write(redactor.feed(data))
            sink.write(redactor.finish())
        except BaseException:
            sink.close()
            raise
        sink, counts = self._checked(sink, redactor, notes)
        return Collected(member, source, kind, sink, truncated, counts, time.time(), notes)


_Ran = tuple[IO[bytes], IO[bytes], CommandOutcome]


class _Prefetch:
    """The plan's commands, run in plan order on one thread while files are read.

    A bundle used to wait for each command (the guard's own status and doctor take a
    second or two) while the compressor idled. At most `AHEAD` finished outputs wait
    (temporary files). `take` waits for its command, or returns None (the caller runs
    it itself) when the thread failed on it or ended. Commands before the one taken
    were passed over (the total cap): their outputs are dropped, or they are not run.
    The runner's own timeout bounds each command.
    """

    AHEAD = 2

    def __init__(self, entries: list[CommandEntry], run: Callable[[CommandEntry], _Ran]) -> None:
        self._entries = entries
        self._run = run
        self._done: dict[int, Optional[_Ran]] = {}  # index -> output (None: the run failed)
        self._wanted = 0  # the reader is at this index: earlier ones are never taken
        self._condition = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="bundle-commands", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        for index, entry in enumerate(self._entries):
            with self._condition:
                while not self._closed and len(self._done) >= self.AHEAD:
                    self._condition.wait()
                if self._closed:
                    return
                if index < self._wanted:
                    continue
            ran: Optional[_Ran]
            try:
                ran = self._run(entry)
            except Exception:  # the reading thread runs it again and reports it
                ran = None
            with self._condition:
                if self._closed or index < self._wanted:
                    _close(ran)
                    if self._closed:
                        return
                    continue
                self._done[index] = ran
                self._condition.notify_all()

    def take(self, entry: CommandEntry) -> Optional[_Ran]:
        index = next((i for i, known in enumerate(self._entries) if known is entry), None)
        if index is None:
            return None
        with self._condition:
            self._wanted = max(self._wanted, index)
            for earlier in [i for i in self._done if i < index]:
                _close(self._done.pop(earlier))
            self._condition.notify_all()
            while index not in self._done and self._thread.is_alive():
                self._condition.wait(1.0)
            ran = self._done.pop(index, None)
            self._condition.notify_all()
            return ran

    def close(self) -> None:
        with self._condition:
            self._closed = True
            for ran in self._done.values():
                _close(ran)
            self._done.clear()
            self._condition.notify_all()
        # A command still running holds its files in the output directory: wait for it
        # (the runner's timeout bounds that), so nothing is left open behind the bundle.
        self._thread.join()


def _close(ran: Optional[_Ran]) -> None:
    if ran is not None:
        ran[0].close()
        ran[1].close()


def _gunzip(fd: int, limit: int) -> gzip.GzipFile:
    return gzip.GzipFile(fileobj=cast(BinaryIO, _FdReader(fd, limit)), mode="rb")


class _FdReader:
    """A read-only file object over a descriptor that stops at `limit` bytes."""

    def __init__(self, fd: int, limit: int) -> None:
        self.fd = fd
        self.remaining = limit

    def read(self, size: int = -1) -> bytes:
        if size < 0 or size > self.remaining:
            size = self.remaining
        data = os.read(self.fd, size) if size else b""
        self.remaining -= len(data)
        return data

    def readable(self) -> bool:
        return True


def render_listing(sysroot: Sysroot, directory: str) -> Optional[bytes]:
    """`ls -alF` of one directory (numeric owners, UTC times), bounded to LISTING_LIMIT entries."""
    real = resolve_in_root(sysroot, directory)
    if real is None:
        return None
    try:
        with os.scandir(sysroot.path(real)) as entries:
            names = sorted(entry.name for entry in entries)
    except OSError:
        return None
    lines = [f"# {directory}\n"]
    for name in [".", "..", *names][:LISTING_LIMIT]:
        path = sysroot.path(real) / name
        try:
            info = os.lstat(path)
        except OSError as error:
            lines.append(f"?????????? {name} ({error.strerror})\n")
            continue
        suffix = ""
        if stat.S_ISDIR(info.st_mode):
            suffix = "/"
        elif stat.S_ISLNK(info.st_mode):
            try:
                suffix = f"@ -> {os.readlink(path)}"
            except OSError:
                suffix = "@"
        elif stat.S_ISFIFO(info.st_mode):
            suffix = "|"
        elif stat.S_ISSOCK(info.st_mode):
            suffix = "="
        elif info.st_mode & 0o111:
            suffix = "*"
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(info.st_mtime))
        lines.append(f"{stat.filemode(info.st_mode)} {info.st_nlink:3d} {info.st_uid:5d} "
                     f"{info.st_gid:5d} {info.st_size:12d} {when} {name}{suffix}\n")
    if len(names) + 2 > LISTING_LIMIT:
        lines.append(f"# ... {len(names) + 2 - LISTING_LIMIT} more entries not listed\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


CommandRunner = Callable[[Sequence[str], float, BinaryIO, BinaryIO], CommandOutcome]
