"""Row 3: `kill -9` of the agent until it is active again, in the container with real systemd.

Three set-ups of the same unit, one after the other in one boot: the guard with
Debian's stock unit (`Restart=no`); the stock unit alone (the anchor: never);
systemd alone with upstream's `Restart=always` + `RestartSec=5` (the anchor).
The clock runs inside the container (bench/incontainer.py): from the kill to
`ActiveState=active` with a new `MainPID`, polled every 10 ms. Without a container
the guard is timed against the demo guest's SIMULATED agent on the host.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from bench.box import AGENT_UNIT, GUARD_UNIT, Box
from bench.common import ratio, summary, wait_until, write_result

logger = logging.getLogger(__name__)

UPSTREAM_DROPIN = "/etc/systemd/system/walinuxagent.service.d/90-bench-upstream-restart.conf"


def _figures(seconds: list[Optional[float]]) -> dict[str, Any]:
    done = [s for s in seconds if s is not None]
    figures = summary(done)
    figures["never"] = len(seconds) - len(done)
    figures["samples"] = [None if s is None else round(s, 4) for s in seconds]
    return figures


def _in_container(box: Box, kills: int) -> dict[str, Any]:
    c = box.container
    c.run(["systemctl", "start", GUARD_UNIT])
    guard = box.script(
        "kill-loop",
        "--kills",
        str(kills),
        "--reset-guard",
        "--timeout",
        "30",
        "--settle",
        "1",
        timeout=kills * 60 + 60,
    )
    c.run(["systemctl", "stop", GUARD_UNIT])
    stock = box.script("kill-loop", "--kills", "1", "--timeout", "10", "--between", "0")
    c.run(["systemctl", "reset-failed", AGENT_UNIT], check=False)
    c.run(["systemctl", "start", AGENT_UNIT])
    box.write(UPSTREAM_DROPIN, "[Service]\nRestart=always\nRestartSec=5\n")
    c.run(["systemctl", "daemon-reload"])
    # 5 starts in 10 s is the default start limit: with RestartSec=5 it is never reached.
    upstream = box.script(
        "kill-loop",
        "--kills",
        str(kills),
        "--timeout",
        "30",
        "--between",
        "0.5",
        timeout=kills * 60 + 60,
    )
    c.run(["rm", "-f", UPSTREAM_DROPIN])
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "start", GUARD_UNIT])
    return {
        "where": f"container (systemd-nspawn --private-network), real agent, {box.deb}",
        "method": "kill -9 MainPID; poll systemctl show MainPID,ActiveState every 10 ms inside",
        "guard_stock_unit": _figures(guard.get("seconds", [])),
        "anchors": {
            "stock_unit_alone": _figures(stock.get("seconds", [])),
            "upstream_restart_always_5s": _figures(upstream.get("seconds", [])),
        },
        "note": "each guard kill is the first crash it sees: the guard is restarted with an "
        "empty state file before it (its budget never allows 3 restarts in 300 s)",
    }


def _on_host(kills: int) -> dict[str, Any]:
    from bench.guest import running_guard
    from waagent_guard.demo.guestctl import agent_pid

    seconds: list[Optional[float]] = []
    for index in range(kills):
        with contextlib.ExitStack() as stack:
            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="wg-bench-kill-"))
            guard = stack.enter_context(
                running_guard(Path(scratch) / f"guest{index}", agent_interval=30.0)
            )
            pid = wait_until(lambda g=guard: agent_pid(g.guest), timeout=30, what="agent")
            time.sleep(1.0)
            start = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            try:
                wait_until(
                    lambda g=guard, p=pid: (agent_pid(g.guest) or p) != p,
                    timeout=30,
                    what="agent back",
                    interval=0.01,
                )
                seconds.append(time.monotonic() - start)
            except TimeoutError:
                seconds.append(None)
    return {
        "where": "host, demo guest: the SIMULATED agent under the `command` manager (no container)",
        "method": "kill -9 the pidfile's PID; poll the pidfile for a new live agent every 10 ms",
        "guard_stock_unit": _figures(seconds),
        "anchors": {"stock_unit_alone": None, "upstream_restart_always_5s": None},
    }


def run(*, quick: bool, box: Box) -> list[Path]:
    kills = 2 if quick else 20
    notes = None
    if box.open() and box.guard_installed:
        data = _in_container(box, kills)
    else:
        notes = box.reason or "no .deb in out/deb: guard not installed in the container"
        data = _on_host(kills)
    guard = data["guard_stock_unit"]
    upstream = (data["anchors"] or {}).get("upstream_restart_always_5s") or {}
    met = None
    if guard["n"]:
        met = guard["never"] == 0 and guard["median"] < 1.0 and guard["p99"] < 2.0
    return [
        write_result(
            "restart",
            quick=quick,
            data={
                "what": "kill -9 of the agent -> agent active again (seconds)",
                "notes": notes,
                **data,
                "ratio_guard_to_upstream_median": ratio(guard["median"], upstream.get("median")),
                "goal": "p50 < 1 s, p99 < 2 s",
                "goal_met": met,
            },
        )
    ]
