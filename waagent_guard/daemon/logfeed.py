"""`LogFeed`: the agent's log followed as it grows, parsed into live `LogSignals`.

Owns the tailer (reopened at each tick after a failure, or on a new path after
a reload), the ingest (agent/ingest.py: whole slices at once, in the guest's time
zone, the same signals as the per-record parser) and the signals the restart
policy and the metrics read. Reads are bounded: a huge backlog is read a slice per
wake-up, and `more_pending` tells the loop to come back at once.

Imports: agent.log, agent.ingest, agent.tail, observe, errors, sysroot. Never the `Guard`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

from waagent_guard.agent.ingest import LogIngest
from waagent_guard.agent.log import LogSignals, LogTailer, guest_timezone
from waagent_guard.agent.tail import READ_SLICE_BYTES
from waagent_guard.errors import GuardError
from waagent_guard.observe import read_log_signals
from waagent_guard.sysroot import Sysroot

log = logging.getLogger(__name__)


class LogFeed:
    def __init__(self, sysroot: Sysroot, log_path: Path) -> None:
        self.sysroot = sysroot
        self.log_path = log_path
        self.signals = LogSignals()
        self._tailer: Optional[LogTailer] = None
        self._ingest: Optional[LogIngest] = None

    def start(self) -> None:
        """Follow from the end, with the signals of what is already there."""
        self.open()
        try:
            self.signals = read_log_signals(self.log_path, self.sysroot)
        except GuardError as error:
            log.warning("%s", error)
        self._ingest = LogIngest(
            self.signals, tz=guest_timezone(self.sysroot.path("/etc/localtime"))
        )

    @property
    def following(self) -> bool:
        return self._tailer is not None

    def open(self) -> None:
        try:
            self._tailer = LogTailer(self.log_path, from_start=False)
        except GuardError as error:
            log.warning("not following the agent log: %s (retrying at each tick)", error)
            self._tailer = None

    def move_to(self, log_path: Path) -> None:
        """agent.log_path changed: stop following; reopened at the next tick, on the new path."""
        self.close()
        self.log_path = log_path

    @property
    def more_pending(self) -> bool:
        return self._tailer is not None and self._tailer.more_pending

    def consume(self) -> None:
        """Read one bounded slice of new lines into the signals."""
        if self._tailer is None or self._ingest is None:
            return
        try:
            blocks = self._tailer.read_blocks(max_bytes=READ_SLICE_BYTES)
        except (GuardError, OSError) as error:
            log.warning("stopped following the agent log: %s (retrying at each tick)", error)
            self.close()
            return
        for block in blocks:
            self._ingest.feed_block(block)

    def close(self) -> None:
        if self._tailer is not None:
            self._tailer.close()
            self._tailer = None
