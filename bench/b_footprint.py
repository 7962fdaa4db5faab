"""Rows 1 and 2: the guard's RSS (after start, over a 24 h replay) and idle CPU,
side by side with the real agent in the container and Debian's node_exporter.

The guard runs on the host against the demo guest (`waagent-guard run --root`);
the agent's figures come from the container's `walinuxagent.service` cgroup;
node_exporter runs on 127.0.0.1. CPU is the utime+stime delta over one window
shared by all three.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Optional

from bench.box import AGENT_UNIT, GUARD_UNIT, Box
from bench.common import cpu_seconds, ratio, rss_bytes, write_result
from bench.corpus import format1_messages
from bench.guest import RunningGuard, node_exporter_binary, running_guard, running_node_exporter
from bench.incontainer import memory_shares

logger = logging.getLogger(__name__)

MB = 1024 * 1024
DAY = 86400.0
LINE_EVERY_SIM_SECONDS = 20.0  # ~4300 lines/day: a healthy agent's steady rate
STATUS_EVERY_SIM_SECONDS = 6.0  # the agent rewrites waagent_status.json every 6 s
CONF_EDITS = 4
GROWTH_LIMIT_BYTES = 1 * MB  # within noise of "no growth"


def _container_sample(box: Box) -> Optional[dict[str, Any]]:
    if box.container is None:
        return None
    return box.script("proc-sample", AGENT_UNIT, GUARD_UNIT)


def _unit_figures(sample: Optional[dict[str, Any]], unit: str) -> dict[str, Any]:
    if not sample or not sample.get(unit):
        return {"rss_bytes": None, "pss_bytes": None, "uss_bytes": None, "cpu_seconds": None,
                "cgroup_cpu_seconds": None, "processes": []}
    procs = sample[unit]

    def total(key: str) -> Optional[int]:
        values = [p.get(key) for p in procs]
        return None if any(v is None for v in values) else sum(values)

    usec = sample.get(f"{unit}:cpu_usec")
    return {
        "rss_bytes": total("rss_bytes"),
        "pss_bytes": total("pss_bytes"),
        "uss_bytes": total("uss_bytes"),
        "cpu_seconds": sum(p["cpu_seconds"] for p in procs),
        "cgroup_cpu_seconds": None if usec is None else usec / 1e6,
        "processes": procs,
    }


@contextlib.contextmanager
def _maybe_node_exporter() -> Iterator[Optional[tuple[int, int]]]:
    binary = node_exporter_binary()
    if binary is None:
        yield None
        return
    with running_node_exporter(binary) as running:
        yield running


def replay(guard: RunningGuard, *, sim_seconds: float, real_seconds: float) -> dict[str, Any]:
    """Replay `sim_seconds` of agent activity in `real_seconds`; RSS sampled along the way."""
    from waagent_guard.agent.conf import set_conf_value

    guest = guard.guest
    log_path = guest / "var/log/waagent.log"
    status_path = next((guest / "var/lib/waagent/history").glob("*/waagent_status.json"))
    status_text = status_path.read_text()
    conf_path = guest / "etc/waagent.conf"
    messages = format1_messages()
    steps = int(sim_seconds / STATUS_EVERY_SIM_SECONDS)
    step_real = real_seconds / steps
    conf_at = {int(steps * (i + 1) / (CONF_EDITS + 1)) for i in range(CONF_EDITS)}
    quarter = {int(steps * q / 4): q * 25 for q in (1, 2, 3)}
    samples: list[dict[str, Any]] = [{"percent": 0, "rss_bytes": rss_bytes(guard.pid)}]
    sim_start = datetime(2026, 11, 26, tzinfo=timezone.utc)
    lines_due = 0.0
    lines = 0
    started = time.monotonic()
    for step in range(steps):
        now = sim_start + timedelta(seconds=step * STATUS_EVERY_SIM_SECONDS)
        lines_due += STATUS_EVERY_SIM_SECONDS / LINE_EVERY_SIM_SECONDS
        if lines_due >= 1:
            count = int(lines_due)
            lines_due -= count
            stamp = now.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            with log_path.open("a", encoding="utf-8") as log:  # reopened per write, as the agent
                for _ in range(count):
                    log.write(f"{stamp} {messages[lines % len(messages)]}\n")
                    lines += 1
        temporary = status_path.with_suffix(".tmp")
        temporary.write_text(status_text.replace("2026-11-26T05:00:02Z", now.isoformat()))
        os.replace(temporary, status_path)
        if step in conf_at:
            set_conf_value(conf_path, "Logs.Collect", "n" if step % 2 else "y")
        if step in quarter:
            samples.append({"percent": quarter[step], "rss_bytes": rss_bytes(guard.pid)})
        delay = started + (step + 1) * step_real - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    elapsed = time.monotonic() - started
    time.sleep(2.0)  # let the debounced reconciliation of the last events run
    samples.append({"percent": 100, "rss_bytes": rss_bytes(guard.pid)})
    counted = _records_counted(guard)
    return {
        "simulated_seconds": sim_seconds,
        "real_seconds": round(elapsed, 2),
        "log_lines": lines,
        "status_rewrites": steps,
        "conf_edits": CONF_EDITS,
        "records_counted_by_guard": counted,
        "rss_samples": samples,
    }


def _records_counted(guard: RunningGuard) -> Optional[float]:
    total = 0.0
    try:
        for line in guard.scrape().decode().splitlines():
            if line.startswith("waagent_log_records_total{"):
                total += float(line.rsplit(" ", 1)[1])
    except OSError:
        return None
    return total


def run(*, quick: bool, box: Box) -> list[Path]:
    window = 10.0 if quick else 600.0
    sim = 2 * 3600.0 if quick else DAY
    real = 5.0 if quick else 240.0
    box.open()
    container_note = box.reason
    with contextlib.ExitStack() as stack:
        scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="wg-bench-fp-"))
        ne = stack.enter_context(_maybe_node_exporter())
        guard = stack.enter_context(running_guard(Path(scratch) / "guest", agent_interval=30.0))
        time.sleep(2.0 if quick else 60.0)  # the anchor's RSS was taken idle at 60 s
        guard_rss_start = rss_bytes(guard.pid)
        ne_rss_idle = rss_bytes(ne[0]) if ne else None
        # One CPU window for all three.
        before = {"guard": cpu_seconds(guard.pid), "ne": cpu_seconds(ne[0]) if ne else None}
        inside_before = _container_sample(box)
        started = time.monotonic()
        time.sleep(window)
        measured = time.monotonic() - started
        after = {"guard": cpu_seconds(guard.pid), "ne": cpu_seconds(ne[0]) if ne else None}
        inside_after = _container_sample(box)
        ne_rss_scraped = None
        if ne:
            import urllib.request

            for _ in range(10):
                with urllib.request.urlopen(f"http://127.0.0.1:{ne[1]}/metrics", timeout=10) as r:
                    r.read()
            ne_rss_scraped = rss_bytes(ne[0])
        replayed = replay(guard, sim_seconds=sim, real_seconds=real)
        guard_rss_end = rss_bytes(guard.pid)
        guard_shares_end = memory_shares(Path(f"/proc/{guard.pid}"))

    agent_before = _unit_figures(inside_before, AGENT_UNIT)
    agent_after = _unit_figures(inside_after, AGENT_UNIT)
    guard_inside = _unit_figures(inside_after, GUARD_UNIT)
    guard_inside_before = _unit_figures(inside_before, GUARD_UNIT)

    def cpu_delta(a: Optional[float], b: Optional[float]) -> Optional[float]:
        return None if a is None or b is None else round(b - a, 4)

    def percent(delta: Optional[float]) -> Optional[float]:
        return None if delta is None else round(100.0 * delta / measured, 4)

    guard_cpu = cpu_delta(before["guard"], after["guard"])
    agent_cpu = cpu_delta(agent_before["cpu_seconds"], agent_after["cpu_seconds"])
    ne_cpu = cpu_delta(before["ne"], after["ne"])
    guard_inside_cpu = cpu_delta(guard_inside_before["cpu_seconds"], guard_inside["cpu_seconds"])
    # Whole units (exited children such as the guard's `systemctl` runs included).
    guard_unit_cpu = cpu_delta(
        guard_inside_before["cgroup_cpu_seconds"], guard_inside["cgroup_cpu_seconds"]
    )
    agent_unit_cpu = cpu_delta(
        agent_before["cgroup_cpu_seconds"], agent_after["cgroup_cpu_seconds"]
    )
    agent_rss = agent_after["rss_bytes"]
    quarter_rss = next(s["rss_bytes"] for s in replayed["rss_samples"] if s["percent"] == 25)
    growth = None if guard_rss_end is None or quarter_rss is None else guard_rss_end - quarter_rss
    anchors_note = container_note or ("" if ne else "node_exporter not found: run bench/setup.sh")
    paths = [
        write_result(
            "footprint",
            quick=quick,
            data={
                "what": "RSS after start and after a replay of agent events",
                "notes": anchors_note or None,
                "guard": {
                    "where": "host, `waagent-guard run --root <demo guest>`",
                    "rss_after_start_bytes": guard_rss_start,
                    "rss_after_replay_bytes": guard_rss_end,
                    "growth_after_first_quarter_bytes": growth,
                    "replay": replayed,
                    "shares_after_replay": guard_shares_end,
                    "in_container_rss_bytes": guard_inside["rss_bytes"],
                    "in_container_pss_bytes": guard_inside["pss_bytes"],
                    "in_container_uss_bytes": guard_inside["uss_bytes"],
                },
                "anchors": {
                    "agent": {
                        "where": f"container {AGENT_UNIT} (real waagent 2.7.3.0), all processes",
                        "rss_bytes": agent_rss,
                        "pss_bytes": agent_after["pss_bytes"],
                        "uss_bytes": agent_after["uss_bytes"],
                        "processes": agent_after["processes"],
                    },
                    "node_exporter": {
                        "rss_idle_bytes": ne_rss_idle,
                        "rss_after_10_scrapes_bytes": ne_rss_scraped,
                    },
                },
                "ratio_guard_to_agent": ratio(guard_rss_end, agent_rss),
                "ratio_in_container": {
                    key: ratio(guard_inside[f"{key}_bytes"], agent_after[f"{key}_bytes"])
                    for key in ("rss", "pss", "uss")
                },
                "goal": "guard RSS <= agent RSS; growth over the replay < 1 MiB",
                "goal_met": (
                    None
                    if agent_rss is None or guard_rss_end is None or growth is None
                    else guard_rss_end <= agent_rss and growth < GROWTH_LIMIT_BYTES
                ),
            },
        ),
        write_result(
            "idle_cpu",
            quick=quick,
            data={
                "what": "CPU (utime+stime delta) over one idle window",
                "notes": anchors_note or None,
                "window_seconds": round(measured, 2),
                "guard": {
                    "cpu_seconds": guard_cpu,
                    "percent_of_one_core": percent(guard_cpu),
                    "in_container_cpu_seconds": guard_inside_cpu,
                    "in_container_percent_of_one_core": percent(guard_inside_cpu),
                    "in_container_unit_cpu_seconds": guard_unit_cpu,
                    "in_container_unit_percent_of_one_core": percent(guard_unit_cpu),
                },
                "anchors": {
                    "agent": {
                        "cpu_seconds": agent_cpu,
                        "percent_of_one_core": percent(agent_cpu),
                        "unit_cpu_seconds": agent_unit_cpu,
                        "unit_percent_of_one_core": percent(agent_unit_cpu),
                    },
                    "node_exporter": {
                        "cpu_seconds": ne_cpu,
                        "percent_of_one_core": percent(ne_cpu),
                    },
                },
                "ratio_guard_to_agent": ratio(guard_cpu, agent_cpu),
                "ratio_units_in_container": ratio(guard_unit_cpu, agent_unit_cpu),
                "goal": "guard < 0.1 % of one core; the guard's unit <= the agent's unit",
                "goal_met": None if guard_cpu is None else percent(guard_cpu) < 0.1,  # type: ignore[operator]
            },
        ),
    ]
    logger.info("footprint: %s", json.dumps({"guard_rss_end": guard_rss_end, "agent": agent_rss}))
    return paths
