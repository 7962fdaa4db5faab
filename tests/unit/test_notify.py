"""sd_notify against a real AF_UNIX datagram socket (the one non-blocking backend)."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from pathlib import Path

import pytest

from waagent_guard.daemon.notify import Notifier, notify_address, watchdog_interval


@pytest.fixture
def notify_socket(unix_datagram: tuple[Path, socket.socket]) -> tuple[str, socket.socket]:
    path, sock = unix_datagram
    return str(path), sock


def receive(sock: socket.socket) -> dict[str, str]:
    data = sock.recv(65536).decode("utf-8")
    return dict(line.split("=", 1) for line in data.split("\n"))


def test_fallback_sends_ready_status_watchdog_and_stopping_to_a_real_socket(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})

    assert notifier.ready("watching 3 directories")
    assert receive(sock) == {"READY": "1", "STATUS": "watching 3 directories"}
    assert notifier.status("agent up\nsecond line")
    assert receive(sock) == {"STATUS": "agent up second line"}
    assert notifier.watchdog()
    assert receive(sock) == {"WATCHDOG": "1"}
    assert notifier.stopping()
    assert receive(sock) == {"STOPPING": "1"}


def test_reloading_carries_the_monotonic_timestamp_in_microseconds(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path}, clock_monotonic=lambda: 12.5)
    notifier.reloading("reloading configuration")
    assert receive(sock) == {
        "RELOADING": "1",
        "MONOTONIC_USEC": "12500000",
        "STATUS": "reloading configuration",
    }


def test_reloading_uses_the_real_monotonic_clock_by_default(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, sock = notify_socket
    Notifier({"NOTIFY_SOCKET": path}).reloading()
    assert int(receive(sock)["MONOTONIC_USEC"]) > 0


def test_abstract_socket_is_reached_through_an_at_sign() -> None:
    name = f"waagent-guard-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(5)
    try:
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert receive(sock) == {"READY": "1"}
    finally:
        sock.close()


def test_notify_address_maps_at_sign_to_nul() -> None:
    assert notify_address("@abc") == "\0abc"
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"


def test_without_notify_socket_every_call_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval() is None


def test_send_with_only_empty_fields_sends_nothing(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, _ = notify_socket
    assert Notifier({"NOTIFY_SOCKET": path}).send(STATUS=None) is False


def test_a_missing_socket_is_logged_once_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level(logging.DEBUG, logger="waagent_guard.daemon.notify"):
        assert notifier.watchdog() is False
        assert notifier.watchdog() is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "gone.sock" in warnings[0].getMessage()


def test_watchdog_interval_is_read_from_watchdog_usec_for_this_pid() -> None:
    env = {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert watchdog_interval(env) == 30.0
    notifier = Notifier(env)
    assert notifier.watchdog_interval() == 30.0
    assert notifier.watchdog_period == 15.0


def test_watchdog_interval_without_pid_applies_to_us() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}, pid=1234) == 2.0


@pytest.mark.parametrize(
    "env",
    [
        {},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"},
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "0"},
    ],
)
def test_watchdog_interval_is_none_when_absent_inherited_or_invalid(env: dict[str, str]) -> None:
    assert watchdog_interval(env, pid=4242) is None
    assert Notifier(env, pid=4242).watchdog_period is None


def test_a_full_notify_socket_never_blocks_the_sender(
    notify_socket: tuple[str, socket.socket],
) -> None:
    path, _sock = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    # Nobody reads: the receive queue fills, then sends fail fast instead of blocking.
    results = [notifier.status(f"message {number}") for number in range(5000)]
    assert results[0] is True
    assert results[-1] is False


def test_an_unchanged_status_is_not_sent_again(
    notify_socket: tuple[str, socket.socket],
) -> None:
    """Issue 15: every reconciliation asked for STATUS=, most with the same text (a
    socket per datagram, ~30 % of an idle wake-up's CPU in the container profile)."""
    path, sock = notify_socket
    sock.setblocking(False)
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.ready("agent healthy")
    assert receive(sock) == {"READY": "1", "STATUS": "agent healthy"}
    assert notifier.status("agent healthy")  # what systemd already shows
    with pytest.raises(BlockingIOError):
        sock.recv(65536)
    assert notifier.status("agent down")
    assert receive(sock) == {"STATUS": "agent down"}
    assert notifier.status("agent healthy")
    assert receive(sock) == {"STATUS": "agent healthy"}


def test_a_status_that_was_not_delivered_is_sent_again(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "absent.sock")})
    assert not notifier.status("agent healthy")
    assert not notifier.status("agent healthy")  # tried again, not taken as delivered
