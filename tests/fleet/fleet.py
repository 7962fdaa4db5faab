"""`make fleet`: N waagent-guard daemons under a real Prometheus and Alertmanager.

Each VM is a demo guest (waagent_guard/demo/) with its simulated agent and a real
`waagent-guard run` daemon listening on its own loopback address 127.0.0.<10+i>:8419.
One Prometheus (Debian's binary, foreground, temporary config, file_sd) scrapes them
with the shipped rules; one Alertmanager sends to a webhook receiver run here. Faults
go to a known subset; the run asserts that each expected alert reaches the webhook for
exactly the affected VMs, none for the healthy ones, and that each resolves after
the repair. A second Prometheus in agent mode remote-writes every series to a third one
(`--web.enable-remote-write-receiver`). Every panel of the dashboards is queried.

The one switch: the rules are rendered with every `for:`, range window, group interval
and `# seconds` threshold divided by FLEET_TIME_SCALE (default 40: 10m becomes 15s);
monitoring/tests/alerts.test.yml keeps the real values. Everything runs on loopback,
every process is started here and stopped by PID, every wait is bounded.

Usage: python -m tests.fleet.fleet [--vms 50] [--json out/fleet.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

REPO = Path(__file__).resolve().parents[2]
KIT = REPO / "monitoring"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"
JOB = "waagent-guard"
SCRAPE_SECONDS = 10  # and the timeout: 2 shared cores can be very busy
EVAL_SECONDS = 2
DEADLINE_SECONDS = 240
# The simulated agent writes a heartbeat every 10 s (the real one: 30 min; the scaled
# WaagentHeartbeatStale threshold is 3900 s / 40 = 97.5 s).
AGENT_ARGS = ("--interval", "10")  # per phase (fire, resolve): bounded waits, never an endless loop

# --- the one documented switch: scale durations in the rules -----------------------------

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> int:
    return sum(int(n) * _UNITS[u] for n, u in re.findall(r"(\d+)([smhd])", text))


# Range windows are scaled too, but never below this: with 10 s scrapes that can time out
# on a loaded machine, a shorter window can lose a counter's sample from before a restart.
MIN_RANGE_SECONDS = 180


def scale_rules(text: str, factor: float) -> str:
    """The rules with `for:`, `interval:`, `[range]` and `N # seconds` divided by factor."""

    def duration(seconds: float, floor: int = 1) -> str:
        return f"{max(floor, round(seconds / factor))}s"

    text = re.sub(r"^(\s+(?:for|interval): )(\w+)$",
                  lambda m: m.group(1) + duration(_seconds(m.group(2))), text, flags=re.M)
    text = re.sub(r"\[(\d+[smhd])\]",
                  lambda m: f"[{duration(_seconds(m.group(1)), MIN_RANGE_SECONDS)}]", text)
    return re.sub(r"(\d+(?:\.\d+)?) # seconds",
                  lambda m: f"{float(m.group(1)) / factor:g} # seconds", text)


# --- processes ----------------------------------------------------------------------------


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def http_json(url: str, data: Optional[bytes] = None, timeout: float = 60.0) -> Any:
    request = urllib.request.Request(url, data=data)
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.5, explain: Callable[[], str] = lambda: "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError, ValueError):
            value = predicate()
            if value:
                return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; {explain()}")
        time.sleep(interval)


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class Processes:
    """Every process the harness starts; stopped by PID (TERM, then KILL), never by name."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, argv: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")
        with log:
            process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                       stderr=subprocess.STDOUT, **kwargs)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        deadline = time.monotonic() + 15
        for process in self.started:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


# --- the webhook receiver -----------------------------------------------------------------


@dataclass
class Notification:
    received: float
    status: str
    alertname: str
    instance: str


@dataclass
class Webhook:
    notifications: list[Notification] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def serve(self) -> tuple[ThreadingHTTPServer, str]:
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                now = time.time()
                with webhook.lock:
                    for alert in body.get("alerts", []):
                        labels = alert.get("labels", {})
                        webhook.notifications.append(Notification(
                            now, alert.get("status", ""), labels.get("alertname", ""),
                            labels.get("instance", "")))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, name="webhook", daemon=True).start()
        return server, f"http://127.0.0.1:{server.server_address[1]}/alerts"

    def firing(self) -> dict[tuple[str, str], float]:
        """(alertname, instance) -> first firing time, for alerts not resolved since."""
        state: dict[tuple[str, str], float] = {}
        with self.lock:
            for note in self.notifications:
                key = (note.alertname, note.instance)
                if note.status == "firing":
                    state.setdefault(key, note.received)
                else:
                    state.pop(key, None)
        return state

    def ever_fired(self) -> dict[tuple[str, str], float]:
        seen: dict[tuple[str, str], float] = {}
        with self.lock:
            for note in self.notifications:
                if note.status == "firing":
                    seen.setdefault((note.alertname, note.instance), note.received)
        return seen


# --- one VM -------------------------------------------------------------------------------


@dataclass
class Vm:
    index: int
    guest: Path
    address: str
    guard: Optional[subprocess.Popen[bytes]] = None
    log: Optional[Path] = None
    overrides: dict[str, dict[str, object]] = field(default_factory=dict)
    agent_args: list[str] = field(default_factory=lambda: list(AGENT_ARGS))

    @property
    def instance(self) -> str:
        return f"{self.address}:8419"

    @property
    def config(self) -> Path:
        return self.guest / "etc/waagent-guard/guard.toml"

    def write_config(self) -> None:
        from waagent_guard.demo.guestctl import demo_settings_toml

        self.config.write_text(demo_settings_toml(self.guest.resolve(), 8419, self.agent_args,
                                                  self.overrides))

    def tool(self, verb: str, *args: str) -> None:
        """The demo's service-manager verbs, in-process (no Python start-up per call)."""
        from waagent_guard.demo.guestctl import start_agent, stop_agent

        if verb in ("stop", "restart"):
            stop_agent(self.guest)
        if verb in ("start", "restart"):
            start_agent(self.guest, list(args))

    def processes(self, marker: str = "") -> list[int]:
        """PIDs whose argv names this guest (and `marker`): the simulated agent's."""
        found = []
        needle = str(self.guest).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes()
                if needle in argv and marker.encode() in argv and b"waagent_guard" not in argv:
                    found.append(int(entry.name))
        return found

    def agent_pid(self) -> Optional[int]:
        with contextlib.suppress(OSError, ValueError):
            pid = int((self.guest / "var/run/waagent.pid").read_text().strip())
            if pid in self.processes("-daemon"):
                return pid
        return None

    def set_conf(self, key: str, value: str) -> None:
        conf = self.guest / "etc/waagent.conf"
        text = re.sub(rf"^{re.escape(key)}=.*$", f"{key}={value}", conf.read_text(), flags=re.M)
        tmp = conf.with_name("waagent.conf.fleet")
        tmp.write_text(text)
        os.replace(tmp, conf)

    def reload(self) -> None:
        """SIGHUP, then wait until the guard says it applied the file (a loaded machine)."""
        assert self.guard is not None and self.log is not None
        log = self.log

        def reloads() -> int:
            return log.read_text(errors="replace").count("configuration reloaded")

        before = reloads()
        self.guard.send_signal(signal.SIGHUP)
        wait_for(lambda: reloads() > before, 120, f"{self.instance} to reload its config")


# --- the fleet ----------------------------------------------------------------------------

VMSNAPSHOT_STATUS = ("var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0"
                     "/status")
# What is tolerated beside a fault's own alert, on the faulted VM only (a consequence).
BACKUP = "WaagentBackupNotReady"


@dataclass
class Fault:
    name: str
    alert: str
    inject: Callable[[Vm], None]
    repair: Callable[[Vm], None]
    also: frozenset[str] = frozenset()
    setup: Callable[[Vm], None] = lambda vm: None
    vms: list[Vm] = field(default_factory=list)
    injected_at: float = 0.0
    repaired_at: float = 0.0


def _kill_agent(vm: Vm) -> None:
    for pid in vm.processes():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _restart_agent(vm: Vm) -> None:
    _kill_agent(vm)
    with contextlib.suppress(OSError):
        (vm.guest / "var/run/waagent.pid").unlink()
    vm.tool("start", *vm.agent_args)


def _loop_inject(vm: Vm) -> None:
    vm.agent_args = [*AGENT_ARGS, "--crash-after", "2"]
    vm.write_config()
    vm.reload()
    _restart_agent(vm)


def _loop_repair(vm: Vm) -> None:
    vm.agent_args = list(AGENT_ARGS)
    vm.write_config()
    vm.reload()
    _restart_agent(vm)


def _set_min_version(value: Optional[str]) -> Callable[[Vm], None]:
    def apply(vm: Vm) -> None:
        if value is None:
            vm.overrides.pop("vmsnapshot", None)
        else:
            vm.overrides["vmsnapshot"] = {"min_version": value}
        vm.write_config()
        vm.reload()
    return apply


def _fail_status(vm: Vm) -> None:
    status = vm.guest / VMSNAPSHOT_STATUS
    shutil.copy(status / "1.status", vm.guest / "1.status.good")
    tmp = status / "1.status.fleet"
    shutil.copy(status / "0.status", tmp)  # the error status, as the current sequence number
    os.replace(tmp, status / "1.status")


def _restore_status(vm: Vm) -> None:
    status = vm.guest / VMSNAPSHOT_STATUS
    os.replace(vm.guest / "1.status.good", status / "1.status")


def _exthandler_signal(signum: int) -> Callable[[Vm], None]:
    def apply(vm: Vm) -> None:
        for pid in vm.processes("-run-exthandlers"):
            os.kill(pid, signum)
    return apply


def _lease_inject(vm: Vm) -> None:
    # What `waagent-guard verbose on --for 30s --no-restart` sends, without a Python start-up
    # per VM (seconds each on a loaded machine).
    from waagent_guard.daemon.control import request

    answer = request(vm.guest / "run/waagent-guard/control.sock",
                     {"op": "verbose_on", "duration": 30, "reason": "fleet", "restart": False},
                     timeout=120)
    assert answer.get("ok"), answer
    # waagent.conf can no longer be edited (for root too): the lease cannot be reverted.
    subprocess.run(["chattr", "+i", str(vm.guest / "etc")], timeout=30, check=True)


def _lease_repair(vm: Vm) -> None:
    subprocess.run(["chattr", "-i", str(vm.guest / "etc")], timeout=30, check=True)


def faults(start_guard: Callable[[Vm], None]) -> list[Fault]:
    def kill_guard(vm: Vm) -> None:
        assert vm.guard is not None
        vm.guard.kill()
        vm.guard.wait(timeout=30)

    return [
        Fault("agent killed, restarts disabled", "WaagentDown", _kill_agent,
              lambda vm: vm.tool("start", *vm.agent_args),
              frozenset({BACKUP, "WaagentHeartbeatStale"}),
              setup=lambda vm: vm.overrides.setdefault("restart", {}).update(enabled=False)),
        Fault("restart loop", "WaagentRestartingRepeatedly", _loop_inject, _loop_repair,
              frozenset({BACKUP, "WaagentGuardGaveUp", "WaagentDown", "WaagentExtHandlerDown",
                         "WaagentHeartbeatStale"})),
        Fault("VMSnapshot below the minimum", "WaagentVMSnapshotTooOld", _set_min_version("9.0"),
              _set_min_version(None), frozenset({BACKUP})),
        Fault("last VMSnapshot operation failed", "WaagentVMSnapshotLastOperationFailed",
              _fail_status, _restore_status, frozenset({BACKUP})),
        Fault("extensions disabled", "WaagentExtensionsDisabled",
              lambda vm: vm.set_conf("Extensions.Enabled", "n"),
              lambda vm: vm.set_conf("Extensions.Enabled", "y"), frozenset({BACKUP})),
        Fault("stale heartbeat (ExtHandler hung)", "WaagentHeartbeatStale",
              _exthandler_signal(signal.SIGSTOP), _exthandler_signal(signal.SIGCONT),
              frozenset({BACKUP})),
        Fault("guard killed", "WaagentGuardDown", kill_guard, start_guard),
        Fault("verbose lease held past its time", "WaagentVerboseLeaseOverdue", _lease_inject,
              _lease_repair, frozenset({BACKUP})),
    ]


FLEET_OVERRIDES: dict[str, dict[str, object]] = {
    # Light enough for 50 guards on 2 shared cores; still well under the scaled thresholds
    # (WaagentGuardStale: 900 s / 40 = 22.5 s > tick + scrape interval + evaluation).
    "daemon": {"tick_seconds": 3.0, "debounce_seconds": 1.0},
    # CPU and memory are shared by 50 guards here: pressure is not what this run tests.
    "doctor": {"probe": "never", "interval_seconds": 15, "cpu_threshold_percent": 100.0,
               "memory_threshold_percent": 100.0},
    "restart": {"backoff_initial_seconds": 1.0, "grace_seconds": 1.0, "max_restarts": 5,
                "healthy_reset_seconds": 5},
}


class Fleet:
    def __init__(self, top: Path, count: int, scale: float) -> None:
        self.top = top
        self.count = count
        self.scale = scale
        self.logs = top / "logs"
        self.logs.mkdir(parents=True)
        self.procs = Processes(self.logs)
        self.vms: list[Vm] = []
        self.webhook = Webhook()
        self.prom_url = ""
        self.prom: Optional[subprocess.Popen[bytes]] = None
        self.receiver_url = ""
        self.figures: dict[str, Any] = {"vms": count, "time_scale": scale}

    # -- start --
    def lay_vms(self) -> None:
        from waagent_guard.demo.guestctl import prepare_guest

        for index in range(self.count):
            address = f"127.0.0.{10 + index}"
            guest = prepare_guest(self.top / f"vm{index:03d}", 8419)
            vm = Vm(index, guest, address)
            vm.overrides = json.loads(json.dumps(FLEET_OVERRIDES))
            vm.overrides["metrics"] = {"address": address, "port": 8419}
            self.vms.append(vm)

    def start_guard(self, vm: Vm) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for key in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "INVOCATION_ID", "JOURNAL_STREAM"):
            env.pop(key, None)
        vm.log = self.logs / f"guard{vm.index:03d}.log"
        vm.guard = self.procs.start(f"guard{vm.index:03d}", [
            sys.executable, "-m", "waagent_guard", "run", "--root", str(vm.guest)], env=env)

    def start_vms(self) -> None:
        for vm in self.vms:
            vm.write_config()
            vm.tool("start", *vm.agent_args)
        for vm in self.vms:
            self.start_guard(vm)
        for vm in self.vms:
            wait_for(lambda vm=vm: self._scrape(vm).get("waagent_backup_ready") is not None
                     and self._scrape(vm).get("waagent_exthandler_up") == 1.0,
                     120, f"{vm.instance}'s first doctor run")

    def _scrape(self, vm: Vm) -> dict[str, float]:
        with urllib.request.urlopen(f"http://{vm.instance}/metrics", timeout=5) as response:
            text = response.read().decode()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and "{" not in line:
                name, value = line.split(" ", 1)
                values[name] = float(value)
        return values

    def start_monitoring(self) -> None:
        config_dir = self.top / "prometheus"
        config_dir.mkdir()
        rules = []
        for source in sorted((KIT / "rules").glob("*.yml")):
            target = config_dir / source.name
            target.write_text(scale_rules(source.read_text(), self.scale))
            rules.append(str(target))
        targets = config_dir / "targets.json"
        targets.write_text(json.dumps([{"targets": [vm.instance for vm in self.vms],
                                        "labels": {"fleet": "sim"}}]))
        # Alertmanager, sending every group to the webhook (resolved too).
        _server, hook_url = self.webhook.serve()
        am_port = free_port()
        am_config = config_dir / "alertmanager.yml"
        am_config.write_text(json.dumps({
            "route": {"receiver": "webhook", "group_by": ["alertname", "instance"],
                      "group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"},
            "receivers": [{"name": "webhook",
                           "webhook_configs": [{"url": hook_url, "send_resolved": True}]}],
        }))
        self.procs.start("alertmanager", [
            ALERTMANAGER, f"--config.file={am_config}", f"--storage.path={self.top / 'am'}",
            f"--web.listen-address=127.0.0.1:{am_port}", "--cluster.listen-address=",
        ])
        # The receiver of the remote-write path.
        receiver_port = free_port()
        receiver_config = config_dir / "receiver.yml"
        receiver_config.write_text("global: {}\n")
        self.procs.start("receiver", [
            PROMETHEUS, f"--config.file={receiver_config}",
            f"--storage.tsdb.path={self.top / 'receiver-data'}",
            f"--web.listen-address=127.0.0.1:{receiver_port}", "--web.enable-remote-write-receiver",
        ])
        self.receiver_url = f"http://127.0.0.1:{receiver_port}"
        scrape = {"job_name": JOB, "file_sd_configs": [{"files": [str(targets)]}]}
        globals_ = {"scrape_interval": f"{SCRAPE_SECONDS}s",
                    "scrape_timeout": f"{SCRAPE_SECONDS}s",
                    "evaluation_interval": f"{EVAL_SECONDS}s"}
        prom_port = free_port()
        prom_config = config_dir / "prometheus.yml"
        prom_config.write_text(json.dumps({
            "global": globals_, "rule_files": rules, "scrape_configs": [scrape],
            "alerting": {"alertmanagers": [{"static_configs": [
                {"targets": [f"127.0.0.1:{am_port}"]}]}]},
        }))
        self.prom = self.procs.start("prometheus", [
            PROMETHEUS, f"--config.file={prom_config}",
            f"--storage.tsdb.path={self.top / 'prom-data'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ])
        self.prom_url = f"http://127.0.0.1:{prom_port}"
        agent_config = config_dir / "agent.yml"
        agent_config.write_text(json.dumps({
            "global": {"scrape_interval": f"{SCRAPE_SECONDS}s",
                       "scrape_timeout": f"{SCRAPE_SECONDS}s"},
            "scrape_configs": [scrape],
            "remote_write": [{"url": f"{self.receiver_url}/api/v1/write"}],
        }))
        self.procs.start("prometheus-agent", [
            PROMETHEUS, "--enable-feature=agent", f"--config.file={agent_config}",
            f"--storage.agent.path={self.top / 'agent-data'}",
            f"--web.listen-address=127.0.0.1:{free_port()}",
        ])
        for url in (self.prom_url, self.receiver_url, f"http://127.0.0.1:{am_port}"):
            wait_for(lambda url=url: urllib.request.urlopen(f"{url}/-/ready", timeout=5)
                     .status == 200, 60, f"{url} ready")
        self.figures["prometheus_rss_bytes_before_targets"] = rss_bytes(self.prom.pid)
        up = f'count(up{{job="{JOB}"}} == 1)'
        wait_for(lambda: self.query(up) == [self.count], 240, "every guard scraped",
                 explain=lambda: f"{self.query(up)} of {self.count} up: {self.target_errors()}")

    def target_errors(self) -> list[str]:
        body = http_json(f"{self.prom_url}/api/v1/targets?state=active")
        return sorted({f"{t['labels'].get('instance')}: {t.get('lastError')}"
                       for t in body["data"]["activeTargets"] if t.get("health") != "up"})[:10]

    def alerts(self) -> list[str]:
        """Prometheus' own view (for failure messages)."""
        body = http_json(f"{self.prom_url}/api/v1/alerts")
        return sorted(f"{a['labels'].get('alertname')} {a['labels'].get('instance')} {a['state']}"
                      for a in body["data"]["alerts"])

    def query(self, expr: str, url: str = "") -> list[float]:
        params = urllib.parse.urlencode({"query": expr})
        body = http_json(f"{url or self.prom_url}/api/v1/query?{params}")
        if body.get("status") != "success":
            raise AssertionError(f"{expr}: {body}")
        return [float(item["value"][1]) for item in body["data"]["result"]]


# --- the run ------------------------------------------------------------------------------


def run_fleet(count: int, scale: float, top: Path) -> dict[str, Any]:
    started = time.monotonic()
    fleet = Fleet(top, count, scale)
    fault_list = faults(fleet.start_guard)
    if count < 2 * len(fault_list):
        raise SystemExit(f"--vms {count}: need at least {2 * len(fault_list)}")
    can_chattr = os.geteuid() == 0 and shutil.which("chattr") is not None
    try:
        fleet.lay_vms()
        # Two VMs per fault from the end of the fleet; the rest stay healthy.
        cursor = count
        for fault in fault_list:
            if fault.alert == "WaagentVerboseLeaseOverdue" and not can_chattr:
                print(f"fleet: skipping '{fault.name}' (needs root and chattr)")
                continue
            fault.vms = fleet.vms[cursor - 2:cursor]
            cursor -= 2
            for vm in fault.vms:
                fault.setup(vm)
        fleet.start_vms()
        fleet.figures["guards_ready_seconds"] = round(time.monotonic() - started, 1)
        fleet.start_monitoring()
        # A quiet period: nothing may fire on a healthy fleet.
        time.sleep(max(20.0, 1800 / scale))
        quiet = fleet.webhook.ever_fired()
        assert not quiet, f"alerts on the healthy fleet before any fault: {sorted(quiet)}"
        active = [fault for fault in fault_list if fault.vms]
        for fault in active:
            fault.injected_at = time.time()
            for vm in fault.vms:
                fault.inject(vm)
        expected = {(f.alert, vm.instance): f for f in active for vm in f.vms}
        wait_for(lambda: set(expected) <= set(fleet.webhook.firing()), DEADLINE_SECONDS,
                 "every expected alert at the webhook", interval=1.0,
                 explain=lambda: f"missing {sorted(set(expected) - set(fleet.webhook.firing()))}"
                 f"; Prometheus: {fleet.alerts()}")
        fired = fleet.webhook.ever_fired()
        fleet.figures["time_to_fire_seconds"] = {
            f"{alert} {instance}": round(fired[(alert, instance)] - fault.injected_at, 1)
            for (alert, instance), fault in sorted(expected.items())
        }
        snapshot = measure(fleet)
        for fault in active:
            fault.repaired_at = time.time()
            for vm in fault.vms:
                fault.repair(vm)
        wait_for(lambda: not fleet.webhook.firing(), DEADLINE_SECONDS,
                 "every alert to resolve after the repair", interval=1.0,
                 explain=lambda: f"still firing {sorted(fleet.webhook.firing())}")
        resolved_at = time.time()
        fleet.figures["time_to_resolve_max_seconds"] = round(
            resolved_at - max(f.repaired_at for f in active), 1)
        fleet.figures.update(snapshot)
        fleet.figures.update(check_dashboards(fleet))
        fleet.figures.update(check_remote_write(fleet))
        fleet.figures["fired"] = sorted(f"{a} {i}" for a, i in fleet.webhook.ever_fired())
        verdict = judge(fleet, active, expected)
        fleet.figures.update(verdict)
        fleet.figures["wall_seconds"] = round(time.monotonic() - started, 1)
        return fleet.figures
    finally:
        for fault in fault_list:
            if fault.alert == "WaagentVerboseLeaseOverdue":
                for vm in fault.vms:
                    subprocess.run(["chattr", "-i", str(vm.guest / "etc")], timeout=30,
                                   check=False, stderr=subprocess.DEVNULL)
        fleet.procs.stop_all()
        # The figures so far, also when an assertion failed (what fired, when, the costs).
        print("fleet figures: " + json.dumps(fleet.figures, sort_keys=True), flush=True)
        for vm in fleet.vms:
            for pid in vm.processes():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)


def judge(fleet: Fleet, active: list[Fault], expected: dict[tuple[str, str], Fault]
          ) -> dict[str, Any]:
    """Expected alerts received; nothing on healthy VMs; only listed consequences elsewhere."""
    fired = fleet.webhook.ever_fired()
    by_instance = {vm.instance: fault for fault in active for vm in fault.vms}
    false_alerts = []
    consequences = []
    for alert, instance in sorted(fired):
        if (alert, instance) in expected:
            continue
        fault = by_instance.get(instance)
        if fault is not None and alert in fault.also:
            consequences.append(f"{alert} {instance}")
        else:
            false_alerts.append(f"{alert} {instance}")
    received = [key for key in expected if key in fired]
    with fleet.webhook.lock:
        resolved = {(n.alertname, n.instance) for n in fleet.webhook.notifications
                    if n.status == "resolved"}
    unresolved = sorted(f"{a} {i}" for a, i in fired if (a, i) not in resolved)
    assert not false_alerts, f"false alerts: {false_alerts}"
    assert len(received) == len(expected)
    assert not unresolved, f"never resolved: {unresolved}"
    return {"alerts_expected": len(expected), "alerts_received": len(received),
            "alerts_false": len(false_alerts), "consequential_alerts": consequences,
            "notifications": len(fleet.webhook.notifications),
            "faults": {f.name: [vm.instance for vm in f.vms] for f in active}}


def measure(fleet: Fleet) -> dict[str, Any]:
    per_instance = fleet.query(f'count by (instance) ({{job="{JOB}"}})')
    healthy_series = fleet.query(f'count({{job="{JOB}",instance="{fleet.vms[0].instance}"}})')
    window = "10m"
    p99 = fleet.query(f'quantile(0.99, quantile_over_time(0.99, '
                      f'scrape_duration_seconds{{job="{JOB}"}}[{window}]))')
    healthy = fleet.vms[0]
    with urllib.request.urlopen(f"http://{healthy.instance}/metrics", timeout=5) as response:
        body = response.read()
    assert fleet.prom is not None
    rss = rss_bytes(fleet.prom.pid)
    before = fleet.figures["prometheus_rss_bytes_before_targets"]
    heap = fleet.query("go_memstats_heap_inuse_bytes")
    head_series = fleet.query("prometheus_tsdb_head_series")
    return {
        "series_per_guard": healthy_series[0],
        "series_per_guard_max": max(per_instance),
        "bytes_per_scrape": len(body),
        "scrape_duration_p99_seconds": round(p99[0], 4) if p99 else None,
        "prometheus_rss_bytes": rss,
        "prometheus_rss_per_guard_bytes": round((rss - before) / fleet.count),
        "prometheus_heap_inuse_bytes": heap[0] if heap else None,
        "prometheus_head_series": head_series[0] if head_series else None,
    }


def check_dashboards(fleet: Fleet) -> dict[str, Any]:
    """Every panel's PromQL parses, runs without error and returns data on this fleet."""
    instance = fleet.vms[0].instance
    queried = 0
    for path in sorted((KIT / "dashboards").glob("*.json")):
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = (target["expr"].replace("$instance", instance).replace("$job", JOB)
                        .replace("$__rate_interval", "1m").replace("$__range", "10m"))
                result = wait_for(lambda expr=expr: fleet.query(expr), 60,
                                  f"data for {path.name} '{panel['title']}': {expr}")
                assert result, expr
                queried += 1
    return {"dashboard_queries_with_data": queried}


def check_remote_write(fleet: Fleet) -> dict[str, Any]:
    """The receiver holds every guard's series, written by the agent-mode Prometheus."""
    expr = f'count(count by (instance) (last_over_time(waagent_up{{job="{JOB}"}}[10m])))'
    wait_for(lambda: fleet.query(expr, fleet.receiver_url) == [fleet.count], 60,
             "every guard's series at the remote-write receiver")
    series = fleet.query(f'count({{job="{JOB}"}})', fleet.receiver_url)
    return {"remote_write_guards": fleet.count, "remote_write_series": series[0]}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=int(os.environ.get("FLEET_VMS", "50")))
    parser.add_argument("--time-scale", type=float,
                        default=float(os.environ.get("FLEET_TIME_SCALE", "40")))
    parser.add_argument("--json", type=Path, default=None, help="write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    for binary in (PROMETHEUS, ALERTMANAGER):
        if not Path(binary).exists():
            raise SystemExit(f"{binary}: not installed (apt-get install --no-install-recommends "
                             "prometheus prometheus-alertmanager)")
    top = Path(tempfile.mkdtemp(prefix="wg-fleet-", dir="/tmp"))
    try:
        figures = run_fleet(args.vms, args.time_scale, top)
    finally:
        if not args.keep:
            shutil.rmtree(top, ignore_errors=True)
        else:
            print(f"fleet: kept {top}")
    text = json.dumps(figures, indent=2, sort_keys=True)
    print(text)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
