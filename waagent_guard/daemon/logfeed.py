"""`LogFeed`: the agent's log followed as it grows, parsed into live `LogSignals`.

Owns the tailer (kept across read errors, so no line is skipped; opened again at
each tick when even the first open failed, then from the file's start; on a new path
after a reload), the ingest (agent/ingest.py: whole slices at once, in the guest's time
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
        self._open_failed = False  # the next open reads the file from its start
        self._failing = False  # the last read failed (logged once per streak)

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
        """Follow from the end; after a failed open, from the start of whatever file is
        there now (none of its lines were counted: they must not be skipped)."""
        try:
            self._tailer = LogTailer(self.log_path, from_start=self._open_failed)
        except GuardError as error:
            if not self._open_failed:
                log.warning("not following the agent log: %s (retrying at each tick)", error)
            self._open_failed = True
            self._tailer = None
            return
        self._open_failed = False

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
            # The tailer is kept: it still drains the files rotated away and tries the
            # path again at the next read; closing it would reopen at the end, and the
            # lines in between would never be counted.
            if not self._failing:
                log.warning("cannot read the agent log: %s (trying again at each wake-up)",
                            error)
            self._failing = True
            return
        if self._failing:
            log.info("reading the agent log again")
            self._failing = False
        for block in blocks:
            self._ingest.feed_block(block)

    def close(self) -> None:
        if self._tailer is not None:
            self._tailer.close()
            self._tailer = None
