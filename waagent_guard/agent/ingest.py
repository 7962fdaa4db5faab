"""`LogIngest`: the daemon's log ingest, a whole slice of lines at a time.

Owns turning blocks of log text (one or more complete lines joined by "\\n", as
`LogTailer.read_blocks` returns them) into the same `LogSignals` that feeding every
line to `RecordParser.feed` and every record to `LogSignals.update` gives: the same
record count, level counts, newest record time, heartbeat, versions and events,
after every block (tests/unit/test_log_ingest.py compares the two on the bench
corpus and on generated edge cases cut at random places). The per-record path stays
the reference, and is still what reads a log once (`observe.read_log_signals`).

Per block, the work that touches every line runs in C (docs/PERFORMANCE.md row 4):

- one `findall` over the block that matches at every "\n": a header, or the "\n"
  alone for a continuation line: the records, their levels and the continuation lines
  (the pattern accepts exactly what `RecordParser` accepts as a header: the same
  shapes, and only dates and times that exist);
- the newest record time from the lexicographic maximum of the headers' timestamps
  (UTC formats) or per distinct second (local-time formats);
- `str.find` of the literal anchors (the catalogue's keywords, several through one
  shorter shared anchor, and the heartbeat marker): only the lines holding one are
  inspected like `LogSignals.update` would, through a cache of analyses keyed by the
  line without its timestamp;
- the versions: only the last line that gives each counts, so the lines holding the
  phrases `LogSignals.update` gates them on are visited from the end backwards.

The block's first record (it completes the record the previous block left open) and
its last one (which may continue in the next block) go through the reference parser,
and so does a whole block whenever the shortcut could differ: a record long enough to
be cut (`MAX_RECORD_LINES`), a catalogue event without keywords, digits outside ASCII
in a timestamp, a local time that cannot be converted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime, timezone, tzinfo
from typing import Optional

from waagent_guard.agent.logevents import (
    _DAEMON_VERSION,
    _GOAL_STATE_VERSION,
    LAST_MESSAGE_CHARS,
    MAX_SUBJECTS,
    OTHER_SUBJECT,
    EventPattern,
    LogSignals,
    redact_sas,
)
from waagent_guard.agent.record import MAX_RECORD_CHARS, MAX_RECORD_LINES, RecordParser

_UTC = timezone.utc
# Blocks are worked on in pieces of about this size: each literal search then runs
# over text still in the CPU cache, and a piece bounds the extra memory.
PIECE_CHARS = 256 * 1024
# Inspected header messages kept (the analysis of a message does not depend on its
# timestamp; agents repeat their messages): bounded, cleared when full; a longer message
# is analysed each time (a hostile log of long lines cannot grow the cache).
_ANALYSIS_CACHE_SIZE = 1024
_ANALYSIS_KEY_CHARS = 1024
_LOCAL_SECONDS_CACHE_SIZE = 4096  # "YYYY/MM/DD HH:MM:SS" -> UTC parts

# Dates that exist (datetime accepts them) and times within a day, ASCII digits only.
_MONTH_DAY = (
    r"(?:(?:0[1-9]|1[0-2]){s}(?:0[1-9]|1[0-9]|2[0-8])"
    r"|(?:0[13-9]|1[0-2]){s}(?:29|30)|(?:0[13578]|1[02]){s}31)"
)
_LEAP_DAY = (
    r"(?:[0-9]{{2}}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
    r"{s}02{s}29"
)
_TIME = r"(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"


def _date(sep: str) -> str:
    return rf"(?:(?!0000)[0-9]{{4}}{sep}{_MONTH_DAY.format(s=sep)}|{_LEAP_DAY.format(s=sep)})"


# After a level or a timestamp: a space, or the end of the line (which may end in one
# "\r": `RecordParser.feed` strips one).
_EOL = r"(?=\r?\n|\r?\Z)"
_TERM = r"(?= |\r?\n|\r?\Z)"
_LEVEL = r"(?:VERBOSE|INFO|WARNING|ERROR)"
_GLUED_LEVEL = r"(?:(?:VERBOSE|INFO|WARNING|WARN|ERROR):(?=\[[^\]\s]+-\d[^\]\s]*\]))"
# Every header line, matched from the "\n" before it, in `RecordParser`'s order: format
# 1/2 (UTC), 3/4 (local time, a level), 5 (local time, no level or one glued to an
# extension's prefix: `ERROR:[Pub.Type-1.0]`). A match holds the timestamp and the
# level, so the levels are counted on the joined matches.
_HEADER_BODY = (
    rf"{_date('-')}T{_TIME}(?:\.[0-9]{{1,6}})?Z {_LEVEL}{_TERM}"
    rf"|{_date('/')} {_TIME}\.[0-9]{{1,6}} {_LEVEL}{_TERM}"
    rf"|{_date('/')} {_TIME}(?:\.[0-9]{{1,6}})?(?: {_GLUED_LEVEL}?|{_EOL})"
)
_HEADER = re.compile(rf"\n(?:{_HEADER_BODY})")
# One match per "\n": the header, or "\n" alone for a continuation line (a header match never
# holds a "\n" after its first): the records and the lines, in one search.
_LINE = re.compile(rf"\n(?:{_HEADER_BODY})?")
# What the reference accepts as a timestamp's digits: any Unicode digit.
_LOOSE_STAMP = re.compile(r"\n\d{4}[-/]\d\d[-/]\d\d[T ]\d\d:\d\d:\d\d(?:\.\d{1,6})?")
_FRACTION = re.compile(r"[0-9]{1,6}")
_LOCAL_SECOND = re.compile(r"\n([0-9]{4}/[0-9]{2}/[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2})")
_HEARTBEAT = "[HEARTBEAT]"
# Each search over a piece costs about as much as ~40k candidate lines: these short
# anchors each stand for several keywords of the catalogue at the price of a few more
# candidates (HostGAPlugin/HostPlugin; "is already running"/"client is not running";
# "goal state"/"GoalState failed"/"goal state agent").
_SHARED_ANCHORS = ("Host", "running", "oal")
# A part of a keyword that `str.find` passes over faster than the whole keyword finds the
# same lines: its search skips ahead when the character after the window is not in the
# needle's 64-bit filter (characters modulo 64: a lower-case p-y is a digit there, and
# log text is full of digits and spaces), and compares first on the needle's last
# character. Measured on the bench corpus, with no more candidate lines: "2526/" for
# ":32526/", "name=" for "Event: name=", "EARTB" for "[HEARTBEAT]", "wall" for
# "firewall" (docs/PERFORMANCE.md row 4).
_FAST_ANCHORS = ("2526/", "name=", "EARTB", "wall")
_VERSION_ANCHORS = ("Azure Linux Agent", "goal state agent")

_Seconds = tuple[int, int, int, int, int, int]
# (daemon version, goal-state version, heartbeat, events: (name, subject, last message))
_Analysis = tuple[
    Optional[str], Optional[str], bool, tuple[tuple[str, Optional[str], str], ...]
]
_NOTHING: _Analysis = (None, None, False, ())


def _line_key(text: str) -> Optional[str]:
    """What the analysis of a header line depends on: the line without its timestamp's
    digits (None when `text` is not shaped like a header)."""
    if text[4:5] == "-":
        zulu = text.find("Z", 19)
        return text[zulu:] if zulu >= 0 else None
    if text[19:20] == ".":
        space = text.find(" ", 20)
        return "." + text[space:] if space >= 0 else "."
    return "/" + text[19:]


def _max_fraction(joined: str, second: str) -> int:
    """The greatest fraction, in microseconds, of the headers in `joined` that start with
    `second` ("\\n" and a timestamp to the second; 0 for a header without fraction)."""
    best = 0
    at = joined.find(second)
    while at >= 0:
        at += len(second)
        if joined[at : at + 1] == ".":  # then 1 to 6 ASCII digits (`_HEADER`)
            digits = _FRACTION.match(joined, at + 1)
            if digits is not None:
                best = max(best, _micro(digits.group()))
        at = joined.find(second, at)
    return best


def _micro(fraction: str) -> int:
    return int(fraction.ljust(6, "0")) if fraction else 0


class LogIngest:
    """Feeds blocks of log lines into `signals`, exactly as the per-record path would."""

    def __init__(self, signals: Optional[LogSignals] = None, tz: Optional[tzinfo] = None) -> None:
        self.signals = signals if signals is not None else LogSignals()
        self._parser = RecordParser(tz)
        self._tz = self._parser._tz
        catalogue = self.signals.catalogue
        self._exact_only = any(not event.keywords for event in catalogue)
        anchors = {word for event in catalogue for word in event.keywords}
        anchors.add(_HEARTBEAT)
        # A keyword holding a shared anchor is found by it: one search instead of several.
        shorter = (*_SHARED_ANCHORS, *_FAST_ANCHORS)
        anchors = {next((s for s in shorter if s in a), a) for a in anchors}
        # A shorter anchor inside a longer one finds every line the longer one finds.
        self._anchors = tuple(
            sorted(a for a in anchors if not any(b != a and b in a for b in anchors))
        )
        self._analyses: dict[str, _Analysis] = {}
        self._local_utc: dict[str, Optional[_Seconds]] = {}

    # --- input ------------------------------------------------------------------

    def feed_lines(self, lines: Iterable[str]) -> None:
        """Physical lines without their "\\n" (what `LogTailer.read_lines` returns)."""
        batch: list[str] = []
        size = 0
        for line in lines:
            batch.append(line)
            size += len(line) + 1
            if size >= PIECE_CHARS:
                self.feed_block("\n".join(batch))
                batch = []
                size = 0
        if batch:
            self.feed_block("\n".join(batch))

    def feed_block(self, block: str) -> None:
        """One or more complete lines joined by "\\n" (`LogTailer.read_blocks`)."""
        # Each piece is handed over with the "\n" before its first line: after a cut,
        # that is the block's own "\n" (one copy of the text, not two).
        length = len(block)
        if length <= PIECE_CHARS:
            self._feed_piece("\n" + block)
            return
        cut = block.find("\n", PIECE_CHARS)
        if cut < 0:
            self._feed_piece("\n" + block)
            return
        self._feed_piece("\n" + block[:cut])
        start = cut + 1
        while length - start > PIECE_CHARS:
            cut = block.find("\n", start + PIECE_CHARS)
            if cut < 0:
                break
            self._feed_piece(block[start - 1 : cut])
            start = cut + 1
        self._feed_piece(block[start - 1 :])

    def flush(self) -> None:
        """End of input: the record still open is complete."""
        for record in self._parser.flush():
            self.signals.update(record)

    # --- one piece --------------------------------------------------------------

    def _reference(self, text: str) -> None:
        """Lines of `text` (after its leading "\\n") through the per-record path."""
        feed = self._parser.feed
        update = self.signals.update
        for line in text[1:].split("\n"):
            for record in feed(line):
                update(record)

    def _feed_piece(self, text: str) -> None:
        """`text`: "\n" and one or more complete lines joined by "\n"."""
        if self._exact_only or (
            not text.isascii() and not "".join(_LOOSE_STAMP.findall(text)).isascii()
        ):
            self._reference(text)
            return
        items = _LINE.findall(text)  # a header, or "\n" for each continuation line
        joined = "".join(items)
        continuations = items.count("\n")  # "\n" is one object: compared by identity
        if len(items) - continuations < 2 or (
            "/" in joined and not self._local_times_convert(joined)
        ):
            self._reference(text)
            return
        # The continuation lines before the first header and after the last one.
        leading = 0
        while items[leading] == "\n":
            leading += 1
        end = len(items) - 1
        while items[end] == "\n":
            end -= 1
        trailing = len(items) - 1 - end
        last_head = items[end]
        first_match = _HEADER.search(text)
        first = first_match.start() if first_match is not None else 0
        # The last header: the last place its text occurs that is a header (a later line
        # may start with the same text and not be one).
        last = text.rfind(last_head)
        while last > first and _HEADER.match(text, last) is None:
            last = text.rfind(last_head, first, last)
        if last <= first:  # cannot happen with two headers; never guess
            self._reference(text)
            return
        # Before the first header: lines that continue the record left open.
        if first:
            self._reference(text[:first])
        # The first header completes that record; the middle's records are whole.
        self.flush()
        middle = text[first:last]
        del items[end:]
        joined = joined[: len(joined) - len(last_head) - trailing]
        records = len(items) - continuations + trailing
        inside = continuations - leading - trailing
        if not self._fast_middle(middle, items, joined, records, inside):
            self._reference(middle)
        # The last header's record may continue in the next piece: left open.
        self._reference(text[last:])

    def _fast_middle(
        self, middle: str, items: list[str], joined: str, records: int, continuations: int
    ) -> bool:
        """The whole records of `middle` (from a header to before the last one) at once:
        `items` its headers and "\n" for each of its `continuations` lines.

        Returns False (nothing done) when a record could be long enough to be cut.
        """
        if continuations >= MAX_RECORD_LINES - 1:
            return False
        if len(middle) > MAX_RECORD_CHARS:
            return False
        newest = self._newest(items, joined)
        signals = self.signals
        counts = signals.counts_by_level
        counts["VERBOSE"] = counts.get("VERBOSE", 0) + joined.count(" VERBOSE")
        counts["INFO"] = counts.get("INFO", 0) + joined.count(" INFO")
        # " WARN" is in "WARNING" and in the glued "WARN:" (format 5): the only places
        # it can be in the joined headers.
        counts["WARNING"] = counts.get("WARNING", 0) + joined.count(" WARN")
        counts["ERROR"] = counts.get("ERROR", 0) + joined.count(" ERROR")
        signals.record_count += records
        if newest is not None and (
            signals.last_record_time is None or newest > signals.last_record_time
        ):
            signals.last_record_time = newest
        self._inspect_candidates(middle)
        return True

    def _local_times_convert(self, joined: str) -> bool:
        """Whether every local timestamp converts to UTC (else the reference decides)."""
        return all(
            self._utc_second(second) is not None
            for second in set(_LOCAL_SECOND.findall(joined))
        )

    def _newest(self, heads: list[str], joined: str) -> Optional[datetime]:
        """The newest timestamp of the headers."""
        newest: Optional[datetime] = None
        if "/" in joined:
            # Each distinct local second is converted once (agents write several lines a
            # second); the newest second's fractions are compared as numbers.
            converted = {}
            for second in set(_LOCAL_SECOND.findall(joined)):
                parts = self._utc_second(second)
                if parts is not None:  # checked by _local_times_convert: always
                    converted[second] = parts
            if converted:
                top_parts = max(converted.values())
                fraction = max(
                    _max_fraction(joined, "\n" + second)
                    for second, parts in converted.items()
                    if parts == top_parts
                )
                newest = datetime(*top_parts, fraction, _UTC)
        top = max(heads)
        if top[5] != "-":  # the greatest is a local time: look among the UTC ones only
            utc_heads = [head for head in heads if head[5:6] == "-"]
            top = max(utc_heads) if utc_heads else ""
        if top:
            # Lexicographic on "\nYYYY-MM-DDTHH:MM:SS": the newest second; its fractions
            # (of uneven widths) are compared as numbers.
            second = top[:20]
            fraction = _max_fraction(joined, second)
            moment = datetime(
                int(second[1:5]), int(second[6:8]), int(second[9:11]),
                int(second[12:14]), int(second[15:17]), int(second[18:20]), fraction, _UTC,
            )
            if newest is None or moment > newest:
                newest = moment
        return newest

    def _utc_second(self, local: str) -> Optional[_Seconds]:
        """UTC (year, month, day, hour, minute, second) of "YYYY/MM/DD HH:MM:SS" local time,
        as `RecordParser` converts it; None when it cannot."""
        parts = self._local_utc.get(local, False)
        if parts is not False:
            return parts  # type: ignore[return-value]
        if len(self._local_utc) >= _LOCAL_SECONDS_CACHE_SIZE:
            self._local_utc.clear()
        try:
            moment = datetime(
                int(local[0:4]), int(local[5:7]), int(local[8:10]),
                int(local[11:13]), int(local[14:16]), int(local[17:19]), tzinfo=self._tz,
            ).astimezone(_UTC)
            result: Optional[_Seconds] = (
                moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second
            )
        except (ValueError, OverflowError):
            result = None
        self._local_utc[local] = result
        return result

    # --- lines that may say more than their level --------------------------------------

    def _inspect_candidates(self, middle: str) -> None:
        # The lines holding an anchor: where each starts (its "\n") and ends.
        ends: dict[int, int] = {}
        find = middle.find
        rfind = middle.rfind
        size = len(middle)
        for anchor in self._anchors:
            at = find(anchor)
            while at >= 0:
                end = find("\n", at)
                if end < 0:
                    ends[rfind("\n", 0, at)] = size
                    break
                ends[rfind("\n", 0, at)] = end
                at = find(anchor, end)
        if ends:
            self._events(middle, ends)
        self._versions(middle)

    def _analysis(self, text: str, key: str) -> _Analysis:
        """What the record's first line `text` (a header; `key` = `_line_key(text)`) says."""
        analysis = self._analyses.get(key)
        if analysis is None:
            head = self._parser._parse_header(text)
            if head is None:  # _HEADER matched, so the parser agrees: cannot happen
                return _NOTHING
            analysis = self._analyse(head[1], head[2], head[3], head[4])
            if len(key) <= _ANALYSIS_KEY_CHARS:
                if len(self._analyses) >= _ANALYSIS_CACHE_SIZE:
                    self._analyses.clear()
                self._analyses[key] = analysis
        return analysis

    def _events(self, middle: str, ends: dict[int, int]) -> None:
        """Events and heartbeats of the candidate lines (`ends`: line start -> end)."""
        parse = self._parser._parse_header
        is_header = _HEADER.match
        known = self._analyses.get
        signals = self.signals
        # The lines that hit events, by analysis: how many, and where the last one starts
        # (dicts keep the order in which the keys first came, the order of the lines).
        hitting: dict[str, _Analysis] = {}
        lines: dict[str, int] = {}
        last_at: dict[str, int] = {}
        for line_start in sorted(ends):
            text = middle[line_start + 1 : ends[line_start]]
            if text[-1:] == "\r":
                text = text[:-1]
            key = _line_key(text)
            if key is None:
                continue  # not shaped like a header: a continuation line
            analysis = hitting.get(key) or known(key)
            if analysis is not None and not analysis[2] and not analysis[3]:
                continue  # says nothing, whether it is a record's first line or not
            if is_header(middle, line_start) is None:
                continue  # a continuation line: not a record's first line
            if analysis is None:
                analysis = self._analysis(text, key)
            if analysis[2]:  # a heartbeat: its time
                head = parse(text)
                stamp = head[0] if head is not None else None
                if stamp is not None and (
                    signals.last_heartbeat is None or stamp > signals.last_heartbeat
                ):
                    signals.last_heartbeat = stamp
            if analysis[3]:
                hitting[key] = analysis
                lines[key] = lines.get(key, 0) + 1
                last_at[key] = line_start
        if not lines:
            return
        # Each analysis once, with its number of lines: the counts and subjects are those of
        # the lines one by one (a subject gets its own entry when there is room at its first
        # line, which comes with the first key that names it).
        events = signals.events
        last_line: dict[str, tuple[int, str]] = {}
        for key, count in lines.items():
            at = last_at[key]
            for name, subject, message in hitting[key][3]:
                stat = events[name]
                stat.count += count
                if subject:
                    if subject not in stat.subjects and len(stat.subjects) >= MAX_SUBJECTS:
                        subject = OTHER_SUBJECT
                    stat.subjects[subject] = stat.subjects.get(subject, 0) + count
                if at > last_line.get(name, (-1, ""))[0]:
                    last_line[name] = (at, message)
        # Only an event's last line gives its time and message.
        for name, (at, message) in last_line.items():
            stat = events[name]
            stat.last_message = message
            text = middle[at + 1 : ends[at]]
            head = parse(text[:-1] if text[-1:] == "\r" else text)
            if head is not None and head[0] is not None:
                stat.last_seen = head[0]

    def _versions(self, middle: str) -> None:
        """The versions of the last lines that give one: found from the end backwards."""
        rfind = middle.rfind
        agent = rfind(_VERSION_ANCHORS[0])
        goal = rfind(_VERSION_ANCHORS[1])
        daemon_version: Optional[str] = None
        goal_state_version: Optional[str] = None
        is_header = _HEADER.match
        while (agent >= 0 or goal >= 0) and (daemon_version is None or goal_state_version is None):
            at = max(agent, goal)
            line_start = rfind("\n", 0, at)
            # Each anchor is searched once over the text: the next one before this line.
            if agent > line_start:
                agent = rfind(_VERSION_ANCHORS[0], 0, line_start)
            if goal > line_start:
                goal = rfind(_VERSION_ANCHORS[1], 0, line_start)
            if line_start < 0 or is_header(middle, line_start) is None:
                continue
            end = middle.find("\n", at)
            text = middle[line_start + 1 : end] if end >= 0 else middle[line_start + 1 :]
            if text[-1:] == "\r":
                text = text[:-1]
            key = _line_key(text)
            if key is None:  # _HEADER matched: cannot happen
                continue
            found = self._analysis(text, key)
            if daemon_version is None:
                daemon_version = found[0]
            if goal_state_version is None:
                goal_state_version = found[1]
        if daemon_version is not None:
            self.signals.daemon_version = daemon_version
        if goal_state_version is not None:
            self.signals.goal_state_version = goal_state_version

    def _analyse(
        self, level: Optional[str], thread: Optional[str], prefix: Optional[str], first_line: str
    ) -> _Analysis:
        """What `LogSignals.update` would conclude from a record's first line."""
        daemon_version = goal_state_version = None
        if "Azure Linux Agent" in first_line or "goal state agent" in first_line:
            if prefix == "Daemon" or (prefix is None and thread in (None, "Daemon")):
                match = _DAEMON_VERSION.search(first_line)
                if match:
                    daemon_version = match.group(1)
            match = _GOAL_STATE_VERSION.search(first_line)
            if match:
                goal_state_version = match.group(1) or match.group(2)
        hits: list[tuple[str, Optional[str], str]] = []
        catalogue: tuple[EventPattern, ...] = self.signals.catalogue
        for event in catalogue:
            if event.levels and level not in event.levels:
                continue
            if not any(word in first_line for word in event.keywords):
                continue
            found = event.pattern.search(first_line)
            if found is None:
                continue
            subject = found.groupdict().get("subject")
            hits.append(
                (event.name, subject or None, redact_sas(first_line)[:LAST_MESSAGE_CHARS])
            )
        return daemon_version, goal_state_version, _HEARTBEAT in first_line, tuple(hits)


__all__ = ["PIECE_CHARS", "LogIngest"]
