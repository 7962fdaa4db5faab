"""The systemd notification protocol (sd_notify) for `Type=notify` services.

Owns what the daemon tells its service manager: READY=1, STATUS=, WATCHDOG=1,
RELOADING=1 (with MONOTONIC_USEC= as systemd >= 253 wants), STOPPING=1, and how
often the watchdog must be pinged (WATCHDOG_USEC / WATCHDOG_PID).

The one backend is a small pure-Python sender: one datagram to NOTIFY_SOCKET (a
path, or an abstract socket when it starts with "@") with MSG_DONTWAIT, so a
full socket drops a notification instead of stalling the loop. (libsystemd's
sd_notify, through systemd-python, blocks on a full socket while holding the
GIL, which would freeze scrapes too: it is not used.) The variables are meant
for this process only: execute.py removes them from every child's environment
(`NOTIFY_VARIABLES`).
Without NOTIFY_SOCKET every call is a no-op. Sending never raises: a failure is
logged once, because a daemon must not die for want of a status line.
See sd_notify(3) and https://systemd.io/NOTIFY/ (protocol description).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Callable, Optional, Protocol

logger = logging.getLogger(__name__)

class ServiceNotifier(Protocol):
    """What the daemon tells its service manager (`Notifier`, or a test's fake)."""

    @property
    def watchdog_period(self) -> Optional[float]: ...
    def ready(self, status: Optional[str] = None) -> bool: ...
    def status(self, text: str) -> bool: ...
    def watchdog(self) -> bool: ...
    def reloading(self, status: Optional[str] = None) -> bool: ...
    def stopping(self, status: Optional[str] = None) -> bool: ...


def watchdog_interval(
    environ: Optional[Mapping[str, str]] = None, *, pid: Optional[int] = None
) -> Optional[float]:
    """The watchdog timeout in seconds systemd gave this process, or None.

    None when WATCHDOG_USEC is absent, not a positive integer, or when
    WATCHDOG_PID names another process (the variable was inherited). Ping at
    half this interval (the `Notifier.watchdog_period` property), as sd_watchdog_enabled(3)
    recommends.
    """
    env = os.environ if environ is None else environ
    raw_usec = env.get("WATCHDOG_USEC")
    if not raw_usec:
        return None
    raw_pid = env.get("WATCHDOG_PID")
    if raw_pid:
        try:
            if int(raw_pid) != (os.getpid() if pid is None else pid):
                return None
        except ValueError:
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000


def notify_address(socket_path: str) -> str:
    """NOTIFY_SOCKET as a socket address: a leading "@" means the abstract namespace."""
    if socket_path.startswith("@"):
        return "\0" + socket_path[1:]
    return socket_path


class Notifier:
    """Sends sd_notify messages; a no-op outside a `Type=notify` service.

    `environ` (default `os.environ`) supplies NOTIFY_SOCKET and the watchdog
    variables; `socket_path` overrides NOTIFY_SOCKET. `clock_monotonic` gives
    CLOCK_MONOTONIC in seconds for RELOADING's MONOTONIC_USEC.
    """

    def __init__(
        self,
        environ: Optional[Mapping[str, str]] = None,
        *,
        socket_path: Optional[str] = None,
        pid: Optional[int] = None,
        clock_monotonic: Callable[[], float] = lambda: time.clock_gettime(time.CLOCK_MONOTONIC),
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._socket_path = (
            socket_path if socket_path is not None else self._environ.get("NOTIFY_SOCKET") or None
        )
        self._pid = pid
        self._clock_monotonic = clock_monotonic
        self._reported_failure = False
        self._last_status: Optional[str] = None

    @property
    def enabled(self) -> bool:
        """True when a notify socket is configured (we run as a Type=notify service)."""
        return bool(self._socket_path)

    def watchdog_interval(self) -> Optional[float]:
        """The service's WatchdogSec in seconds, or None when the watchdog is off."""
        return watchdog_interval(self._environ, pid=self._pid)

    @property
    def watchdog_period(self) -> Optional[float]:
        """How often to send WATCHDOG=1 (half the watchdog interval); None when off."""
        interval = self.watchdog_interval()
        return None if interval is None else interval / 2

    def ready(self, status: Optional[str] = None) -> bool:
        return self.send(READY="1", STATUS=status)

    def status(self, text: str) -> bool:
        """Send STATUS= when it differs from the last one delivered (systemd keeps it):
        every reconciliation asks, and most change nothing."""
        if text == self._last_status:
            return True
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send(WATCHDOG="1")

    def reloading(self, status: Optional[str] = None) -> bool:
        # systemd >= 253 (Type=notify-reload) wants the reload's monotonic timestamp.
        usec = int(self._clock_monotonic() * 1_000_000)
        return self.send(RELOADING="1", MONOTONIC_USEC=str(usec), STATUS=status)

    def stopping(self, status: Optional[str] = None) -> bool:
        return self.send(STOPPING="1", STATUS=status)

    def send(self, **fields: Optional[str]) -> bool:
        """Send `KEY=value` lines (None values are skipped); True when delivered.

        A STATUS value is flattened to one line, since a newline would start a
        new field.
        """
        if not self._socket_path:
            return False
        lines = []
        for key, value in fields.items():
            if value is None:
                continue
            text = str(value)
            if key == "STATUS":
                text = " ".join(text.splitlines())
            lines.append(f"{key}={text}")
        if not lines:
            return False
        message = "\n".join(lines)
        try:
            self._send_datagram(message.encode("utf-8"))
        except Exception as error:  # never let a notification failure kill the daemon
            self._report_failure(error)
            return False
        if fields.get("STATUS") is not None:
            self._last_status = str(fields["STATUS"])
        return True

    def _send_datagram(self, payload: bytes) -> None:
        assert self._socket_path is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            # Never block the loop: a notification that does not fit is dropped.
            sock.sendto(payload, socket.MSG_DONTWAIT, notify_address(self._socket_path))

    def _report_failure(self, error: BaseException) -> None:
        if self._reported_failure:
            logger.debug("sd_notify to %s failed again: %s", self._socket_path, error)
            return
        self._reported_failure = True
        logger.warning(
            "cannot notify systemd through NOTIFY_SOCKET=%s: %s "
            "(further failures are logged at debug level)",
            self._socket_path,
            error,
        )
