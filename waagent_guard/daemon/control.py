"""The daemon's control socket: one JSON request line in, one JSON response line out.

Owns `/run/waagent-guard/control.sock` (the path comes from `control.socket`,
resolved by the caller): creating it with safe permissions (0600, or 0660 and
the configured group), checking every peer with SO_PEERCRED (root, our own uid,
or a member of the allowed group), bounded and timed reads, and the client
`request()` the CLI uses. The server can run in its own thread (`start`/`close`)
or be polled from the daemon's selector (`fileno`/`handle_ready`).
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import selectors
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Optional

from waagent_guard.errors import (
    ConfigError,
    GuardError,
    PermissionDeniedError,
    ServiceError,
    WriteError,
)
from waagent_guard.fsutil import read_text
from waagent_guard.logsetup import decision_fields

logger = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 64 * 1024
MAX_RESPONSE_BYTES = 1024 * 1024
DEFAULT_TIMEOUT = 5.0
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
        text = read_text(proc_root / str(pid) / "status", 64 * 1024, encoding="ascii",
                         oversize="truncate")
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("Groups:"):
            return tuple(int(word) for word in line.split()[1:] if word.isdigit())
    return ()


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


class ControlServer:
    """Serves the control socket; `handler(request, peer)` returns the reply object.

    Either call `start()` (a background thread) or put `fileno()` in your own
    selector and call `handle_ready()` when it is readable; `close()` stops
    the thread, closes the socket and removes the socket file. Connections are
    served one at a time; each gets at most `timeout` seconds and
    `max_request_bytes` of request.
    """

    def __init__(
        self,
        path: Path,
        handler: Handler,
        allowed_gid: Optional[int] = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        proc_root: Path = Path("/proc"),
        euid: Optional[int] = None,
    ) -> None:
        self.path = Path(path)
        self.handler = handler
        self.allowed_gid = allowed_gid
        self.timeout = timeout
        self.max_request_bytes = max_request_bytes
        self.proc_root = proc_root
        self.euid = os.geteuid() if euid is None else euid
        self._socket: Optional[socket.socket] = None
        self._inode: Optional[tuple[int, int]] = None
        self._thread: Optional[threading.Thread] = None
        self._wake_reader: Optional[socket.socket] = None
        self._wake_writer: Optional[socket.socket] = None

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
            sock.listen(16)
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
        """The listening socket's descriptor (for a selector); opens the socket if needed."""
        self.open()
        assert self._socket is not None
        return self._socket.fileno()

    def start(self) -> None:
        """Serve in a background thread until `close()`."""
        self.open()
        if self._thread is not None:
            return
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._thread = threading.Thread(
            target=self._serve_forever, name="waagent-guard-control", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop serving, join the thread, close the socket, remove the socket file."""
        if self._thread is not None:
            assert self._wake_writer is not None
            with contextlib.suppress(OSError):
                self._wake_writer.send(b"x")
            self._thread.join()
            self._thread = None
        for wake in (self._wake_reader, self._wake_writer):
            if wake is not None:
                wake.close()
        self._wake_reader = self._wake_writer = None
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

    def _serve_forever(self) -> None:
        assert self._socket is not None and self._wake_reader is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_reader:
                        return
                while self.handle_ready():
                    pass

    # --- one connection --------------------------------------------------------------

    def handle_ready(self) -> bool:
        """Accept and serve one pending connection; False when none was waiting."""
        self.open()
        assert self._socket is not None
        try:
            connection, _ = self._socket.accept()
        except (BlockingIOError, InterruptedError):
            return False
        with connection:
            try:
                self._serve(connection)
            except Exception:  # one bad client must never take the daemon down
                logger.exception("control request failed")
        return True

    def _serve(self, connection: socket.socket) -> None:
        connection.setblocking(True)
        peer = peer_credentials(connection)
        reason = refusal_reason(
            peer, euid=self.euid, allowed_gid=self.allowed_gid, proc_root=self.proc_root
        )
        if reason is not None:
            logger.warning(
                "control socket: refused pid %d uid %d gid %d: %s",
                peer.pid,
                peer.uid,
                peer.gid,
                reason,
                extra=decision_fields("control_denied", reason, WG_PEER_UID=peer.uid),
            )
            self._reply(connection, _error(reason))
            return
        line = self._read_request(connection)
        if line is None:
            return
        if len(line) > self.max_request_bytes:
            self._reply(
                connection, _error(f"request too large (limit {self.max_request_bytes} bytes)")
            )
            return
        try:
            request = json.loads(line)
        except ValueError as error:
            self._reply(connection, _error(f"malformed request: not JSON ({error})"))
            return
        if not isinstance(request, dict):
            self._reply(connection, _error("malformed request: expected a JSON object"))
            return
        try:
            response = self.handler(request, peer)
        except GuardError as error:
            response = _error(error.message)
        except Exception as error:
            logger.exception("control handler failed on %r", request.get("op"))
            response = _error(f"internal error: {type(error).__name__}: {error}")
        self._reply(connection, response)

    def _read_request(self, connection: socket.socket) -> Optional[bytes]:
        """The first line (without its newline), or more than the cap, or None on timeout."""
        deadline = time.monotonic() + self.timeout
        buffer = bytearray()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._log_timeout()
                return None
            connection.settimeout(remaining)
            try:
                chunk = connection.recv(65536)
            except socket.timeout:
                self._log_timeout()
                return None
            newline = chunk.find(b"\n")
            if newline >= 0:
                buffer += chunk[:newline]
                return bytes(buffer)
            buffer += chunk
            if not chunk or len(buffer) > self.max_request_bytes:
                return bytes(buffer)

    def _log_timeout(self) -> None:
        logger.warning("control socket: client sent no complete request in %ss", self.timeout)

    def _reply(self, connection: socket.socket, response: dict[str, Any]) -> None:
        data = json.dumps(response, default=str, separators=(",", ":")).encode("utf-8") + b"\n"
        connection.settimeout(self.timeout)
        try:
            connection.sendall(data)
        except OSError as error:
            logger.debug("control socket: client went away before the reply: %s", error)


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
            sock.connect(str(path))
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
    except ValueError as error:
        raise ControlProtocolError(f"{path}: the daemon's reply is not JSON: {error}") from error
    if not isinstance(response, dict):
        raise ControlProtocolError(f"{path}: the daemon's reply is not a JSON object")
    message = response.get("error")
    if response.get("ok") is False and str(message).startswith("permission denied"):
        raise ControlPermissionError(f"{path}: {message}")
    return response


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
