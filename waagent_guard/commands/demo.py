"""`waagent-guard demo`: the guard against a built-in demo guest, on any Linux box.

Lays the packaged guest tree (waagent.conf, a mixed-format log, a VMSnapshot
handler, history/) in a directory, links its `proc` to the host's /proc, starts
a simulated agent daemon from inside the tree, and runs the real daemon loop
against it with the `command` service manager. `kill -9` the simulated agent
and watch the guard bring it back; the metrics URL is printed. The guest and its
service control (`python -m waagent_guard.demo.guestctl`) live in waagent_guard/demo/.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import sys
import tempfile
import threading
from pathlib import Path
from typing import Optional

from waagent_guard.context import Context
from waagent_guard.demo.guestctl import PIDFILE, prepare_guest, stop_agent
from waagent_guard.errors import ServiceError, UsageError
from waagent_guard.execute import SubprocessRunner, describe_command
from waagent_guard.sysroot import Sysroot

START_TIMEOUT_SECONDS = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _demo_port(requested: Optional[int]) -> int:
    """The metrics port: `--port` if it can be bound on 127.0.0.1, else a usage error naming it."""
    if requested is None or requested == 0:
        return _free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", requested))
        except OSError as error:
            raise UsageError(
                f"--port {requested}: cannot listen on 127.0.0.1:{requested} "
                f"({error.strerror or error}); pass another port, or leave --port out "
                "for a free one"
            ) from error
    return requested


def _demo_directory(directory: Path) -> Path:
    """`--dir`: a new or empty directory (created); anything else is a usage error."""
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"--dir {directory}: not a directory; pass a new or empty directory")
    try:
        if directory.exists() and any(directory.iterdir()):
            raise UsageError(f"--dir {directory}: not empty; pass a new or empty directory")
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(
            f"--dir {directory}: cannot use it ({error.strerror or error}); "
            "pass a new or empty directory you can write"
        ) from error
    return directory


def _cli_command() -> str:
    """How to run this same CLI from another shell (the venv's script is not on PATH there)."""
    script = Path(sys.executable).parent / "waagent-guard"
    if script.is_file() and os.access(script, os.X_OK):
        return str(script.absolute())
    return f"{sys.executable} -m waagent_guard"


def run(args: argparse.Namespace, context: Context) -> int:
    from waagent_guard.daemon.guard import Guard
    from waagent_guard.logsetup import configure_daemon_logging
    from waagent_guard.settings import load_settings

    port = _demo_port(args.port)
    if args.dir:
        directory = _demo_directory(Path(args.dir))
        keep: Optional[tempfile.TemporaryDirectory[str]] = None
    else:
        keep = tempfile.TemporaryDirectory(prefix="waagent-guard-demo-")
        directory = Path(keep.name)
    try:
        guest = prepare_guest(directory, port)
        config_path = guest / "etc/waagent-guard/guard.toml"
        settings = load_settings(config_path, required=True)
        configure_daemon_logging("debug" if context.debug else "info", environ={})
        # Through the same detached path the guard's `command` manager uses: the
        # simulated agent must not be our child (a killed child would linger as our zombie).
        start = settings.agent.command.start
        started = SubprocessRunner()(start, timeout=START_TIMEOUT_SECONDS)
        if started.returncode != 0:
            raise ServiceError(
                f"`{describe_command(start)}` exited {started.returncode}: the demo's simulated "
                f"agent did not start; see {guest / 'var/log/simagent.out'}"
            )
        guard = Guard(Sysroot(guest), settings, config_path=config_path)
        out = context.stdout
        print(f"demo guest: {guest}", file=out)
        print(f"metrics:    http://127.0.0.1:{port}/metrics", file=out)
        print(f"status:     {_cli_command()} status --root {shlex.quote(str(guest))}", file=out)
        print(
            f"try:        kill -9 $(cat {shlex.quote(str(guest / PIDFILE))})"
            "   # the guard brings it back",
            file=out,
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
