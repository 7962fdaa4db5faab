"""Test support for the doctor: guest sysroot trees, fake command runner, loopback servers.

Imported by tests/unit/test_doctor_*.py and tests/integration/test_doctor_*.py
(they put this directory on sys.path). Every server binds 127.0.0.1 and is shut
down and joined by its context manager, so the suite's thread-leak guard holds.
"""

from __future__ import annotations

import json
import os
import select
import socket
import threading
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Optional

from waagent_guard.doctor.facts import FactSources
from waagent_guard.execute import CommandResult
from waagent_guard.settings import Settings
from waagent_guard.sysroot import VMSNAPSHOT_NAME

# 2024-09-30T05:00:00Z: the fixed "now" of every guest (log lines are just before it).
NOW = datetime(2024, 9, 30, 5, 0, 0, tzinfo=timezone.utc).timestamp()
SAS_SECRET = "sig=TOPSECRETSIGNATURE"
VMSNAPSHOT_DIR = f"/var/lib/waagent/{VMSNAPSHOT_NAME}-1.0.9220.0"

HEALTHY_LOG = (Path(__file__).parent / "waagent.log").read_text(encoding="utf-8")

PROC_STAT_IDLE = "cpu  100 0 100 800 0 0 0 0 0 0\nbtime 1727670000\n"
PROC_STAT_IDLE_LATER = "cpu  110 0 110 980 0 0 0 0 0 0\nbtime 1727670000\n"
PROC_STAT_BUSY_LATER = "cpu  290 0 100 805 0 0 0 0 0 0\nbtime 1727670000\n"
MEMINFO_OK = "MemTotal:       8000000 kB\nMemFree:   1000000 kB\nMemAvailable:   6000000 kB\n"
MEMINFO_FULL = "MemTotal:       8000000 kB\nMemFree:   100000 kB\nMemAvailable:    200000 kB\n"
AGENT_FIREWALL_RULES = (
    "-P OUTPUT ACCEPT\n"
    "-A OUTPUT -d 168.63.129.16/32 -p tcp -m tcp --dport 53 -j ACCEPT\n"
    "-A OUTPUT -d 168.63.129.16/32 -p tcp -m owner --uid-owner 0 -j ACCEPT\n"
    "-A OUTPUT -d 168.63.129.16/32 -p tcp -m conntrack --ctstate INVALID,NEW -j DROP\n"
)


class Guest:
    """A guest's files under `root`, written with host paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, host_path: str) -> Path:
        return self.root / host_path.lstrip("/")

    def write(self, host_path: str, text: str, mtime: Optional[float] = None) -> Path:
        target = self.path(host_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        if mtime is not None:
            os.utime(target, (mtime, mtime))
        return target

    def remove(self, host_path: str) -> None:
        self.path(host_path).unlink()

    def conf(self, **values: str) -> None:
        base = {"Extensions.Enabled": "y", "AutoUpdate.Enabled": "y", "OS.EnableFirewall": "y",
                "Logs.Verbose": "n"}
        base.update({key.replace("_", "."): value for key, value in values.items()})
        self.write("/etc/waagent.conf", "".join(f"{k}={v}\n" for k, v in base.items()))

    def process(self, pid: int, argv: Sequence[str]) -> None:
        self.write(f"/proc/{pid}/cmdline", "\0".join(argv) + "\0")
        self.write(f"/proc/{pid}/stat", f"{pid} (python3) S 1 {pid} {pid} 0 -1 4194560 "
                   + "0 " * 5 + "10 5 0 0 20 0 1 0 1000 0 0\n")
        self.write(f"/proc/{pid}/status",
                   f"Name:\tpython3\nPid:\t{pid}\nUid:\t0\t0\t0\t0\nVmRSS:\t28000 kB\n")

    def daemon(self, pid: int = 100) -> None:
        # observe() keeps, under --root, only processes whose program lies inside the root.
        self.process(pid, ["python3", "-u", str(self.path("/usr/sbin/waagent")), "-daemon"])

    def exthandler(self, pid: int = 101) -> None:
        egg = "/var/lib/waagent/WALinuxAgent-2.11.1.12/bin/WALinuxAgent-2.11.1.12-py3.9.egg"
        self.process(pid, ["python3", "-u", str(self.path(egg)), "-run-exthandlers"])

    def unit(self, restart: Optional[str] = "always", name: str = "walinuxagent.service") -> None:
        body = ("[Unit]\nDescription=Azure Linux Agent\n\n[Service]\n"
                "ExecStart=/usr/sbin/waagent -daemon\n")
        if restart is not None:
            body += f"Restart={restart}\n"
        body += "\n[Install]\nWantedBy=multi-user.target\n"
        self.write(f"/lib/systemd/system/{name}", body)

    def vmsnapshot(self, version: str = "1.0.9220.0", *, state: str = "Enabled",
                   handler_status: str = "Ready", status: Optional[str] = "success",
                   status_mtime: float = NOW - 600, blob_host: Optional[str] = "127.0.0.1",
                   code: str = "0", message: str = "Enable succeeded") -> str:
        directory = f"/var/lib/waagent/{VMSNAPSHOT_NAME}-{version}"
        self.write(f"{directory}/config/HandlerState", state)
        self.write(f"{directory}/config/HandlerStatus", json.dumps({"status": handler_status}))
        if blob_host is not None:
            public = {"logsBlobUri": f"https://{blob_host}/logs/blob.txt?sv=2020&{SAS_SECRET}",
                      "statusBlobUri": f"https://{blob_host}/status/blob.txt?sv=2020&{SAS_SECRET}"}
            settings = {"runtimeSettings": [{"handlerSettings": {
                "protectedSettings": "MIIB...", "publicSettings": public}}]}
            self.write(f"{directory}/config/0.settings", json.dumps({"runtimeSettings": []}),
                       mtime=status_mtime - 120)
            self.write(f"{directory}/config/1.settings", json.dumps(settings),
                       mtime=status_mtime - 60)
        if status is not None:
            # The agent reads the status of the last-modified settings' sequence number.
            sequence = 1 if blob_host is not None else 0
            document = [{"status": {"status": status, "operation": "Enable", "code": code,
                                    "formattedMessage": {"message": message}}}]
            self.write(f"{directory}/status/{sequence}.status", json.dumps(document),
                       mtime=status_mtime)
        return directory


def healthy_guest(root: Path) -> Guest:
    """Every check passes on this tree (with `healthy_sources`)."""
    guest = Guest(root)
    guest.conf()
    guest.write("/etc/os-release", 'NAME="Ubuntu"\nID=ubuntu\n')
    guest.unit("always")
    guest.write("/var/log/waagent.log", HEALTHY_LOG)
    guest.write("/var/lib/waagent/WireServerEndpoint", "168.63.129.16")
    guest.write("/var/lib/waagent/provisioned", "")
    guest.write("/var/lib/dhcp/dhclient.eth0.leases",
                "lease {\n  interface \"eth0\";\n  option unknown-245 a8:3f:81:10;\n}\n")
    guest.vmsnapshot()
    guest.write(f"/var/log/azure/{VMSNAPSHOT_NAME}/extension.log",
                "2024/09/30 04:34:07 [Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0]"
                " snapshot done\n")
    guest.write("/proc/stat", PROC_STAT_IDLE)
    guest.write("/proc/meminfo", MEMINFO_OK)
    guest.daemon()
    guest.exthandler()
    return guest


@dataclass
class FakeRunner:
    """A CommandRunner answering from a table keyed by argv[0]; records every call."""

    answers: dict[str, CommandResult] = field(default_factory=dict)
    calls: list[tuple[str, ...]] = field(default_factory=list)

    def __call__(self, argv: Sequence[str], *, timeout: float) -> CommandResult:
        self.calls.append(tuple(argv))
        key = " ".join(argv[:5]) if " ".join(argv[:5]) in self.answers else argv[0]
        answer = self.answers.get(key)
        if answer is None:
            return CommandResult(127, "", f"{argv[0]}: not faked")
        return answer


def healthy_runner() -> FakeRunner:
    return FakeRunner({
        "ip": CommandResult(0, "168.63.129.16 via 10.0.0.1 dev eth0 src 10.0.0.4 uid 0\n"
                               "    cache\n", ""),
        "iptables -w -t security -S": CommandResult(0, AGENT_FIREWALL_RULES, ""),
        "iptables": CommandResult(0, "-P OUTPUT ACCEPT\n", ""),
    })


class FakeStatvfs:
    def __init__(self, free_bytes: int = 10 * 1024**3, total_bytes: int = 30 * 1024**3) -> None:
        self.free_bytes = free_bytes
        self.total_bytes = total_bytes

    def __call__(self, path: str) -> os.statvfs_result:
        return os.statvfs_result((4096, 4096, self.total_bytes // 4096, self.free_bytes // 4096,
                                  self.free_bytes // 4096, 1000, 500, 500, 0, 255))


def samples(*texts: str) -> Any:
    """A /proc/stat sampler returning `texts` in turn (the last one repeats)."""
    queue = list(texts)

    def sample() -> str:
        return queue.pop(0) if len(queue) > 1 else queue[0]

    return sample


def healthy_sources(**overrides: Any) -> FactSources:
    values: dict[str, Any] = {
        "runner": healthy_runner(),
        "cpu_stat": samples(PROC_STAT_IDLE, PROC_STAT_IDLE_LATER),
        "sleep": lambda seconds: None,
        "statvfs": FakeStatvfs(),
        "euid": lambda: 0,
        "clock": lambda: NOW,
    }
    values.update(overrides)
    return FactSources(**values)


def settings_for(**doctor: Any) -> Settings:
    """Settings whose probe targets are loopback (never the real WireServer or IMDS)."""
    base: dict[str, Any] = {"wireserver": "127.0.0.1", "wireserver_port": 9,
                            "hostgaplugin_port": 9, "imds_url": "http://127.0.0.1:9/metadata",
                            "timeout_seconds": 1.0}
    base.update(doctor)
    return Settings.model_validate({"doctor": base})


# -- loopback servers ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _RecordingServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append((self.path, dict(self.headers)))
        status = 200
        if self.server.require_metadata and self.headers.get("Metadata") != "true":
            status = 400
        if self.server.expected_path and self.path != self.server.expected_path:
            status = 404
        body = b'{"ok": true}'
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_CONNECT(self) -> None:
        self.server.requests.append((self.path, dict(self.headers)))
        self.server.connects.append(self.path)
        self.send_response(self.server.connect_status, "Connection established")
        self.end_headers()


class _RecordingServer(HTTPServer):
    def __init__(self, expected_path: str = "", require_metadata: bool = False,
                 connect_status: int = 200) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.connects: list[str] = []
        self.expected_path = expected_path
        self.require_metadata = require_metadata
        self.connect_status = connect_status

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@contextmanager
def http_server(**options: Any) -> Iterator[_RecordingServer]:
    server = _RecordingServer(**options)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              name="doctor-test-http")
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class TcpListener:
    """Accepts connections; `hang=True` keeps them open without a byte until stopped."""

    def __init__(self, hang: bool, banner: bytes = b"") -> None:
        self.hang = hang
        self.banner = banner
        self.accepted = 0
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.port = int(self._socket.getsockname()[1])
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._loop, name="doctor-test-tcp")

    def _loop(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._socket], [], [], 0.05)
            if not ready:
                continue
            connection, _ = self._socket.accept()
            self.accepted += 1
            if self.banner:
                connection.sendall(self.banner)
            if self.hang:
                self._held.append(connection)
            else:
                connection.close()

    def __enter__(self) -> TcpListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for connection in self._held:
            connection.close()
        self._socket.close()


def closed_port() -> int:
    """A loopback port with nothing listening (connect is refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Endpoints:
    wireserver: _RecordingServer
    hostgaplugin: _RecordingServer
    imds: _RecordingServer
    storage: TcpListener
    proxy: _RecordingServer

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "wireserver_port": self.wireserver.port,
            "hostgaplugin_port": self.hostgaplugin.port,
            "imds_url": f"http://127.0.0.1:{self.imds.port}/metadata/instance?api-version=2021-02-01",
            "storage_port": self.storage.port,
        }
        values.update(overrides)
        return settings_for(**values)


@contextmanager
def endpoints() -> Iterator[Endpoints]:
    """WireServer, HostGAPlugin, IMDS, a storage host and a proxy, all on 127.0.0.1."""
    with ExitStack() as stack:
        yield Endpoints(
            wireserver=stack.enter_context(http_server(expected_path="/?comp=versions")),
            hostgaplugin=stack.enter_context(http_server(expected_path="/health")),
            imds=stack.enter_context(http_server(require_metadata=True)),
            storage=stack.enter_context(TcpListener(hang=False)),
            proxy=stack.enter_context(http_server()),
        )
