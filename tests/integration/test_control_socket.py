"""The control socket against real sockets, real peers and real uids (setpriv)."""

from __future__ import annotations

import json
import logging
import os
import selectors
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.privileges import require_nobody_python
from waagent_guard.daemon.control import (
    ControlPermissionError,
    ControlProtocolError,
    ControlServer,
    DaemonNotRunningError,
    PeerCredentials,
    refusal_reason,
    request,
    supplementary_groups,
)
from waagent_guard.errors import ConfigError, InputError, ServiceError, WriteError

NOBODY = 65534


class DrivenControl(ControlServer):
    """The server driven by a test thread, as the daemon's loop drives it
    (`fileno()` in a selector, `handle_ready()` when readable or due)."""

    _driver: Optional[threading.Thread] = None
    _stop: Optional[threading.Event] = None

    def start(self) -> None:
        self.open()
        if self._driver is not None:
            return
        self._stop = threading.Event()
        self._driver = threading.Thread(target=self._drive, args=(self._stop,), name="test-driver")
        self._driver.start()

    def _drive(self, stop: threading.Event) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self, selectors.EVENT_READ)
            while not stop.is_set():
                wake = self.wake_in()
                selector.select(0.05 if wake is None else min(0.05, wake))
                self.handle_ready()

    def close(self) -> None:
        if self._driver is not None and self._stop is not None:
            self._stop.set()
            self._driver.join()
            self._driver = None
        super().close()
USERS_GID = 100  # a group nobody is not a member of


def echo(payload: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
    return {"ok": True, "echo": payload, "uid": peer.uid, "gid": peer.gid, "pid": peer.pid}


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    """A socket path under tmp_path whose directories `nobody` may traverse."""
    opened: list[tuple[Path, int]] = []
    directory = tmp_path
    while directory != Path("/tmp") and directory != directory.parent:
        mode = stat.S_IMODE(directory.stat().st_mode)
        opened.append((directory, mode))
        directory.chmod(mode | 0o011)
        directory = directory.parent
    try:
        yield tmp_path / "run" / "control.sock"
    finally:
        for path, mode in opened:
            path.chmod(mode)


@pytest.fixture
def server(socket_path: Path) -> Iterator[ControlServer]:
    control = DrivenControl(socket_path, echo)
    control.start()
    try:
        yield control
    finally:
        control.close()


CLIENT = """
import json, sys
from waagent_guard.daemon.control import request
try:
    print(json.dumps({"reply": request(sys.argv[1], {"command": "status"})}))
except Exception as error:
    print(json.dumps({"error": type(error).__name__, "message": str(error)}))
"""


def run_client_as(socket_path: Path, *, gid: int, groups: Optional[str] = None) -> dict[str, Any]:
    """Run the real client as uid nobody (and the given groups) in a subprocess."""
    require_nobody_python()
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    group_flag = f"--groups={groups}" if groups else "--clear-groups"
    result = subprocess.run(
        [setpriv, f"--reuid={NOBODY}", f"--regid={gid}", group_flag,
         sys.executable, "-c", CLIENT, str(socket_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def raw_exchange(path: Path, data: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        try:
            sock.sendall(data)
        except BrokenPipeError:
            pass
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    return json.loads(reply)


# --- round trips ----------------------------------------------------------------------


def test_a_request_round_trip_reports_the_peer(server: ControlServer) -> None:
    reply = request(server.path, {"command": "status"})
    assert reply == {
        "ok": True, "echo": {"command": "status"}, "uid": 0 if os.geteuid() == 0 else os.geteuid(),
        "gid": os.getegid(), "pid": os.getpid(),
    }


def test_the_socket_is_created_0600_in_a_new_directory(server: ControlServer) -> None:
    info = os.stat(server.path)
    assert stat.S_ISSOCK(info.st_mode)
    assert stat.S_IMODE(info.st_mode) == 0o600


def test_many_requests_are_served_one_after_another(server: ControlServer) -> None:
    for number in range(20):
        assert request(server.path, {"n": number})["echo"] == {"n": number}


def test_handle_ready_serves_one_connection_from_a_callers_selector(socket_path: Path) -> None:
    control = ControlServer(socket_path, echo)
    try:
        assert control.handle_ready() is False  # nothing pending
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(str(socket_path))
            client.sendall(b'{"command": "ping"}\n')
            assert control.handle_ready() is True
            reply = json.loads(client.makefile("rb").readline())
        assert reply["echo"] == {"command": "ping"}
        assert control.handle_ready() is False
    finally:
        control.close()
    assert not socket_path.exists()


def test_a_request_without_a_trailing_newline_is_accepted_at_eof(server: ControlServer) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(str(server.path))
        sock.sendall(b'{"command": "eof"}')
        sock.shutdown(socket.SHUT_WR)
        reply = json.loads(sock.makefile("rb").readline())
    assert reply["echo"] == {"command": "eof"}


# --- bad requests ---------------------------------------------------------------------


def test_malformed_json_gets_an_error_reply(server: ControlServer) -> None:
    reply = raw_exchange(server.path, b"{not json\n")
    assert reply["ok"] is False
    assert reply["error"].startswith("malformed request: not JSON")


def test_deeply_nested_json_gets_an_error_reply_and_the_server_goes_on(
    server: ControlServer,
) -> None:
    reply = raw_exchange(server.path, b"[" * 60_000 + b"\n")  # json.loads: RecursionError
    assert reply["ok"] is False
    assert reply["error"].startswith("malformed request: not JSON")
    assert request(server.path, {"after": 1})["echo"] == {"after": 1}


def test_a_json_value_that_is_not_an_object_gets_an_error_reply(server: ControlServer) -> None:
    assert raw_exchange(server.path, b"[1, 2]\n") == {
        "ok": False, "error": "malformed request: expected a JSON object",
    }


def test_an_oversized_request_gets_an_error_reply(server: ControlServer) -> None:
    reply = request(server.path, {"padding": "x" * (200 * 1024)})
    assert reply == {"ok": False, "error": "request too large (limit 65536 bytes)"}


def test_a_slow_client_is_dropped_at_its_deadline_without_blocking(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    control = ControlServer(socket_path, echo, timeout=5.0, clock=lambda: now[0])
    control.open()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(socket_path))
            client.sendall(b'{"partial": ')
            assert control.handle_ready() is True  # accepted; waits for the rest, does not block
            assert control.open_connections == 1
            assert control.wake_in() == 5.0  # the loop's timer for this deadline
            now[0] = 105.0
            assert control.wake_in() == 0.0
            with caplog.at_level(logging.WARNING, logger="waagent_guard.daemon.control"):
                assert control.handle_ready() is True
            client.settimeout(10)
            assert client.recv(100) == b""  # closed without a reply
            assert control.open_connections == 0
            assert control.rejected["timeout"] == 1
            assert control.wake_in() is None
    finally:
        control.close()
    assert "uid 0 sent no complete request in 5.0s" in caplog.text or os.geteuid() != 0


def test_a_slow_client_does_not_delay_the_next_one(socket_path: Path) -> None:
    control = ControlServer(socket_path, echo)
    control.open()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as slow, \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as quick:
            slow.connect(str(socket_path))
            slow.sendall(b'{"command": ')
            quick.connect(str(socket_path))
            quick.sendall(b'{"command": "status"}\n')
            assert control.handle_ready() is True  # one call: the slow one waits, quick served
            quick.settimeout(10)
            assert json.loads(quick.makefile("rb").readline())["echo"] == {"command": "status"}
            assert control.open_connections == 1
            slow.sendall(b'"late"}\n')  # the slow one finishes later and is served then
            assert control.handle_ready() is True
            slow.settimeout(10)
            assert json.loads(slow.makefile("rb").readline())["echo"] == {"command": "late"}
    finally:
        control.close()


def test_at_the_cap_the_oldest_silent_connection_makes_room(socket_path: Path) -> None:
    control = ControlServer(socket_path, echo, max_connections=3)
    control.open()
    idle = [socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) for _ in range(3)]
    try:
        for sock in idle:
            sock.connect(str(socket_path))
            control.handle_ready()
        assert control.open_connections == 3
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as honest:
            honest.connect(str(socket_path))
            honest.sendall(b'{"command": "status"}\n')
            control.handle_ready()
            honest.settimeout(10)
            assert json.loads(honest.makefile("rb").readline())["ok"] is True
        idle[0].settimeout(10)
        assert idle[0].recv(10) == b""  # the oldest idle one was closed
        assert control.open_connections == 2
        assert control.rejected["evicted"] == 1
    finally:
        for sock in idle:
            sock.close()
        control.close()


def test_a_flood_of_garbage_and_huge_lines_is_answered_and_bounded(socket_path: Path) -> None:
    control = DrivenControl(socket_path, echo)
    control.start()
    try:
        for payload in (b"\x00\xff" * 10 + b"\n", b"x" * (300 * 1024), b"{" * 50000 + b"\n"):
            for _ in range(20):
                reply = raw_exchange(socket_path, payload)
                assert reply["ok"] is False
        assert request(socket_path, {"command": "after"})["echo"] == {"command": "after"}
        deadline = time.monotonic() + 30  # the driver closes right after sending the reply
        while control.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        assert control.open_connections == 0
    finally:
        control.close()


FLOOD = """
import json, socket, sys
replies = refused = 0
for _ in range(int(sys.argv[2])):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(sys.argv[1])
        data = sock.recv(4096)
        replies += 1
        refused += b"permission denied" in data
print(json.dumps({"replies": replies, "refused": refused}))
"""


def test_refused_peers_are_answered_at_accept_and_logged_once(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    require_nobody_python()
    os.chmod(server.path, 0o666)  # get past connect() to reach the SO_PEERCRED check
    with caplog.at_level(logging.WARNING, logger="waagent_guard.daemon.control"):
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             sys.executable, "-c", FLOOD, str(server.path), "200"],
            capture_output=True, text=True, timeout=120, check=True,
        )
    assert json.loads(result.stdout) == {"replies": 200, "refused": 200}
    assert server.rejected["peer"] == 200
    assert server.open_connections == 0
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1  # the journal gets one line per minute, not one per connection
    assert request(server.path, {"command": "root"})["ok"] is True


def test_a_handler_guard_error_becomes_the_error_message(socket_path: Path) -> None:
    def refuse(payload: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
        raise InputError("verbose on: --for must be at most 7d")

    with DrivenControl(socket_path, refuse) as control:
        control.start()
        assert request(socket_path, {}) == {
            "ok": False, "error": "verbose on: --for must be at most 7d",
        }


def test_a_handler_crash_is_logged_and_answered(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def crash(payload: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
        raise KeyError("boom")

    with DrivenControl(socket_path, crash) as control:
        control.start()
        with caplog.at_level(logging.ERROR, logger="waagent_guard.daemon.control"):
            reply = request(socket_path, {"command": "x"})
    assert reply == {"ok": False, "error": "internal error: KeyError: 'boom'"}
    assert "control handler failed" in caplog.text


# --- permissions ----------------------------------------------------------------------


def test_nobody_cannot_even_connect_to_the_0600_socket(server: ControlServer) -> None:
    result = run_client_as(server.path, gid=NOBODY)
    assert result["error"] == "ControlPermissionError"
    assert "permission denied" in result["message"]


def test_nobody_is_refused_by_uid_when_the_socket_mode_lets_it_connect(
    server: ControlServer, caplog: pytest.LogCaptureFixture
) -> None:
    os.chmod(server.path, 0o666)  # get past connect() to reach the SO_PEERCRED check
    with caplog.at_level(logging.WARNING, logger="waagent_guard.daemon.control"):
        result = run_client_as(server.path, gid=NOBODY)
    assert result["error"] == "ControlPermissionError"
    assert "uid 65534 is not root" in result["message"]
    refusals = [r for r in caplog.records if "refused" in r.getMessage()]
    assert refusals and refusals[0].WG_DECISION == "control_denied"  # type: ignore[attr-defined]


def test_the_allowed_group_gets_a_0660_socket_owned_by_that_group(socket_path: Path) -> None:
    with ControlServer(socket_path, echo, allowed_gid=USERS_GID):
        info = os.stat(socket_path)
        assert stat.S_IMODE(info.st_mode) == 0o660
        assert info.st_gid == USERS_GID
        if os.geteuid() == 0:
            assert info.st_uid == 0


def test_a_supplementary_member_of_the_allowed_group_is_served(socket_path: Path) -> None:
    control = DrivenControl(socket_path, echo, allowed_gid=USERS_GID)
    control.start()
    try:
        result = run_client_as(socket_path, gid=NOBODY, groups=str(USERS_GID))
    finally:
        control.close()
    assert result["reply"]["ok"] is True
    assert result["reply"]["uid"] == NOBODY
    assert result["reply"]["gid"] == NOBODY


def test_a_peer_whose_primary_group_is_allowed_is_served(socket_path: Path) -> None:
    control = DrivenControl(socket_path, echo, allowed_gid=USERS_GID)
    control.start()
    try:
        result = run_client_as(socket_path, gid=USERS_GID)
    finally:
        control.close()
    assert result["reply"]["gid"] == USERS_GID


def test_a_peer_outside_the_allowed_group_is_refused_naming_the_group(socket_path: Path) -> None:
    control = DrivenControl(socket_path, echo, allowed_gid=USERS_GID)
    control.start()
    try:
        os.chmod(socket_path, 0o666)
        result = run_client_as(socket_path, gid=NOBODY)
    finally:
        control.close()
    assert result["error"] == "ControlPermissionError"
    assert "neither root nor in group users (100)" in result["message"]


def test_a_peer_with_our_own_uid_is_served(socket_path: Path) -> None:
    control = DrivenControl(socket_path, echo, euid=NOBODY)
    control.start()
    try:
        os.chmod(socket_path, 0o666)
        result = run_client_as(socket_path, gid=NOBODY)
    finally:
        control.close()
    assert result["reply"]["uid"] == NOBODY


def test_refusal_reason_reads_supplementary_groups_from_proc(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "status").write_text("Name:\tx\nGroups:\t4 27 100 \nUid:\t1000\n")
    peer = PeerCredentials(pid=42, uid=1000, gid=1000)
    assert supplementary_groups(42, tmp_path) == (4, 27, 100)
    assert refusal_reason(peer, euid=0, allowed_gid=27, proc_root=tmp_path) is None
    assert refusal_reason(peer, euid=0, allowed_gid=99999, proc_root=tmp_path) == (
        "permission denied: uid 1000 is neither root nor in group 99999 (control.group)"
    )
    assert refusal_reason(peer, euid=0, allowed_gid=None, proc_root=tmp_path).startswith(
        "permission denied: uid 1000 is not root"
    )


@pytest.mark.parametrize("separator", ["\x1e", "\r", "\x0b", "\x0c", "\x1c"])
def test_a_process_name_cannot_fake_a_groups_or_uid_line(separator: str) -> None:
    """Review of issue 14: the kernel escapes only "\\n" and "\\\\" in `Name:`, and
    str.splitlines() also splits on these: a uid-nobody peer named "\\x1eGroups:\\t4242"
    passed as a member of control.group. A real process renames itself with prctl."""
    if os.geteuid() != 0:
        pytest.skip("drops to uid nobody")
    import ctypes

    from waagent_guard.agent.process import status_fields

    name = f"{separator}Groups:\t4242".encode("latin-1")[:15]
    uid_name = f"{separator}Uid:\t0\t0".encode("latin-1")[:15]
    libc = ctypes.CDLL(None, use_errno=True)
    pids = []
    for fake in (name, uid_name):
        ready, done = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgroups([])
                os.setresgid(NOBODY, NOBODY, NOBODY)
                os.setresuid(NOBODY, NOBODY, NOBODY)
                libc.prctl(15, ctypes.c_char_p(fake), 0, 0, 0)  # PR_SET_NAME
                os.write(done, b"x")
                time.sleep(60)
            finally:
                os._exit(0)
        os.read(ready, 1)
        os.close(ready)
        os.close(done)
        pids.append(pid)
    try:
        peer = PeerCredentials(pid=pids[0], uid=NOBODY, gid=NOBODY)
        assert supplementary_groups(pids[0]) == ()
        assert refusal_reason(peer, euid=0, allowed_gid=4242) is not None
        fields = status_fields(Path(f"/proc/{pids[1]}/status").read_bytes())
        assert fields["Uid"].split()[:2] == [str(NOBODY), str(NOBODY)]
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGKILL)  # only the children this test forked
            os.waitpid(pid, 0)


def test_supplementary_groups_are_empty_for_a_gone_or_foreign_peer(tmp_path: Path) -> None:
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "status").write_text("Name:\tx\n")
    assert supplementary_groups(0, tmp_path) == ()
    assert supplementary_groups(12345, tmp_path) == ()
    assert supplementary_groups(7, tmp_path) == ()


def test_a_permission_denied_reply_raises_control_permission_error(socket_path: Path) -> None:
    def deny(payload: dict[str, Any], peer: PeerCredentials) -> dict[str, Any]:
        return {"ok": False, "error": "permission denied: verbose on needs root"}

    with DrivenControl(socket_path, deny) as control:
        control.start()
        with pytest.raises(ControlPermissionError, match="verbose on needs root"):
            request(socket_path, {"command": "verbose-on"})


# --- lifecycle ------------------------------------------------------------------------


def test_the_server_runs_no_thread_and_close_leaves_no_socket_file(socket_path: Path) -> None:
    before = threading.active_count()
    control = ControlServer(socket_path, echo)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(10)
        client.connect(str(socket_path)) if control.fileno() else None
        client.sendall(b"{}\n")
        assert control.handle_ready() is True
        assert json.loads(client.makefile("rb").readline())["ok"] is True
    assert threading.active_count() == before
    assert not hasattr(control, "start")  # no thread mode: the daemon's loop drives it
    control.close()
    control.close()  # idempotent
    assert not socket_path.exists()


def test_close_keeps_a_socket_file_that_another_daemon_created(socket_path: Path) -> None:
    control = ControlServer(socket_path, echo)
    control.open()
    socket_path.unlink()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as newer:
        newer.bind(str(socket_path))
        control.close()
        assert socket_path.exists()


def test_a_stale_socket_file_is_replaced(socket_path: Path) -> None:
    socket_path.parent.mkdir(parents=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(socket_path))  # bound, never listening: a crashed daemon's leftover
    with DrivenControl(socket_path, echo) as control:
        control.start()
        assert request(socket_path, {"a": 1})["ok"] is True


def test_a_live_socket_is_not_stolen(server: ControlServer) -> None:
    with pytest.raises(ServiceError, match="already listening"):
        ControlServer(server.path, echo).open()
    assert request(server.path, {})["ok"] is True


def test_a_regular_file_at_the_socket_path_is_a_config_error(socket_path: Path) -> None:
    socket_path.parent.mkdir(parents=True)
    socket_path.write_text("not a socket")
    with pytest.raises(ConfigError, match="exists and is not a socket"):
        ControlServer(socket_path, echo).open()


def test_an_unbindable_path_is_a_write_error(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 120) / "control.sock"
    with pytest.raises(WriteError, match="cannot create the control socket"):
        ControlServer(too_long, echo).open()


# --- client errors --------------------------------------------------------------------


def test_request_without_a_socket_says_the_daemon_is_not_running(tmp_path: Path) -> None:
    with pytest.raises(DaemonNotRunningError, match="daemon not running"):
        request(tmp_path / "control.sock", {})


def test_request_to_a_stale_socket_says_the_daemon_is_not_running(tmp_path: Path) -> None:
    path = tmp_path / "control.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as dead:
        dead.bind(str(path))
    with pytest.raises(DaemonNotRunningError, match="daemon not running"):
        request(path, {})


def test_request_times_out_when_the_daemon_does_not_answer(socket_path: Path) -> None:
    control = ControlServer(socket_path, echo)
    control.open()  # listening, never serving
    try:
        with pytest.raises(ControlProtocolError, match=r"did not answer within 0\.2s"):
            request(socket_path, {}, timeout=0.2)
    finally:
        control.close()


def serve_one_answer(path: Path, answer: bytes) -> tuple[socket.socket, threading.Thread]:
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def answer_once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.makefile("rb").readline()
            for start in range(0, len(answer), 3):  # in small pieces, like a slow daemon
                connection.sendall(answer[start : start + 3])

    thread = threading.Thread(target=answer_once)
    thread.start()
    return listener, thread


def test_request_reads_a_reply_that_arrives_in_pieces_and_ends_at_eof(tmp_path: Path) -> None:
    path = tmp_path / "fake.sock"
    listener, thread = serve_one_answer(path, b'{"ok": true, "lease": null}')
    try:
        assert request(path, {}) == {"ok": True, "lease": None}
    finally:
        thread.join()
        listener.close()


def test_a_selector_can_watch_the_server_before_open_is_called(socket_path: Path) -> None:
    import selectors

    control = ControlServer(socket_path, echo)
    try:
        with selectors.DefaultSelector() as selector:
            selector.register(control, selectors.EVENT_READ, "control")
            assert socket_path.exists()
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                client.settimeout(10)
                client.connect(str(socket_path))
                client.sendall(b"{}\n")
                events = selector.select(timeout=10)
                assert [key.data for key, _ in events] == ["control"]
                assert control.handle_ready() is True
                assert json.loads(client.makefile("rb").readline())["ok"] is True
    finally:
        control.close()


@pytest.mark.parametrize(
    ("answer", "message"),
    [(b"garbage\n", "not JSON"), (b"[1]\n", "not a JSON object")],
)
def test_request_rejects_a_reply_that_is_not_a_json_object(
    tmp_path: Path, answer: bytes, message: str
) -> None:
    path = tmp_path / "fake.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)

    def answer_once() -> None:
        connection, _ = listener.accept()
        with connection:
            connection.makefile("rb").readline()
            connection.sendall(answer)

    thread = threading.Thread(target=answer_once)
    thread.start()
    try:
        with pytest.raises(ControlProtocolError, match=message):
            request(path, {"command": "status"})
    finally:
        thread.join()
        listener.close()


def test_request_waits_while_the_daemons_backlog_is_full(tmp_path: Path) -> None:
    path = tmp_path / "full.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(0)
    fillers: list[socket.socket] = []
    while True:  # fill the backlog: the next connect() would get EAGAIN
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        try:
            filler.connect(str(path))
        except BlockingIOError:
            filler.close()
            break
        fillers.append(filler)
    try:
        with pytest.raises(ControlProtocolError, match="backlog stayed full"):
            request(path, {}, timeout=0.2)

        def drain_then_answer() -> None:
            for _ in fillers:
                listener.accept()[0].close()
            connection, _ = listener.accept()
            with connection:
                connection.makefile("rb").readline()
                connection.sendall(b'{"ok": true}\n')

        thread = threading.Thread(target=drain_then_answer)
        thread.start()
        try:
            assert request(path, {}, timeout=30) == {"ok": True}
        finally:
            thread.join()
    finally:
        for filler in fillers:
            filler.close()
        listener.close()
