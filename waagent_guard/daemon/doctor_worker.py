"""The doctor inside the daemon: checks on a schedule, off the loop, and pressure per tick.

Probes can take seconds, so the checks run in one worker thread; results are
handed over as immutable samples and the loop is poked to publish them. CPU
and memory use are sampled on every reconciliation tick (two /proc reads, no
sleep) so "above 90 % for the whole window" is judged over the daemon's window.

Each run takes the loop's last published `Observation` (unit state, processes,
log signals): the doctor asks the service manager nothing and re-reads no log.

Imports: doctor, metrics, observe. Never the `Guard`.
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import Callable, Optional

from waagent_guard.doctor.pressure import CpuTimes, cpu_percent, parse_meminfo, parse_proc_stat
from waagent_guard.doctor.runner import DoctorRunner
from waagent_guard.metrics import CheckSample
from waagent_guard.observe import Observation

log = logging.getLogger(__name__)


class CheckWorker:
    def __init__(
        self,
        runner: DoctorRunner,
        *,
        poke: Callable[[], None],
        observation: Callable[[], Optional[Observation]],
        proc_root: Path = Path("/proc"),
    ) -> None:
        self._runner = runner
        self._poke = poke
        # The loop's published (frozen) observation: no second `systemctl show`, no log re-read.
        self._observation = observation
        self._proc_root = proc_root
        self._lock = threading.Lock()  # guards the published results only
        self._pressure: queue.SimpleQueue[tuple[float, Optional[float], Optional[float]]] = (
            queue.SimpleQueue()
        )
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._samples: tuple[CheckSample, ...] = ()
        self._backup_ready: Optional[bool] = None
        self._last_cpu: Optional[CpuTimes] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._work, name="doctor", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        interval = float(self._runner.settings.doctor.interval_seconds)
        while not self._stop.is_set():
            self.run_once()
            self._wake.wait(interval)
            self._wake.clear()

    def run_once(self) -> None:
        """One doctor run on the published observation (the worker thread calls this)."""
        try:
            self._feed_pressure()
            findings = self._runner.run(observation=self._observation())
            samples = tuple(
                CheckSample(f.code, f.metric_value, f.duration_seconds, f.checked_at)
                for f in findings
            )
            with self._lock:
                self._samples = samples
                self._backup_ready = self._runner.backup_ready
            self._poke()
        except Exception:  # a broken run must not end the schedule
            log.exception("doctor run failed; trying again at the next interval")

    def results(self) -> tuple[tuple[CheckSample, ...], Optional[bool]]:
        with self._lock:
            return self._samples, self._backup_ready

    def sample_pressure(self, now: float) -> None:
        """Feed one tick's CPU (since the previous tick) and memory use to the windows."""
        try:
            stat = parse_proc_stat((self._proc_root / "stat").read_text("ascii", "replace"))
            memory = parse_meminfo((self._proc_root / "meminfo").read_text("ascii", "replace"))
        except OSError:
            return
        cpu = None
        if stat is not None and self._last_cpu is not None:
            cpu = cpu_percent(self._last_cpu, stat)
        self._last_cpu = stat
        # Only the worker touches the runner's windows: the sample waits in a queue.
        self._pressure.put((now, cpu, memory.used_percent if memory else None))

    def _feed_pressure(self) -> None:
        while True:
            try:
                now, cpu, memory = self._pressure.get_nowait()
            except queue.Empty:
                return
            self._runner.observe_pressure(now, cpu, memory)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
