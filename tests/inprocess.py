"""An in-process `Guard` for decision tests: temp root, fake /proc, fake manager, fake clock.

No thread, socket server or subprocess is started: a test sets the world (the
agent's processes in the fake /proc, the unit's state, systemd's system state,
the time), calls `guard.reconcile(...)` or `guard.handle_request(...)`, and reads
what the guard did (`manager.calls`) and published. Nothing depends on the speed
of the machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from waagent_guard.daemon.control import PeerCredentials
from waagent_guard.daemon.guard import Guard
from waagent_guard.errors import ServiceError
from waagent_guard.service import UnitState
from waagent_guard.settings import Settings, render_settings
from waagent_guard.sysroot import Sysroot

RUNNING = UnitState(active_state="active", sub_state="running", restart="no")
FAILED = UnitState(active_state="failed", sub_state="failed", result="signal", restart="no")
INACTIVE = UnitState(active_state="inactive", sub_state="dead", restart="no")
ROOT_PEER = PeerCredentials(pid=1, uid=0, gid=0)
BOOT_TIME = 1_700_000_000


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class FakeManager:
    """A ServiceManager whose answers the test sets; records every action."""

    name = "systemd"
    unit = "walinuxagent.service"

    def __init__(self, world: World) -> None:
        self.world = world
        self.unit_state: UnitState = RUNNING
        self.system: Optional[str] = "running"
        self.fail: Optional[str] = None  # state() and system_state() raise this
        self.fail_actions: Optional[str] = None  # start/restart/reset_failed raise this
        self.calls: list[str] = []
        self.state_calls = 0  # how often the unit was asked for (a `systemctl show` each)
        self.system_calls = 0  # how often the system state was (`is-system-running` each)

    def state(self) -> UnitState:
        self.state_calls += 1
        if self.fail is not None:
            raise ServiceError(self.fail)
        return self.unit_state

    def system_state(self) -> Optional[str]:
        self.system_calls += 1
        if self.fail is not None:
            raise ServiceError(self.fail)
        return self.system

    def _act(self, verb: str) -> None:
        self.calls.append(verb)
        if self.fail_actions is not None:
            raise ServiceError(self.fail_actions)
        if verb in ("start", "restart") and self.world.start_brings_agent_back:
            self.world.start_agent()
            self.unit_state = RUNNING

    def start(self) -> None:
        self._act("start")

    def restart(self) -> None:
        self._act("restart")

    def stop(self) -> None:
        self._act("stop")

    def reset_failed(self) -> None:
        self.calls.append("reset_failed")
        if self.fail_actions is not None:
            raise ServiceError(self.fail_actions)

    def daemon_reload(self) -> None:
        self.calls.append("daemon_reload")


class FakeNotifier:
    watchdog_period: Optional[float] = None

    def __init__(self) -> None:
        self.messages: list[str] = []

    def ready(self, status: Optional[str] = None) -> bool:
        self.messages.append(f"READY {status}")
        return True

    def status(self, text: str) -> bool:
        self.messages.append(f"STATUS {text}")
        return True

    def watchdog(self) -> bool:
        self.messages.append("WATCHDOG")
        return True

    def stopping(self, status: Optional[str] = None) -> bool:
        self.messages.append("STOPPING")
        return True

    def reloading(self, status: Optional[str] = None) -> bool:
        self.messages.append(f"RELOADING {status}")
        return True


class World:
    """The guest tree and its fake /proc; `guard` is built on first use."""

    def __init__(self, top: Path, settings: Optional[dict[str, Any]] = None) -> None:
        self.root = top / "root"
        self.proc = self.root / "proc"
        for directory in ("etc", "var/log", "var/lib/waagent", "var/lib/waagent-guard", "run"):
            (self.root / directory).mkdir(parents=True, exist_ok=True)
        self.proc.mkdir()
        (self.proc / "stat").write_text(f"cpu 1 2 3 4\nbtime {BOOT_TIME}\n")
        self.conf = self.root / "etc" / "waagent.conf"
        self.conf.write_text("Logs.Verbose=n\nExtensions.Enabled=y\n")
        (self.root / "var/log/waagent.log").write_text("")
        self.pidfile = self.root / "var/run/waagent.pid"
        self.pidfile.parent.mkdir(parents=True, exist_ok=True)
        self.next_pid = 1000
        self.agent_pid: Optional[int] = None
        self.start_brings_agent_back = True
        self.clock = FakeClock()
        self.monotonic = FakeClock(1000.0)
        self.manager = FakeManager(self)
        self.notifier = FakeNotifier()
        self.data: dict[str, Any] = {
            "daemon": {"state_file": "/var/lib/waagent-guard/state.json"},
            # Short paths: a unix socket path has at most 107 bytes.
            "control": {"socket": "/run/wg/control.sock"},
            "metrics": {"address": "127.0.0.1", "port": 0},
            "doctor": {"probe": "never"},
        }
        for section, values in (settings or {}).items():
            self.data.setdefault(section, {}).update(values)
        self.settings = Settings.model_validate(self.data)
        self.config_path = self.root / "etc/waagent-guard/guard.toml"
        self.write_config()
        self._guard: Optional[Guard] = None
        self.manager_requests: list[Settings] = []

    def write_config(self, **changes: dict[str, Any]) -> Settings:
        """guard.toml with the world's settings plus `changes` (section -> keys)."""
        data = {section: dict(values) for section, values in self.data.items()}
        for section, values in changes.items():
            data.setdefault(section, {}).update(values)
        settings = Settings.model_validate(data)
        self.config_path.parent.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(render_settings(settings))
        return settings

    def new_guard(self) -> Guard:
        """A second guard on the same root (the guard restarted: state.json is kept)."""
        self.close()
        self._guard = None
        return self.guard

    @property
    def guard(self) -> Guard:
        if self._guard is None:
            self._guard = Guard(
                Sysroot(self.root, proc_root=self.proc),
                self.settings,
                config_path=self.config_path,
                manager=self.manager,
                notifier=self.notifier,
                clock=self.clock,
                monotonic=self.monotonic,
                make_manager=self._make_manager,
            )
        return self._guard

    def _make_manager(self, settings: Settings, sysroot: Sysroot) -> FakeManager:
        """A reload that changes [agent] asks for a new manager: the same fake, recorded."""
        self.manager_requests.append(settings)
        return self.manager

    def add_process(self, argv: tuple[str, ...], *, state: str = "S", uid: int = 0) -> int:
        pid = self.next_pid
        self.next_pid += 1
        directory = self.proc / str(pid)
        directory.mkdir()
        (directory / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))
        fields = [state, "1", str(pid), str(pid)] + ["0"] * 9 + ["10", "5"] + ["0"] * 6 + ["100"]
        (directory / "stat").write_text(f"{pid} (python3) {' '.join(fields)}\n")
        (directory / "status").write_text(f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nVmRSS:\t1000 kB\n")
        return pid

    def start_agent(self) -> int:
        """The agent daemon as Debian runs it, writing its pidfile."""
        self.kill_agent(leave_pidfile=False)
        argv = ("/usr/bin/python3", "-u", str(self.root / "usr/sbin/waagent"), "-daemon")
        self.agent_pid = self.add_process(argv)
        self.pidfile.write_text(str(self.agent_pid))
        return self.agent_pid

    def kill_agent(self, *, leave_pidfile: bool = True, zombie: bool = False) -> None:
        """kill -9: the process goes (or stays a zombie); the pidfile stays behind."""
        if self.agent_pid is None:
            return
        directory = self.proc / str(self.agent_pid)
        if zombie:
            stat = directory / "stat"
            stat.write_text(stat.read_text().replace(") S ", ") Z ", 1))
            (directory / "cmdline").write_bytes(b"")
        else:
            for child in directory.iterdir():
                child.unlink()
            directory.rmdir()
        if not leave_pidfile:
            self.pidfile.unlink(missing_ok=True)
        self.agent_pid = None

    def request(self, op: str, **fields: Any) -> dict[str, Any]:
        return self.guard.handle_request({"op": op, **fields}, ROOT_PEER)

    def close(self) -> None:
        if self._guard is not None:
            self._guard.close()
