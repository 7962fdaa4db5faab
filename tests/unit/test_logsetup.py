"""Daemon logging: systemd-python's JournalHandler (down to libsystemd's bytes on a real
socket), and stderr with sd-daemon priority prefixes."""

from __future__ import annotations

import importlib
import io
import logging
import os
import shutil
import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from waagent_guard.errors import ConfigError
from waagent_guard.logsetup import (
    MESSAGE_IDS,
    configure_daemon_logging,
    decision_fields,
    syslog_priority,
    under_systemd,
)

SYSTEMD_ENV = {"INVOCATION_ID": "0123456789abcdef0123456789abcdef"}


def parse_native(data: bytes) -> dict[str, bytes]:
    """Decode journald's native protocol (both the text and the binary form)."""
    fields: dict[str, bytes] = {}
    position = 0
    while position < len(data):
        end = data.index(b"\n", position)
        line = data[position:end]
        if b"=" in line:
            key, _, value = line.partition(b"=")
            fields[key.decode()] = value
            position = end + 1
        else:
            (length,) = struct.unpack("<Q", data[end + 1 : end + 9])
            start = end + 9
            fields[line.decode()] = data[start : start + length]
            assert data[start + length : start + length + 1] == b"\n"
            position = start + length + 1
    return fields


@pytest.fixture
def journal(unix_datagram: tuple[Path, socket.socket]) -> tuple[Path, socket.socket]:
    return unix_datagram


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
            if handler not in handlers:
                handler.close()
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)


def make_logger(handler: logging.Handler, name: str = "waagent_guard.test") -> logging.Logger:
    test_logger = logging.getLogger(name)
    test_logger.handlers = [handler]
    test_logger.propagate = False
    test_logger.setLevel(logging.DEBUG)
    return test_logger


def systemd_journal() -> Any:
    """systemd-python's journal module; CI (WG_E2E=required) must have it, a bare venv skips."""
    try:
        return importlib.import_module("systemd.journal")
    except ImportError:
        if os.environ.get("WG_E2E") == "required":
            pytest.fail(
                "systemd-python is not installed: CI installs libsystemd-dev pkg-config gcc "
                "python3-dev (.ci/run) and scripts/bootstrap then adds the [systemd] extra"
            )
        pytest.skip("systemd-python not installed (apt-get install libsystemd-dev pkg-config)")


class Sent:
    """Records what JournalHandler hands to its sender (systemd-python's own hook)."""

    def __init__(self, error: Optional[OSError] = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.error = error

    def __call__(self, message: str, /, **fields: Any) -> None:
        self.calls.append((message, fields))
        if self.error is not None:
            raise self.error


def test_under_systemd_the_journal_gets_systemd_pythons_handler_with_structured_fields(
    journal: tuple[Path, socket.socket], restore_root_logger: None
) -> None:
    module = systemd_journal()
    path, _ = journal
    sent = Sent()
    handler = configure_daemon_logging(
        "debug", environ=SYSTEMD_ENV, journal_socket=path, journal_sender=sent
    )
    assert isinstance(handler, module.JournalHandler)
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger("waagent_guard.daemon.restarts").warning(
        "restarting the agent: %s", "process gone",
        extra=decision_fields("restart", "process_gone", WG_ACTION="restart"),
    )
    ((message, fields),) = sent.calls
    assert message == "restarting the agent: process gone"
    assert fields["PRIORITY"] == "4"
    assert fields["SYSLOG_IDENTIFIER"] == "waagent-guard"
    assert fields["MESSAGE_ID"] == MESSAGE_IDS["restart"]
    assert (fields["WG_DECISION"], fields["WG_REASON"], fields["WG_ACTION"]) == (
        "restart", "process_gone", "restart"
    )
    assert fields["LOGGER"] == "waagent_guard.daemon.restarts"


def test_a_secret_is_redacted_before_the_journal_sees_it(
    journal: tuple[Path, socket.socket], restore_root_logger: None
) -> None:
    systemd_journal()
    path, _ = journal
    sent = Sent()
    configure_daemon_logging("info", environ=SYSTEMD_ENV, journal_socket=path, journal_sender=sent)
    logging.getLogger("waagent_guard.test").info("proxy http://user:hunter2@proxy:3128")
    ((message, _),) = sent.calls
    assert "hunter2" not in message


def test_when_journald_refuses_a_record_it_goes_to_stderr_with_its_priority(
    journal: tuple[Path, socket.socket], restore_root_logger: None
) -> None:
    systemd_journal()
    path, _ = journal
    stream = io.StringIO()
    configure_daemon_logging(
        "info", environ=SYSTEMD_ENV, stream=stream, journal_socket=path,
        journal_sender=Sent(ConnectionRefusedError(111, "Connection refused")),
    )
    logging.getLogger("waagent_guard.test").error("still visible")
    assert stream.getvalue() == f"<3>waagent-guard[{os.getpid()}]: still visible\n"


def test_without_systemd_python_the_journal_gets_prefixed_stderr_lines(
    journal: tuple[Path, socket.socket], restore_root_logger: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, _ = journal
    monkeypatch.setitem(sys.modules, "systemd.journal", None)  # import raises ImportError
    stream = io.StringIO()
    handler = configure_daemon_logging(
        "info", environ=SYSTEMD_ENV, stream=stream, journal_socket=path
    )
    assert type(handler) is logging.StreamHandler
    logging.getLogger("waagent_guard.test").info("no journal library")
    assert stream.getvalue() == f"<6>waagent-guard[{os.getpid()}]: INFO no journal library\n"


# What the child runs in its own mount namespace: a datagram socket at the one path
# libsystemd's sd_journal_sendv uses, the daemon's logging, one decision record.
REAL_JOURNAL_CHILD = r"""
import logging, os, socket, sys
os.makedirs("/run/systemd/journal", exist_ok=True)
receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
receiver.bind("/run/systemd/journal/socket")
receiver.settimeout(10)
from waagent_guard.logsetup import configure_daemon_logging, decision_fields
handler = configure_daemon_logging("info", environ={"INVOCATION_ID": "0" * 32})
assert type(handler).__name__ == "JournalHandler", handler
logging.getLogger("waagent_guard.daemon.restarts").error(
    "give_up: budget\nsecond line", extra=decision_fields("give_up", "budget_exhausted"))
sys.stdout.buffer.write(receiver.recv(1 << 20))
"""


def test_systemd_pythons_handler_writes_the_native_protocol_to_the_journal_socket() -> None:
    """libsystemd's sd_journal_sendv has one fixed socket path; a private mount namespace
    (root) gives the child a real datagram socket there, so the bytes are libsystemd's."""
    systemd_journal()
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        pytest.skip("needs root and unshare(1) for a private /run")
    script = 'mount -t tmpfs tmpfs /run && exec "$0" -c "$1"'
    result = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "sh", "-c", script,
         sys.executable, REAL_JOURNAL_CHILD],
        capture_output=True, timeout=60, cwd=Path(__file__).resolve().parents[2], check=False,
    )
    if result.returncode != 0 and b"unshare failed" in result.stderr:
        pytest.skip(f"no mount namespace here: {result.stderr.decode(errors='replace')}")
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    fields = parse_native(result.stdout)
    assert fields["MESSAGE"] == b"give_up: budget\nsecond line"
    assert fields["PRIORITY"] == b"3"
    assert fields["SYSLOG_IDENTIFIER"] == b"waagent-guard"
    assert fields["MESSAGE_ID"] == MESSAGE_IDS["give_up"].encode()
    assert fields["WG_DECISION"] == b"give_up"
    assert fields["WG_REASON"] == b"budget_exhausted"
    assert fields["LOGGER"] == b"waagent_guard.daemon.restarts"


def test_configure_daemon_logging_under_systemd_without_a_journal_writes_prefixed_stderr(
    tmp_path: Path, restore_root_logger: None
) -> None:
    stream = io.StringIO()
    configure_daemon_logging(
        "info",
        environ={"JOURNAL_STREAM": "8:1234"},
        stream=stream,
        journal_socket=tmp_path / "absent.sock",
    )
    logging.getLogger("waagent_guard.daemon.guard").warning("agent down")
    assert stream.getvalue() == f"<4>waagent-guard[{os.getpid()}]: WARNING agent down\n"


def test_configure_daemon_logging_outside_systemd_writes_plain_stderr_lines(
    restore_root_logger: None,
) -> None:
    stream = io.StringIO()
    handler = configure_daemon_logging("WARNING", environ={}, stream=stream)
    assert logging.getLogger().handlers == [handler]
    logging.getLogger("waagent_guard.daemon.guard").info("hidden")
    logging.getLogger("waagent_guard.daemon.guard").error("shown")
    assert stream.getvalue() == f"waagent-guard[{os.getpid()}]: ERROR shown\n"


def test_configure_daemon_logging_defaults_to_sys_stderr(restore_root_logger: None) -> None:
    handler = configure_daemon_logging("info", environ={})
    assert isinstance(handler, logging.StreamHandler)
    assert handler.stream is sys.stderr


def test_an_unknown_level_names_the_config_key() -> None:
    with pytest.raises(ConfigError, match=r"logging\.level: unknown level 'loud'"):
        configure_daemon_logging("loud", environ={})


def test_message_ids_are_distinct_128_bit_hex() -> None:
    assert len(set(MESSAGE_IDS.values())) == len(MESSAGE_IDS)
    for value in MESSAGE_IDS.values():
        assert len(value) == 32
        int(value, 16)
    assert {"restart", "wait", "give_up", "recover", "verbose_on", "verbose_off",
            "config_reload", "config_invalid", "stale_pidfile"} <= set(MESSAGE_IDS)


def test_syslog_priority_maps_every_level() -> None:
    assert [syslog_priority(n) for n in (50, 40, 30, 20, 10, 5)] == [2, 3, 4, 6, 7, 7]


def test_under_systemd_reads_invocation_id_or_journal_stream() -> None:
    assert under_systemd({"INVOCATION_ID": "x"})
    assert under_systemd({"JOURNAL_STREAM": "1:2"})
    assert not under_systemd({})


def test_cli_logging_shows_warnings_only_unless_debug(restore_root_logger: None) -> None:
    from waagent_guard.logsetup import configure_cli_logging

    configure_cli_logging()
    assert logging.getLogger().level == logging.WARNING
    configure_cli_logging(debug=True)
    assert logging.getLogger().level == logging.DEBUG
    assert len(logging.getLogger().handlers) == 1
