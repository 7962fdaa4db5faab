"""Drive the real daemon (`python -m waagent_guard run`) against a demo guest.

The guest is the packaged demo tree in a short temporary directory (unix
socket paths are limited to 108 bytes), its `proc` linked to the host's /proc,
with the simulated agent started detached through the same `command` manager
argv the guard uses. READY/WATCHDOG/STOPPING arrive on a real notify socket;
metrics come from a real HTTP scrape parsed by prometheus_client's parser.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Callable, Optional

from prometheus_client.parser import text_string_to_metric_families

from waagent_guard.demo.guestctl import PIDFILE, prepare_guest

FAST: dict[str, dict[str, object]] = {
    "daemon": {"tick_seconds": 1.0, "debounce_seconds": 0.05, "proc_poll_seconds": 0.2},
}


def merged(*layers: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, object]]:
    result: dict[str, dict[str, object]] = {}
    for layer in layers:
        for section, values in layer.items():
            result.setdefault(section, {}).update(values)
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, what: str = "") -> object:
    """Poll `predicate` until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.05)


class Guest:
    """A demo guest tree with its simulated agent."""

    def __init__(self, agent_args: Sequence[str] = (),
                 overrides: Optional[Mapping[str, Mapping[str, object]]] = None) -> None:
        self.top = Path(tempfile.mkdtemp(prefix="wg-", dir="/tmp"))
        self.port = free_port()
        self.root = prepare_guest(self.top / "g", self.port, agent_args,
                                  merged(FAST, overrides or {}))
        self.config = self.root / "etc/waagent-guard/guard.toml"

    def run_tool(self, verb: str, *args: str) -> int:
        argv = [sys.executable, "-m", "waagent_guard.demo.guestctl", verb, str(self.root), *args]
        return subprocess.run(argv, timeout=30, check=False).returncode

    def agent_pid(self) -> Optional[int]:
        try:
            pid = int((self.root / PIDFILE).read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return None
        return pid if str(self.root).encode() in cmdline else None

    def own_processes(self) -> list[int]:
        """PIDs of processes this guest started (their argv names the guest's path)."""
        found = []
        marker = str(self.root).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue
        return [pid for pid in found if pid != os.getpid()]

    def conf_text(self) -> str:
        return (self.root / "etc/waagent.conf").read_text()

    def cleanup(self) -> None:
        self.run_tool("stop")
        for pid in self.own_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.top, ignore_errors=True)


class Daemon:
    """`waagent-guard run --root GUEST` as a real subprocess with a notify socket."""

    def __init__(self, guest: Guest, *, watchdog_usec: int = 2_000_000) -> None:
        self.guest = guest
        self.notify_path = Path(tempfile.mktemp(prefix="notify-", suffix=".sock", dir=guest.top))
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.notify.settimeout(0.1)
        self.messages: list[str] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read_notifications, name="notify-reader")
        self._reader.start()
        env = dict(os.environ)
        env.update(
            NOTIFY_SOCKET=str(self.notify_path),
            WATCHDOG_USEC=str(watchdog_usec),
            PYTHONUNBUFFERED="1",
        )
        env.pop("INVOCATION_ID", None)
        env.pop("JOURNAL_STREAM", None)
        self.log_path = guest.top / "daemon.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "waagent_guard", "run", "--root", str(guest.root)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def _read_notifications(self) -> None:
        """Drain the notify socket continuously, as systemd does (never let it fill)."""
        while not self._closing.is_set():
            try:
                data = self.notify.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append(data.decode())

    def wait_notify(self, field: str, timeout: float = 20.0) -> str:
        """Block until a notify datagram carrying `field` (e.g. READY=1) has arrived."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for message in self.messages:
                    if field in message.split("\n"):
                        return message
            if self.process.poll() is not None and field != "STOPPING=1":
                raise AssertionError(f"daemon exited {self.process.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"no {field} within {timeout}s; got {self.messages}\n{self.output()}"
                )
            time.sleep(0.02)

    def drain(self) -> list[str]:
        with self._lock:
            return list(self.messages)

    def scrape(self) -> dict[str, float]:
        url = f"http://127.0.0.1:{self.guest.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples

    def metric(self, name: str) -> Optional[float]:
        return self.scrape().get(name)

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, timeout: float = 20.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        time.sleep(0.2)  # let the reader take the last datagrams (STOPPING=1)
        self._closing.set()
        self._reader.join()
        self.notify.close()
        return int(self.process.returncode)
