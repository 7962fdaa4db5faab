"""Where log records go: journald (structured) under systemd, stderr otherwise.

The only module that attaches logging handlers. Under systemd (INVOCATION_ID or
JOURNAL_STREAM set) with the journal socket present and systemd-python
installed (the packages ship it), records go through
`systemd.journal.JournalHandler` with structured fields: MESSAGE, PRIORITY,
SYSLOG_IDENTIFIER=waagent-guard, LOGGER, THREAD_NAME, CODE_FILE/LINE/FUNC, and
every upper-case `extra=` key: decisions carry a fixed MESSAGE_ID per kind
(`MESSAGE_IDS`, see `decision_fields`) plus WG_DECISION and WG_REASON, so
`journalctl MESSAGE_ID=...` finds every restart, give-up or lease revert.
Otherwise (no systemd-python, no journal socket, or not under systemd) a plain
stderr handler writes `waagent-guard[pid]: LEVEL message`; under systemd each
line starts with the sd-daemon(3) priority prefix `<N>` so journald keeps the
level of stderr lines. A record the journal refuses (journald restarting) is
written to stderr with its prefix instead of being lost.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable, Optional, TextIO

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
_SYSLOG_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
JournalSender = Callable[..., Any]  # systemd.journal.send's signature: (MESSAGE, **fields)


class LogThrottle:
    """At most one message per `every` seconds for one kind of event a flood can repeat
    (refused control clients, failing metrics requests): `allow()` returns None to stay
    quiet, or how many were kept quiet since the last message."""

    def __init__(self, every: float, clock: Callable[[], float]) -> None:
        self._every = every
        self._clock = clock
        self._logged_at: Optional[float] = None
        self._quiet = 0

    def allow(self) -> Optional[int]:
        now = self._clock()
        if self._logged_at is not None and now - self._logged_at < self._every:
            self._quiet += 1
            return None
        quiet, self._quiet, self._logged_at = self._quiet, 0, now
        return quiet


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
    journal_sender: Optional[JournalSender] = None,
) -> logging.Handler:
    """Attach the daemon's one handler to the root logger and return it.

    Under systemd with the journal socket present: systemd-python's
    JournalHandler (structured fields). Otherwise `stream` (default stderr) as
    `waagent-guard[pid]: LEVEL message`, without timestamps (journald and the
    terminal add their own), with a `<priority>` prefix under systemd.
    `journal_sender` replaces `systemd.journal.send` (JournalHandler's own hook).
    """
    numeric_level = parse_level(level)
    output = sys.stderr if stream is None else stream
    systemd = under_systemd(environ)
    handler: Optional[logging.Handler] = None
    if systemd and journal_socket.is_socket():
        handler = journal_handler(output, sender=journal_sender)
    if handler is None:
        handler = stderr_handler(output, prefix=systemd)
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    handler.addFilter(RedactingFilter())  # no secret in a log or journal line (issue 13)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    return handler


def stderr_handler(stream: TextIO, *, prefix: bool) -> logging.Handler:
    """`waagent-guard[pid]: LEVEL message` lines; with `prefix`, led by `<N>` (sd-daemon(3))."""
    handler = logging.StreamHandler(stream)
    lead = "<%(syslog_priority)d>" if prefix else ""
    handler.setFormatter(_StderrFormatter(lead + STDERR_FORMAT))
    return handler


def journal_handler(
    fallback_stream: TextIO, *, sender: Optional[JournalSender] = None
) -> Optional[logging.Handler]:
    """systemd-python's JournalHandler (None when systemd-python is not installed).

    A record journald cannot take (its socket gone while it restarts) goes to
    `fallback_stream` as a `<N>`-prefixed line."""
    try:
        # The declared dependency (the packages ship it); optional in a bare venv.
        from systemd.journal import JournalHandler
        from systemd.journal import send as journal_send
    except ImportError:
        return None
    send: JournalSender = sender if sender is not None else journal_send

    def send_or_fall_back(message: str, /, **fields: Any) -> None:
        try:
            send(message, **fields)
        except OSError:
            pid = fields.get("SYSLOG_PID") or os.getpid()
            fallback_stream.write(
                f"<{fields.get('PRIORITY', 6)}>{SYSLOG_IDENTIFIER}[{pid}]: {message}\n"
            )
            fallback_stream.flush()

    handler: logging.Handler = JournalHandler(
        sender_function=send_or_fall_back, SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER
    )
    return handler


class _StderrFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        record.syslog_priority = syslog_priority(record.levelno)
        return super().format(record)
