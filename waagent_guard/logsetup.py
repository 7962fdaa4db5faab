"""Where log records go: journald (structured) under systemd, stderr otherwise.

The only module that attaches logging handlers. Under systemd (INVOCATION_ID or
JOURNAL_STREAM set) records go to the journal with structured fields:
`systemd.journal.JournalHandler` when systemd-python imports, else the small
pure-Python writer of the native protocol below, and plain stderr when the
journal socket does not exist. Decisions carry a fixed MESSAGE_ID per kind
(`MESSAGE_IDS`, see `decision_fields`) so `journalctl MESSAGE_ID=...` finds
every restart, give-up or lease revert. Native protocol:
https://systemd.io/JOURNAL_NATIVE_PROTOCOL/
"""

from __future__ import annotations

import array
import errno
import fcntl
import logging
import os
import re
import socket
import struct
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Optional, TextIO, Union

from waagent_guard.errors import ConfigError
from waagent_guard.redact import RedactingFilter

logger = logging.getLogger(__name__)

SYSLOG_IDENTIFIER = "waagent-guard"
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")
STDERR_FORMAT = "waagent-guard[%(process)d]: %(levelname)s %(message)s"

# One fixed 128-bit id per decision kind (never change a published id; add new ones).
MESSAGE_IDS: dict[str, str] = {
    "restart": "3776aa25589c4384b28db93b9891c055",
    "wait": "9daeadf8b6c24dd9b031f3a7b3762ac5",
    "give_up": "92570585e90e4038a427268beb326db5",
    "recover": "0713fdfe459f4d5c9f7cd8f2ee0231e1",
    "verbose_on": "003ac7f9add34434850076bcc8b19ff0",
    "verbose_off": "e2ea5326bc2a4b32ab42e8d7ae516c5d",
    "verbose_expired": "c5d2fab2894947289a166c971a7ea0f2",
    "verbose_dropped": "e74c654d939747b4a5544e67e63ad3b2",
    "config_reload": "957b42a10d7540d2b601fce676de4d42",
    "config_invalid": "404388c31e304c82ac980300475aede5",
    "stale_pidfile": "25c290d867504cfaa6cf0a41151d7c54",
    "control_denied": "bd2295b18d634580a97630dbe1374206",
    "started": "33fafa9316ac41aa8e395656eec4db9d",
    "stopping": "e7b8f06edc2b48e7a25df20ab7499dbb",
}

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
# journald field names: upper-case letters, digits and "_", not starting with "_" or a digit.
_FIELD_NAME = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
FieldValue = Union[str, bytes]


def under_systemd(environ: Optional[Mapping[str, str]] = None) -> bool:
    env = os.environ if environ is None else environ
    return bool(env.get("INVOCATION_ID") or env.get("JOURNAL_STREAM"))


def syslog_priority(levelno: int) -> int:
    """The syslog priority (0-7) of a logging level."""
    for threshold in (logging.CRITICAL, logging.ERROR, logging.WARNING, logging.INFO):
        if levelno >= threshold:
            return _SYSLOG_PRIORITY[threshold]
    return _SYSLOG_PRIORITY[logging.DEBUG]


def decision_fields(kind: str, reason: str, **more: object) -> dict[str, object]:
    """`extra=` for a decision record: MESSAGE_ID, WG_DECISION and WG_REASON (plus `more`).

    `logger.info("restarting the agent: %s", why, extra=decision_fields("restart", why))`
    """
    fields: dict[str, object] = {
        "MESSAGE_ID": MESSAGE_IDS[kind],
        "WG_DECISION": kind,
        "WG_REASON": reason,
    }
    fields.update(more)
    return fields


def configure_cli_logging(*, debug: bool = False) -> None:
    """Commands: warnings and above to stderr (debug output with --debug)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("waagent-guard: %(levelname)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.WARNING)


def parse_level(level: str) -> int:
    try:
        return _LEVELS[level.strip().lower()]
    except KeyError:
        raise ConfigError(
            f"logging.level: unknown level {level!r} (use debug, info, warning or error)"
        ) from None


def configure_daemon_logging(
    level: str,
    *,
    environ: Optional[Mapping[str, str]] = None,
    stream: Optional[TextIO] = None,
    journal_socket: Path = JOURNAL_SOCKET,
    use_systemd_python: bool = True,
) -> logging.Handler:
    """Attach the daemon's one handler to the root logger and return it.

    Under systemd and with the journal socket present: journald with structured
    fields. Otherwise `stream` (default stderr) as `waagent-guard[pid]: LEVEL
    message`, without timestamps (journald and the terminal add their own).
    When stderr is itself connected to the journal (JOURNAL_STREAM), each line
    starts with a `<priority>` prefix so journald keeps the level.
    """
    numeric_level = parse_level(level)
    output = sys.stderr if stream is None else stream
    handler: logging.Handler
    if under_systemd(environ) and journal_socket.is_socket():
        handler = _journal_handler(journal_socket, output, use_systemd_python)
    else:
        handler = logging.StreamHandler(output)
        prefix = "<%(syslog_priority)d>" if under_systemd(environ) else ""
        handler.setFormatter(_StderrFormatter(prefix + STDERR_FORMAT))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    handler.addFilter(RedactingFilter())  # no secret in a log or journal line (issue 13)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    return handler


def _journal_handler(
    journal_socket: Path, fallback_stream: TextIO, use_systemd_python: bool
) -> logging.Handler:
    if use_systemd_python and journal_socket == JOURNAL_SOCKET:
        try:
            from systemd.journal import JournalHandler  # optional: systemd-python
        except ImportError:
            pass
        else:
            handler: logging.Handler = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
            return handler
    return JournalProtocolHandler(journal_socket, fallback_stream=fallback_stream)


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.syslog_priority = syslog_priority(record.levelno)
        return super().format(record)


def encode_field(name: str, value: FieldValue) -> bytes:
    """One field in the native protocol; values with a newline use the binary form."""
    data = value if isinstance(value, bytes) else value.encode("utf-8", "replace")
    key = name.encode("ascii")
    if b"\n" in data:
        return key + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
    return key + b"=" + data + b"\n"


def record_fields(
    record: logging.LogRecord, message: str, identifier: str = SYSLOG_IDENTIFIER
) -> list[tuple[str, FieldValue]]:
    """The journal fields of one record: standard ones plus upper-case `extra=` keys."""
    fields: list[tuple[str, FieldValue]] = [
        ("MESSAGE", message),
        ("PRIORITY", str(syslog_priority(record.levelno))),
        ("SYSLOG_IDENTIFIER", identifier),
        ("SYSLOG_PID", str(record.process or os.getpid())),
        ("LOGGER", record.name),
        ("THREAD_NAME", str(record.threadName)),
        ("CODE_FILE", record.pathname),
        ("CODE_LINE", str(record.lineno)),
        ("CODE_FUNC", str(record.funcName)),
    ]
    taken = {name for name, _ in fields}
    for name, value in record.__dict__.items():
        if name in taken or value is None or not _FIELD_NAME.fullmatch(name):
            continue
        fields.append((name, value if isinstance(value, bytes) else str(value)))
    return fields


class JournalProtocolHandler(logging.Handler):
    """Writes records to journald's native socket without systemd-python.

    A datagram too large for the socket is passed as a sealed memfd, as
    sd_journal_sendv does. When journald cannot be reached (restarting, socket
    gone) the record is written to `fallback_stream` instead of being lost.
    """

    def __init__(
        self,
        socket_path: Path = JOURNAL_SOCKET,
        *,
        identifier: str = SYSLOG_IDENTIFIER,
        fallback_stream: Optional[TextIO] = None,
        level: int = logging.NOTSET,
    ) -> None:
        super().__init__(level)
        self.socket_path = Path(socket_path)
        self.identifier = identifier
        self.fallback_stream = fallback_stream
        self._socket: Optional[socket.socket] = None
        self._fallback_formatter = _StderrFormatter(STDERR_FORMAT)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = self.format(record)
            payload = b"".join(
                encode_field(name, value)
                for name, value in record_fields(record, message, self.identifier)
            )
            self._send(payload)
        except OSError:
            self._write_fallback(record)
        except Exception:
            self.handleError(record)

    def _send(self, payload: bytes) -> None:
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._socket.sendto(payload, str(self.socket_path))
        except OSError as error:
            if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                raise
            self._send_memfd(payload)

    def _send_memfd(self, payload: bytes) -> None:
        assert self._socket is not None
        fd = os.memfd_create("waagent-guard-journal", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.write(fd, payload)
            # journald only accepts a memfd that can no longer change.
            seals = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
            rights = array.array("i", [fd]).tobytes()
            self._socket.sendmsg(
                [], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, rights)], 0, str(self.socket_path)
            )
        finally:
            os.close(fd)

    def _write_fallback(self, record: logging.LogRecord) -> None:
        stream = self.fallback_stream if self.fallback_stream is not None else sys.stderr
        try:
            stream.write(self._fallback_formatter.format(record) + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        self.acquire()
        try:
            if self._socket is not None:
                self._socket.close()
                self._socket = None
        finally:
            self.release()
        super().close()
