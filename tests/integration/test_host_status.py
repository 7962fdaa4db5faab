"""On the host (`/`) only the host's agent counts: not a demo guest's, not a container's."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Callable

from tests.integration.guard_harness import Guest, wait_for
from waagent_guard.agent.roots import other_root_of, processes_in_root, same_root
from waagent_guard.cli import main
from waagent_guard.demo.simagent import lay_demo_guest
from waagent_guard.sysroot import Sysroot

MakeGuest = Callable[..., Guest]


@contextmanager
def host_like_agent(directory: Path) -> Iterator[int]:
    """A process that looks like the host's agent daemon: `python3 -u <dir>/waagent -daemon`."""
    script = directory / "sbin" / "waagent"
    script.parent.mkdir()
    script.write_text("import time\ntime.sleep(120)\n")
    process = subprocess.Popen([sys.executable, "-u", str(script), "-daemon"])
    try:
        # Popen can return while /proc/PID/cmdline still shows the parent's command
        # line (seen under load): wait for the exec, or the scan misses it (a flake).
        cmdline = Path(f"/proc/{process.pid}/cmdline")
        wait_for(lambda: str(script).encode() in cmdline.read_bytes(), what="the exec")
        yield process.pid
    finally:
        process.kill()
        process.wait()


def test_host_status_ignores_a_demo_guests_agent(make_guest: MakeGuest, tmp_path: Path) -> None:
    guest = make_guest()
    assert guest.run_tool("start") == 0
    guest_pid = wait_for(guest.agent_pid, what="the simulated agent")
    # Started after the guest's agent: a lower PID would not decide which daemon is shown.
    with host_like_agent(tmp_path) as host_pid:
        _check_host_status(guest, guest_pid, host_pid)


def _check_host_status(guest: Guest, guest_pid: object, host_like_agent: int) -> None:
    pids = {process.pid for process in processes_in_root(Sysroot(Path("/")))}
    assert guest_pid not in pids  # its program lies in another agent root (the guest)
    assert host_like_agent in pids  # a program outside any other root is the host's

    # ... while the guest's own status still sees it
    assert guest_pid in {p.pid for p in processes_in_root(Sysroot(guest.root, Path("/proc")))}

    out = io.StringIO()
    main(["status", "--json"],
         stdout=out, stderr=io.StringIO())
    document = json.loads(out.getvalue())
    assert document["agent"]["daemon"]["pid"] in pids
    assert ((document["agent"]["unit"] or {}).get("main_pid")) != guest_pid


def test_a_process_in_another_root_directory_is_not_the_hosts(tmp_path: Path) -> None:
    assert same_root(Path("/proc/self/root"), Path("/")) is True
    assert same_root(Path("/proc/self/root"), tmp_path) is False  # a container's root
    guest = lay_demo_guest(tmp_path / "guest")
    assert other_root_of(PurePosixPath(guest / "usr/sbin/waagent")) == str(guest)
    assert other_root_of(PurePosixPath("/usr/sbin/waagent")) is None


def test_a_missing_waagent_conf_shows_on_the_screen(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    (root / "etc/waagent.conf").unlink()
    out = io.StringIO()
    main(["status", "--root", str(root)], stdout=out, stderr=io.StringIO())
    assert "config       /etc/waagent.conf MISSING (the agent's built-in defaults apply)" \
        in out.getvalue()
