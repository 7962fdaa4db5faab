"""The fail-closed verification of a bundle: every byte `tarfile` writes, scanned on its way in.

`VerifyingWriter` sits between `tarfile` and the compressor, so what it scans is exactly
the uncompressed archive: tar headers (member names, pax records), member contents,
MANIFEST.json, padding and the end blocks. A member's content reaches it through a
`SpoolSource` (the file object `tarfile` copies the member from): a `write` of the very
object that source's last `read` returned is that member's content, at a known offset,
and is scanned as one stream with `LeakScanner` (the scan `find_leaks` runs), skipping
only the runs that the redactor's gate found nothing in (`MemberSink.clean`: the same
gate on the same bytes finds nothing again). Any other write (headers, padding, a
member added some other way) is scanned in full, twice: as written, and with NUL
bytes read as line ends, so a tar field or a member that starts after a header is
scanned from a line start. The source's crc32 of what it read back must equal the
sink's crc32 of what the redactor wrote. A finding raises `SecretLeakError` before the
bytes reach the compressor; the writer then deletes the temporary archive.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Optional, Protocol

from waagent_guard.bundle.sources import MemberSink
from waagent_guard.errors import GuardError, SecretLeakError
from waagent_guard.redact import DEFAULT_RULES, Leak, LeakScanner, Rule, redact_text

_NUL_AS_NEWLINE = bytes.maketrans(b"\x00", b"\n")


class Writable(Protocol):
    def write(self, data: bytes) -> int: ...


class SpoolSource:
    """The file object `tarfile.addfile` reads one member's content from."""

    def __init__(self, name: str, sink: MemberSink) -> None:
        self.name = name
        self.sink = sink
        self.last: Optional[bytes] = None
        self.last_offset = 0
        self.offset = 0
        self.crc = 0
        self._claim = 0  # the first of sink.clean's ranges not yet behind `offset`

    def read(self, size: int = -1) -> bytes:
        data = self.sink.file.read(size)
        self.last = data
        self.last_offset = self.offset
        self.offset += len(data)
        self.crc = zlib.crc32(data, self.crc)
        return data

    def clean_in_last(self) -> list[tuple[int, int]]:
        """The sink's clean ranges inside the last read, relative to it."""
        start, end = self.last_offset, self.offset
        flat = self.sink.clean
        ranges: list[tuple[int, int]] = []
        index = self._claim
        while index < len(flat):
            claim_start, claim_end = flat[index], flat[index + 1]
            if claim_start >= end:
                break
            if claim_end > start:
                ranges.append((max(claim_start, start) - start, min(claim_end, end) - start))
            if claim_end > end:
                break
            index += 2
        self._claim = index
        return ranges


class VerifyingWriter:
    """A write-only file object for `tarfile.open(fileobj=...)` that scans, then passes on."""

    def __init__(self, inner: Writable, rules: Sequence[Rule] = DEFAULT_RULES) -> None:
        self._inner = inner
        self._rules = rules
        self._source: Optional[SpoolSource] = None
        self._member: Optional[LeakScanner] = None
        self._other: Optional[tuple[LeakScanner, LeakScanner]] = None
        self._other_offset = 0
        self._label = "the first tar header"
        self.position = 0
        self.skipped_bytes = 0  # member bytes not gated again (clean ranges)
        self.gated_bytes = 0

    def source(self, name: str, sink: MemberSink) -> SpoolSource:
        """Start a member: its header comes next, then its content read from `sink`."""
        self._finish_member()
        self._label = f"the tar header of {name}"
        self._source = SpoolSource(name, sink)
        return self._source

    def end_member(self) -> None:
        """The member is written: finish its scan and compare the crc32s."""
        source = self._source
        if source is None:
            return
        self._finish_member()
        if source.offset != source.sink.size or source.crc != source.sink.crc:
            raise GuardError(f"{source.name}: the spooled member changed between redaction and "
                             "archiving (size or crc32 differ); the bundle was deleted. Is "
                             "something else writing to the output directory?")
        self._label = f"the padding after {source.name}"

    def write(self, data: bytes) -> int:
        source = self._source
        if source is not None and data is source.last and data:
            source.last = None
            self._finish_other()
            if self._member is None:
                self._member = LeakScanner(self._rules)
            clean = source.clean_in_last()
            self._raise(self._member.feed(data, clean), source.name, source.last_offset,
                        member=True)
            skipped = sum(end - start for start, end in clean)
            self.skipped_bytes += skipped
        else:
            self._finish_member()
            if self._other is None:
                self._other = (LeakScanner(self._rules), LeakScanner(self._rules))
                self._other_offset = self.position
            raw, nul = self._other
            self._raise(raw.feed(data), self._label, self._other_offset)
            self._raise(nul.feed(data.translate(_NUL_AS_NEWLINE)), self._label, self._other_offset)
        self.position += len(data)
        return self._inner.write(data)

    def close(self) -> None:
        """Finish the scans of what was written last (call before publishing)."""
        self._finish_member()
        self._finish_other()

    def tell(self) -> int:
        return self.position

    def _finish_member(self) -> None:
        scanner, self._member = self._member, None
        if scanner is not None:
            self.gated_bytes += scanner.gated_bytes
            assert self._source is not None
            self._raise(scanner.finish(), self._source.name, 0, member=True)

    def _finish_other(self) -> None:
        scanners, self._other = self._other, None
        if scanners is not None:
            for scanner in scanners:
                self.gated_bytes += scanner.gated_bytes
                self._raise(scanner.finish(), self._label, self._other_offset)

    @staticmethod
    def _raise(leak: Optional[Leak], where: str, base: int, *, member: bool = False) -> None:
        if leak is None:
            return
        where = redact_text(where)  # a member's name can hold the very secret found
        if member:
            raise SecretLeakError(
                f"{where}: a secret ({leak.rule}) survived redaction near byte {leak.offset}; "
                "the bundle was deleted. This is a bug in the redaction rules: report the "
                "rule name, never the file")
        raise SecretLeakError(
            f"{where}: a secret ({leak.rule}) near archive byte {base + leak.offset}, outside "
            "any redacted member content; the bundle was deleted. Report the rule name, "
            "never the file")

