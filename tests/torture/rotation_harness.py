"""A heavy log writer, a logrotate-like rotator and a LogTailer reading along (torture).

The writer (a separate process) appends numbered agent-style lines at about
`rate` lines/s in small batches through one O_APPEND descriptor, and reopens the
path only when it gets SIGHUP -- what logrotate's `postrotate` does for a daemon
that keeps its log open -- sent `reopen_delay` seconds after the rotation. Until
then its lines keep going to the file that was rotated away (renamed, gzipped and
deleted, or deleted): the tailer must drain that file from its open descriptor.

The rotator (a thread) rotates every `period` seconds, one `kind`:
  rename      rename to .1 and create a new empty file, then SIGHUP
  gzip        rename to .1, create, SIGHUP, then gzip .1 into .N.gz and delete .1
  delete      delete and create a new empty file, then SIGHUP
  copytruncate copy then truncate in place (the writer never reopens). The two windows
              no reader can close (lines written between copy and truncate, lines not
              read before the truncate) are avoided as logrotate on an idle log would:
              the writer is paused (SIGSTOP) and the tailer catches up first.
Lines are counted by number: lost = written - distinct delivered; doubled =
delivered - distinct.
"""

from __future__ import annotations

import gzip
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from waagent_guard.agent.tail import READ_SLICE_BYTES, LogTailer

WRITER = r"""
import os, signal, sys, time
path, rate = sys.argv[1], float(sys.argv[2])
reopen = [False]
stop = [False]
signal.signal(signal.SIGHUP, lambda *_: reopen.__setitem__(0, True))
signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
fd = os.open(path, flags, 0o644)
number = 0
start = time.monotonic()
batch = max(1, int(rate / 100))
while not stop[0]:
    if reopen[0]:
        reopen[0] = False
        os.close(fd)
        fd = os.open(path, flags, 0o644)
    lines = []
    for _ in range(batch):
        number += 1
        lines.append(f"2024-01-01T00:00:00.000000Z INFO ExtHandler ExtHandler line {number}\n")
    os.write(fd, "".join(lines).encode())
    ahead = start + number / rate - time.monotonic()
    if ahead > 0:
        time.sleep(ahead)
print(number, flush=True)
"""


@dataclass
class RotationResult:
    kind: str
    rotations: int
    written: int
    delivered: int
    distinct: int
    seconds: float  # the writer's run

    @property
    def lost(self) -> int:
        return self.written - self.distinct

    @property
    def doubled(self) -> int:
        return self.delivered - self.distinct

    def figure(self) -> str:
        return (
            f"{self.kind}: {self.rotations} rotations in {self.seconds:.0f} s, "
            f"{self.written} lines written ({self.written / self.seconds:.0f}/s), "
            f"lost {self.lost}, doubled {self.doubled}"
        )


def run_rotations(
    directory: Path,
    kind: str,
    *,
    rotations: int = 100,
    period: float = 0.3,
    rate: float = 12_000.0,
    reopen_delay: float = 0.1,
    max_bytes: Optional[int] = READ_SLICE_BYTES,
    consume: Optional[Callable[[list[str]], None]] = None,
    settle: Optional[Callable[[int], None]] = None,
) -> RotationResult:
    """Rotate `rotations` times while the writer runs; `settle(delivered)` is called
    before each copytruncate, once this tailer has caught up (another reader of the
    same log, e.g. the daemon, can wait for itself there)."""
    log = directory / "waagent.log"
    if log.exists():
        log.unlink()  # a fresh log for this run (numbers start at 1 again)
    log.touch()
    tailer = LogTailer(log, from_start=True)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log), str(rate)],
        stdout=subprocess.PIPE,
        text=True,
    )
    numbers: list[int] = []
    reads = [0]
    done = threading.Event()
    failure: list[BaseException] = []

    def rotate_once(index: int) -> None:
        rotated = directory / "waagent.log.1"
        if kind == "copytruncate":
            os.kill(writer.pid, signal.SIGSTOP)
            try:
                seen = reads[0]
                while reads[0] < seen + 2 and not done.is_set():  # the tailer caught up
                    time.sleep(0.001)
                if settle is not None:
                    settle(len(numbers))
                shutil.copyfile(log, rotated)
                os.truncate(log, 0)
            finally:
                os.kill(writer.pid, signal.SIGCONT)
            return
        if kind == "delete":
            log.unlink()
        else:
            os.replace(log, rotated)
        log.touch()
        time.sleep(reopen_delay)  # the writer still appends to the rotated file
        os.kill(writer.pid, signal.SIGHUP)
        if kind == "gzip":
            with open(rotated, "rb") as source, gzip.open(
                directory / f"waagent.log.{index}.gz", "wb", compresslevel=1
            ) as target:
                shutil.copyfileobj(source, target)
            rotated.unlink()

    def rotator() -> None:
        try:
            for index in range(rotations):
                time.sleep(period if kind == "copytruncate" else max(0.0, period - reopen_delay))
                rotate_once(index)
        except BaseException as error:  # reported by the caller
            failure.append(error)
        finally:
            time.sleep(period)
            writer.send_signal(signal.SIGTERM)

    started = time.monotonic()
    thread = threading.Thread(target=rotator, daemon=True)
    thread.start()
    try:
        while writer.poll() is None:
            lines = tailer.read_lines(max_bytes=max_bytes)
            reads[0] += 1
            if consume is not None:
                consume(lines)
            numbers.extend(int(line.rsplit(" ", 1)[1]) for line in lines if line)
            if not tailer.more_pending:
                time.sleep(0.005)
        writer_seconds = time.monotonic() - started
        done.set()
        thread.join()
        # Whatever is left (the tailer's linger ends on its clock; give it its time).
        quiet_until = time.monotonic() + 10.0
        while time.monotonic() < quiet_until:
            lines = tailer.read_lines(max_bytes=max_bytes)
            if consume is not None:
                consume(lines)
            numbers.extend(int(line.rsplit(" ", 1)[1]) for line in lines if line)
            if not lines and not tailer.more_pending and not getattr(tailer, "draining", False):
                break
            time.sleep(0.05)
    finally:
        done.set()
        if writer.poll() is None:
            writer.kill()
        tailer.close()
    assert writer.stdout is not None
    written = int(writer.communicate()[0].split()[0])
    if failure:
        raise failure[0]
    return RotationResult(kind, rotations, written, len(numbers), len(set(numbers)), writer_seconds)
