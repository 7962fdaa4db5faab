"""The guard's metric families and the HTTP(S) server that exposes them.

`guard_collector()` is the one place that names the bounded label sets (restart
reasons, decision actions, catalogue events, doctor checks); the daemon and
`waagent-guard metrics` both use it. `Exporter` owns the listening server.

The server is built for a port any local user can reach (docs/SECURITY.md):

- one thread and one `selectors` loop for every connection (no thread per
  connection); each connection is a non-blocking socket with a deadline for its
  TLS handshake and request head (`HEAD_TIMEOUT_SECONDS`), a size cap on the
  head (`MAX_HEAD_BYTES`) and a deadline for writing the answer;
- at most `connection_cap()` connections, derived from the process's actual
  RLIMIT_NOFILE minus a reserve the server never takes (the guard's own work:
  /proc scans, systemctl, the state file, file watches, the control socket);
  at the cap, the connection that has waited longest in its current phase
  (sending its request head, or reading the answer) is closed to admit the
  next one once it has had `EVICTION_GRACE_SECONDS` (an honest scraper sends
  its request at once and reads the answer at once, an idle attacker does not);
  until then new connections wait in the kernel's backlog. Idle connections cannot
  starve scrapes and a burst of honest ones is not cut short;
- a listen backlog of `LISTEN_BACKLOG`, so a burst of scrapers waits in the
  kernel (no fd of ours) instead of being refused;
- a complete request goes to prometheus-client's WSGI app (`make_wsgi_app`:
  content negotiation, gzip, the `name[]` filter) through wsgiref's handler;
  its answer is memoised per request variant until the daemon publishes a new
  state (`SnapshotCache`), so N scrapers cost one rendering per publish;
- every refusal is counted in `waagent_guard_http_rejected_total{reason}`.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import io
import logging
import math
import os
import resource
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from http.client import HTTPException, parse_headers
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, unquote
from wsgiref.handlers import SimpleHandler

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from waagent_guard.agent.log import EVENT_CATALOGUE
from waagent_guard.doctor.runner import check_codes as all_check_codes
from waagent_guard.errors import ConfigError
from waagent_guard.logsetup import LogThrottle
from waagent_guard.metrics import (
    MetricsInput,
    StateCollector,
    describe_families,
    make_registry,
)
from waagent_guard.policy import DECISION_ACTIONS, RESTART_REASONS
from waagent_guard.settings import MetricsSettings

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 512
HEAD_TIMEOUT_SECONDS = 5.0  # TLS handshake + request head, from accept()
WRITE_TIMEOUT_SECONDS = 5.0  # the answer, once the request is complete
MAX_HEAD_BYTES = 8 * 1024
MAX_HTTP_CONNECTIONS = 256
# Descriptors the HTTP server never takes, on top of those open when it starts:
# the guard's own work (a /proc scan, systemctl and its pipes, the state file,
# watchdog's inotify, doctor probes, the journal) and the control socket's
# connections (control.MAX_CONNECTIONS). systemd/waagent-guard.service sizes
# LimitNOFILE= for MAX_HTTP_CONNECTIONS + this reserve.
FD_RESERVE = 256
ACCEPT_BATCH = 64
# At the cap, a connection that has had this long to send its request head may
# be closed to admit a new one; younger ones are never evicted, the new one
# waits in the backlog instead. So every admitted client gets this grace, and
# under a flood the server still admits MAX_HTTP_CONNECTIONS / grace per second.
EVICTION_GRACE_SECONDS = 0.1
EMFILE_PAUSE_SECONDS = 0.1
MAX_CACHED_VARIANTS = 16

REJECT_REASONS = (
    "head_timeout",  # no complete request head in HEAD_TIMEOUT_SECONDS
    "head_too_large",  # more than MAX_HEAD_BYTES without the end of the head
    "bad_request",  # not an HTTP request line / headers
    "evicted_idle",  # closed to admit a newer one: no request head, or not reading the answer
    "fd_exhausted",  # accept() failed with EMFILE/ENFILE/ENOBUFS/ENOMEM
    "tls_handshake",  # the TLS handshake failed or did not finish in time
    "write_timeout",  # the client did not read the answer in WRITE_TIMEOUT_SECONDS
    "app_error",  # the exposition failed: answered 500 (logged at most once a minute)
)
APP_ERROR_LOG_SECONDS = 60.0


def guard_collector(
    provider: Callable[[], MetricsInput], *, checks: bool, decisions: bool = True
) -> StateCollector:
    """The collector over what `provider` returns; `checks` adds the doctor's families.

    `decisions=False` leaves out `waagent_guard_decisions_total`, which counts one
    daemon's decisions since it started and so exists only where the daemon serves.
    """
    check_codes = all_check_codes() if checks else ()
    return StateCollector(
        provider,
        restart_reasons=RESTART_REASONS,
        event_names=[event.name for event in EVENT_CATALOGUE],
        check_codes=check_codes,
        decision_actions=DECISION_ACTIONS if decisions else (),
    )


# --- the descriptor budget ------------------------------------------------------------


def open_fd_count(fd_dir: Path = Path("/proc/self/fd")) -> int:
    try:
        return sum(1 for _ in os.scandir(fd_dir))
    except OSError:
        return 64  # a guess on the safe side (the reserve is generous anyway)


def nofile_soft_limit() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


def connection_cap(
    soft_limit: int,
    open_fds: int,
    *,
    reserve: int = FD_RESERVE,
    ceiling: int = MAX_HTTP_CONNECTIONS,
) -> int:
    """How many HTTP connections may be open at once: never into the reserve.

    At least 1 (a limit too small for the reserve still serves one scrape at a
    time; `Exporter` logs a warning naming LimitNOFILE=).
    """
    return max(1, min(ceiling, soft_limit - open_fds - reserve))


# --- render once per published state -------------------------------------------------


def content_type_for(accept: str) -> Optional[str]:
    """The content type prometheus-client answers `Accept: accept` with; None when its
    negotiation cannot parse the header (`application/openmetrics-text; version=x`
    raises TypeError inside it: every such scrape was a 500 and a traceback)."""
    from prometheus_client.exposition import choose_encoder

    try:
        return choose_encoder(accept)[1]
    except (TypeError, ValueError, AttributeError, IndexError):
        return None


def usable_accept(environ: dict[str, Any]) -> None:
    """Drop an `Accept` header the exposition cannot negotiate: the answer is then the
    default text format (0.0.4), as for a scraper that sends none."""
    if content_type_for(environ.get("HTTP_ACCEPT") or "") is None:
        environ.pop("HTTP_ACCEPT", None)


def variant_key(environ: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two requests get different answers from `make_wsgi_app`."""
    from prometheus_client.exposition import gzip_accepted

    names = parse_qs(environ.get("QUERY_STRING", "")).get("name[]", [])
    return (
        environ.get("REQUEST_METHOD"),
        environ.get("PATH_INFO") == "/favicon.ico",
        content_type_for(environ.get("HTTP_ACCEPT") or ""),
        gzip_accepted(environ.get("HTTP_ACCEPT_ENCODING") or ""),
        tuple(sorted(names)),
    )


class SnapshotCache:
    """WSGI middleware: the app's answer memoised per request variant until
    `snapshot()` returns another object (the daemon's next publish).

    At most `max_variants` answers are kept, the least recently used going first: a
    client cycling through odd variants (`name[]` filters, Accept versions) costs a
    rendering per request for itself, and at most one more for the next scrape of a
    variant it pushed out. An error answer is never kept."""

    def __init__(
        self,
        app: Callable[..., Iterable[bytes]],
        snapshot: Callable[[], object],
        *,
        max_variants: int = MAX_CACHED_VARIANTS,
    ) -> None:
        self._app = app
        self._snapshot = snapshot
        self._max_variants = max_variants
        self._state: object = None
        self._answers: collections.OrderedDict[
            tuple[Any, ...], tuple[str, list[tuple[str, str]], bytes]
        ] = collections.OrderedDict()
        self.renders = 0

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        state = self._snapshot()
        if state is not self._state:
            self._state = state
            self._answers.clear()
        key = variant_key(environ)
        answer = self._answers.get(key)
        if answer is None:
            answer = self._render(environ)
            if not answer[0].startswith("200"):
                status, headers, body = answer
                start_response(status, list(headers))
                return [body]  # an error is not kept: the next request tries again
            self._answers[key] = answer
            while len(self._answers) > self._max_variants:
                self._answers.popitem(last=False)
        else:
            self._answers.move_to_end(key)
        status, headers, body = answer
        start_response(status, list(headers))
        return [body]

    def _render(self, environ: dict[str, Any]) -> tuple[str, list[tuple[str, str]], bytes]:
        captured: list[Any] = []
        written: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return written.append

        chunks = self._app(environ, capture)
        try:
            body = b"".join([*written, *chunks])
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
        self.renders += 1
        return str(captured[0]), list(captured[1]), body


# --- the connection-level server ------------------------------------------------------


class _Connection:
    __slots__ = ("deadline", "events", "inbox", "outbox", "since", "sock", "state")

    def __init__(self, sock: socket.socket, since: float, deadline: float, state: str) -> None:
        self.sock = sock
        self.since = since
        self.deadline = deadline
        self.inbox = bytearray()
        self.outbox = b""
        self.state = state  # "handshake", "head", "write" or "closed"
        self.events = selectors.EVENT_READ


_WANT = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)
_FD_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_CANNED = {
    "bad_request": b"HTTP/1.0 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    "head_too_large": (
        b"HTTP/1.0 431 Request Header Fields Too Large\r\n"
        b"Content-Length: 0\r\nConnection: close\r\n\r\n"
    ),
}


class HttpServer:
    """Serves a WSGI app from one thread over non-blocking sockets (module docstring)."""

    def __init__(
        self,
        listener: socket.socket,
        app: Callable[..., Iterable[bytes]],
        *,
        cap: int,
        ssl_context: Optional[ssl.SSLContext] = None,
        head_timeout: float = HEAD_TIMEOUT_SECONDS,
        write_timeout: float = WRITE_TIMEOUT_SECONDS,
        max_head_bytes: int = MAX_HEAD_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.listener = listener
        self.app = app
        self.cap = cap
        self.ssl_context = ssl_context
        self.head_timeout = head_timeout
        self.write_timeout = write_timeout
        self.max_head_bytes = max_head_bytes
        self.clock = clock
        self.rejected: collections.Counter[str] = collections.Counter()
        self._app_errors = LogThrottle(APP_ERROR_LOG_SECONDS, lambda: self.clock())
        self.served = 0
        # Oldest deadline first: every state change moves a connection to the end.
        self._connections: collections.OrderedDict[int, _Connection] = collections.OrderedDict()
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = socket.socketpair()
        self._wake_read.setblocking(False)
        listener.setblocking(False)
        self._selector.register(listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_read, selectors.EVENT_READ, "wake")
        self._listening = True
        self._resume_at: Optional[float] = None  # after EMFILE
        self._stopping = False
        host, port = listener.getsockname()[:2]
        self._server_name, self._server_port = str(host), str(port)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    # -- the loop --
    def serve_forever(self) -> None:
        while not self._stopping:
            self.serve_once(self._timeout())

    def serve_once(self, timeout: Optional[float]) -> None:
        for key, mask in self._selector.select(timeout):
            if key.data is None:
                self._accept_batch()
            elif key.data == "wake":
                self._stopping = True
            else:
                self._step(key.data, mask)
        now = self.clock()
        self._expire(now)
        if self._resume_at is not None and now >= self._resume_at:
            self._resume_at = None
        self._listen_if_room(now)

    def _room_at(self) -> Optional[float]:
        """When a new connection may be admitted (None: only when one closes)."""
        if self._resume_at is not None:
            return self._resume_at
        if len(self._connections) < self.cap:
            return -math.inf  # now
        idle = self._oldest_idle()
        return None if idle is None else idle.since + EVICTION_GRACE_SECONDS

    def _oldest_idle(self) -> Optional[_Connection]:
        """The connection whose current phase (head or answer) began first."""
        return next(iter(self._connections.values()), None)

    def _listen_if_room(self, now: float) -> None:
        """Accept only when there is room: otherwise connections wait in the backlog."""
        room_at = self._room_at()
        room = room_at is not None and room_at <= now
        if room and not self._listening:
            self._selector.register(self.listener, selectors.EVENT_READ, None)
            self._listening = True
        elif not room and self._listening:
            self._selector.unregister(self.listener)
            self._listening = False

    def _timeout(self) -> Optional[float]:
        deadlines = [conn.deadline for conn in self._first_connections()]
        room_at = self._room_at()
        if room_at is not None and not self._listening:
            deadlines.append(room_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self.clock())

    def _first_connections(self) -> Iterable[_Connection]:
        # Head and write timeouts may differ: the earliest deadline is among the
        # first connection of each phase; two looks are enough.
        seen = set()
        for conn in self._connections.values():
            phase = conn.state == "write"
            if phase in seen:
                continue
            seen.add(phase)
            yield conn
            if len(seen) == 2:
                return

    def stop(self) -> None:
        """From another thread: make `serve_forever` return."""
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    def close(self) -> None:
        for conn in list(self._connections.values()):
            self._drop(conn)
        self._selector.close()
        self._wake_read.close()
        self._wake_write.close()
        self.listener.close()

    # -- connections --
    def _accept_batch(self) -> None:
        for _ in range(ACCEPT_BATCH):
            room_at = self._room_at()
            if room_at is None or room_at > self.clock():
                return  # full: the rest wait in the backlog (_listen_if_room)
            try:
                sock, _address = self.listener.accept()
            except _WANT:
                return
            except OSError as error:
                if error.errno in _FD_ERRNOS:
                    self.rejected["fd_exhausted"] += 1
                    self._pause_accepting()
                return  # ECONNABORTED and the like: the peer is gone
            self._admit(sock)

    def _pause_accepting(self) -> None:
        """Out of descriptors: leave new connections in the backlog for a moment
        (the loop would otherwise spin on a listener it cannot accept from)."""
        self._resume_at = self.clock() + EMFILE_PAUSE_SECONDS
        self._listen_if_room(self.clock())

    def _admit(self, sock: socket.socket) -> None:
        if len(self._connections) >= self.cap:
            self._evict_oldest_idle()  # _accept_batch checked it is past its grace
        sock.setblocking(False)
        if self.ssl_context is not None:
            try:
                sock = self.ssl_context.wrap_socket(
                    sock, server_side=True, do_handshake_on_connect=False
                )
            except (OSError, ValueError):
                self.rejected["tls_handshake"] += 1
                sock.close()
                return
            state = "handshake"
        else:
            state = "head"
        now = self.clock()
        conn = _Connection(sock, now, now + self.head_timeout, state)
        self._connections[sock.fileno()] = conn
        self._selector.register(sock, selectors.EVENT_READ, conn)
        self._step(conn, selectors.EVENT_READ)  # an honest client's request is usually here

    def _evict_oldest_idle(self) -> None:
        conn = self._oldest_idle()
        if conn is not None:
            self.rejected["evicted_idle"] += 1
            self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        if conn.state == "closed":
            return
        conn.state = "closed"
        self._connections.pop(conn.sock.fileno(), None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(conn.sock)
        conn.sock.close()

    def _expire(self, now: float) -> None:
        while True:
            expired = [c for c in self._first_connections() if c.deadline <= now]
            if not expired:
                return
            for conn in expired:
                reason = {"handshake": "tls_handshake", "head": "head_timeout"}.get(
                    conn.state, "write_timeout"
                )
                self.rejected[reason] += 1
                self._drop(conn)

    def _want(self, conn: _Connection, events: int) -> None:
        if events != conn.events:
            conn.events = events
            self._selector.modify(conn.sock, events, conn)

    def _step(self, conn: _Connection, mask: int) -> None:
        try:
            if conn.state == "handshake":
                self._handshake(conn)
            if conn.state == "head":
                self._read_head(conn)
            if conn.state == "write":
                self._write(conn)
        except ssl.SSLWantReadError:
            self._want(conn, selectors.EVENT_READ)
        except ssl.SSLWantWriteError:
            self._want(conn, selectors.EVENT_WRITE)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:  # reset by the peer, broken pipe: nothing to answer
            if isinstance(error, ssl.SSLError) and conn.state == "handshake":
                self.rejected["tls_handshake"] += 1
            self._drop(conn)
        except Exception:  # one bad request must never stop the server thread
            log.exception("metrics request failed")
            self._drop(conn)

    def _handshake(self, conn: _Connection) -> None:
        sock = conn.sock
        assert isinstance(sock, ssl.SSLSocket)
        sock.do_handshake()
        conn.state = "head"
        self._want(conn, selectors.EVENT_READ)

    def _read_head(self, conn: _Connection) -> None:
        while True:
            chunk = conn.sock.recv(4096)
            if not chunk:
                self._drop(conn)  # gone before asking anything
                return
            conn.inbox += chunk
            end = conn.inbox.find(b"\r\n\r\n")
            if end >= 0:
                self._answer(conn, bytes(conn.inbox[: end + 4]))
                return
            if len(conn.inbox) > self.max_head_bytes:
                self._refuse(conn, "head_too_large")
                return

    def _refuse(self, conn: _Connection, reason: str) -> None:
        self.rejected[reason] += 1
        self._start_writing(conn, _CANNED[reason])

    def _answer(self, conn: _Connection, head: bytes) -> None:
        environ = self._environ(conn, head)
        if environ is None:
            self._refuse(conn, "bad_request")
            return
        usable_accept(environ)
        out = io.BytesIO()
        errors = io.StringIO()
        handler = SimpleHandler(
            io.BytesIO(), out, errors, environ, multithread=False, multiprocess=False
        )
        handler.server_software = "waagent-guard"
        handler.run(self.app)
        if errors.getvalue():
            self.rejected["app_error"] += 1
            more = self._app_errors.allow()
            if more is not None:
                log.error("metrics request failed%s: %s",
                          f" (and {more} more since the last such message)" if more else "",
                          errors.getvalue().strip())
        self.served += 1
        self._start_writing(conn, out.getvalue())

    def _environ(self, conn: _Connection, head: bytes) -> Optional[dict[str, Any]]:
        request_line, _, rest = head.partition(b"\r\n")
        words = request_line.decode("iso-8859-1").split()
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            return None
        method, target, version = words
        try:
            headers = parse_headers(io.BytesIO(rest))
        except (HTTPException, ValueError):
            return None
        path, _, query = target.partition("?")
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "SCRIPT_NAME": "",
            "PATH_INFO": unquote(path, "iso-8859-1"),
            "QUERY_STRING": query,
            "SERVER_NAME": self._server_name,
            "SERVER_PORT": self._server_port,
            "SERVER_PROTOCOL": version,
            "CONTENT_LENGTH": "",
            "wsgi.url_scheme": "https" if self.ssl_context is not None else "http",
        }
        for name, value in headers.items():
            key = "HTTP_" + name.upper().replace("-", "_")
            environ[key] = f"{environ[key]},{value}" if key in environ else value
        return environ

    def _start_writing(self, conn: _Connection, data: bytes) -> None:
        conn.state = "write"
        conn.outbox = data
        conn.since = self.clock()
        conn.deadline = conn.since + self.write_timeout
        self._connections.move_to_end(conn.sock.fileno())
        self._want(conn, selectors.EVENT_WRITE)
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        while conn.outbox:
            sent = conn.sock.send(conn.outbox[:262144])
            conn.outbox = conn.outbox[sent:]
        self._drop(conn)


# --- the exporter the daemon starts ---------------------------------------------------


HTTP_FAMILIES = (
    ("waagent_guard_http_rejected", "counter"),
    ("waagent_guard_http_connection_limit", "gauge"),
)


class HttpStatsCollector(Collector):
    """The server's own counters (as of each publish, like every other series)."""

    def __init__(self, server: Callable[[], Optional[HttpServer]]) -> None:
        self._server = server

    def describe(self) -> Sequence[Metric]:
        return describe_families(HTTP_FAMILIES)

    def collect(self) -> Sequence[Metric]:
        server = self._server()
        if server is None:
            return []
        rejected = CounterMetricFamily(
            "waagent_guard_http_rejected",
            "Metrics connections the guard closed without an answer or with an error, by reason",
            labels=["reason"],
        )
        for reason in REJECT_REASONS:
            rejected.add_metric([reason], float(server.rejected.get(reason, 0)))
        limit = GaugeMetricFamily(
            "waagent_guard_http_connection_limit",
            "Metrics connections the guard keeps open at most (from RLIMIT_NOFILE)",
            value=float(server.cap),
        )
        return [rejected, limit]


def _tls_context(settings: MetricsSettings, config_path: Path) -> Optional[ssl.SSLContext]:
    if settings.tls_cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(certfile=settings.tls_cert, keyfile=settings.tls_key)
        if settings.tls_client_ca is not None:
            context.load_verify_locations(cafile=settings.tls_client_ca)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"metrics.tls_cert/tls_key/tls_client_ca ({settings.tls_cert}, {settings.tls_key}, "
            f"{settings.tls_client_ca}): cannot load ({error}); fix the paths in [metrics] of "
            f"{config_path}"
        ) from error
    return context


def _listen(address: str, port: int) -> socket.socket:
    family, _type, _proto, _name, sockaddr = socket.getaddrinfo(
        address, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    return socket.create_server(sockaddr[:2], family=family, backlog=LISTEN_BACKLOG)


class Exporter:
    """`/metrics` on `metrics.address:metrics.port` (HTTPS with `tls_cert`/`tls_key`).

    `snapshot` returns the published state; while it returns the same object,
    answers are served from memory (render once per publish).
    """

    def __init__(
        self,
        settings: MetricsSettings,
        collector: StateCollector,
        *,
        config_path: Path,
        snapshot: Optional[Callable[[], object]] = None,
        soft_limit: Optional[int] = None,
        head_timeout: float = HEAD_TIMEOUT_SECONDS,
    ) -> None:
        from prometheus_client import make_wsgi_app

        self._tls = settings.tls_cert is not None
        context = _tls_context(settings, config_path)
        try:
            listener = _listen(settings.address, settings.port)
        except OSError as error:
            raise ConfigError(
                f"metrics.address/metrics.port {settings.address}:{settings.port}: cannot "
                f"listen ({error.strerror or error}); choose a free port in [metrics] of "
                f"{config_path}"
            ) from error
        limit = nofile_soft_limit() if soft_limit is None else soft_limit
        cap = connection_cap(limit, open_fd_count())
        if cap < 16:
            log.warning(
                "RLIMIT_NOFILE is %d: only %d metrics connection(s) at once after the "
                "reserve of %d descriptors for the guard's own work; raise LimitNOFILE= "
                "in waagent-guard.service",
                limit, cap, FD_RESERVE,
            )
        registry = make_registry(collector)
        self._server: Optional[HttpServer] = None
        registry.register(HttpStatsCollector(lambda: self._server))
        app: Callable[..., Iterable[bytes]] = make_wsgi_app(registry)
        if snapshot is not None:
            app = SnapshotCache(app, snapshot)
        self.app = app
        self._server = HttpServer(
            listener, app, cap=cap, ssl_context=context, head_timeout=head_timeout
        )
        self._address = listener.getsockname()[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="waagent-guard-http", daemon=True
        )
        self._thread.start()
        log.info("metrics on %s (at most %d connections at once)", self.url, cap)

    @property
    def server(self) -> HttpServer:
        assert self._server is not None
        return self._server

    @property
    def url(self) -> str:
        host, port = self._address
        host = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls else 'http'}://{host}:{port}/metrics"

    def close(self) -> None:
        if self._server is None:
            return
        self._server.stop()
        self._thread.join()
        self._server.close()
        self._server = None


def maybe_exporter(
    settings: MetricsSettings, provider: Callable[[], MetricsInput], *, config_path: Path
) -> Optional[Exporter]:
    if not settings.enabled:
        return None
    return Exporter(
        settings, guard_collector(provider, checks=True), config_path=config_path,
        snapshot=provider,
    )
