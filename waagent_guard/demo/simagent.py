"""A SIMULATED Azure Linux agent for the demo and the integration tests (never the real one).

Owns the behaviour of `<guest>/usr/sbin/waagent` from the packaged demo guest, modeled
on the real agent (AGENT.md §1-§4) so the guard can be exercised on any Linux box:

- `python3 -u <guest>/usr/sbin/waagent -daemon` is the daemon. It reads `Logs.Verbose`,
  `Lib.Dir` and `Pid.File` from `<guest>/etc/waagent.conf`; if the pidfile names any
  live PID it logs `Daemon is already running: <pid>` and exits 0, as the real one
  does; otherwise it writes its PID and launches the goal-state agent (ExtHandler)
  from `Lib.Dir/WALinuxAgent-<ver>/bin/*.egg` (unless `disable_agent` exists or
  `--no-exthandler`), relaunching it if it dies. SIGTERM/SIGINT: forwards the signal
  to the child, removes the pidfile, exits 0. SIGKILL leaves the pidfile behind.
- `... -run-exthandlers` is the ExtHandler: every interval it appends a `[HEARTBEAT]`
  line (VERBOSE lines too when `Logs.Verbose=y`) and touches the newest
  `history/*/waagent_status.json`; it exits when orphaned, as the real child does.

Lines are appended to `<guest>/var/log/waagent.log` in format 1 (UTC), the file
reopened per write like the real agent. The guest root is the nearest ancestor of the
program holding `etc/waagent.conf`, or `$WG_SIM_ROOT`. Nothing here touches the network.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional

from waagent_guard.agent.conf import agent_config, load_conf
from waagent_guard.execute import Child, TimeoutExpired, spawn

if TYPE_CHECKING:
    from importlib.abc import Traversable

logger = logging.getLogger(__name__)

DAEMON_VERSION = "2.7.3.0"  # Debian 12's packaged agent
DEFAULT_INTERVAL = 5.0
ENV_ROOT = "WG_SIM_ROOT"
ENV_INTERVAL = "WG_SIM_INTERVAL"
ENV_CRASH_AFTER = "WG_SIM_CRASH_AFTER"
ENV_NO_EXTHANDLER = "WG_SIM_NO_EXTHANDLER"
ENV_DAEMON_PID = "WG_SIM_DAEMON_PID"
AGENT_CONF = "etc/waagent.conf"
AGENT_LOG = "var/log/waagent.log"
DAEMON_PROGRAM = "usr/sbin/waagent"
ORPHAN_CHECK_SECONDS = 0.5
CHILD_STOP_TIMEOUT = 10.0
HANDLED_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGCHLD})
HEARTBEAT_ID = "5EB1E0F2-7A3B-4C1D-9E8F-DE0000000001"


@dataclass(frozen=True)
class SimConfig:
    """What one simulated agent process runs with."""

    root: Path
    interval: float
    crash_after: Optional[float]
    exthandler: bool
    verbose: bool
    lib_dir: Path
    pid_file: Path
    log_path: Path


class AgentLog:
    """Appends format-1 lines: `<ISO>Z <LEVEL> <thread> <prefix> <message>`."""

    def __init__(self, path: Path, clock: Callable[[], float], *, verbose: bool) -> None:
        self.path = path
        self.clock = clock
        self.verbose = verbose

    def write(self, level: str, thread: str, prefix: str, message: str) -> None:
        if level == "VERBOSE" and not self.verbose:
            return
        stamp = datetime.fromtimestamp(self.clock(), timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:  # reopened per write, like waagent
            handle.write(f"{stamp} {level} {thread} {prefix} {message}\n")


def find_guest_root(program: Path, environ: Mapping[str, str]) -> Path:
    """`$WG_SIM_ROOT`, else the nearest ancestor of `program` that holds etc/waagent.conf."""
    if environ.get(ENV_ROOT):
        return Path(environ[ENV_ROOT])
    for ancestor in Path(program).resolve().parents:
        if (ancestor / AGENT_CONF).is_file():
            return ancestor
    raise SystemExit(f"{program}: no etc/waagent.conf above it; set {ENV_ROOT}=<guest root>")


def _host_path(root: Path, path: str) -> Path:
    return root.joinpath(*Path(path).parts[1:]) if Path(path).is_absolute() else root / path


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="waagent",
        allow_abbrev=False,
        description="Simulated Azure Linux agent (waagent-guard demo)",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("-daemon", action="store_true", help="run as the agent daemon")
    mode.add_argument(
        "-run-exthandlers",
        dest="exthandlers",
        action="store_true",
        help="run as the goal-state agent (the daemon starts this)",
    )
    parser.add_argument(
        "--interval",
        type=float,
        default=None,
        help=f"seconds between periodic lines (default ${ENV_INTERVAL} or 5)",
    )
    parser.add_argument(
        "--crash-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="exit 1 after SECONDS, leaving the pidfile (crash-loop tests)",
    )
    parser.add_argument(
        "--no-exthandler", action="store_true", help="do not launch the goal-state agent child"
    )
    return parser.parse_args(list(argv))


def options_as_environment(args: Sequence[str]) -> dict[str, str]:
    """The simulated agent's own options (`--interval`, `--crash-after`, `--no-exthandler`)
    as environment variables, so that its command line is exactly the real agent's
    (`python3 -u .../waagent -daemon`): the guard reads roles as the agent's parse_args
    does, and that stops at an option it does not know."""
    parsed = _parse_args(["-daemon", *args])
    environment: dict[str, str] = {}
    if parsed.interval is not None:
        environment[ENV_INTERVAL] = repr(parsed.interval)
    if parsed.crash_after is not None:
        environment[ENV_CRASH_AFTER] = repr(parsed.crash_after)
    if parsed.no_exthandler:
        environment[ENV_NO_EXTHANDLER] = "1"
    return environment


def load_sim_config(args: argparse.Namespace, root: Path, environ: Mapping[str, str]) -> SimConfig:
    config = agent_config(load_conf(root / AGENT_CONF))
    interval = args.interval or float(environ.get(ENV_INTERVAL) or DEFAULT_INTERVAL)
    if interval <= 0:
        raise SystemExit(f"--interval / ${ENV_INTERVAL}: must be > 0 (got {interval})")
    crash_after = args.crash_after
    if crash_after is None and environ.get(ENV_CRASH_AFTER):
        crash_after = float(environ[ENV_CRASH_AFTER])
    return SimConfig(
        root=root,
        interval=interval,
        crash_after=crash_after,
        exthandler=not (args.no_exthandler or environ.get(ENV_NO_EXTHANDLER) == "1"),
        verbose=config.logs_verbose,
        lib_dir=_host_path(root, config.lib_dir),
        pid_file=_host_path(root, config.pid_file),
        log_path=root / AGENT_LOG,
    )


def _os_name(root: Path) -> str:
    fields: dict[str, str] = {}
    try:
        for line in (root / "etc/os-release").read_text(encoding="utf-8").splitlines():
            key, _, value = line.partition("=")
            fields[key] = value.strip().strip('"')
    except OSError:
        return "unknown"
    return f"{fields.get('ID', 'linux')} {fields.get('VERSION_ID', '')}".strip()


def _live_pid(pid_file: Path, proc_root: Path) -> Optional[str]:
    """The pidfile's content when it names a live PID (the agent checks /proc/<pid> only)."""
    try:
        text = pid_file.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return text if text.isdigit() and (proc_root / text).is_dir() else None


def _newest_agent_egg(lib_dir: Path) -> Optional[tuple[str, Path]]:
    eggs = sorted(lib_dir.glob("WALinuxAgent-*/bin/WALinuxAgent-*.egg"))
    if not eggs:
        return None
    egg = max(
        eggs,
        key=lambda p: tuple(int(x) for x in p.parent.parent.name[13:].split(".") if x.isdigit()),
    )
    return egg.parent.parent.name, egg


class _Daemon:
    def __init__(
        self,
        config: SimConfig,
        log: AgentLog,
        clock: Callable[[], float],
        environ: Mapping[str, str],
    ) -> None:
        self.config = config
        self.log = log
        self.clock = clock
        self.environ = environ
        self.child: Optional[Child[bytes]] = None
        self.child_name = f"WALinuxAgent-{DAEMON_VERSION}"
        self.child_argv: list[str] = []

    def say(self, level: str, message: str) -> None:
        self.log.write(level, "Daemon", "Daemon", message)

    @property
    def command(self) -> str:
        return " ".join(self.child_argv)

    def launch_child(self) -> None:
        if not self.config.exthandler:
            return
        if (self.config.lib_dir / "disable_agent").exists():
            self.say("VERBOSE", "disable_agent exists: not starting the goal-state agent")
            return
        found = _newest_agent_egg(self.config.lib_dir)
        cwd = self.config.lib_dir
        if found is not None:
            self.child_name, egg = found
            cwd = egg.parent.parent
            self.child_argv = [sys.executable, "-u", str(egg), "-run-exthandlers"]
            self.say("INFO", f"Determined Agent {self.child_name} to be the latest agent")
        else:
            program = self.config.root / DAEMON_PROGRAM
            self.child_argv = [sys.executable, "-u", str(program), "-run-exthandlers"]
        env = dict(self.environ)
        env[ENV_ROOT] = str(self.config.root)
        env[ENV_INTERVAL] = str(self.config.interval)
        env.pop(ENV_CRASH_AFTER, None)  # the daemon's own options, not the child's
        env.pop(ENV_NO_EXTHANDLER, None)
        # The child compares its parent with this, not with its first getppid(): the
        # daemon may die before the child's interpreter has even started.
        env[ENV_DAEMON_PID] = str(os.getpid())
        self.child = spawn(self.child_argv, cwd=str(cwd), env=env)
        self.say("INFO", f"Agent {self.child_name} launched with command '{self.command}'")

    def reap_child(self) -> None:
        if self.child is None or self.child.poll() is None:
            return
        code = self.child.returncode
        self.say(
            "WARNING",
            f"Agent {self.child_name} launched with command '{self.command}' "
            f"failed with return code: {code}",
        )
        self.child = None

    def stop_child(self, signum: int) -> None:
        if self.child is None or self.child.poll() is not None:
            return
        self.log.write(
            "INFO",
            "Daemon",
            "Daemon",
            f"Agent {self.child_name} forwarding signal {signum} to {self.child_name}",
        )
        self.child.send_signal(signum)
        try:
            self.child.wait(timeout=CHILD_STOP_TIMEOUT)
        except TimeoutExpired:
            self.child.kill()
            self.child.wait()

    def tick(self) -> None:
        if self.child is None:
            self.launch_child()
        pid = self.child.pid if self.child is not None else None
        self.log.write(
            "VERBOSE",
            "Daemon",
            "Daemon",
            f"Agent {self.child_name} is running [pid {pid}]"
            if pid
            else "No goal-state agent running",
        )

    def run(self) -> int:
        started = self.clock()
        self.launch_child()
        next_tick = started + self.config.interval
        crash_at = started + self.config.crash_after if self.config.crash_after else None
        while True:
            deadline = min(next_tick, crash_at) if crash_at is not None else next_tick
            received = signal.sigtimedwait(HANDLED_SIGNALS, max(0.0, deadline - self.clock()))
            if received is None:
                now = self.clock()
                if crash_at is not None and now >= crash_at:
                    self.log.write(
                        "ERROR",
                        "Daemon",
                        "Daemon",
                        f"Daemon ended with exception: [SimulatedCrash] --crash-after "
                        f"{self.config.crash_after:g} s elapsed",
                    )
                    self.stop_child(signal.SIGTERM)
                    return 1  # the pidfile stays, as after a real crash
                if now >= next_tick:
                    self.tick()
                    next_tick = now + self.config.interval
            elif received.si_signo == signal.SIGCHLD:
                self.reap_child()
            else:
                self.stop_child(received.si_signo)
                self.config.pid_file.unlink(missing_ok=True)
                self.log.write(
                    "INFO",
                    "Daemon",
                    "Daemon",
                    f"Daemon received signal {received.si_signo}: exiting",
                )
                return 0


def _touch_waagent_status(lib_dir: Path, now: float) -> None:
    candidates = list(lib_dir.glob("history/*/waagent_status.json"))
    if candidates:
        target = max(candidates, key=lambda p: p.stat().st_mtime)
    else:
        stamp = datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H-%M-%S")
        target = lib_dir / "history" / f"{stamp}__1" / "waagent_status.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text('{"version": "1.1", "aggregateStatus": {}}\n', encoding="utf-8")
    os.utime(target, (now, now))


def _run_exthandler(
    config: SimConfig, log: AgentLog, clock: Callable[[], float], version: str, parent: int
) -> int:
    name = f"WALinuxAgent-{version}"
    log.write(
        "INFO",
        "ExtHandler",
        "ExtHandler",
        f"Azure Linux Agent (Goal State Agent version {version})",
    )
    counter = 0
    next_tick = clock()
    while True:
        now = clock()
        if now >= next_tick:
            log.write("VERBOSE", "ExtHandler", "ExtHandler", "Report vm agent status")
            log.write(
                "INFO",
                "ExtHandler",
                "ExtHandler",
                f"[HEARTBEAT] Agent {name} is running as the goal state agent "
                f"[DEBUG HeartbeatCounter: {counter};HeartbeatId: {HEARTBEAT_ID};"
                "DroppedPackets: 0;UpdateGSErrors: 0;AutoUpdate: 1]",
            )
            _touch_waagent_status(config.lib_dir, now)
            counter += 1
            next_tick = now + config.interval
        wait = max(0.0, min(next_tick - clock(), ORPHAN_CHECK_SECONDS))
        received = signal.sigtimedwait(HANDLED_SIGNALS, wait)
        if received is not None and received.si_signo != signal.SIGCHLD:
            log.write(
                "INFO",
                "ExtHandler",
                "ExtHandler",
                f"{name} received signal {received.si_signo}: exiting",
            )
            return 0
        if os.getppid() != parent:
            log.write("INFO", "ExtHandler", "ExtHandler", f"Agent {name} is an orphan -- exiting")
            return 0


def _program_version(program: Path) -> str:
    stem = program.name
    if stem.startswith("WALinuxAgent-") and stem.endswith(".egg"):
        return stem[len("WALinuxAgent-") :].split("-")[0]
    return DAEMON_VERSION


def main(
    argv: Optional[Sequence[str]] = None,
    *,
    program: Optional[str] = None,
    clock: Callable[[], float] = time.time,
    proc_root: Path = Path("/proc"),
    environ: Optional[Mapping[str, str]] = None,
) -> int:
    """Entry point of `<guest>/usr/sbin/waagent`; returns the exit status."""
    environ = os.environ if environ is None else environ
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    program_path = Path(program or sys.argv[0])
    # Block the signals before anything else: they are collected by sigtimedwait in the
    # loop, so a SIGTERM during start-up is handled, not fatal with the pidfile left.
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    root = find_guest_root(program_path, environ)
    config = load_sim_config(args, root, environ)
    log = AgentLog(config.log_path, clock, verbose=config.verbose)
    if args.exthandlers:
        parent = environ.get(ENV_DAEMON_PID, "")
        return _run_exthandler(
            config,
            log,
            clock,
            _program_version(program_path),
            int(parent) if parent.isdigit() else os.getppid(),
        )
    log.write("INFO", "Daemon", "Daemon", f"Azure Linux Agent Version:{DAEMON_VERSION}")
    log.write("INFO", "Daemon", "Daemon", f"OS: {_os_name(root)}")
    log.write("INFO", "Daemon", "Daemon", f"Python: {platform.python_version()}")
    running = _live_pid(config.pid_file, proc_root)
    if running is not None:
        log.write("INFO", "Daemon", "Daemon", f"Daemon is already running: {running}")
        return 0
    config.pid_file.parent.mkdir(parents=True, exist_ok=True)
    config.pid_file.write_text(str(os.getpid()), encoding="ascii")
    log.write("INFO", "Daemon", "Daemon", "Run daemon")
    log.write("VERBOSE", "Daemon", "Daemon", f"Logs.Verbose=y read from {root / AGENT_CONF}")
    try:
        endpoint = (config.lib_dir / "WireServerEndpoint").read_text(encoding="ascii").strip()
        log.write("INFO", "Daemon", "Daemon", f"WireServer endpoint {endpoint} read from file")
    except OSError:
        pass
    return _Daemon(config, log, clock, environ).run()


def start_simagent(
    root: Path,
    *args: str,
    env: Optional[Mapping[str, str]] = None,
    stdout: Any = None,
    stderr: Any = None,
    new_session: bool = False,
    cwd: Optional[Path] = None,
) -> Child[bytes]:
    """Start `python3 -u <root>/usr/sbin/waagent -daemon` with `args` (the simulated
    agent's options) passed in its environment (for tests and the demo)."""
    argv = [sys.executable, "-u", str(Path(root) / DAEMON_PROGRAM), "-daemon"]
    environment = dict(os.environ if env is None else env)
    environment.update(options_as_environment(args))
    return spawn(
        argv,
        env=environment,
        cwd=None if cwd is None else str(cwd),
        stdout=stdout,
        stderr=stderr,
        new_session=new_session,
    )


def _copy_tree(source: Traversable, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for entry in source.iterdir():
        destination = target / entry.name
        if entry.is_dir():
            _copy_tree(entry, destination)
        else:
            destination.write_bytes(entry.read_bytes())


def lay_demo_guest(target_dir: Path) -> Path:
    """Copy the packaged demo guest tree into `target_dir` (created); returns it."""
    target = Path(target_dir)
    _copy_tree(resources.files("waagent_guard.demo").joinpath("guest"), target)
    (target / DAEMON_PROGRAM).chmod(0o755)
    _order_settings(target / "var/lib/waagent", time.time())
    return target


def _order_settings(lib_dir: Path, now: float) -> None:
    """Date each handler's settings files in sequence order, as the agent wrote them.

    The agent takes the current sequence number from the settings file modified last;
    a copy gives every file the copy's time, in whatever order the copy went.
    """
    for config in sorted(lib_dir.glob("*/config")):
        numbered = []
        for path in config.glob("*.settings"):
            number = path.name.split(".")[-2]
            numbered.append((int(number) if number.isdigit() else -1, path))
        for index, (_, path) in enumerate(sorted(numbered)):
            stamp = now - 3600 + index
            os.utime(path, (stamp, stamp))
