"""Another local user's agent look-alike, run as a real process against the real /proc.

Review of issue 14: any uid can start `python3 .../waagent -daemon
-configuration-path:/some/root/file`. Counted as the agent, it hid the real agent's
death from the restart policy and chose the waagent.conf that `verbose on` appends
to as root. The same process run by root is the agent (the control case: the test
can fail).
"""

from __future__ import annotations

import os
import shutil
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
    shutil.rmtree(directory)


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


def test_hidepid_parser_reads_the_proc_mount(tmp_path: Path) -> None:
    from waagent_guard.agent.process import hidepid

    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "30 27 0:40 / /tmp/p1 rw - proc proc rw,hidepid=invisible\n"
        "31 27 0:41 / /tmp/p2 rw - proc proc rw,hidepid=2\n"
        "32 27 0:42 / /tmp/p3 rw - proc proc rw,hidepid=off\n"
        "33 27 0:43 / /tmp/p4 rw - tmpfs tmpfs rw,hidepid=2\n"
    )
    assert hidepid(Path("/proc"), mountinfo) is None
    assert hidepid(Path("/tmp/p1"), mountinfo) == "invisible"
    assert hidepid(Path("/tmp/p2"), mountinfo) == "2"
    assert hidepid(Path("/tmp/p3"), mountinfo) is None
    assert hidepid(Path("/tmp/p4"), mountinfo) is None  # not a proc mount
    assert hidepid(tmp_path / "fake-proc", mountinfo) is None
    assert hidepid(Path("/proc"), tmp_path / "missing") is None


@pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("setpriv") is None,
                    reason="needs util-linux unshare and setpriv")
def test_a_user_who_cannot_see_roots_processes_gets_unknown_not_agent_down(
    lookalike_dir: Path, tmp_path: Path
) -> None:
    """Review of issue 14: under hidepid, `status` run by a user said "no agent" while
    root's agent ran. It is unknown (exit 4), never "down"."""
    script = lookalike_dir / "check.sh"
    script.write_text(
        "set -e\n"
        "for mode in 1 2; do\n"
        f"  mkdir -p {lookalike_dir}/p$mode\n"
        f"  mount -t proc -o hidepid=$mode proc {lookalike_dir}/p$mode\n"
        f"  setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups {sys.executable} -c '\n"
        "import sys\n"
        "from pathlib import Path\n"
        "from waagent_guard.agent.process import ProcessScanError, find_agent_processes\n"
        "try:\n"
        "    find_agent_processes(Path(sys.argv[1]))\n"
        "    print(\"seen\")\n"
        "except ProcessScanError as error:\n"
        "    print(\"unknown\", error)\n"
        f"' {lookalike_dir}/p$mode\n"
        "done\n"
    )
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "bash", str(script)],
        capture_output=True, text=True, timeout=120, check=False, cwd="/",
        env={**os.environ, "PYTHONPATH": str(repo)},
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["unknown", "unknown"], result.stdout
    assert "hidepid=" in lines[0] and "run as root" in lines[0]
