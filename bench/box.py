"""The e2e container for the benchmarks: booted once per run and shared.

Reuses tests/e2e (build-root.sh and `Container`, which always boots with
`--private-network`). Owns deciding whether a container can be had at all
(root, tools, a cached root; in quick mode no root is built) and installing our
.deb plus bench/incontainer.py into it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional, Union

from bench.common import REPO

logger = logging.getLogger(__name__)

CACHE = Path(os.environ.get("WG_E2E_CACHE", "/var/cache/waagent-guard-e2e"))
TOOLS = ("systemd-nspawn", "nsenter")
SCRIPT_INSIDE = "/root/wgbench.py"
AGENT_UNIT = "walinuxagent.service"
GUARD_UNIT = "waagent-guard.service"


def _newest_source_mtime() -> float:
    """What makes a built .deb stale (as tests/e2e/conftest.py decides)."""
    newest = 0.0
    for name in ("waagent_guard", "packaging", "systemd", "pyproject.toml"):
        path = REPO / name
        files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" not in file.parts:
                newest = max(newest, file.stat().st_mtime)
    return newest


class Box:
    """A booted container (or why there is none); `.container` is a tests.e2e Container."""

    def __init__(self, *, quick: bool) -> None:
        self.quick = quick
        self.container: Any = None
        self.reason: Optional[str] = None
        self.guard_installed = False
        self._workdir: Optional[Path] = None

    def open(self) -> bool:
        """Boot it; False (and `.reason`) when that cannot be done here."""
        if self.container is not None or self.reason is not None:
            return self.container is not None
        try:
            self._boot()
        except Exception as error:  # a benchmark without its anchor still runs
            self.reason = f"container could not be booted: {error}"
            logger.warning("%s", self.reason)
            self.close()
        return self.container is not None

    def _boot(self) -> None:
        if os.geteuid() != 0:
            raise RuntimeError("needs root (systemd-nspawn)")
        missing = [tool for tool in TOOLS if shutil.which(tool) is None]
        if missing:
            raise RuntimeError(f"missing {', '.join(missing)} (apt-get install systemd-container)")
        if not (CACHE / "root" / ".wg-e2e-recipe").exists():
            if self.quick:
                raise RuntimeError(
                    f"no cached root in {CACHE} (quick mode builds none; `make e2e` or "
                    "`make bench` builds it)"
                )
            subprocess.run(
                [str(REPO / "tests/e2e/build-root.sh"), str(CACHE)], check=True, timeout=1200
            )
        from tests.e2e.container import Container

        self._workdir = Path(tempfile.mkdtemp(prefix="wg-bench-", dir="/var/tmp"))
        box = Container(CACHE / "root", self._workdir, self._workdir / "artifacts")
        box.prepare()
        box.boot()
        self.container = box
        interfaces = box.run(["ls", "/sys/class/net"]).stdout.split()
        if interfaces != ["lo"]:
            raise RuntimeError(f"container sees {interfaces}, expected only lo")
        shutil.copyfile(REPO / "bench/incontainer.py", box.path(SCRIPT_INSIDE))
        self._install_guard()

    def _install_guard(self) -> None:
        debs = sorted(
            (REPO / "out/deb").glob("waagent-guard_*.deb"), key=lambda p: p.stat().st_mtime
        )
        if not self.quick and (not debs or debs[-1].stat().st_mtime < _newest_source_mtime()):
            subprocess.run(["make", "-C", str(REPO), "deb"], check=True, timeout=1200)
            debs = sorted(
                (REPO / "out/deb").glob("waagent-guard_*.deb"), key=lambda p: p.stat().st_mtime
            )
        if not debs:
            logger.warning("no .deb in out/deb: the guard is not installed in the container")
            return
        shutil.copyfile(debs[-1], self.container.path("/root/waagent-guard.deb"))
        self.container.run(["dpkg", "-i", "/root/waagent-guard.deb"], timeout=300)
        self.guard_installed = True
        self.deb = debs[-1].name

    def script(self, *args: str, timeout: float = 600.0) -> dict[str, Any]:
        result = self.container.run(["python3", SCRIPT_INSIDE, *args], timeout=timeout)
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    def sh(self, script: str) -> str:
        text: str = self.container.sh(script)
        return text

    def write(self, inside: str, text: Union[str, bytes]) -> None:
        path: Path = self.container.path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(text, str):
            path.write_text(text)
        else:
            path.write_bytes(text)

    def close(self) -> None:
        if self.container is not None:
            self.container.poweroff()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
        self.container = None
