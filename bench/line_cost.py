"""CPU the guard spends per line the agent logs (docs/PERFORMANCE.md, "Changes made").

    python -m bench.line_cost [SECONDS]

Runs `waagent-guard run --root <demo guest>` (bench.guest.running_guard), reads every
thread's CPU time (utime + stime, /proc/PID/task/*/stat) over SECONDS idle, then over
SECONDS while a line is appended to the guest's waagent.log every 0.2 s, each with a
telemetry file written and renamed into Lib.Dir/events/ (what an agent that cannot reach
the platform does every 2 s, ten times faster). Prints the CPU per line and per thread.
A measurement, not a test: it asserts nothing.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from bench.common import CLK_TCK
from bench.guest import running_guard

LINE = " ERROR Daemon Daemon /proc/net/route contains no routes\n"


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread ("tid:name")."""
    seconds: dict[str, float] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue  # the thread ended
        fields = stat[stat.rindex(")") + 2:].split()
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        seconds[f"{tid}:{name}"] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return seconds


def delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {key: after[key] - before.get(key, 0.0) for key in after}


def main(argv: list[str]) -> int:
    window = float(argv[0]) if argv else 60.0
    with tempfile.TemporaryDirectory(prefix="wg-line-cost-") as scratch, running_guard(
        Path(scratch) / "guest", agent_interval=3600.0
    ) as guard:
        time.sleep(10)  # past the start-up
        before = thread_cpu(guard.pid)
        time.sleep(window)
        idle = delta(before, thread_cpu(guard.pid))
        log = guard.guest / "var/log/waagent.log"
        events = guard.guest / "var/lib/waagent/events"
        events.mkdir(exist_ok=True)
        before = thread_cpu(guard.pid)
        end = time.monotonic() + window
        lines = 0
        while time.monotonic() < end:
            with log.open("a") as handle:
                handle.write(time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()) + LINE)
            temporary = events / f"{lines}.tmp"
            temporary.write_text("{}")
            temporary.rename(events / f"{lines}.tld")
            lines += 1
            time.sleep(0.2)
        busy = delta(before, thread_cpu(guard.pid))
    idle_total, busy_total = sum(idle.values()), sum(busy.values())
    print(f"idle {idle_total * 1000:.0f} ms of CPU in {window:.0f} s; with {lines} lines "
          f"{busy_total * 1000:.0f} ms: {(busy_total - idle_total) * 1000 / lines:.2f} ms per line")
    for key, seconds in sorted(busy.items()):
        print(f"  thread {key:28s} idle {idle.get(key, 0.0) * 1000:6.0f} ms"
              f"  with lines {seconds * 1000:6.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
