"""The daemon's control socket: one JSON request line in, one JSON response line out.

Owns `/run/waagent-guard/control.sock` (the path comes from `control.socket`,
resolved by the caller): creating it with safe permissions (0600, or 0660 and
the configured group), checking every peer with SO_PEERCRED (root, our own uid,
or a member of the allowed group), bounded and timed reads, and the client
`request()` the CLI uses. The server is polled from the daemon's selector
(`fileno`/`handle_ready`/`wake_in`) and never blocks it (docs/SECURITY.md).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import grp
import json
import logging
import os
import selectors
import socket
import stat
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Optional

from waagent_guard.agent.process import status_fields
from waagent_guard.errors import (
    ConfigError,
    GuardError,
    PermissionDeniedError,
    ServiceError,
    WriteError,
)
from waagent_guard.fsutil import read_file
from waagent_guard.logsetup import LogThrottle, decision_fields

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 5.0
MAX_CONNECTIONS = 16  # allowed clients open at once (exporter.FD_RESERVE counts them)
LISTEN_BACKLOG = 512  # a burst waits in the kernel (no fd of ours); the client retries EAGAIN
ACCEPT_BATCH = 64
ACCEPT_PAUSE_SECONDS = 0.1
REFUSAL_LOG_SECONDS = 60.0
_FD_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


class DaemonNotRunningError(ServiceError):
    """No daemon answers on the control socket."""


class ControlPermissionError(PermissionDeniedError):
    """The daemon (or the socket's mode) refused us."""


class ControlProtocolError(ServiceError):
    """The daemon answered something that is not one JSON object, or not in time."""


@dataclass(frozen=True)
class PeerCredentials:
    pid: int
    uid: int
    gid: int


Handler = Callable[[dict[str, Any], PeerCredentials], dict[str, Any]]


def peer_credentials(connection: socket.socket) -> PeerCredentials:
    """The connecting process's pid, uid and gid, as the kernel saw them at connect()."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return PeerCredentials(pid=pid, uid=uid, gid=gid)


def supplementary_groups(pid: int, proc_root: Path = Path("/proc")) -> tuple[int, ...]:
    """The `Groups:` of /proc/<pid>/status; empty when unreadable (the peer may be gone)."""
    if pid <= 0:  # the peer lives in another pid namespace
        return ()
    try:
        data = read_file(proc_root / str(pid) / "status", 16384,
                         oversize="truncate")[0]  # a few KiB in /proc
    except OSError:
        return ()
    groups = status_fields(data).get("Groups", "")  # split on "\n" only: see status_fields
    return tuple(int(word) for word in groups.split() if word.isdigit())


def _group_name(gid: int) -> str:
    try:
        return f"{grp.getgrgid(gid).gr_name} ({gid})"
    except KeyError:
        return str(gid)


def refusal_reason(
    peer: PeerCredentials,
    *,
    euid: int,
    allowed_gid: Optional[int],
    proc_root: Path = Path("/proc"),
) -> Optional[str]:
    """None when `peer` may use the socket, else why not (for the reply and the log)."""
    if peer.uid == 0 or peer.uid == euid:
        return None
    if allowed_gid is not None:
        if peer.gid == allowed_gid or allowed_gid in supplementary_groups(peer.pid, proc_root):
            return None
        return (
            f"permission denied: uid {peer.uid} is neither root nor in group "
            f"{_group_name(allowed_gid)} (control.group)"
        )
    return (
        f"permission denied: uid {peer.uid} is not root "
        "(set control.group to let a group use the control socket)"
    )


def _error(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


class _Client:
    """One accepted, allowed connection: reading its line, or writing the reply."""

    __slots__ = ("deadline", "inbox", "outbox", "peer", "sock", "state")

    def __init__(self, sock: socket.socket, peer: PeerCredentials, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.deadline = deadline
        self.inbox = bytearray()
        self.outbox = b""
        self.state = "read"  # "read", "write" or "closed"


class ControlServer:
    """Serves the control socket; `handler(request, peer)` returns the reply object.

    Put `fileno()` in your selector (it is the server's own epoll descriptor:
    readable when a connection is waiting or a client sent something) and call
    `handle_ready()` when it is readable or `wake_in()` has run out. Nothing
    here blocks: every socket is non-blocking, each allowed connection has
    `timeout` seconds for its request line (at most `max_request_bytes`) and
    again for its reply, at most `max_connections` are open at once (the oldest
    still reading is dropped to admit a newer one), and a peer refused by
    SO_PEERCRED is answered and closed at accept, before anything is read.
    `close()` closes the socket and removes the socket file.
    """

    def __init__(
        self,
        path: Path,
        handler: Handler,
        allowed_gid: Optional[int] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        max_connections: int = MAX_CONNECTIONS,
        proc_root: Path = Path("/proc"),
        euid: Optional[int] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.allowed_gid = allowed_gid
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.max_connections = max_connections
        self.proc_root = proc_root
        self.euid = os.geteuid() if euid is None else euid
        self.clock = clock
        self.rejected: collections.Counter[str] = collections.Counter()
        self._socket: Optional[socket.socket] = None
        self._selector: Optional[selectors.EpollSelector] = None
        self._inode: Optional[tuple[int, int]] = None
        # Oldest deadline first: a client moves to the end when it starts writing.
        self._clients: collections.OrderedDict[int, _Client] = collections.OrderedDict()
        self._listening = False
        self._resume_at: Optional[float] = None
        self._refusals = LogThrottle(REFUSAL_LOG_SECONDS, lambda: self.clock())

    # --- lifecycle -------------------------------------------------------------------

    def open(self) -> None:
        """Create, bind and listen (idempotent). Replaces a stale socket file."""
        if self._socket is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        self._remove_stale_socket()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # The umask closes the window between bind() and chmod() (the
            # socket is never world-connectable, not even for a moment).
            previous_umask = os.umask(0o177)
            try:
                sock.bind(str(self.path))
            finally:
                os.umask(previous_umask)
            if self.allowed_gid is not None:
                os.chown(self.path, 0 if self.euid == 0 else -1, self.allowed_gid)
                os.chmod(self.path, 0o660)
            else:
                os.chmod(self.path, 0o600)
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
            info = os.stat(self.path)
        except OSError as error:
            sock.close()
            raise WriteError(
                f"{self.path}: cannot create the control socket ({error.strerror or error}); "
                "check control.socket and that its directory is writable"
            ) from error
        self._inode = (info.st_dev, info.st_ino)
        self._socket = sock
        # epoll (Linux): its own descriptor is pollable, so the daemon's loop waits on it.
        self._selector = selectors.EpollSelector()
        self._selector.register(sock, selectors.EVENT_READ, None)
        self._listening = True
        logger.debug("control socket listening on %s", self.path)

    def _remove_stale_socket(self) -> None:
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(info.st_mode):
            raise ConfigError(
                f"{self.path}: exists and is not a socket; remove it or set control.socket "
                "to another path"
            )
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(1.0)
        try:
            probe.connect(str(self.path))
        except OSError:
            logger.info("replacing stale control socket %s", self.path)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            return
        finally:
            probe.close()
        raise ServiceError(
            f"{self.path}: another waagent-guard daemon is already listening on it; "
            "stop it first (systemctl stop waagent-guard)"
        )

    def fileno(self) -> int:
        """A descriptor for the caller's selector (opens the socket if needed)."""
        self.open()
        assert self._selector is not None
        return self._selector.fileno()

    def close(self) -> None:
        """Drop every client, close the socket, remove the socket file (idempotent)."""
        for client in list(self._clients.values()):
            self._drop(client)
        if self._selector is not None:
            self._selector.close()
            self._selector = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None
            self._unlink_own_socket()

    def _unlink_own_socket(self) -> None:
        # Only remove the file we created: a newer daemon may have replaced it.
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            return
        if (info.st_dev, info.st_ino) == self._inode:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> ControlServer:
        self.open()
        return self

    def __exit__(
        self,
        kind: Optional[type[BaseException]],
        value: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None:
        self.close()

    # --- the loop's side -------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        return len(self._clients)

    def wake_in(self) -> Optional[float]:
        """Seconds until a client's deadline or the end of an accept pause (None: no timer)."""
        deadlines = [client.deadline for client in self._first_clients()]
        if self._resume_at is not None:
            deadlines.append(self._resume_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - self.clock())

    def handle_ready(self) -> bool:
        """Do what can be done now without blocking; False when there was nothing.

        Accepts at most ACCEPT_BATCH connections per call (the caller's loop gets
        its turn in between; the descriptor stays readable while more wait).
        """
        self.open()
        assert self._selector is not None
        did = False
        for key, _mask in self._selector.select(0):
            did = True
            if key.data is None:
                self._accept_batch()
            else:
                self._step(key.data)
        now = self.clock()
        did = self._expire(now) or did
        if self._resume_at is not None and now >= self._resume_at and self._socket is not None:
            self._resume_at = None
            self._selector.register(self._socket, selectors.EVENT_READ, None)
            self._listening = True
        return did

    def _first_clients(self) -> Iterator[_Client]:
        # Reading and writing clients are each in deadline order; look at the first of each.
        seen: set[str] = set()
        for client in self._clients.values():
            if client.state not in seen:
                seen.add(client.state)
                yield client
                if len(seen) == 2:
                    return

    def _expire(self, now: float) -> bool:
        expired_any = False
        while True:
            expired = [client for client in self._first_clients() if client.deadline <= now]
            if not expired:
                return expired_any
            for client in expired:
                expired_any = True
                self.rejected["timeout"] += 1
                if client.state == "read":
                    self._log_timeout(client.peer)
                self._drop(client)

    # --- connections -----------------------------------------------------------------

    def _accept_batch(self) -> None:
        assert self._socket is not None
        for _ in range(ACCEPT_BATCH):
            try:
                connection, _ = self._socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                if error.errno in _FD_ERRNOS:
                    self.rejected["fd_exhausted"] += 1
                    self._pause_accepting()
                return
            try:
                self._admit(connection)
            except Exception:  # one bad client must never take the daemon down
                logger.exception("control connection failed")
                connection.close()

    def _pause_accepting(self) -> None:
        """Out of descriptors: leave connections in the backlog for a moment."""
        assert self._selector is not None and self._socket is not None
        if self._listening:
            self._selector.unregister(self._socket)
            self._listening = False
        self._resume_at = self.clock() + ACCEPT_PAUSE_SECONDS

    def _admit(self, connection: socket.socket) -> None:
        connection.setblocking(False)
        peer = peer_credentials(connection)
        reason = refusal_reason(
            peer, euid=self.euid, allowed_gid=self.allowed_gid, proc_root=self.proc_root
        )
        if reason is not None:  # answered and closed at once: costs no read, no timer
            self.rejected["peer"] += 1
            self._log_refusal(peer, reason)
            with contextlib.suppress(OSError):
                connection.send(_encode(_error(reason)))
            connection.close()
            return
        if len(self._clients) >= self.max_connections and not self._evict_oldest_reader():
            self.rejected["busy"] += 1
            with contextlib.suppress(OSError):
                connection.send(_encode(_error(
                    f"busy: {self.max_connections} control connections are open; retry"
                )))
            connection.close()
            return
        client = _Client(connection, peer, self.clock() + self.timeout)
        self._clients[connection.fileno()] = client
        assert self._selector is not None
        self._selector.register(connection, selectors.EVENT_READ, client)
        self._step(client)  # the request line is usually here already

    def _evict_oldest_reader(self) -> bool:
        for client in self._clients.values():
            if client.state == "read":
                self.rejected["evicted"] += 1
                logger.info(
                    "control socket: dropped a connection of uid %d that sent no request "
                    "(%d connections open)", client.peer.uid, len(self._clients),
                )
                self._drop(client)
                return True
        return False

    def _drop(self, client: _Client) -> None:
        if client.state == "closed":
            return
        client.state = "closed"
        self._clients.pop(client.sock.fileno(), None)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(client.sock)
        client.sock.close()

    def _step(self, client: _Client) -> None:
        try:
            if client.state == "read":
                self._read(client)
            elif client.state == "write":
                self._write(client)
        except (BlockingIOError, InterruptedError):
            pass
        except OSError as error:
            logger.debug("control socket: client went away: %s", error)
            self._drop(client)
        except Exception:  # one bad client must never take the daemon down
            logger.exception("control request failed")
            self._drop(client)

    def _read(self, client: _Client) -> None:
        while True:
            chunk = client.sock.recv(65536)
            if not chunk:  # EOF: what came is the request
                self._serve(client, bytes(client.inbox))
                return
            newline = chunk.find(b"\n")
            if newline >= 0:
                client.inbox += chunk[:newline]
                self._serve(client, bytes(client.inbox))
                return
            client.inbox += chunk
            if len(client.inbox) > self.max_request_bytes:
                self._serve(client, bytes(client.inbox))
                return

    def _serve(self, client: _Client, line: bytes) -> None:
        self._start_writing(client, _encode(self._response(line, client.peer)))

    def _response(self, line: bytes, peer: PeerCredentials) -> dict[str, Any]:
        if len(line) > self.max_request_bytes:
            self.rejected["too_large"] += 1
            return _error(f"request too large (limit {self.max_request_bytes} bytes)")
        try:
            request = json.loads(line)
        except (ValueError, RecursionError) as error:  # RecursionError: nesting too deep
            self.rejected["malformed"] += 1
            return _error(f"malformed request: not JSON ({error})")
        if not isinstance(request, dict):
            self.rejected["malformed"] += 1
            return _error("malformed request: expected a JSON object")
        try:
            return self.handler(request, peer)
        except GuardError as error:
            return _error(error.message)
        except Exception as error:
            logger.exception("control handler failed on %r", request.get("op"))
            return _error(f"internal error: {type(error).__name__}: {error}")

    def _start_writing(self, client: _Client, data: bytes) -> None:
        client.state = "write"
        client.outbox = data
        client.deadline = self.clock() + self.timeout
        self._clients.move_to_end(client.sock.fileno())
        assert self._selector is not None
        self._selector.modify(client.sock, selectors.EVENT_WRITE, client)
        self._write(client)

    def _write(self, client: _Client) -> None:
        while client.outbox:
            sent = client.sock.send(client.outbox)
            client.outbox = client.outbox[sent:]
        self._drop(client)

    # --- logging, bounded ------------------------------------------------------------

    def _log_refusal(self, peer: PeerCredentials, reason: str) -> None:
        """One warning per REFUSAL_LOG_SECONDS, with the count of those not logged:
        a flood of refused connections must not flood the journal."""
        more = self._refusals.allow()
        if more is None:
            return
        logger.warning(
            "control socket: refused pid %d uid %d gid %d: %s%s",
            peer.pid,
            peer.uid,
            peer.gid,
            reason,
            f" (and {more} more refused connection(s) since the last such message)" if more
            else "",
            extra=decision_fields("control_denied", reason, WG_PEER_UID=peer.uid),
        )

    def _log_timeout(self, peer: PeerCredentials) -> None:
        logger.warning(
            "control socket: uid %d sent no complete request in %ss", peer.uid, self.timeout
        )


def _encode(response: dict[str, Any]) -> bytes:
    return json.dumps(response, default=str, separators=(",", ":")).encode("utf-8") + b"\n"


def request(
    path: Path, payload: dict[str, Any], timeout: float = DEFAULT_TIMEOUT
) -> dict[str, Any]:
    """Send one request to the daemon and return its reply object.

    Raises DaemonNotRunningError (no socket, or nobody listening),
    ControlPermissionError (socket mode or the daemon refused us) or
    ControlProtocolError (no answer in time, or not one JSON object).
    """
    path = Path(path)
    data = json.dumps(payload, separators=(",", ":")).encode("utf-8") + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            _connect(sock, path, timeout)
        except (FileNotFoundError, ConnectionRefusedError) as error:
            raise DaemonNotRunningError(
                f"waagent-guard daemon not running (nothing listening on {path}: {error.strerror})"
            ) from error
        except PermissionError as error:
            raise ControlPermissionError(
                f"{path}: permission denied: the control socket is for root and members of "
                "control.group; run with sudo"
            ) from error
        except OSError as error:
            raise ControlProtocolError(f"{path}: cannot connect: {error}") from error
        try:
            # The daemon may answer (a refusal, "too large") before reading everything.
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                sock.sendall(data)
            raw = _read_reply(sock)
        except socket.timeout as error:
            raise ControlProtocolError(
                f"{path}: the daemon did not answer within {timeout:g}s"
            ) from error
    try:
        response = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ControlProtocolError(f"{path}: the daemon's reply is not JSON: {error}") from error
    if not isinstance(response, dict):
        raise ControlProtocolError(f"{path}: the daemon's reply is not a JSON object")
    message = response.get("error")
    if response.get("ok") is False and str(message).startswith("permission denied"):
        raise ControlPermissionError(f"{path}: {message}")
    return response


def _connect(sock: socket.socket, path: Path, timeout: float) -> None:
    """connect(), retried while the daemon's backlog is full (EAGAIN on a unix socket
    with a timeout: a flood of other clients must not make the CLI fail at once)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            sock.connect(str(path))
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise socket.timeout(f"the daemon's backlog stayed full for {timeout:g}s") from None
            time.sleep(0.02)


def _read_reply(sock: socket.socket) -> bytes:
    buffer = bytearray()
    while len(buffer) <= MAX_RESPONSE_BYTES:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        newline = chunk.find(b"\n")
        if newline >= 0:
            buffer += chunk[:newline]
            break
        buffer += chunk
    return bytes(buffer)


def group_id(name: Optional[str]) -> Optional[int]:
    """The gid of `control.group` (None when unset); ConfigError names the key."""
    if not name:
        return None
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(
            f"control.group: no group named {name!r}; create it or remove the key"
        ) from None
