"""Durations, sizes and timestamps as people write them (`90s`, `30m`, `2h`, `30M`)."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
# The largest epoch second a datetime can show (9999-12-31T23:59:59Z); guest files and
# mtimes may hold anything, and a time outside 1970..9999 is shown as absent.
MAX_EPOCH_SECONDS = 253402300799.0
_SIZE_UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_duration(text: str) -> float:
    """`90` / `90s` / `30m` / `2h` / `1d` -> seconds; raises ValueError naming the input."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"invalid duration {text!r}: use a number with s, m, h or d (e.g. 30m)")
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"invalid duration {text!r}: must be greater than zero")
    return seconds


def parse_size(text: str) -> int:
    """`30M`, `30MiB`, `1G`, `512K`, `100` (bytes) -> bytes (binary multiples)."""
    match = _SIZE.match(text)
    if not match:
        raise ValueError(f"invalid size {text!r}: use a number with K, M or G (e.g. 30M)")
    unit = (match.group(2) or "").upper()[:1]
    size = int(float(match.group(1)) * _SIZE_UNITS[unit])
    if size <= 0:
        raise ValueError(f"invalid size {text!r}: must be greater than zero")
    return size


def format_duration(seconds: float) -> str:
    """3725 -> '1h2m5s' (for screens)."""
    seconds = round(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)


def sane_epoch(timestamp: float | None) -> float | None:
    """`timestamp` when it is a finite epoch second between 0 and year 9999, else None."""
    if timestamp is None or not math.isfinite(timestamp) or not 0 <= timestamp <= MAX_EPOCH_SECONDS:
        return None
    return timestamp


def iso_utc(timestamp: float | None) -> str | None:
    """Epoch seconds -> '2026-11-26T05:34:01Z' (None, or a time outside 1970..9999, -> None).

    Guest files and their mtimes may hold any number; an absurd one is shown as
    absent rather than crashing the report.
    """
    timestamp = sane_epoch(timestamp)
    if timestamp is None:
        return None
    try:
        moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (
        f".{moment.microsecond:06d}Z" if moment.microsecond else "Z"
    )
