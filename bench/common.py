"""Shared helpers of the benchmarks: machine facts, statistics, measured children, results.

Owns how a figure is taken (wall time and peak RSS of one child through `os.wait4`,
RSS and CPU of a live process from /proc) and how a result file is written, so every
benchmark reports the same way. Only processes started here are ever signalled, by PID.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Optional, Union

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
VENV_BIN = REPO / ".venv" / "bin"
GUARD = VENV_BIN / "waagent-guard"
PYTHON = VENV_BIN / "python"
SCHEMA = "waagent-guard/bench/v1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def clean_env(extra: Optional[Mapping[str, str]] = None) -> dict[str, str]:
    """The environment every measured child gets: ours minus coverage hooks, LC_ALL=C."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COV_", "COVERAGE", "PYTEST", "NOTIFY_SOCKET", "INVOCATION_ID"))
        and key != "JOURNAL_STREAM"
    }
    env["LC_ALL"] = "C"
    env["PATH"] = f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
    env.update(extra or {})
    return env


def machine() -> dict[str, Any]:
    """Where and when the figures were taken (they only compare within one run)."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kb = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "kernel": platform.release(),
        "memory_bytes": mem_kb * 1024,
        "python": platform.python_version(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def percentile(values: Sequence[float], q: float) -> Optional[float]:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-q * len(ordered) // 100)))  # ceil
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: Sequence[float]) -> dict[str, Any]:
    """n, median, p99, min, max of `values` (seconds, bytes, ...)."""
    return {
        "n": len(values),
        "median": percentile(values, 50),
        "p99": percentile(values, 99),
        "min": min(values) if values else None,
        "max": max(values) if values else None,
    }


def ratio(ours: Optional[float], anchor: Optional[float]) -> Optional[float]:
    if ours is None or anchor is None or anchor == 0:
        return None
    return round(ours / anchor, 3)


@dataclass(frozen=True)
class Measured:
    """One child run: wall time, its peak RSS (incl. waited-for descendants), CPU."""

    wall_seconds: float
    max_rss_bytes: int
    cpu_seconds: float
    returncode: int
    max_rss_exact: bool = True


GNU_TIME = Path("/usr/bin/time")


def run_measured(
    argv: Sequence[Union[str, Path]],
    *,
    timeout: float,
    env: Optional[Mapping[str, str]] = None,
    stdout: Union[int, IO[Any], None] = None,
    cwd: Optional[Path] = None,
) -> Measured:
    """Run `argv` (no shell): wall time, CPU and peak RSS of it alone.

    Peak RSS comes from GNU time's `%M` when /usr/bin/time exists: a child forked by
    this (large) Python process inherits its RSS high-water mark across exec, so
    `os.wait4`'s figure is only an upper bound (then `max_rss_exact` is False).
    """
    import tempfile

    # Output goes to a file, never /dev/null: grep stops at the first match there.
    with (
        tempfile.NamedTemporaryFile(prefix="wg-bench-rss-") as rss_file,
        tempfile.TemporaryFile(prefix="wg-bench-out-") as sink,
    ):
        command = [str(a) for a in argv]
        exact = GNU_TIME.exists()
        if exact:
            command = [str(GNU_TIME), "-q", "-f", "%M", "-o", rss_file.name, *command]
        start = time.perf_counter()
        child = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=stdout if stdout is not None else sink,
            stderr=subprocess.DEVNULL,
            env=dict(env) if env is not None else clean_env(),
            cwd=str(cwd) if cwd else None,
        )
        _, status, usage = _wait4(child, timeout)
        wall = time.perf_counter() - start
        code = os.waitstatus_to_exitcode(status)
        child.returncode = code
        max_rss = usage.ru_maxrss * 1024
        if exact:
            try:
                max_rss = int(Path(rss_file.name).read_text().split()[-1]) * 1024
            except (OSError, ValueError, IndexError):
                exact = False
    return Measured(
        wall_seconds=wall,
        max_rss_bytes=max_rss,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        returncode=code,
        max_rss_exact=exact,
    )


def _wait4(child: subprocess.Popen[bytes], timeout: float) -> tuple[int, int, Any]:
    deadline = time.perf_counter() + timeout
    delay = 0.0005
    while True:
        pid, status, usage = os.wait4(child.pid, os.WNOHANG)
        if pid == child.pid:
            return pid, status, usage
        if time.perf_counter() > deadline:
            child.kill()
            os.wait4(child.pid, 0)
            child.returncode = -9
            raise TimeoutError(f"{child.args!r} did not finish within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.01)


def rss_bytes(pid: int, proc: Path = Path("/proc")) -> Optional[int]:
    """VmRSS of a live process, or None when it is gone."""
    try:
        for line in (proc / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int, proc: Path = Path("/proc")) -> Optional[float]:
    """utime+stime of a live process (all its threads) from /proc/PID/stat."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_until(predicate: Any, *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll an external system (a process, a port) until `predicate()` is truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def write_result(name: str, *, quick: bool, data: Mapping[str, Any]) -> Path:
    """Write `bench/results/<name>.json` (quick runs: `<name>.quick.json`) and check it parses."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    document = {
        "schema": SCHEMA,
        "benchmark": name,
        "mode": "quick" if quick else "full",
        "machine": machine(),
        **data,
    }
    path = RESULTS_DIR / (f"{name}.quick.json" if quick else f"{name}.json")
    text = json.dumps(document, indent=2, sort_keys=False) + "\n"
    json.loads(text)
    path.write_text(text)
    return path


def time_runs(
    argv: Sequence[Union[str, Path]],
    *,
    runs: int,
    warmup: int = 1,
    timeout: float = 120.0,
    env: Optional[Mapping[str, str]] = None,
    cwd: Optional[Path] = None,
) -> dict[str, Any]:
    """Median/p99 wall time and peak RSS over `runs` runs (after `warmup` unmeasured ones)."""
    measured = [
        run_measured(argv, timeout=timeout, env=env, cwd=cwd) for _ in range(warmup + runs)
    ][warmup:]
    return {
        "argv": [str(a) for a in argv],
        "seconds": summary([m.wall_seconds for m in measured]),
        "max_rss_bytes": summary([float(m.max_rss_bytes) for m in measured]),
        "returncodes": sorted({m.returncode for m in measured}),
        "max_rss_exact": all(m.max_rss_exact for m in measured),
    }


def hyperfine(
    commands: Mapping[str, Sequence[str]], *, runs: int, warmup: int = 1
) -> Optional[dict[str, Any]]:
    """Wall times from hyperfine (`--output=pipe`, no shell), or None when it is absent."""
    import shlex
    import shutil
    import tempfile

    binary = shutil.which("hyperfine")
    if binary is None:
        return None
    with tempfile.TemporaryDirectory(prefix="wg-bench-hf-") as scratch:
        export = Path(scratch) / "out.json"
        argv = [
            binary,
            "--shell=none",
            "--output=pipe",
            "--style=none",
            f"--runs={runs}",
            f"--warmup={warmup}",
            f"--export-json={export}",
        ]
        for name, command in commands.items():
            argv += ["--command-name", name, shlex.join(command)]
        subprocess.run(argv, check=True, timeout=3600, env=clean_env(), stdout=subprocess.DEVNULL)
        results = json.loads(export.read_text())["results"]
    return {
        r["command"]: {
            "median": r["median"],
            "mean": r["mean"],
            "stddev": r["stddev"],
            "min": r["min"],
            "max": r["max"],
            "n": len(r["times"]),
        }
        for r in results
    }
