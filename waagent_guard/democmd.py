"""`waagent-guard demo`: the guard against a built-in demo guest, on any Linux box.

Lays the packaged guest tree (waagent.conf, a mixed-format log, a VMSnapshot
handler, history/) in a directory, links its `proc` to the host's /proc, starts
a simulated agent daemon from inside the tree, and runs the real daemon loop
against it with the `command` service manager. `kill -9` the simulated agent
and watch the guard bring it back; the metrics URL is printed.

`python -m waagent_guard.democmd start|stop|is-running GUEST` are the argv the
demo's `command` manager runs (start detaches, like a service manager would).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

from waagent_guard.cli import Context
from waagent_guard.errors import UsageError
from waagent_guard.sysroot import Sysroot

AGENT_PROGRAM = "usr/sbin/waagent"
PIDFILE = "var/run/waagent.pid"


def demo_settings_toml(guest: Path, port: int) -> str:
    """The guard.toml the demo runs with (every path inside the guest)."""
    python = sys.executable

    def argv(verb: str) -> str:
        items = [python, "-m", "waagent_guard.democmd", verb, str(guest)]
        return "[" + ", ".join(f'"{item}"' for item in items) + "]"

    return (
        "# Written by `waagent-guard demo`: the guard watches a simulated agent.\n"
        "[agent]\n"
        'manager = "command"\n'
        'unit = "walinuxagent.service"\n'
        "[agent.command]\n"
        f"status = {argv('is-running')}\n"
        f"start = {argv('start')}\n"
        f"restart = {argv('restart')}\n"
        f"stop = {argv('stop')}\n"
        "[restart]\n"
        "backoff_initial_seconds = 1.0\n"
        "grace_seconds = 1.0\n"
        "[daemon]\n"
        "tick_seconds = 5.0\n"
        "[doctor]\n"
        'probe = "never"\n'
        "[metrics]\n"
        f"port = {port}\n"
    )


def prepare_guest(directory: Path, port: int) -> Path:
    """Lay the demo guest in `directory` with its guard.toml; returns the guest root."""
    from waagent_guard.demo.simagent import lay_demo_guest

    guest = lay_demo_guest(directory)
    proc_link = guest / "proc"
    if not proc_link.exists():
        proc_link.symlink_to("/proc")
    config = guest / "etc/waagent-guard/guard.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(demo_settings_toml(guest.resolve(), port), encoding="utf-8")
    for runtime in ("run/waagent-guard", "var/lib/waagent-guard", "var/run"):
        (guest / runtime).mkdir(parents=True, exist_ok=True)
    return guest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _agent_pid(guest: Path) -> Optional[int]:
    try:
        pid = int((guest / PIDFILE).read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if str(guest / AGENT_PROGRAM).encode() in cmdline else None


def start_agent(guest: Path) -> int:
    """Start the simulated agent detached (its own session), like a service manager."""
    output = open(guest / "var/log/simagent.out", "ab")  # noqa: SIM115 - handed to the child
    with output:
        subprocess.Popen(
            [sys.executable, "-u", str(guest / AGENT_PROGRAM), "-daemon"],
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            cwd=str(guest),
        )
    return 0


def stop_agent(guest: Path) -> int:
    pid = _agent_pid(guest)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    return 0


def _tool_main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop", "restart", "is-running"):
        print(
            "usage: python -m waagent_guard.democmd start|stop|restart|is-running GUEST",
            file=sys.stderr,
        )
        return 64
    verb, guest = argv[0], Path(argv[1])
    if verb == "is-running":
        return 0 if _agent_pid(guest) is not None else 3
    if verb in ("stop", "restart"):
        stop_agent(guest)
    if verb in ("start", "restart"):
        return start_agent(guest)
    return 0


def run(args: argparse.Namespace, context: Context) -> int:
    from waagent_guard.daemon import Guard
    from waagent_guard.logsetup import configure_daemon_logging
    from waagent_guard.settings import load_settings

    port = args.port if args.port is not None else _free_port()
    if args.dir:
        directory = Path(args.dir)
        if directory.exists() and any(directory.iterdir()):
            raise UsageError(f"--dir {directory}: not empty; pass a new or empty directory")
        directory.mkdir(parents=True, exist_ok=True)
        keep: Optional[tempfile.TemporaryDirectory[str]] = None
    else:
        keep = tempfile.TemporaryDirectory(prefix="waagent-guard-demo-")
        directory = Path(keep.name)
    try:
        guest = prepare_guest(directory, port)
        config_path = guest / "etc/waagent-guard/guard.toml"
        settings = load_settings(config_path, required=True)
        configure_daemon_logging("debug" if context.debug else "info", environ={})
        start_agent(guest)
        guard = Guard(Sysroot(guest), settings, config_path=config_path)
        out = context.stdout
        print(f"demo guest: {guest}", file=out)
        print(f"metrics:    http://127.0.0.1:{port}/metrics", file=out)
        print(f"status:     waagent-guard status --root {guest}", file=out)
        print(
            f"try:        kill -9 $(cat {guest / PIDFILE})   # the guard brings it back", file=out
        )
        print("stop:       Ctrl-C", file=out)
        out.flush()
        if args.duration:
            timer = threading.Timer(args.duration, lambda: os.kill(os.getpid(), signal.SIGTERM))
            timer.daemon = True
            timer.start()
        try:
            return guard.serve()
        finally:
            stop_agent(guest)
    finally:
        if keep is not None:
            keep.cleanup()


if __name__ == "__main__":
    sys.exit(_tool_main(sys.argv[1:]))
