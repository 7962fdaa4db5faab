"""Records of /var/log/waagent.log: the five line formats, continuation lines, local time.

This module owns turning physical lines into `LogRecord`s. The agent has written five
layouts over the years, often mixed in one file (AGENT.md §3); they are tried in order,
the last one being the loosest:

1. `2023-03-13T15:44:04.906673Z INFO ExtHandler ExtHandler msg` (>= 2.2.47: UTC, thread, prefix)
2. `2020-03-31T21:19:09.111829Z INFO Daemon msg` (2.2.46: UTC, prefix only)
3. `2021/03/30 19:35:35.971742 INFO Daemon msg` (2.2.31-2.2.45: guest local time, prefix)
4. `2017/06/14 22:46:43.331214 WARNING msg` (<= 2.2.26: local time, no prefix)
5. `2021/03/30 19:45:31 [Pub.Type-1.0] msg` (extensions' bundled library: no µs; no level,
   or a level glued to the prefix: `2021/03/30 19:45:31 ERROR:[Pub.Type-1.0] msg`)

A line matching none of them continues the previous record (tracebacks, `[stdout]` /
`[stderr]` blocks). Continuation lines seen before any record form a record of format 0
with no timestamp and no level.

Formats 1 and 2 cannot be told apart by shape alone. The rule used here: a line is
format 1 when its fourth token is a known prefix (Daemon, ExtHandler, LogCollector,
Firewall or `[Publisher.Type-version]`), or when its third token is a name only ever used
for a thread (MainThread, MonitorHandler, EnvHandler, ... : a CamelCase word ending in
Handler, Collector, Monitor or Thread that is not itself a prefix; format 1 then has no
prefix, as in `INFO MainThread Fetched a new incarnation ...`). Anything else is format 2.
A prefix-like word followed by a verb ("Daemon is already running") is message text.

This module imports nothing of the package: `logevents.py` (what records mean) and
`tail.py` (reading the file) build on it, and `log.py` gathers the three.
"""

from __future__ import annotations

import io
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Optional
from zoneinfo import ZoneInfo

from waagent_guard.fsutil import read_file

logger = logging.getLogger(__name__)

LEVELS = ("VERBOSE", "INFO", "WARNING", "ERROR")
PREFIXES = frozenset({"Daemon", "ExtHandler", "LogCollector", "Firewall"})

# A record that keeps growing with continuation lines (a binary file, a runaway
# traceback) is cut into several records so memory stays bounded; the raw lines
# of all records still add up to the input.
MAX_RECORD_LINES = 1000
MAX_RECORD_CHARS = 4 * 1024 * 1024

_UTC = timezone.utc
# Timestamps repeat within a second and the log moves forward: a few hundred cached
# seconds serve a live tail and a bulk read alike (4,096 grew the daemon by ~0.2 MiB).
_SECONDS_CACHE_SIZE = 256
_ISO_HEAD = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z"
    r" (VERBOSE|INFO|WARNING|ERROR)(?: |$)"
)
_SLASH_LEVEL_HEAD = re.compile(
    r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{1,6}) (VERBOSE|INFO|WARNING|ERROR)(?: |$)"
)
_SLASH_PLAIN_HEAD = re.compile(r"(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?(?: |$)")
_EXTENSION_PREFIX = re.compile(r"\[[^\]\s]+-\d[^\]\s]*\]")
# Extensions' bundled library may put the level first: `ERROR:[Pub.Type-1.0] message`.
_EXTENSION_LEVEL = re.compile(r"(VERBOSE|INFO|WARNING|WARN|ERROR):(?=\[)")
# A prefix-like first word followed by one of these is the start of a message written
# without a prefix ("Daemon is already running", "Firewall appears established"), not a
# prefix: agent messages after a prefix start with a capital, never with such a verb.
_MESSAGE_VERBS = frozenset(
    {
        "is",
        "are",
        "was",
        "were",
        "appears",
        "appear",
        "seems",
        "has",
        "have",
        "had",
        "will",
        "would",
        "not",
        "already",
    }
)


def _is_prefix(word: str, following: str) -> bool:
    """Whether `word` is a log prefix, given the text that follows it."""
    if word in PREFIXES:
        return following.partition(" ")[0] not in _MESSAGE_VERBS
    return word[:1] == "[" and _EXTENSION_PREFIX.fullmatch(word) is not None


_THREAD_NAME = re.compile(
    r"(?:MainThread|Thread-\d+|[A-Z][A-Za-z]*(?:Handler|Collector|Monitor|Thread))"
)
_ZONEINFO_MARKER = "/zoneinfo/"
# A TZif file is a few KiB; the largest in tzdata is under 4 KiB.
MAX_TZIF_BYTES = 256 * 1024


@dataclass(frozen=True)
class LogRecord:
    """One logical log entry: a header line plus its continuation lines."""

    timestamp: Optional[datetime]  # aware, UTC (local-time formats converted from the guest zone)
    level: Optional[str]  # VERBOSE|INFO|WARNING|ERROR; None for format 0 and level-less format 5
    thread: Optional[str]
    prefix: Optional[str]
    message: str  # header message and continuation lines joined by "\n", EOLs removed
    lines: tuple[str, ...]  # the physical lines exactly as fed
    format: int  # 1..5; 0 for continuation lines that preceded any record


def guest_timezone(sysroot_etc_localtime: Path) -> tzinfo:
    """The guest's local zone from its /etc/localtime (a TZif file); UTC when missing or invalid.

    An absolute symlink (`/etc/localtime -> /usr/share/zoneinfo/Europe/Berlin`) would
    resolve on the host when the guest is mounted elsewhere, so a link into a zoneinfo
    directory is looked up by zone name; anything else is read as a TZif file.
    """
    path = Path(sysroot_etc_localtime)
    try:
        target = str(path.readlink()) if path.is_symlink() else ""
    except OSError:
        target = ""
    if _ZONEINFO_MARKER in target:
        key = target.split(_ZONEINFO_MARKER, 1)[1]
        try:
            return ZoneInfo(key)
        except Exception:  # a guest's link may name anything (NUL, '..', a dir)
            logger.debug("%s: zone %r not known here; reading the file", path, key)
    try:
        data = read_file(path, MAX_TZIF_BYTES)[0]
    except OSError as error:
        if not isinstance(error, FileNotFoundError):
            logger.info("%s: cannot read the guest time zone (%s); assuming UTC", path,
                        error.strerror or error)
        return _UTC
    try:
        zone = ZoneInfo.from_file(io.BytesIO(data), key=str(path))
        datetime(2000, 1, 1, tzinfo=zone).utcoffset()  # a zone that cannot answer is no zone
    except Exception as error:  # truncated/NUL TZif: struct.error, AssertionError
        logger.info("%s: not a valid time zone file (%s); assuming UTC", path,
                    type(error).__name__)
        return _UTC
    return zone


def _default_timezone() -> tzinfo:
    return guest_timezone(Path("/etc/localtime"))


# timestamp, level, thread, prefix, message of the first line, format
_Head = tuple[Optional[datetime], Optional[str], Optional[str], Optional[str], str, int]
_Seconds = tuple[int, int, int, int, int, int]
_new_object = object.__new__
_set_attribute = object.__setattr__


def _make_record(head: _Head, message: str, lines: tuple[str, ...]) -> LogRecord:
    # Hot path (one call per record): installing __dict__ in one step skips the seven
    # object.__setattr__ calls a frozen dataclass's __init__ makes (twice as fast).
    record: LogRecord = _new_object(LogRecord)
    _set_attribute(
        record,
        "__dict__",
        {
            "timestamp": head[0],
            "level": head[1],
            "thread": head[2],
            "prefix": head[3],
            "message": message,
            "lines": lines,
            "format": head[5],
        },
    )
    return record


class RecordParser:
    """Incremental parser: feed physical lines, get the records they complete.

    A record is complete when the next header line arrives (or on `flush`), because
    until then more continuation lines may follow. Never raises on content.
    """

    def __init__(self, tz: Optional[tzinfo] = None) -> None:
        self._tz = tz if tz is not None else _default_timezone()
        # The record being built: its header fields, first raw line, and continuation
        # lines (messages, raw lines, size) once there are any.
        self._head: Optional[_Head] = None
        self._first_line = ""
        self._more_messages: list[str] = []
        self._more_lines: list[str] = []
        self._chars = 0
        # Timestamps repeat their date-and-seconds part across lines: cache the parts.
        self._utc_seconds: dict[str, _Seconds] = {}
        self._local_seconds: dict[str, _Seconds] = {}

    def feed(self, line: str) -> list[LogRecord]:
        """Add one physical line (with or without its EOL); return records it completed."""
        text = line[:-1] if line[-1:] == "\n" else line
        if text[-1:] == "\r":
            text = text[:-1]
        header = self._parse_header(text)
        if header is None:
            return self._continue(text, line)
        done = self._finish() if self._head is not None else None
        self._head = header
        self._first_line = line
        self._chars = len(line)
        return [done] if done is not None else []

    def flush(self) -> list[LogRecord]:
        """Return the record still being built (end of input)."""
        if self._head is None:
            return []
        done = self._finish()
        self._head = None
        return [done]

    def _continue(self, text: str, line: str) -> list[LogRecord]:
        if self._head is None:
            self._start_orphan(text, line)
            return []
        if (
            len(self._more_lines) + 1 < MAX_RECORD_LINES
            and self._chars + len(line) <= MAX_RECORD_CHARS
        ):
            self._more_messages.append(text)
            self._more_lines.append(line)
            self._chars += len(line)
            return []
        # Too big to keep growing: close it; the rest becomes a record of its own.
        done = self._finish()
        self._start_orphan(text, line)
        return [done]

    def _start_orphan(self, text: str, line: str) -> None:
        self._head = (None, None, None, None, text, 0)
        self._first_line = line
        self._chars = len(line)

    def _finish(self) -> LogRecord:
        head = self._head
        assert head is not None
        if not self._more_lines:
            return _make_record(head, head[4], (self._first_line,))
        record = _make_record(
            head,
            "\n".join([head[4], *self._more_messages]),
            (self._first_line, *self._more_lines),
        )
        self._more_messages = []
        self._more_lines = []
        return record

    def _parse_header(self, text: str) -> Optional[_Head]:
        # A cheap look at the fifth character picks the family before any regex runs.
        marker = text[4:5]
        if marker == "-":
            match = _ISO_HEAD.match(text)
            if match is None:
                return None
            parts = self._utc_seconds.get(text[:19])
            if parts is None:
                parts = self._seconds(self._utc_seconds, text[:19], match, _UTC)
                if parts is None:
                    return None
            fraction = match.group(7)
            stamp = datetime(*parts, int(fraction.ljust(6, "0")) if fraction else 0, _UTC)
            level = match.group(8)
            rest = text[match.end() :]
            first, _, after_first = rest.partition(" ")
            second, _, after_second = after_first.partition(" ")
            if _is_prefix(second, after_second):
                return stamp, level, first, second, after_second, 1
            if _is_prefix(first, after_first):
                return stamp, level, None, first, after_first, 2
            if _THREAD_NAME.fullmatch(first):
                return stamp, level, first, None, after_first, 1
            return stamp, level, None, None, rest, 2
        if marker == "/":
            match = _SLASH_LEVEL_HEAD.match(text)
            if match is not None:
                local_stamp = self._local_time(text, match)
                if local_stamp is None:
                    return None
                rest = text[match.end() :]
                first, _, after_first = rest.partition(" ")
                if _is_prefix(first, after_first):
                    return local_stamp, match.group(8), None, first, after_first, 3
                return local_stamp, match.group(8), None, None, rest, 4
            match = _SLASH_PLAIN_HEAD.match(text)
            if match is None:
                return None
            local_stamp = self._local_time(text, match)
            if local_stamp is None:
                return None
            rest = text[match.end() :]
            plain_level: Optional[str] = None
            level_match = _EXTENSION_LEVEL.match(rest)
            if level_match is not None:
                word = level_match.group(1)
                plain_level = "WARNING" if word == "WARN" else word
                rest = rest[level_match.end() :]
            prefix_match = _EXTENSION_PREFIX.match(rest)
            if prefix_match is None:
                if plain_level is not None:  # not the library's shape after all
                    rest = text[match.end() :]
                return local_stamp, None, None, None, rest, 5
            message = rest[prefix_match.end() :]
            if message[:1] == " ":
                message = message[1:]
            return local_stamp, plain_level, None, prefix_match.group(0), message, 5
        return None

    def _local_time(self, text: str, match: re.Match[str]) -> Optional[datetime]:
        parts = self._local_seconds.get(text[:19])
        if parts is None:
            parts = self._seconds(self._local_seconds, text[:19], match, self._tz)
            if parts is None:
                return None
        fraction = match.group(7)
        return datetime(*parts, int(fraction.ljust(6, "0")) if fraction else 0, _UTC)

    @staticmethod
    def _seconds(
        cache: dict[str, _Seconds], key: str, match: re.Match[str], zone: tzinfo
    ) -> Optional[_Seconds]:
        """The UTC (year, month, day, hour, minute, second) of a header, cached by its text."""
        moment = _build_time(match, zone)
        if moment is None:
            return None
        if zone is not _UTC:
            try:
                moment = moment.astimezone(_UTC)
            except OverflowError:  # 0001/01/01 00:00 east of UTC: before year 1 in UTC
                return None
        if len(cache) >= _SECONDS_CACHE_SIZE:
            cache.clear()
        parts = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
        cache[key] = parts
        return parts


def _build_time(match: re.Match[str], zone: tzinfo) -> Optional[datetime]:
    year, month, day, hour, minute, second = (int(part) for part in match.group(1, 2, 3, 4, 5, 6))
    try:
        return datetime(year, month, day, hour, minute, second, tzinfo=zone)
    except (ValueError, OverflowError):
        return None  # 2021/13/45: not a timestamp, so not a header


def parse_records(lines: Iterable[str], tz: Optional[tzinfo] = None) -> Iterator[LogRecord]:
    """Parse a whole stream of physical lines into records (see `RecordParser`)."""
    parser = RecordParser(tz)
    feed = parser.feed
    for line in lines:
        finished = feed(line)
        if finished:
            yield from finished
    yield from parser.flush()


__all__ = [
    "LEVELS",
    "PREFIXES",
    "LogRecord",
    "RecordParser",
    "guest_timezone",
    "parse_records",
]
