"""CPU and memory pressure: `/proc/stat` and `/proc/meminfo` parsing, and `PressureWindow`.

The guide's cause 4 says a VM above 90 % CPU or memory delays the snapshot until
it times out. `doctor` measures "now" from two `/proc/stat` samples; the daemon
feeds a `PressureWindow` every tick to tell "sustained over the window" apart
from a spike.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass
from typing import Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CpuTimes:
    """The aggregate `cpu` line of /proc/stat, in jiffies."""

    busy: int
    total: int


def parse_proc_stat(text: str) -> Optional[CpuTimes]:
    """The first `cpu ` line: idle = idle + iowait; busy = total - idle."""
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0] != "cpu":
            continue
        try:
            values = [int(value) for value in fields[1:]]
        except ValueError:
            return None
        if len(values) < 4:
            return None
        # guest and guest_nice are already counted in user and nice.
        counted = values[:8]
        idle = counted[3] + (counted[4] if len(counted) > 4 else 0)
        total = sum(counted)
        return CpuTimes(busy=total - idle, total=total)
    return None


def cpu_percent(first: CpuTimes, second: CpuTimes) -> Optional[float]:
    """Busy share between two samples, 0-100; None when no time passed."""
    total = second.total - first.total
    if total <= 0:
        return None
    busy = max(0, second.busy - first.busy)
    return min(100.0, 100.0 * busy / total)


@dataclass(frozen=True)
class MemoryInfo:
    total_bytes: int
    available_bytes: int

    @property
    def used_percent(self) -> float:
        if self.total_bytes <= 0:
            return 0.0
        return 100.0 * (1.0 - self.available_bytes / self.total_bytes)


def parse_meminfo(text: str) -> Optional[MemoryInfo]:
    """MemTotal and MemAvailable (kB); None when either is missing (kernels < 3.14)."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[name.strip()] = int(parts[0]) * 1024
    if "MemTotal" not in values or "MemAvailable" not in values:
        return None
    return MemoryInfo(total_bytes=values["MemTotal"], available_bytes=values["MemAvailable"])


class PressureWindow:
    """Samples of one percentage over time; `sustained` = above the threshold for the whole window.

    The window counts as covered only when a sample at or before `now - window`
    exists, so a guard that just started never claims "sustained".
    """

    def __init__(self, window_seconds: float, threshold_percent: float) -> None:
        if window_seconds <= 0:
            raise ValueError("window_seconds must be > 0")
        self.window_seconds = float(window_seconds)
        self.threshold_percent = float(threshold_percent)
        self._samples: deque[tuple[float, float]] = deque()

    def add(self, timestamp: float, percent: Optional[float]) -> None:
        """Record one sample; None (not measurable) breaks any sustained run."""
        value = -1.0 if percent is None else float(percent)
        if self._samples and timestamp < self._samples[-1][0]:
            self._samples.clear()  # the clock went backwards: start again
        self._samples.append((timestamp, value))
        self._prune(timestamp)

    def _prune(self, now: float) -> None:
        start = now - self.window_seconds
        # Keep the newest sample at or before the window start: it proves coverage.
        while len(self._samples) >= 2 and self._samples[1][0] <= start:
            self._samples.popleft()

    def sustained(self, now: float) -> Optional[bool]:
        """True/False once the window is covered; None before that."""
        self._prune(now)
        if not self._samples or self._samples[0][0] > now - self.window_seconds:
            return None
        return all(value > self.threshold_percent for _, value in self._samples)

    def latest(self) -> Optional[float]:
        if not self._samples or self._samples[-1][1] < 0:
            return None
        return self._samples[-1][1]

    def __len__(self) -> int:
        return len(self._samples)
