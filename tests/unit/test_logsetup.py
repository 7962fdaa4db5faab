"""Daemon logging: the native journal protocol against a real socket, and stderr."""

from __future__ import annotations

import array
import io
import logging
import os
import socket
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from waagent_guard.errors import ConfigError
from waagent_guard.logsetup import (
    MESSAGE_IDS,
    JournalProtocolHandler,
    configure_daemon_logging,
    decision_fields,
    encode_field,
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


def test_journal_handler_sends_message_priority_and_message_id_to_a_real_socket(
    journal: tuple[Path, socket.socket],
) -> None:
    path, sock = journal
    handler = JournalProtocolHandler(path)
    try:
        make_logger(handler).warning(
            "restarting the agent: %s",
            "process gone",
            extra=decision_fields("restart", "process gone", WG_ATTEMPT=2),
        )
        fields = parse_native(sock.recv(65536))
    finally:
        handler.close()
    assert fields["MESSAGE"] == b"restarting the agent: process gone"
    assert fields["PRIORITY"] == b"4"
    assert fields["MESSAGE_ID"] == MESSAGE_IDS["restart"].encode()
    assert fields["WG_DECISION"] == b"restart"
    assert fields["WG_REASON"] == b"process gone"
    assert fields["WG_ATTEMPT"] == b"2"
    assert fields["SYSLOG_IDENTIFIER"] == b"waagent-guard"
    assert fields["SYSLOG_PID"] == str(os.getpid()).encode()
    assert fields["LOGGER"] == b"waagent_guard.test"
    assert fields["CODE_FUNC"].startswith(b"test_journal_handler_sends_message_priority")


def test_journal_handler_sends_a_multi_line_message_in_binary_form(
    journal: tuple[Path, socket.socket],
) -> None:
    path, sock = journal
    handler = JournalProtocolHandler(path)
    try:
        make_logger(handler).error("first line\nsecond line")
        data = sock.recv(65536)
    finally:
        handler.close()
    message = b"first line\nsecond line"
    assert b"MESSAGE\n" + struct.pack("<Q", len(message)) + message + b"\n" in data
    assert parse_native(data)["PRIORITY"] == b"3"


def test_journal_handler_includes_the_traceback_of_an_exception(
    journal: tuple[Path, socket.socket],
) -> None:
    path, sock = journal
    handler = JournalProtocolHandler(path)
    try:
        try:
            raise ValueError("boom")
        except ValueError:
            make_logger(handler).exception("tick failed")
        fields = parse_native(sock.recv(65536))
    finally:
        handler.close()
    assert fields["MESSAGE"].startswith(b"tick failed\nTraceback")
    assert b"ValueError: boom" in fields["MESSAGE"]


def test_journal_handler_ignores_extra_keys_that_are_not_journal_field_names(
    journal: tuple[Path, socket.socket],
) -> None:
    path, sock = journal
    handler = JournalProtocolHandler(path)
    try:
        make_logger(handler).info(
            "hello", extra={"lower": "x", "_TRUSTED": "x", "WG_NONE": None, "WG_BYTES": b"\x01"}
        )
        fields = parse_native(sock.recv(65536))
    finally:
        handler.close()
    assert "lower" not in fields and "_TRUSTED" not in fields and "WG_NONE" not in fields
    assert fields["WG_BYTES"] == b"\x01"


def test_a_message_larger_than_a_datagram_is_passed_as_a_sealed_memfd(
    journal: tuple[Path, socket.socket],
) -> None:
    path, sock = journal
    handler = JournalProtocolHandler(path)
    big = "x" * (4 * 1024 * 1024)
    try:
        make_logger(handler).info(big)
        _, ancillary, _, _ = sock.recvmsg(16, socket.CMSG_SPACE(array.array("i").itemsize))
    finally:
        handler.close()
    (level, kind, data) = ancillary[0]
    assert (level, kind) == (socket.SOL_SOCKET, socket.SCM_RIGHTS)
    fd = array.array("i", data)[0]
    try:
        with os.fdopen(os.dup(fd), "rb") as memfd:
            memfd.seek(0)
            fields = parse_native(memfd.read())
    finally:
        os.close(fd)
    assert fields["MESSAGE"] == big.encode()


def test_journal_handler_falls_back_to_the_stream_when_journald_is_gone(tmp_path: Path) -> None:
    stream = io.StringIO()
    handler = JournalProtocolHandler(tmp_path / "no-journal.sock", fallback_stream=stream)
    try:
        make_logger(handler).info("still visible")
    finally:
        handler.close()
    assert stream.getvalue() == f"waagent-guard[{os.getpid()}]: INFO still visible\n"


def test_encode_field_uses_the_text_form_for_single_lines() -> None:
    assert encode_field("MESSAGE", "hi") == b"MESSAGE=hi\n"
    assert encode_field("BIN", b"a\nb") == b"BIN\n" + struct.pack("<Q", 3) + b"a\nb\n"


def test_configure_daemon_logging_uses_the_journal_under_systemd(
    journal: tuple[Path, socket.socket], restore_root_logger: None
) -> None:
    path, sock = journal
    handler = configure_daemon_logging(
        "debug", environ=SYSTEMD_ENV, journal_socket=path, use_systemd_python=False
    )
    assert isinstance(handler, JournalProtocolHandler)
    assert logging.getLogger().level == logging.DEBUG
    logging.getLogger("waagent_guard.daemon.guard").debug("tick")
    assert parse_native(sock.recv(65536))["PRIORITY"] == b"7"


def test_configure_daemon_logging_prefers_systemd_python_for_the_real_journal(
    restore_root_logger: None,
) -> None:
    journal_module = pytest.importorskip("systemd.journal")
    real_socket = Path("/run/systemd/journal/socket")
    if not real_socket.is_socket():
        pytest.skip("no journald on this host")
    handler = configure_daemon_logging("info", environ=SYSTEMD_ENV)
    assert isinstance(handler, journal_module.JournalHandler)


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


def test_the_real_journal_socket_gets_systemd_pythons_handler() -> None:
    journal_module = pytest.importorskip("systemd.journal")
    from waagent_guard.logsetup import JOURNAL_SOCKET, _journal_handler

    handler = _journal_handler(JOURNAL_SOCKET, io.StringIO(), True)
    assert isinstance(handler, journal_module.JournalHandler)
    fallback = _journal_handler(JOURNAL_SOCKET, io.StringIO(), False)
    assert isinstance(fallback, JournalProtocolHandler)


class BrokenStream(io.StringIO):
    def write(self, text: str) -> int:
        raise ValueError("stream closed")


def test_a_broken_fallback_stream_is_reported_by_logging_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(logging, "raiseExceptions", False)
    handler = JournalProtocolHandler(tmp_path / "absent.sock", fallback_stream=BrokenStream())
    try:
        make_logger(handler).info("lost")  # must not raise
    finally:
        handler.close()


def test_a_record_that_cannot_be_formatted_is_reported_by_logging_not_raised(
    journal: tuple[Path, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _ = journal
    monkeypatch.setattr(logging, "raiseExceptions", False)
    handler = JournalProtocolHandler(path)
    try:
        make_logger(handler).info("%d", "not a number")  # must not raise
    finally:
        handler.close()


def test_cli_logging_shows_warnings_only_unless_debug(restore_root_logger: None) -> None:
    from waagent_guard.logsetup import configure_cli_logging

    configure_cli_logging()
    assert logging.getLogger().level == logging.WARNING
    configure_cli_logging(debug=True)
    assert logging.getLogger().level == logging.DEBUG
    assert len(logging.getLogger().handlers) == 1
