"""The demo guest's service control: `python -m waagent_guard.demo.guestctl VERB GUEST`.

`start` (detached, its own session, like a service manager), `stop` (SIGTERM, then
SIGKILL after STOP_TIMEOUT_SECONDS, as `systemctl stop` does), `restart` and
`is-running` (exit 0 running, 3 not) of the simulated agent in a demo guest: the argv
the demo guest's `command` service manager runs (`demo_settings_toml`). Also lays a
demo guest with its guard.toml (`prepare_guest`) for `waagent-guard demo`, the
integration tests, bench/ and the fleet simulation. Starts processes only through
`waagent_guard.execute`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Optional

import tomli_w

from waagent_guard.demo.simagent import lay_demo_guest, start_simagent

AGENT_PROGRAM = "usr/sbin/waagent"
PIDFILE = "var/run/waagent.pid"
STOP_TIMEOUT_SECONDS = 10.0
TOOL = "waagent_guard.demo.guestctl"
VERBS = ("start", "stop", "restart", "is-running")


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
        items = [sys.executable, "-m", TOOL, verb, str(guest)]
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


def agent_pid(guest: Path) -> Optional[int]:
    """The simulated agent daemon's PID from the guest's pidfile, if it is alive."""
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
    output = open(guest / "var/log/simagent.out", "ab")  # noqa: SIM115 - handed to the child
    with output:
        # Exactly the real agent's command line; the demo's options go in the environment.
        start_simagent(
            guest, *agent_args, stdout=output, stderr=output, new_session=True, cwd=guest
        )
    return 0


def stop_agent(guest: Path) -> int:
    """SIGTERM the simulated agent and wait for it to exit, as `systemctl stop` does."""
    pid = agent_pid(guest)
    if pid is None:
        return 0
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
    while agent_pid(guest) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if agent_pid(guest) == pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in VERBS:
        print(
            f"usage: python -m {TOOL} {'|'.join(VERBS)} GUEST [AGENT-ARGS...]",
            file=sys.stderr,
        )
        return 64
    verb, guest, agent_args = argv[0], Path(argv[1]), argv[2:]
    if verb == "is-running":
        return 0 if agent_pid(guest) is not None else 3
    if verb in ("stop", "restart"):
        stop_agent(guest)
    if verb in ("start", "restart"):
        return start_agent(guest, agent_args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
