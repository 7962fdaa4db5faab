"""Another local user's agent look-alike, run as a real process against the real /proc.

Review of issue 14: any uid can start `python3 .../waagent -daemon
-configuration-path:/some/root/file`. Counted as the agent, it hid the real agent's
death from the restart policy and chose the waagent.conf that `verbose on` appends
to as root. The same process run by root is the agent (the control case: the test
can fail).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from waagent_guard.agent.roots import processes_in_root
from waagent_guard.observe import resolve_conf_path
from waagent_guard.settings import Settings
from waagent_guard.sysroot import Sysroot

NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="starts a process as another uid")


@pytest.fixture
def lookalike_dir() -> Iterator[Path]:
    """A world-readable directory (pytest's tmp_path is 0700: nobody could not run from it)."""
    directory = Path(tempfile.mkdtemp(prefix="wg-lookalike-"))
    directory.chmod(0o755)
    script = directory / "waagent"
    script.write_text("import time\ntime.sleep(120)\n")
    script.chmod(0o644)
    yield directory
    for path in directory.iterdir():
        path.unlink()
    directory.rmdir()


def _start(directory: Path, victim: Path, uid: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-u", str(directory / "waagent"), "-daemon",
            f"-configuration-path:{victim}"]
    process = subprocess.Popen(argv, user=uid, cwd="/")
    deadline = time.monotonic() + 30
    cmdline = Path(f"/proc/{process.pid}/cmdline")
    while str(directory) not in cmdline.read_bytes().decode(errors="replace"):
        # exec has not happened yet: the child still shows the parent's command line
        if time.monotonic() > deadline:
            raise AssertionError("the look-alike never exec'd")
        time.sleep(0.01)
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.kill()  # by PID: only the process this test started
    process.wait(timeout=30)


@pytest.mark.parametrize(("uid", "counted"), [(NOBODY, False), (0, True)])
def test_only_roots_agent_lookalike_is_the_agent(
    lookalike_dir: Path, tmp_path: Path, uid: int, counted: bool
) -> None:
    victim = tmp_path / "victim.conf"
    process = _start(lookalike_dir, victim, uid)
    try:
        found = [p.pid for p in processes_in_root(Sysroot())]
        conf = resolve_conf_path(Sysroot(), Settings())
    finally:
        _stop(process)
    assert (process.pid in found) is counted
    assert (conf == victim) is counted
