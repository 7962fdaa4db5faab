"""A Debian 12 systemd container for the end-to-end tests (systemd-nspawn).

Owns booting a copy of the cached root with `--private-network` (always: the
container only ever has `lo`, so the real agent inside can reach nothing),
running commands in it through `nsenter`, collecting its journal and console
log, and stopping it. Only processes this module started are ever signalled,
by their PID.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Callable, Optional, TypeVar

logger = logging.getLogger(__name__)

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
T = TypeVar("T")


class ContainerError(AssertionError):
    """Something in the container did not happen; the message says what and where."""


def wait_for(
    probe: Callable[[], Optional[T]], *, timeout: float, what: str, interval: float = 0.5
) -> T:
    """Poll `probe` until it returns a truthy value (an external system: no event to await)."""
    deadline = time.monotonic() + timeout
    last: Optional[T] = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise ContainerError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class Container:
    """One booted copy of `base_root`, living under `workdir`."""

    def __init__(
        self, base_root: Path, workdir: Path, artifacts: Path, *, machine: str = "wg-e2e"
    ) -> None:
        self.machine = machine
        self.base_root = base_root
        self.workdir = workdir
        self.root = workdir / "root"
        self.artifacts = artifacts
        self.console_log = artifacts / "console.log"
        self._nspawn: Optional[subprocess.Popen[bytes]] = None
        self.init_pid: Optional[int] = None

    # --- lifecycle -----------------------------------------------------------------
    def prepare(self) -> None:
        """Copy the cached root (a few seconds; the cache stays pristine)."""
        if self.root.exists():
            shutil.rmtree(self.root)
        self.workdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["cp", "-a", "--reflink=auto", str(self.base_root), str(self.root)],
            check=True,
            timeout=300,
        )

    def boot(self, *, timeout: float = 60.0) -> None:
        self.artifacts.mkdir(parents=True, exist_ok=True)
        console = self.console_log.open("wb")
        argv = [
            "systemd-nspawn",
            "--directory", str(self.root),
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            "--private-network",  # never boot without it: only `lo` inside
            f"--machine={self.machine}",
            "--",
            "systemd.show_status=true",
        ]  # fmt: skip
        self._nspawn = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={"PATH": os.environ.get("PATH", CONTAINER_PATH), "LC_ALL": "C"},
        )
        console.close()
        self.init_pid = wait_for(self._find_init, timeout=timeout, what="the container's init")
        state = wait_for(
            self._system_state, timeout=timeout, what="systemd in the container to finish booting"
        )
        logger.info("container booted: init pid %s, system %s", self.init_pid, state)

    def _find_init(self) -> Optional[int]:
        assert self._nspawn is not None
        if self._nspawn.poll() is not None:
            raise ContainerError(
                f"systemd-nspawn exited with {self._nspawn.returncode}:\n{self.console_text()}"
            )
        children = Path(f"/proc/{self._nspawn.pid}/task/{self._nspawn.pid}/children")
        try:
            pids = children.read_text().split()
        except OSError:
            return None
        for pid in pids:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                continue
        return None

    def _system_state(self) -> Optional[str]:
        result = self.run(["systemctl", "is-system-running"], check=False, timeout=20)
        state = result.stdout.strip()
        return state if state in ("running", "degraded") else None

    def poweroff(self, *, timeout: float = 60.0) -> None:
        if self._nspawn is None:
            return
        if self._nspawn.poll() is None:
            self.run(["systemctl", "poweroff"], check=False, timeout=20)
            try:
                self._nspawn.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("no poweroff; terminating nspawn %s", self._nspawn.pid)
                os.kill(self._nspawn.pid, signal.SIGTERM)
                try:
                    self._nspawn.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.kill(self._nspawn.pid, signal.SIGKILL)
                    self._nspawn.wait(timeout=15)
        self._nspawn = None
        self.init_pid = None

    def remove(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # --- commands --------------------------------------------------------------------
    def run(
        self, argv: Sequence[str], *, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` inside the container (all its namespaces), clean environment."""
        if self.init_pid is None:
            raise ContainerError("the container is not running")
        command = [
            "nsenter", "--target", str(self.init_pid), "--all",
            "env", "-i", f"PATH={CONTAINER_PATH}", "LC_ALL=C", "HOME=/root",
            "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", *argv,
        ]  # fmt: skip
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise ContainerError(
                f"in the container, {' '.join(argv)!r} exited {result.returncode}:\n"
                f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
            )
        return result

    def sh(self, script: str, *, check: bool = True, timeout: float = 120.0) -> str:
        return self.run(["sh", "-ec", script], check=check, timeout=timeout).stdout

    def path(self, inside: str) -> Path:
        """Host path of a file in the container's root."""
        return self.root / inside.lstrip("/")

    # --- systemd facts -------------------------------------------------------------------
    def show(self, unit: str, *properties: str) -> dict[str, str]:
        output = self.run(
            ["systemctl", "show", unit, *(f"--property={p}" for p in properties)]
        ).stdout
        return dict(line.split("=", 1) for line in output.splitlines() if "=" in line)

    def main_pid(self, unit: str) -> int:
        return int(self.show(unit, "MainPID")["MainPID"])

    def metrics(self, port: int = 8419) -> dict[str, float]:
        """Scrape the guard's metrics from inside the container: {'name{labels}': value}."""
        text = self.run(
            ["curl", "--fail", "--silent", "--show-error", "--max-time", "5",
             f"http://127.0.0.1:{port}/metrics"],
            check=False,
        )  # fmt: skip
        if text.returncode != 0:
            return {}
        samples: dict[str, float] = {}
        for line in text.stdout.splitlines():
            match = re.fullmatch(r"([a-zA-Z_:][\w:]*(?:\{.*\})?) (\S+)(?: \d+)?", line)
            if match and not line.startswith("#"):
                samples[match.group(1)] = float(match.group(2))
        return samples

    # --- evidence ------------------------------------------------------------------------
    def console_text(self) -> str:
        try:
            return self.console_log.read_text(errors="replace")
        except OSError:
            return ""

    def journal_text(self) -> str:
        if self.init_pid is None:
            return "(container not running: no journal)"
        result = self.run(
            ["journalctl", "--boot", "--no-pager", "--output=short-precise"],
            check=False,
            timeout=60,
        )
        return result.stdout + result.stderr

    def save_artifacts(self) -> Path:
        """Write the journal, the agent's log and the console to the artifacts dir."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        if self.init_pid is not None:
            (self.artifacts / "journal.txt").write_text(self.journal_text())
        for inside in ("/var/log/waagent.log", "/etc/waagent.conf"):
            source = self.path(inside)
            if source.is_file():
                shutil.copyfile(source, self.artifacts / source.name)
        return self.artifacts
