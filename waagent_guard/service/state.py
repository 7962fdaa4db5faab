"""What a service manager knows about the agent's unit: `UnitState`, and parsing it.

`systemctl show -p A,B,... UNIT` prints `Key=value` lines; `parse_show` reads
them and `unit_state_from_show` turns them into a `UnitState`. Durations come
formatted (`100ms`, `5s`, `1min 30s`, `infinity`); `parse_timespan` converts
them to seconds with the unit names systemd.time(7) documents. Pure functions.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)

# Restart= values under which systemd restarts the agent after a crash (an
# unclean exit or a signal). `on-success` and `on-watchdog` do not cover a
# crash, `no` never restarts: Debian 12's packaged unit ships `Restart=no`.
AUTORESTART_POLICIES = frozenset({"always", "on-failure", "on-abnormal", "on-abort"})

# systemd.time(7) units, longest spelling first is not needed: the whole word is looked up.
_TIMESPAN_UNITS = {
    "us": 1e-6, "usec": 1e-6, "µs": 1e-6, "μs": 1e-6,
    "ms": 1e-3, "msec": 1e-3,
    "": 1.0, "s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0,
    "m": 60.0, "min": 60.0, "minute": 60.0, "minutes": 60.0,
    "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "hours": 3600.0,
    "d": 86400.0, "day": 86400.0, "days": 86400.0,
    "w": 604800.0, "week": 604800.0, "weeks": 604800.0,
    "M": 2629800.0, "month": 2629800.0, "months": 2629800.0,
    "y": 31557600.0, "year": 31557600.0, "years": 31557600.0,
}
_TIMESPAN_PART = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-zµμ]*)")


def parse_timespan(text: str) -> float:
    """`100ms` -> 0.1, `1min 30s` -> 90.0, `infinity` -> math.inf; ValueError otherwise."""
    stripped = text.strip()
    if stripped == "infinity":
        return math.inf
    if not stripped:
        raise ValueError("empty time span")
    total = 0.0
    position = 0
    while position < len(stripped):
        match = _TIMESPAN_PART.match(stripped, position)
        if match is None or match.end() == position:
            raise ValueError(f"invalid time span {text!r}")
        unit = match.group(2)
        if unit not in _TIMESPAN_UNITS:
            raise ValueError(f"invalid time span {text!r}: unknown unit {unit!r}")
        total += float(match.group(1)) * _TIMESPAN_UNITS[unit]
        position = match.end()
    return total


def parse_show(text: str) -> dict[str, str]:
    """`Key=value` lines of `systemctl show` -> dict (value may contain `=`)."""
    properties: dict[str, str] = {}
    for line in text.splitlines():
        key, separator, value = line.partition("=")
        if separator and key:
            properties[key.strip()] = value.strip()
    return properties


@dataclass(frozen=True)
class UnitState:
    """The agent unit as its service manager reports it (`None` = not reported)."""

    active_state: str  # active|activating|deactivating|reloading|inactive|failed|unknown
    sub_state: str = ""  # running, dead, failed, auto-restart, ...
    main_pid: Optional[int] = None  # None when no main process (systemd prints 0)
    n_restarts: Optional[int] = None  # systemd's automatic restarts; reset by a manual start
    result: Optional[str] = None  # success, exit-code, signal, core-dump, start-limit-hit, ...
    exec_main_code: Optional[int] = None  # CLD_EXITED=1, CLD_KILLED=2, CLD_DUMPED=3
    exec_main_status: Optional[int] = None  # exit status or signal number
    restart: str = "no"  # the unit's Restart= policy
    restart_seconds: Optional[float] = None  # RestartSec= (RestartUSec)
    start_limit_burst: Optional[int] = None
    start_limit_interval_seconds: Optional[float] = None
    load_state: Optional[str] = None  # loaded, not-found, masked, ...
    unit_file_state: Optional[str] = None  # enabled, disabled, static, ...
    condition_result: Optional[bool] = None  # False: a Condition*= was not met
    drop_in_paths: tuple[str, ...] = ()
    job: Optional[str] = None  # a queued or running job (`start`, `stop`, ...), else None

    @property
    def autorestart(self) -> bool:
        """Whether the manager itself restarts the agent after a crash."""
        return self.restart in AUTORESTART_POLICIES

    @property
    def start_limit_hit(self) -> bool:
        """systemd refused further starts; only `reset-failed` clears it."""
        return self.result == "start-limit-hit"

    @property
    def is_active(self) -> bool:
        return self.active_state == "active"


def _optional_int(properties: Mapping[str, str], key: str) -> Optional[int]:
    value = properties.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        log.debug("systemctl show: %s=%r is not an integer; ignored", key, value)
        return None


def _optional_seconds(properties: Mapping[str, str], key: str) -> Optional[float]:
    value = properties.get(key)
    if value is None or value == "":
        return None
    try:
        return parse_timespan(value)
    except ValueError:
        log.debug("systemctl show: %s=%r is not a time span; ignored", key, value)
        return None


def unit_state_from_show(properties: Mapping[str, str]) -> UnitState:
    """Build a `UnitState` from parsed `systemctl show` properties (missing keys -> None)."""
    main_pid = _optional_int(properties, "MainPID")
    condition = properties.get("ConditionResult")
    drop_ins = properties.get("DropInPaths", "")
    return UnitState(
        active_state=properties.get("ActiveState") or "unknown",
        sub_state=properties.get("SubState", ""),
        main_pid=main_pid if main_pid else None,
        n_restarts=_optional_int(properties, "NRestarts"),
        result=properties.get("Result") or None,
        exec_main_code=_optional_int(properties, "ExecMainCode"),
        exec_main_status=_optional_int(properties, "ExecMainStatus"),
        restart=properties.get("Restart") or "no",
        restart_seconds=_optional_seconds(properties, "RestartUSec"),
        start_limit_burst=_optional_int(properties, "StartLimitBurst"),
        start_limit_interval_seconds=_optional_seconds(properties, "StartLimitIntervalUSec"),
        load_state=properties.get("LoadState") or None,
        unit_file_state=properties.get("UnitFileState") or None,
        condition_result=None if not condition else condition == "yes",
        drop_in_paths=tuple(drop_ins.split()),
        job=_job_type(properties.get("Job", "")),
    )


def _job_type(value: str) -> Optional[str]:
    """`systemctl show -p Job` prints `Job=` when idle; the property holds `ID TYPE`
    (D-Bus `(uo)`) in some versions, just the id in others."""
    parts = value.split()
    if not parts or parts[0] in ("0", "n/a"):
        return None
    return parts[1] if len(parts) > 1 else "pending"
