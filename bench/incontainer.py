"""Timing helpers run INSIDE the e2e container (stdlib only: the container's python3).

Owns the measurements that must not include the cost of entering the container:
`kill-loop` (kill -9 the agent's MainPID, poll `systemctl show` until the unit is
active with a new MainPID), `time-cmd` (wall time of a command, N runs) and
`proc-sample` (RSS and CPU of every process of a unit, from its cgroup and /proc).
Prints one JSON document on stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C", "SYSTEMD_PAGER": ""}
STATE_FILE = "/var/lib/waagent-guard/state.json"


def show(unit: str) -> tuple[int, str]:
    out = subprocess.run(
        ["systemctl", "show", unit, "-p", "MainPID", "-p", "ActiveState"],
        capture_output=True,
        text=True,
        timeout=10,
        env=ENV,
        check=False,
    ).stdout
    fields = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    return int(fields.get("MainPID", "0") or 0), fields.get("ActiveState", "")


def wait_active(unit: str, *, not_pid: int, timeout: float, interval: float) -> Optional[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, state = show(unit)
        if state == "active" and pid not in (0, not_pid):
            return pid
        time.sleep(interval)
    return None


def systemctl(*args: str) -> None:
    subprocess.run(["systemctl", *args], timeout=60, env=ENV, check=False, capture_output=True)


def kill_loop(args: argparse.Namespace) -> dict[str, object]:
    times: list[Optional[float]] = []
    for _ in range(args.kills):
        pid = wait_active(args.unit, not_pid=-1, timeout=60, interval=0.1)
        if pid is None:
            systemctl("reset-failed", args.unit)
            systemctl("start", args.unit)
            pid = wait_active(args.unit, not_pid=-1, timeout=60, interval=0.1)
        if pid is None:
            return {"error": f"{args.unit} never became active", "seconds": times}
        if args.reset_guard:
            # Each kill is the first crash the guard sees: its budget and backoff are
            # reset (the guard never restarts 3 times in 300 s, by design).
            systemctl("stop", "waagent-guard.service")
            Path(STATE_FILE).unlink(missing_ok=True)
            systemctl("start", "waagent-guard.service")
            time.sleep(args.settle)
        start = time.monotonic()
        os.kill(pid, 9)
        new = wait_active(args.unit, not_pid=pid, timeout=args.timeout, interval=args.interval)
        times.append(None if new is None else time.monotonic() - start)
        time.sleep(args.between)
    return {"seconds": times}


def time_cmd(args: argparse.Namespace) -> dict[str, object]:
    walls: list[float] = []
    codes: list[int] = []
    for _ in range(args.warmup + args.runs):
        start = time.perf_counter()
        code = subprocess.run(
            args.argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
            env=ENV,
            check=False,
        ).returncode
        walls.append(time.perf_counter() - start)
        codes.append(code)
    return {"seconds": walls[args.warmup :], "returncodes": codes[args.warmup :]}


def cgroup_cpu_usec(group: Path) -> Optional[int]:
    """`usage_usec` of the cgroup's cpu.stat (cgroup v2), or None."""
    try:
        for line in (group / "cpu.stat").read_text().splitlines():
            if line.startswith("usage_usec "):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def memory_shares(process: Path) -> dict[str, Optional[int]]:
    """PSS and USS (private clean + dirty) from /proc/PID/smaps_rollup: processes that
    map the same interpreter and libraries share those pages, which RSS counts in full."""
    fields: dict[str, int] = {}
    try:
        for line in (process / "smaps_rollup").read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if len(parts) == 2 and parts[1] == "kB":
                fields[name] = int(parts[0]) * 1024
    except OSError:
        return {"pss_bytes": None, "uss_bytes": None}
    private = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"pss_bytes": fields.get("Pss"), "uss_bytes": private}


def proc_sample(args: argparse.Namespace) -> dict[str, object]:
    ticks = os.sysconf("SC_CLK_TCK")
    result: dict[str, object] = {}
    for unit in args.units:
        group = subprocess.run(
            ["systemctl", "show", unit, "-p", "ControlGroup", "--value"],
            capture_output=True,
            text=True,
            timeout=10,
            env=ENV,
            check=False,
        ).stdout.strip()
        entries = []
        pids: list[int] = []
        usage_usec = None
        for mount in ("", "/unified", "/systemd"):  # unified, or hybrid (cgroup v1) hosts
            try:
                text = Path(f"/sys/fs/cgroup{mount}{group}/cgroup.procs").read_text()
            except OSError:
                continue
            pids = [int(p) for p in text.split()]
            usage_usec = cgroup_cpu_usec(Path(f"/sys/fs/cgroup{mount}{group}"))
            if pids:
                break
        for pid in pids:
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                stat = Path(f"/proc/{pid}/stat").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            rss = next(
                (
                    int(line.split()[1]) * 1024
                    for line in status.splitlines()
                    if line.startswith("VmRSS:")
                ),
                0,
            )
            fields = stat[stat.rindex(")") + 2 :].split()
            cpu = (int(fields[11]) + int(fields[12])) / ticks
            entries.append(
                {
                    "pid": pid,
                    "rss_bytes": rss,
                    **memory_shares(Path(f"/proc/{pid}")),
                    "cpu_seconds": cpu,
                    "cmdline": cmdline.decode(errors="replace").strip(),
                }
            )
        result[unit] = entries
        # The unit's whole CPU, exited children included (the `systemctl` runs of a
        # guard, the agent's own helpers): utime+stime of the live PIDs misses those.
        result[f"{unit}:cpu_usec"] = usage_usec
    result["monotonic"] = time.monotonic()
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="wgbench")
    sub = parser.add_subparsers(dest="command", required=True)
    kill = sub.add_parser("kill-loop")
    kill.add_argument("--unit", default="walinuxagent.service")
    kill.add_argument("--kills", type=int, default=3)
    kill.add_argument("--timeout", type=float, default=15.0)
    kill.add_argument("--interval", type=float, default=0.01)
    kill.add_argument("--between", type=float, default=1.0)
    kill.add_argument("--settle", type=float, default=1.0)
    kill.add_argument("--reset-guard", action="store_true")
    timed = sub.add_parser("time-cmd")
    timed.add_argument("--runs", type=int, default=10)
    timed.add_argument("--warmup", type=int, default=1)
    timed.add_argument("argv", nargs="+")
    sample = sub.add_parser("proc-sample")
    sample.add_argument("units", nargs="+")
    args = parser.parse_args(argv)
    handler = {"kill-loop": kill_loop, "time-cmd": time_cmd, "proc-sample": proc_sample}
    print(json.dumps(handler[args.command](args)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
