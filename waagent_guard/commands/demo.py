"""`waagent-guard demo`: the guard against a built-in demo guest, on any Linux box.

Lays the packaged guest tree (waagent.conf, a mixed-format log, a VMSnapshot
handler, history/) in a directory, links its `proc` to the host's /proc, starts
a simulated agent daemon from inside the tree, and runs the real daemon loop
against it with the `command` service manager. `kill -9` the simulated agent
and watch the guard bring it back; the metrics URL is printed.

`python -m waagent_guard.commands.demo start|stop|is-running GUEST` are the argv the
demo's `command` manager runs (start detaches, like a service manager would).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import tomli_w

from waagent_guard.context import Context
from waagent_guard.errors import UsageError
from waagent_guard.sysroot import Sysroot

AGENT_PROGRAM = "usr/sbin/waagent"
PIDFILE = "var/run/waagent.pid"
STOP_TIMEOUT_SECONDS = 10.0


def demo_settings_toml(
    guest: Path,
    port: int,
    agent_args: Sequence[str] = (),
    overrides: Optional[Mapping[str, Mapping[str, object]]] = None,
) -> str:
    """The guard.toml the demo runs with (every path inside the guest).

    `agent_args` go to the simulated agent (e.g. `--crash-after 1` for crash-loop
    tests); `overrides` replace keys per section (tests tune the tick and budget).
    """

    def argv(verb: str) -> list[str]:
        items = [sys.executable, "-m", "waagent_guard.commands.demo", verb, str(guest)]
        if verb in ("start", "restart"):
            items.extend(agent_args)
        return items

    sections: dict[str, dict[str, object]] = {
        "agent": {"manager": "command", "unit": "walinuxagent.service"},
        "agent.command": {
            verb.replace("-", "_") if verb != "is-running" else "status": argv(verb)
            for verb in ("is-running", "start", "restart", "stop")
        },
        "restart": {"backoff_initial_seconds": 1.0, "grace_seconds": 1.0},
        "daemon": {"tick_seconds": 5.0},
        "doctor": {"probe": "never"},
        "metrics": {"port": port},
    }
    for section, values in (overrides or {}).items():
        sections.setdefault(section, {}).update(values)
    document: dict[str, dict[str, object]] = {}
    for section, values in sections.items():
        top, _, sub = section.partition(".")
        table = document.setdefault(top, {})
        if sub:
            nested = table.setdefault(sub, {})
            assert isinstance(nested, dict)
            nested.update(values)
        else:
            table.update(values)
    header = "# Written by `waagent-guard demo`: the guard watches a simulated agent.\n"
    return header + tomli_w.dumps(document)


def prepare_guest(
    directory: Path,
    port: int,
    agent_args: Sequence[str] = (),
    overrides: Optional[Mapping[str, Mapping[str, object]]] = None,
) -> Path:
    """Lay the demo guest in `directory` with its guard.toml; returns the guest root."""
    from waagent_guard.demo.simagent import lay_demo_guest

    guest = lay_demo_guest(directory)
    proc_link = guest / "proc"
    if not proc_link.exists():
        proc_link.symlink_to("/proc")
    config = guest / "etc/waagent-guard/guard.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        demo_settings_toml(guest.resolve(), port, agent_args, overrides), encoding="utf-8"
    )
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


def start_agent(guest: Path, agent_args: Sequence[str] = ()) -> int:
    """Start the simulated agent detached (its own session), like a service manager."""
    from waagent_guard.demo.simagent import options_as_environment

    output = open(guest / "var/log/simagent.out", "ab")  # noqa: SIM115 - handed to the child
    with output:
        subprocess.Popen(
            # Exactly the real agent's command line; the demo's options go in the environment.
            [sys.executable, "-u", str(guest / AGENT_PROGRAM), "-daemon"],
            env={**os.environ, **options_as_environment(agent_args)},
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=output,
            start_new_session=True,
            cwd=str(guest),
        )
    return 0


def stop_agent(guest: Path) -> int:
    """SIGTERM the simulated agent and wait for it to exit, as `systemctl stop` does."""
    pid = _agent_pid(guest)
    if pid is None:
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while _agent_pid(guest) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if _agent_pid(guest) == pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return 0


def _tool_main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("start", "stop", "restart", "is-running"):
        print(
            "usage: python -m waagent_guard.commands.demo start|stop|restart|is-running GUEST "
            "[AGENT-ARGS...]",
            file=sys.stderr,
        )
        return 64
    verb, guest, agent_args = argv[0], Path(argv[1]), argv[2:]
    if verb == "is-running":
        return 0 if _agent_pid(guest) is not None else 3
    if verb in ("stop", "restart"):
        stop_agent(guest)
    if verb in ("start", "restart"):
        return start_agent(guest, agent_args)
    return 0


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
        subprocess.run(settings.agent.command.start, check=True, timeout=30)
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


if __name__ == "__main__":
    sys.exit(_tool_main(sys.argv[1:]))
