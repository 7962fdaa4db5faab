"""The differential layer's oracle: the agent's own code, from Debian's `waagent` package.

(Shared helpers; the `agent_oracle` fixture itself is in conftest.py.)

`agent_oracle` (session scope) obtains `waagent_*.deb` with `apt-get download waagent`
into a cache directory (`$WG_ORACLE_CACHE`, default `<repo>/.cache/oracle`), unpacks it
with `dpkg -x` (never installed, never run) and hands out an `AgentOracle`. Its `call`
runs `agent_driver.py` in a SUBPROCESS (`python -I`) whose sys.path holds the unpacked
`azurelinuxagent` package: the driver pins what the agent would detect (a stub `distro`
module saying Debian 12), refuses every non-loopback socket, and calls the agent's own
readers, writers and logger on the inputs the test gives it. Nothing the agent imports
can touch this process.

A package that cannot be obtained (no apt, no network, no archive) skips the oracle tests
with the reason, unless `WG_REQUIRE_ALL=1` (CI), where it fails them.

Other oracle tests (e.g. tests/oracle/test_process_oracle.py) reuse the fixture:
`agent_oracle.call("op", cases)` with an op the driver knows, or `agent_oracle.run_script`
for a one-off snippet that imports `azurelinuxagent` (the distro stub and the socket
guard are installed first).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).resolve().with_name("agent_driver.py")
DEFAULT_CACHE = REPO / ".cache" / "oracle"
PACKAGE = "waagent"
SITE_SUFFIX = Path("usr/lib/python3/dist-packages")


@dataclass(frozen=True)
class AgentOracle:
    """One unpacked agent package; `call` asks its code, in a subprocess."""

    deb: Path
    root: Path  # the `dpkg -x` tree
    site: Path  # the directory holding `azurelinuxagent/`
    version: str  # AGENT_VERSION as the package's own code states it

    @property
    def shipped_conf(self) -> Path:
        """The waagent.conf the package ships (its /etc/waagent.conf)."""
        return self.root / "etc" / "waagent.conf"

    def call(self, op: str, cases: list[Any], *, timeout: float = 300) -> list[Any]:
        """Run driver operation `op` on each case; one subprocess for the whole batch."""
        request = json.dumps({"op": op, "cases": cases})
        result = _run_driver(self.site, ["--request"], request, timeout)
        answer = json.loads(result)
        assert isinstance(answer, list) and len(answer) == len(cases), answer
        return answer

    def run_script(self, code: str, stdin: str = "", *, timeout: float = 300) -> str:
        """Run `code` (Python source) after the driver's pinning; returns its stdout."""
        return _run_driver(self.site, ["--script", code], stdin, timeout)


def _run_driver(site: Path, args: list[str], stdin: str, timeout: float) -> str:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "TZ": "UTC"}
    completed = subprocess.run(
        [sys.executable, "-I", str(DRIVER), str(site), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd="/",
        check=False,
    )
    if completed.returncode != 0:
        raise AssertionError(
            f"oracle driver failed (exit {completed.returncode}):\n{completed.stderr[-4000:]}"
        )
    return completed.stdout


def unavailable(reason: str) -> AgentOracle:
    if os.environ.get("WG_REQUIRE_ALL") == "1":
        pytest.fail(f"agent oracle required (WG_REQUIRE_ALL=1) but unavailable: {reason}")
    pytest.skip(f"agent oracle unavailable: {reason}")


def _download(cache: Path) -> str:
    """`apt-get download waagent` into `cache`; '' on success, else why not."""
    if shutil.which("apt-get") is None:
        return "apt-get not found (the oracle is Debian's waagent package)"
    try:
        completed = subprocess.run(
            ["apt-get", "download", "-q", PACKAGE],
            cwd=cache,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"apt-get download {PACKAGE} failed: {error}"
    if completed.returncode != 0:
        return (
            f"apt-get download {PACKAGE} failed (exit {completed.returncode}): "
            f"{completed.stderr.strip()[-500:]} (run `apt-get update` first?)"
        )
    return ""


def obtain_agent_oracle(cache: Path) -> tuple[AgentOracle | None, str]:
    """The cached (or freshly downloaded) package, unpacked; (None, reason) when impossible."""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return None, f"cannot create {cache}: {error}"
    cache = cache.resolve()
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel sessions share the cache
        debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
        if not debs:
            reason = _download(cache)
            if reason:
                return None, reason
            debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
            if not debs:
                return None, f"apt-get download {PACKAGE} left no .deb in {cache}"
        deb = debs[-1]
        root = cache / deb.name.removesuffix(".deb")
        if not (root / SITE_SUFFIX / "azurelinuxagent").is_dir():
            if shutil.which("dpkg") is None:
                return None, "dpkg not found (needed for `dpkg -x`)"
            partial = cache / (root.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            extracted = subprocess.run(
                ["dpkg", "-x", str(deb), str(partial)], capture_output=True, text=True, check=False
            )
            if extracted.returncode != 0:
                return None, f"dpkg -x {deb} failed: {extracted.stderr.strip()[-500:]}"
            shutil.rmtree(root, ignore_errors=True)
            partial.rename(root)
    site = root / SITE_SUFFIX
    version = _run_driver(site, ["--version"], "", 120).strip()
    return AgentOracle(deb=deb, root=root, site=site, version=version), ""
