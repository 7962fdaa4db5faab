"""/var/log/waagent.log in one import: records, what they mean, and reading the file.

Gathers `record.py` (the five line formats into `LogRecord`s), `logevents.py` (the
events catalogue and `LogSignals`) and `tail.py` (following the file across rotation,
`read_recent`), so callers import `waagent_guard.agent.log` only. It owns nothing
itself; the three modules do not import it (no cycle: record <- logevents, log).
"""

from __future__ import annotations

from waagent_guard.agent.logevents import (
    EVENT_CATALOGUE,
    EventPattern,
    EventStat,
    LogSignals,
    redact_sas,
)
from waagent_guard.agent.record import (
    LEVELS,
    PREFIXES,
    LogRecord,
    RecordParser,
    guest_timezone,
    parse_records,
)
from waagent_guard.agent.tail import LogTailer, read_recent, rotated_logs

__all__ = [
    "EVENT_CATALOGUE",
    "LEVELS",
    "PREFIXES",
    "EventPattern",
    "EventStat",
    "LogRecord",
    "LogSignals",
    "LogTailer",
    "RecordParser",
    "guest_timezone",
    "parse_records",
    "read_recent",
    "redact_sas",
    "rotated_logs",
]
