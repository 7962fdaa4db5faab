"""Network probes: concurrent TCP/HTTP checks with short timeouts, explained when they fail.

Every socket operation is bounded by one shared deadline, so a run ends on time
even when every endpoint accepts and never answers. Plain HTTP goes direct (the
agent never proxies the WireServer, the HostGAPlugin or IMDS); a target marked
`via_proxy` is reached with an HTTP CONNECT tunnel through the agent's
`HttpProxy.*`. No URL shown here ever carries a query string (SAS tokens live
there). Whether probes may run at all is decided by `probe_decision`, not here.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ALL_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

MAX_TOTAL_SECONDS = 4.5
_STATUS_LINE_LIMIT = 4096


class Outcome(str, Enum):
    OK = "ok"
    HTTP_ERROR = "http-error"  # reachable, answered a non-2xx status
    REFUSED = "refused"
    RESET = "reset"  # the peer closed the connection without answering
    TIMEOUT = "timeout"
    NO_ROUTE = "no-route"
    BLOCKED = "blocked"  # a local firewall rule dropped the connect (EPERM/EACCES)
    DNS = "dns"
    PROXY_DOWN = "proxy-down"
    PROXY_REJECTED = "proxy-rejected"
    BAD_RESPONSE = "bad-response"
    ERROR = "error"


EXPLANATIONS = {
    Outcome.OK: "reachable",
    Outcome.HTTP_ERROR: "reachable, but answered an HTTP error status",
    Outcome.REFUSED: "connection refused: the host answered but nothing listens on the port",
    Outcome.RESET: "connection reset: the peer (or a middlebox) dropped it without answering",
    Outcome.TIMEOUT: "timed out: packets are dropped on the way (NSG, firewall) or the host hangs",
    Outcome.NO_ROUTE: "no route to the host: check the routing table (ip route get)",
    Outcome.BLOCKED: "blocked by a local firewall rule (iptables/nftables OUTPUT)",
    Outcome.DNS: "the name does not resolve: check DNS (resolv.conf)",
    Outcome.PROXY_DOWN: "the configured HTTP proxy cannot be reached",
    Outcome.PROXY_REJECTED: "the HTTP proxy refused to open the tunnel",
    Outcome.BAD_RESPONSE: "the peer answered something that is not HTTP",
    Outcome.ERROR: "probe error",
}


def strip_query(url: str) -> str:
    """`https://h/p?sv=..&sig=..` -> `https://h/p`: SAS tokens never reach a report."""
    parts = urlsplit(url)
    if not parts.scheme:
        return url.split("?", 1)[0].split("#", 1)[0]
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}"


@dataclass(frozen=True)
class ProbeTarget:
    """One endpoint. `http_path` None means a TCP connect only."""

    name: str
    host: str
    port: int
    http_path: Optional[str] = None
    headers: tuple[tuple[str, str], ...] = ()
    via_proxy: bool = False

    def display(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.http_path is None:
            return f"{host}:{self.port}"
        return strip_query(f"http://{host}:{self.port}{self.http_path}")


@dataclass(frozen=True)
class Proxy:
    host: str
    port: int

    def display(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ProbeResult:
    name: str
    target: str
    outcome: Outcome
    detail: str
    elapsed_seconds: float
    http_status: Optional[int] = None
    via_proxy: Optional[str] = None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.OK

    @property
    def explanation(self) -> str:
        return EXPLANATIONS[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "target": self.target,
            "outcome": self.outcome.value,
            "explanation": self.explanation,
            "detail": self.detail,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
        }
        if self.http_status is not None:
            data["http_status"] = self.http_status
        if self.via_proxy is not None:
            data["via_proxy"] = self.via_proxy
        return data


class _ProbeFailed(Exception):
    def __init__(self, outcome: Outcome, detail: str, http_status: Optional[int] = None) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.http_status = http_status


@dataclass
class _Deadline:
    end: float
    clock: Callable[[], float] = field(default=time.monotonic)

    def remaining(self) -> float:
        left = self.end - self.clock()
        if left <= 0:
            raise _ProbeFailed(Outcome.TIMEOUT, "deadline reached")
        return left


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _resolve(host: str, port: int, deadline: _Deadline) -> tuple[Any, ...]:
    """getaddrinfo bounded by the deadline: it runs in a daemon thread we may abandon."""
    if _is_ip_literal(host):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return (family, (host, port))
    box: dict[str, Any] = {}

    def lookup() -> None:
        try:
            box["value"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            box["error"] = error

    worker = threading.Thread(target=lookup, name=f"wg-dns-{host}", daemon=True)
    worker.start()
    worker.join(deadline.remaining())
    if worker.is_alive():
        raise _ProbeFailed(Outcome.DNS, f"resolving {host} timed out")
    if "error" in box:
        raise _ProbeFailed(Outcome.DNS, f"{host}: {box['error']}")
    infos = box.get("value") or []
    if not infos:
        raise _ProbeFailed(Outcome.DNS, f"{host}: no addresses")
    family, _, _, _, address = infos[0]
    return (family, address)


def _classify(error: OSError) -> Outcome:
    if isinstance(error, ConnectionRefusedError):
        return Outcome.REFUSED
    if isinstance(error, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)):
        return Outcome.RESET
    if isinstance(error, (TimeoutError, socket.timeout)):
        return Outcome.TIMEOUT
    if isinstance(error, socket.gaierror):
        return Outcome.DNS
    if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return Outcome.NO_ROUTE
    if error.errno in (errno.EPERM, errno.EACCES):
        return Outcome.BLOCKED
    return Outcome.ERROR


def _connect(host: str, port: int, deadline: _Deadline) -> socket.socket:
    family, address = _resolve(host, port, deadline)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(deadline.remaining())
        sock.connect(address)
    except OSError as error:
        sock.close()
        raise _ProbeFailed(_classify(error), f"{host}:{port}: {error}") from error
    except BaseException:
        sock.close()
        raise
    return sock


def _read_status_line(sock: socket.socket, deadline: _Deadline, what: str) -> int:
    buffer = b""
    while b"\r\n" not in buffer and b"\n" not in buffer:
        sock.settimeout(deadline.remaining())
        try:
            chunk = sock.recv(512)
        except OSError as error:
            raise _ProbeFailed(_classify(error), f"{what}: no answer ({error})") from error
        if not chunk:
            break
        buffer += chunk
        if len(buffer) > _STATUS_LINE_LIMIT:
            break
    line = buffer.split(b"\n", 1)[0].decode("latin-1").strip()
    parts = line.split()
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        shown = line[:60] if line else "connection closed without an answer"
        raise _ProbeFailed(Outcome.BAD_RESPONSE, f"{what}: {shown!r}")
    return int(parts[1])


def _send(sock: socket.socket, data: bytes, deadline: _Deadline, what: str) -> None:
    sock.settimeout(deadline.remaining())
    try:
        sock.sendall(data)
    except OSError as error:
        raise _ProbeFailed(_classify(error), f"{what}: send failed ({error})") from error


def _probe_once(target: ProbeTarget, proxy: Optional[Proxy], deadline: _Deadline) -> Optional[int]:
    """Run one probe; returns the HTTP status (None for TCP) or raises `_ProbeFailed`."""
    if target.via_proxy and proxy is not None:
        try:
            sock = _connect(proxy.host, proxy.port, deadline)
        except _ProbeFailed as failure:
            raise _ProbeFailed(
                Outcome.PROXY_DOWN,
                f"proxy {proxy.display()}: {EXPLANATIONS[failure.outcome]} ({failure.detail})",
            ) from failure
        with sock:
            authority = f"{target.host}:{target.port}"
            request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n"
            _send(sock, request.encode("ascii"), deadline, f"proxy {proxy.display()}")
            status = _read_status_line(sock, deadline, f"proxy {proxy.display()}")
            if not 200 <= status < 300:
                raise _ProbeFailed(
                    Outcome.PROXY_REJECTED,
                    f"proxy {proxy.display()} answered {status} to CONNECT {authority}",
                    status,
                )
        return None
    with _connect(target.host, target.port, deadline) as sock:
        if target.http_path is None:
            return None
        host_header = target.host if target.port == 80 else f"{target.host}:{target.port}"
        lines = [f"GET {target.http_path} HTTP/1.1", f"Host: {host_header}"]
        lines += [f"{name}: {value}" for name, value in target.headers]
        lines += ["User-Agent: waagent-guard-doctor", "Connection: close", "", ""]
        _send(sock, "\r\n".join(lines).encode("ascii"), deadline, target.display())
        status = _read_status_line(sock, deadline, target.display())
        if not 200 <= status < 300:
            raise _ProbeFailed(Outcome.HTTP_ERROR, f"HTTP {status}", status)
        return status


def probe(
    target: ProbeTarget,
    *,
    proxy: Optional[Proxy] = None,
    timeout: float = 3.0,
    deadline_at: Optional[float] = None,
    clock: Callable[[], float] = time.monotonic,
) -> ProbeResult:
    """One probe, never raising: failures come back as an explained `ProbeResult`."""
    started = clock()
    end = started + timeout
    if deadline_at is not None:
        end = min(end, deadline_at)
    deadline = _Deadline(end, clock)
    via = proxy.display() if (target.via_proxy and proxy is not None) else None
    try:
        status = _probe_once(target, proxy, deadline)
    except _ProbeFailed as failure:
        return ProbeResult(
            target.name, target.display(), failure.outcome, failure.detail,
            clock() - started, failure.http_status, via,
        )
    except Exception as error:  # a probe bug must not stop the others
        log.debug("probe %s failed unexpectedly", target.name, exc_info=True)
        return ProbeResult(
            target.name, target.display(), Outcome.ERROR, f"{type(error).__name__}: {error}",
            clock() - started, None, via,
        )
    detail = f"HTTP {status}" if status is not None else "TCP connect succeeded"
    return ProbeResult(target.name, target.display(), Outcome.OK, detail, clock() - started,
                       status, via)


def run_probes(
    targets: Sequence[ProbeTarget],
    *,
    proxy: Optional[Proxy] = None,
    timeout: float = 3.0,
    total_seconds: float = MAX_TOTAL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, ProbeResult]:
    """All probes at once, each bounded by `timeout`, the whole run by `total_seconds`."""
    if not targets:
        return {}
    total = min(total_seconds, MAX_TOTAL_SECONDS)
    deadline_at = clock() + total
    executor = ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="wg-probe")
    try:
        futures = {
            executor.submit(
                probe, target, proxy=proxy, timeout=min(timeout, total),
                deadline_at=deadline_at, clock=clock,
            ): target
            for target in targets
        }
        # Every socket call is bounded by deadline_at; the grace only covers scheduling.
        wait(futures, timeout=total + 0.25, return_when=ALL_COMPLETED)
        results: dict[str, ProbeResult] = {}
        for future, target in futures.items():
            if future.done():
                results[target.name] = future.result()
            else:
                results[target.name] = ProbeResult(
                    target.name, target.display(), Outcome.TIMEOUT,
                    "overall probe deadline reached", total,
                )
        return results
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


def targets_from_url(name: str, url: str, headers: tuple[tuple[str, str], ...] = ()) -> ProbeTarget:
    """An http:// URL (IMDS) as a probe target; the query is kept for the request only."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"{name}: expected an http:// URL (got {strip_query(url)!r})")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return ProbeTarget(name, parts.hostname, parts.port or 80, path, headers)
