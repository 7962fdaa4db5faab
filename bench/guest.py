"""The systems under test on the host: the guard against the demo guest, a hanging
endpoint, and Debian's prometheus-node-exporter as an anchor.

Owns starting and stopping them. Every listener is on 127.0.0.1; only processes
started here are signalled, by their PID.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.common import GUARD, clean_env, free_port, wait_until

logger = logging.getLogger(__name__)

NODE_EXPORTER_CACHE = Path("/var/cache/waagent-guard-bench/ne/usr/bin/prometheus-node-exporter")


@dataclass
class RunningGuard:
    guest: Path
    port: int
    pid: int
    config: Path

    def scrape(self, timeout: float = 5.0) -> bytes:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=timeout) as response:  # loopback only
            body: bytes = response.read()
            return body


def _stop(process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _scrapes(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@contextlib.contextmanager
def running_guard(
    workdir: Path,
    *,
    overrides: Optional[Mapping[str, Mapping[str, object]]] = None,
    agent_interval: float = 60.0,
) -> Iterator[RunningGuard]:
    """`waagent-guard run --root GUEST` against a demo guest with a simulated agent.

    The simulated agent writes a heartbeat line every `agent_interval` seconds.
    Production defaults otherwise (tick 15 s); probes off unless `overrides` say so.
    """
    from waagent_guard.demo.guestctl import prepare_guest, stop_agent

    port = free_port()
    settings: dict[str, dict[str, object]] = {
        "daemon": {"tick_seconds": 15.0},
        "restart": {"backoff_initial_seconds": 5.0, "grace_seconds": 5.0},
    }
    for section, values in (overrides or {}).items():
        settings.setdefault(section, {}).update(values)
    guest = prepare_guest(workdir, port, overrides=settings).resolve()
    config = guest / "etc/waagent-guard/guard.toml"
    env = clean_env({"WG_SIM_INTERVAL": str(agent_interval)})
    subprocess.run(
        [str(GUARD.parent / "python"), "-m", "waagent_guard.demo.guestctl", "start", str(guest)],
        check=True,
        timeout=30,
        env=env,
    )
    log = (workdir / "guard.log").open("wb")
    guard = subprocess.Popen(
        [str(GUARD), "run", "--root", str(guest), "--config", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    log.close()
    try:
        wait_until(lambda: guard.poll() is not None or _scrapes(port), timeout=60, what="guard")
        if guard.poll() is not None:
            raise RuntimeError(
                f"waagent-guard run exited {guard.returncode}: "
                f"{(workdir / 'guard.log').read_text(errors='replace')[-2000:]}"
            )
        yield RunningGuard(guest=guest, port=port, pid=guard.pid, config=config)
    finally:
        _stop(guard)
        stop_agent(guest)


class HangServer:
    """A loopback TCP server that accepts connections and never answers."""

    def __init__(self) -> None:
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port: int = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="hang-server", daemon=True)

    def __enter__(self) -> HangServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()

    def _serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            self.accepted.append(connection)  # held open, never read or answered


def hanging_doctor_overrides(port: int) -> dict[str, dict[str, object]]:
    """Every doctor endpoint on 127.0.0.1:`port`, which accepts and never answers."""
    return {
        "doctor": {
            "probe": "always",
            "wireserver": "127.0.0.1",
            "wireserver_port": port,
            "hostgaplugin_port": port,
            "imds_url": f"http://127.0.0.1:{port}/metadata/instance?api-version=2021-02-01",
            "storage_host": "127.0.0.1",
            "storage_port": port,
        }
    }


def node_exporter_binary() -> Optional[Path]:
    """Debian's prometheus-node-exporter: installed, or unpacked by bench/setup.sh."""
    found = shutil.which("prometheus-node-exporter")
    if found:
        return Path(found)
    return NODE_EXPORTER_CACHE if os.access(NODE_EXPORTER_CACHE, os.X_OK) else None


@contextlib.contextmanager
def running_node_exporter(binary: Path) -> Iterator[tuple[int, int]]:
    """node_exporter on 127.0.0.1 only; yields (pid, port)."""
    port = free_port()
    process = subprocess.Popen(
        [str(binary), f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=clean_env(),
    )
    try:
        wait_until(
            lambda: process.poll() is not None or _listening(port), timeout=30, what="node_exporter"
        )
        if process.poll() is not None:
            raise RuntimeError(f"node_exporter exited {process.returncode}")
        yield process.pid, port
    finally:
        _stop(process)
