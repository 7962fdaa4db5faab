"""Writing a bundle: plan entries streamed into tar, MANIFEST.json, verify, then publish.

The archive is written under a temporary name (mode 0600) in the destination's
directory, member by member from bounded spools, with the must-haves first and
a running total against the total cap. MANIFEST.json is the last member. Every
byte of the tar stream is verified on its way to the compressor
(`verify.VerifyingWriter`): a surviving secret stops the write and the temporary
file is deleted. After the compressor finished, the file's size must equal what
it wrote. Only then is the archive renamed into place or streamed to stdout. Any
failure to write (a full disk) removes the temporary file and raises `WriteError`.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import queue
import stat
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Callable, Optional, cast

from waagent_guard.bundle.archive import MANIFEST_NAME
from waagent_guard.bundle.compress import TAR_COPY_BYTES, CompressingWriter
from waagent_guard.bundle.plan import Plan, Skipped
from waagent_guard.bundle.sources import (
    CommandRunner,
    MemberSink,
    Opener,
    SourceReader,
    open_regular,
    run_command,
)
from waagent_guard.bundle.verify import VerifyingWriter
from waagent_guard.errors import GuardError, WriteError
from waagent_guard.fsutil import fsync_directory
from waagent_guard.redact import DEFAULT_MAX_LINE_BYTES, DEFAULT_RULES, Rule, redact_text
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)

MANIFEST_FORMAT = "waagent-guard-bundle/1"
MIN_MEMBER_BUDGET = 4096
TOTAL_CAP_REASON = "total size cap reached (--max-total-size / bundle.max_total_bytes)"
_COPY_CHUNK = 1024 * 1024


def check_destination(destination: Path) -> None:
    """`-o PATH` must be absent or a regular file: never replace a device, FIFO, link..."""
    try:
        mode = os.lstat(destination).st_mode
    except FileNotFoundError:
        return
    except OSError as error:
        raise WriteError(f"-o {destination}: cannot check the output path: {error.strerror}; "
                         "pass a new file name") from error
    if stat.S_ISREG(mode):
        return
    kind = ("a directory" if stat.S_ISDIR(mode) else "a symlink" if stat.S_ISLNK(mode)
            else "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    raise WriteError(f"-o {destination}: is {kind}; bundle writes only a new or a regular "
                     "file: pass a file name")


@dataclass
class BundleResult:
    path: Optional[Path]  # None when streamed to stdout
    manifest: dict[str, Any]
    archive_bytes: int


@dataclass
class BundleWriter:
    """Everything outside the plan that writing touches, injected (tests pass their own)."""

    sysroot: Sysroot
    rules: Sequence[Rule] = DEFAULT_RULES
    leak_rules: Sequence[Rule] = DEFAULT_RULES  # the verification always uses every rule
    runner: CommandRunner = run_command
    opener: Opener = open_regular
    progress: Optional[Callable[[str], None]] = None
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES
    never_collect: Optional[tuple[str, ...]] = None
    header: dict[str, Any] = field(default_factory=dict)

    def write(self, plan: Plan, *, top: str, work_dir: Path, max_total_bytes: int,
              compression: str = "gz", destination: Optional[Path] = None,
              stream: Optional[BinaryIO] = None) -> BundleResult:
        """Write, verify, then rename to `destination` or copy to `stream` (exactly one)."""
        if (destination is None) == (stream is None):
            raise ValueError("pass exactly one of destination and stream")
        label = destination or Path(work_dir) / f"{top}.tar.{compression}"
        if destination is not None:
            check_destination(destination)
        try:
            fd, temp_name = tempfile.mkstemp(prefix=f".{top}.", suffix=".tmp", dir=work_dir)
        except OSError as error:
            raise WriteError(f"{label}: cannot create a file in {work_dir}: "
                             f"{error.strerror}; pass -o FILE in a writable directory") from error
        temp = Path(temp_name)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as raw:
                manifest, written = self._write_tar(raw, plan, top, work_dir, max_total_bytes,
                                                    compression)
                raw.flush()
                os.fsync(raw.fileno())
                size = os.fstat(raw.fileno()).st_size
            if size != written:
                raise GuardError(f"{label}: the written archive has {size} bytes, the compressor "
                                 f"wrote {written}; the bundle was deleted")
            if stream is not None:
                with open(temp, "rb") as verified:
                    while chunk := verified.read(_COPY_CHUNK):
                        stream.write(chunk)
                stream.flush()
                temp.unlink()
                return BundleResult(None, manifest, size)
            assert destination is not None
            check_destination(destination)  # again: it may have been swapped meanwhile
            os.replace(temp, destination)
            fsync_directory(destination.parent)
            return BundleResult(destination, manifest, size)
        except OSError as error:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            reason = "disk full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
            raise WriteError(f"{label}: write failed ({reason}); "
                             "no bundle was left behind") from error
        except WriteError as error:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise WriteError(f"{label}: write failed ({error.message}); "
                             "no bundle was left behind") from error
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise

    def _write_tar(self, raw: BinaryIO, plan: Plan, top: str, work_dir: Path,
                   max_total_bytes: int, compression: str) -> tuple[dict[str, Any], int]:
        """Write and verify the archive into `raw`: the manifest, and the bytes written."""
        reader = SourceReader(self.sysroot, Path(work_dir), self.rules, self.opener, self.runner,
                              self.max_line_bytes)
        if self.never_collect is not None:
            reader.never_collect = self.never_collect
        compressor = CompressingWriter(raw, compression)
        try:
            verifier = VerifyingWriter(compressor, self.leak_rules)
            manifest = self._write_members(verifier, plan, top, reader, max_total_bytes)
            verifier.close()
            compressor.close()
        except BaseException:
            compressor.abort()
            raise
        self._report("")
        log.debug("bundle: verified %d bytes, %d of them gated again", verifier.position,
                  verifier.gated_bytes)
        return manifest, compressor.raw_bytes

    def _write_members(self, verifier: VerifyingWriter, plan: Plan, top: str,
                       reader: SourceReader, max_total_bytes: int) -> dict[str, Any]:
        members: list[dict[str, Any]] = []
        skipped: list[Skipped] = list(plan.skipped)
        with tarfile.open(fileobj=cast(BinaryIO, verifier), mode="w",  # type: ignore[call-overload]
                          format=tarfile.PAX_FORMAT, copybufsize=TAR_COPY_BYTES) as archive:
            archiver = _Archiver(archive, verifier)
            try:
                reader.prefetch(plan.entries)
                self._collect(archiver, plan, reader, top, max_total_bytes, members, skipped)
                archiver.finish()
            except BaseException:
                archiver.abort()
                raise
            finally:
                reader.close()
            totals: Counter[str] = Counter()
            for member in members:
                totals.update(member["redactions"])
            manifest = {
                "format": MANIFEST_FORMAT, **self.header, "top": top,
                "total_bytes": sum(member["size"] for member in members),
                "max_total_bytes": max_total_bytes,
                "redactions": dict(sorted(totals.items())),
                "members": members,
                # a reason may quote a failed command's stderr (a traceback with a secret)
                "skipped": [{"source": redact_text(item.source),
                             "reason": redact_text(item.reason), "item": redact_text(item.item)}
                            for item in skipped],
            }
            data = (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()
            sink = MemberSink(reader.spool_dir)
            try:
                sink.write(data)
                _add(archive, verifier, f"{top}/{MANIFEST_NAME}", sink, None)
            finally:
                sink.close()
        return manifest

    def _collect(self, archiver: _Archiver, plan: Plan, reader: SourceReader, top: str,
                 max_total_bytes: int, members: list[dict[str, Any]],
                 skipped: list[Skipped]) -> None:
        """Read, redact and spool each entry; the archiver thread writes the spools meanwhile."""
        written = 0
        count = len(plan.entries)
        for index, entry in enumerate(plan.entries, start=1):
            self._report(f"bundle: {index}/{count} {entry.member}")
            budget = max_total_bytes - written
            if budget < MIN_MEMBER_BUDGET:
                source = getattr(entry, "source", None) or entry.member
                skipped.append(Skipped(str(source), TOTAL_CAP_REASON, entry.item))
                continue
            cap = min(getattr(entry, "max_bytes", budget), budget)
            for result in reader.read(entry, cap):
                if isinstance(result, Skipped):
                    skipped.append(result)
                    continue
                if written + result.sink.size > max_total_bytes:
                    result.sink.close()
                    skipped.append(Skipped(result.source, TOTAL_CAP_REASON, entry.item))
                    continue
                name = f"{top}/{result.member}"
                archiver.add(name, result.sink, result.mtime)  # closes the sink
                written += result.sink.size
                members.append({
                    "name": name, "source": result.source, "kind": result.kind,
                    "size": result.sink.size, "sha256": result.sink.digest.hexdigest(),
                    "truncated": result.truncated,
                    "redactions": dict(sorted(result.redactions.items())),
                    "notes": result.notes,
                })

    def _report(self, message: str) -> None:
        if self.progress is not None:
            self.progress(message)


def _add(archive: tarfile.TarFile, verifier: VerifyingWriter, name: str, sink: MemberSink,
         mtime: Optional[float]) -> None:
    info = tarfile.TarInfo(name)
    info.size = sink.size
    info.mode = 0o600
    info.mtime = int(mtime if mtime is not None else time.time())
    info.uname = info.gname = "root"
    sink.file.seek(0)
    archive.addfile(info, verifier.source(name, sink))  # type: ignore[arg-type]
    verifier.end_member()


class _Archiver:
    """Writes finished spools into the archive on its own thread, one behind the reader.

    Without it the pipeline alternated: while a member was read and redacted the
    compressor had nothing to do, and while tarfile copied the member's spool into the
    compressor's queue the reader waited for deflate. Now member N is copied, verified
    and compressed while member N+1 is read. At most `PENDING` spools wait (bounded
    memory and spool disk). A failure (a secret found, a full disk) is raised by the
    next `add` or by `finish`; the spools of skipped members are closed.
    """

    PENDING = 1

    def __init__(self, archive: tarfile.TarFile, verifier: VerifyingWriter) -> None:
        self._archive = archive
        self._verifier = verifier
        self._queue: queue.Queue[Optional[tuple[str, MemberSink, float]]] = queue.Queue(
            maxsize=self.PENDING)
        self._error: Optional[BaseException] = None
        self._thread = threading.Thread(target=self._work, name="bundle-archive", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            name, sink, mtime = item
            try:
                if self._error is None:
                    _add(self._archive, self._verifier, name, sink, mtime)
            except BaseException as error:  # handed to the reading thread
                self._error = error
            finally:
                sink.close()

    def add(self, name: str, sink: MemberSink, mtime: float) -> None:
        if self._error is not None:
            sink.close()
            raise self._error
        self._queue.put((name, sink, mtime))

    def finish(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        self._error = self._error or RuntimeError("aborted")
        self._queue.put(None)
        self._thread.join()
