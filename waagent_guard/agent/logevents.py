"""What waagent.log says about the agent's health: the events catalogue and `LogSignals`.

This module owns the catalogue of known log events (as data: name, pattern, severity,
the troubleshooting guide's cause 1-4 or 0 when the guide does not cover it, and a
description) and `LogSignals`, an O(1)-per-record accumulator of versions, heartbeat,
level counts and event statistics. Patterns are searched in a record's first line only:
continuation lines hold tracebacks and extension output, which would give false hits.
Every example line a pattern was written for is in `tests/unit/test_log_signals.py`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

from waagent_guard.agent.record import LEVELS, LogRecord
from waagent_guard.redact import redact_text

logger = logging.getLogger(__name__)

LAST_MESSAGE_CHARS = 300
MAX_SUBJECTS = 50  # distinct extension names kept per event; the rest count as "other"
OTHER_SUBJECT = "other"
SEVERITIES = ("warn", "fail")


@dataclass(frozen=True)
class EventPattern:
    """One known log event; a named group "subject" (extension, operation) is counted too."""

    name: str
    pattern: re.Pattern[str]
    severity: str  # "warn" | "fail"
    cause: int  # cause number in the backup troubleshooting guide (1-4), 0 when not covered
    description: str
    levels: tuple[str, ...] = ()  # empty: any level
    keywords: tuple[str, ...] = ()  # one must occur for `pattern` to be tried; empty: always


def _event(
    name: str,
    pattern: str,
    severity: str,
    cause: int,
    description: str,
    levels: tuple[str, ...] = (),
    keywords: tuple[str, ...] = (),
) -> EventPattern:
    return EventPattern(name, re.compile(pattern), severity, cause, description, levels, keywords)


_VMSNAPSHOT = r"Microsoft\.Azure\.RecoveryServices\.VMSnapshotLinux"

EVENT_CATALOGUE: tuple[EventPattern, ...] = (
    _event(
        "goal_state_fetch_failed",
        r"Error fetching the goal state|Fetching the goal state failed"
        r"|ProtocolError processing goal state",
        "warn",
        1,
        "The agent could not fetch its goal state from the WireServer or HostGAPlugin.",
        keywords=("goal state",),
    ),
    _event(
        "vmsnapshot_operation_failed",
        rf"Event: name={_VMSNAPSHOT}, op=(?P<subject>[^,\s]+)",
        "fail",
        3,
        "An operation of the VMSnapshot (backup) extension failed; subject is the operation.",
        ("ERROR",),
        ("Event: name=",),
    ),
    _event(
        "extension_operation_failed",
        rf"Event: name=(?!WALinuxAgent,|{_VMSNAPSHOT},)(?P<subject>[^,\s]+), op=",
        "warn",
        0,
        "An extension operation (install, enable, ...) failed; subject is the extension.",
        ("ERROR",),
        ("Event: name=",),
    ),
    _event(
        "agent_operation_failed",
        r"Event: name=WALinuxAgent, op=(?P<subject>[^,\s]+)",
        "warn",
        0,
        "An operation of the agent itself failed; subject is the operation.",
        ("ERROR",),
        ("Event: name=",),
    ),
    _event(
        "unclean_exit",
        r"did not terminate cleanly",
        "warn",
        2,
        "The goal-state agent (ExtHandler) exited uncleanly and was relaunched.",
        keywords=("did not terminate cleanly",),
    ),
    _event(
        "daemon_already_running",
        r"(?:^|Daemon )is already running",
        "fail",
        2,
        "A daemon start found the pidfile naming a live process and exited: a stale"
        " pidfile can keep the agent down.",
        keywords=("is already running",),
    ),
    _event(
        "version_blacklisted",
        r"restarted more than \d+ times in \d+ seconds|\bblacklisted\b",
        "fail",
        2,
        "An agent version failed repeatedly and was blacklisted.",
        keywords=("restarted more than", "blacklisted"),
    ),
    _event(
        "agent_disabled",
        r"Disabling the guest agent by sleeping forever"
        r"|Disabling guest agent in accordance with ovf-env\.xml",
        "fail",
        2,
        "The agent disabled itself (disable_agent file or ovf-env.xml); extensions will not run.",
        keywords=("guest agent",),
    ),
    _event(
        "hostgaplugin_errors",
        r"HostGAPlugin|HostPlugin|:32526/",
        "warn",
        1,
        "Requests to the HostGAPlugin (168.63.129.16:32526) failed.",
        ("WARNING", "ERROR"),
        ("HostGAPlugin", "HostPlugin", ":32526/"),
    ),
    _event(
        "firewall_misconfigured",
        r"The firewall is not configured correctly"
        r"|[Uu]nable to (?:set ?up|setup) (?:the )?(?:persistent )?firewall"
        r"|Failed to (?:set|add|remove|enable) (?:the )?firewall",
        "warn",
        1,
        "The agent's firewall rules for the WireServer are missing or could not be set.",
        keywords=("firewall",),
    ),
    _event(
        "dhcp_client_not_running",
        r"(?:Dhcp|DHCP|dhcp) client is not running",
        "warn",
        4,
        "No DHCP client runs: the WireServer address (DHCP option 245) may not be renewed.",
        keywords=(" client is not running",),
    ),
    _event(
        "extension_processing_failed",
        r"ProcessExtensionsGoalState failed|ProcessExtensionsInGoalState failed"
        r"|ProcessGoalState failed",
        "warn",
        3,
        "Processing the extensions of a goal state failed.",
        keywords=("GoalState failed",),
    ),
    _event(
        "cgroups_disabled",
        r"Disabling resource usage monitoring|cgroup is not mounted at the expected path"
        r"|[Cc]groups? (?:is|are) not (?:currently )?supported|Agent cgroups enabled: False"
        r"|[Dd]isabling (?:cgroups|resource governance)",
        "warn",
        0,
        "The agent turned off cgroup resource monitoring/limits (often: foreign processes"
        " in its cgroup).",
        keywords=("resource usage monitoring", "group", "resource governance"),
    ),
)

_DAEMON_VERSION = re.compile(r"Azure Linux Agent Version:\s*(\S+)")
_GOAL_STATE_VERSION = re.compile(
    r"Azure Linux Agent \(Goal State Agent version ([^)\s]+)\)"
    r"|Agent WALinuxAgent-(\S+) is running as the goal state agent"
)


def redact_sas(text: str) -> str:
    """Every secret form out of a log line: the one redaction (`waagent_guard.redact`)."""
    return redact_text(text)


def _iso(moment: Optional[datetime]) -> Optional[str]:
    if moment is None:
        return None
    text = moment.astimezone(timezone.utc).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


@dataclass
class EventStat:
    """How often one catalogue event was seen, when last, and its last (redacted) line."""

    count: int = 0
    last_seen: Optional[datetime] = None
    last_message: Optional[str] = None
    subjects: dict[str, int] = field(default_factory=dict)  # extension/operation -> count

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "last_seen": _iso(self.last_seen),
            "last_message": self.last_message,
            "subjects": dict(self.subjects),
        }


class LogSignals:
    """Accumulates what the log says, one record at a time (O(1) per record)."""

    def __init__(self, catalogue: Sequence[EventPattern] = EVENT_CATALOGUE) -> None:
        self.catalogue = tuple(catalogue)
        self.daemon_version: Optional[str] = None
        self.goal_state_version: Optional[str] = None
        self.last_heartbeat: Optional[datetime] = None
        self.last_record_time: Optional[datetime] = None
        self.record_count = 0
        self.counts_by_level: dict[str, int] = dict.fromkeys(LEVELS, 0)
        self.events: dict[str, EventStat] = {event.name: EventStat() for event in self.catalogue}
        # Substring tests are ten times cheaper than regex searches: most records
        # contain none of the keywords and cost no regex at all.
        self._keywords = tuple({word for event in self.catalogue for word in event.keywords})
        self._always = any(not event.keywords for event in self.catalogue)

    def snapshot(self) -> LogSignals:
        """A copy that later updates do not touch (for readers in other threads)."""
        copy = LogSignals.__new__(LogSignals)
        copy.__dict__.update(self.__dict__)
        copy.counts_by_level = dict(self.counts_by_level)
        copy.events = {  # the constructor: dataclasses.replace costs 5x more (per publish)
            name: EventStat(stat.count, stat.last_seen, stat.last_message, dict(stat.subjects))
            for name, stat in self.events.items()
        }
        return copy

    def update(self, record: LogRecord) -> None:
        self.record_count += 1
        level = record.level
        if level is not None:
            self.counts_by_level[level] = self.counts_by_level.get(level, 0) + 1
        stamp = record.timestamp
        if stamp is not None and (self.last_record_time is None or stamp > self.last_record_time):
            self.last_record_time = stamp
        message = record.message
        first_line = message.partition("\n")[0] if "\n" in message else message
        if "Azure Linux Agent" in first_line or "goal state agent" in first_line:
            self._update_versions(record, first_line)
        if (
            stamp is not None
            and "[HEARTBEAT]" in first_line
            and (self.last_heartbeat is None or stamp > self.last_heartbeat)
        ):
            self.last_heartbeat = stamp
        if self._always:
            self._update_events(record, first_line)
            return
        for word in self._keywords:
            if word in first_line:
                self._update_events(record, first_line)
                break

    def _update_versions(self, record: LogRecord, first_line: str) -> None:
        is_daemon_line = record.prefix == "Daemon" or (
            record.prefix is None and record.thread in (None, "Daemon")
        )
        if is_daemon_line:
            match = _DAEMON_VERSION.search(first_line)
            if match:
                self.daemon_version = match.group(1)
        match = _GOAL_STATE_VERSION.search(first_line)
        if match:
            self.goal_state_version = match.group(1) or match.group(2)

    def _update_events(self, record: LogRecord, first_line: str) -> None:
        for event in self.catalogue:
            if event.levels and record.level not in event.levels:
                continue
            if event.keywords and not any(word in first_line for word in event.keywords):
                continue
            match = event.pattern.search(first_line)
            if match is None:
                continue
            stat = self.events[event.name]
            stat.count += 1
            if record.timestamp is not None:
                stat.last_seen = record.timestamp
            stat.last_message = redact_sas(first_line)[:LAST_MESSAGE_CHARS]
            subject = match.groupdict().get("subject")
            if subject:
                if subject not in stat.subjects and len(stat.subjects) >= MAX_SUBJECTS:
                    subject = OTHER_SUBJECT
                stat.subjects[subject] = stat.subjects.get(subject, 0) + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot; times are ISO-8601 UTC strings."""
        return {
            "daemon_version": self.daemon_version,
            "goal_state_version": self.goal_state_version,
            "last_heartbeat": _iso(self.last_heartbeat),
            "last_record_time": _iso(self.last_record_time),
            "record_count": self.record_count,
            "counts_by_level": dict(self.counts_by_level),
            "events": {
                event.name: {
                    **self.events[event.name].to_dict(),
                    "severity": event.severity,
                    "cause": event.cause,
                }
                for event in self.catalogue
            },
        }
