"""The /metrics server under hostile and heavy loads: real sockets, a real uid nobody.

Issue 14 item 1: 1,000 idle connections used to cost the guard a thread and an
fd each (and exhaust RLIMIT_NOFILE); 1,000 concurrent scrapes failed on a listen
backlog of 5; a TLS client that never finished its handshake stopped every
scrape. Issue 15: the exposition is rendered once per published state.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.privileges import require_nobody_python
from waagent_guard.daemon.exporter import (
    EVICTION_GRACE_SECONDS,
    FD_RESERVE,
    MAX_HTTP_CONNECTIONS,
    Exporter,
    HttpServer,
    connection_cap,
    guard_collector,
    maybe_exporter,
    open_fd_count,
)
from waagent_guard.metrics import MetricsInput
from waagent_guard.settings import MetricsSettings

NOBODY = 65534


class Published:
    """What the daemon publishes: a new object per reconciliation."""

    def __init__(self) -> None:
        self.value = MetricsInput(observation=None)

    def __call__(self) -> MetricsInput:
        return self.value

    def publish(self) -> None:
        self.value = MetricsInput(observation=None)


@pytest.fixture
def published() -> Published:
    return Published()


@pytest.fixture
def exporter(published: Published) -> Iterator[Exporter]:
    server = maybe_exporter(MetricsSettings(port=0), published, config_path=Path("guard.toml"))
    assert server is not None
    try:
        yield server
    finally:
        server.close()


def port_of(exporter: Exporter) -> int:
    return int(exporter.url.rsplit(":", 1)[1].split("/")[0])


def scrape(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.status, dict(response.headers), response.read()


def families(body: bytes) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(body.decode())}


def wait_for(predicate: Any, seconds: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def own_threads() -> int:
    return threading.active_count()


HOLD_IDLE = """
import resource, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
held, failed = [], 0
for _ in range(int(sys.argv[2])):
    try:
        held.append(socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10))
    except OSError:
        failed += 1
print(len(held), failed, flush=True)
sys.stdin.read()  # hold them until the test closes our stdin
"""


def nobody(script: str, *args: str, stdin: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
    require_nobody_python()
    setpriv = shutil.which("setpriv")
    assert setpriv is not None
    return subprocess.Popen(
        [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
         sys.executable, "-c", script, *args],
        stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"LC_ALL": "C", "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )


def test_a_thousand_idle_connections_from_nobody_cost_no_thread_and_stay_under_the_cap(
    exporter: Exporter,
) -> None:
    threads_before, fds_before = own_threads(), open_fd_count()
    attacker = nobody(HOLD_IDLE, str(port_of(exporter)), "1100", stdin=subprocess.PIPE)
    try:
        assert attacker.stdout is not None
        held, failed = map(int, attacker.stdout.readline().split())
        assert (held, failed) == (1100, 0)  # the backlog and the eviction admit everyone
        assert own_threads() == threads_before  # no thread per connection
        # + the pipes to the attacker and what pytest may open meanwhile
        assert open_fd_count() <= fds_before + exporter.server.cap + 8
        for _ in range(20):  # honest scrapes still work while the attacker holds on
            status, _headers, body = scrape(exporter.url)
            assert status == 200 and b"waagent_guard_build_info" in body
        assert exporter.server.open_connections <= exporter.server.cap
        assert exporter.server.rejected["evicted_idle"] >= 1100 - exporter.server.cap
    finally:
        assert attacker.stdin is not None
        attacker.stdin.close()
        attacker.wait(timeout=60)


CONCURRENT = """
import json, resource, selectors, socket, sys
resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
port, count = int(sys.argv[1]), int(sys.argv[2])
selector = selectors.DefaultSelector()
pending, answers, errors = {}, [], 0
for _ in range(count):
    sock = socket.socket()
    sock.setblocking(False)
    sock.connect_ex(("127.0.0.1", port))
    pending[sock] = b""
    selector.register(sock, selectors.EVENT_WRITE)
while pending:
    events = selector.select(30)
    if not events:
        break
    for key, mask in events:
        sock = key.fileobj
        try:
            if mask & selectors.EVENT_WRITE:
                sock.send(b"GET /metrics HTTP/1.1\\r\\nHost: x\\r\\n\\r\\n")
                selector.modify(sock, selectors.EVENT_READ)
                continue
            data = sock.recv(65536)
        except OSError:
            errors += 1
            selector.unregister(sock); sock.close(); del pending[sock]
            continue
        if data:
            pending[sock] += data
            continue
        answers.append(pending.pop(sock).split(b"\\r\\n", 1)[0].decode())
        selector.unregister(sock); sock.close()
print(json.dumps({"ok": answers.count("HTTP/1.0 200 OK"), "answers": len(answers),
                  "errors": errors, "unanswered": len(pending)}))
"""


def test_a_thousand_concurrent_scrapes_are_all_answered(exporter: Exporter) -> None:
    client = nobody(CONCURRENT, str(port_of(exporter)), "1000")
    out, err = client.communicate(timeout=300)
    assert client.returncode == 0, err
    assert json.loads(out) == {"ok": 1000, "answers": 1000, "errors": 0, "unanswered": 0}


def test_the_exposition_is_rendered_once_per_published_state(
    exporter: Exporter, published: Published
) -> None:
    cache = exporter.app
    renders = cache.renders  # type: ignore[attr-defined]
    bodies = {scrape(exporter.url)[2] for _ in range(10)}
    assert len(bodies) == 1
    assert cache.renders == renders + 1  # type: ignore[attr-defined]
    _status, headers, zipped = scrape(exporter.url, **{"Accept-Encoding": "gzip"})
    assert headers["Content-Encoding"] == "gzip"  # prometheus-client's own negotiation
    # The same families (values of the process collector moved between the two renders).
    assert families(gzip.decompress(zipped)).keys() == families(bodies.pop()).keys()
    _status, headers, _body = scrape(
        exporter.url, Accept="application/openmetrics-text; version=1.0.0"
    )
    assert headers["Content-Type"].startswith("application/openmetrics-text")
    assert cache.renders == renders + 3  # type: ignore[attr-defined]
    published.publish()
    scrape(exporter.url)
    assert cache.renders == renders + 4  # type: ignore[attr-defined]


def raw_get(port: int, accept: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: " + accept + b"\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_an_accept_header_the_library_cannot_negotiate_gets_the_text_format(
    exporter: Exporter, published: Published, caplog: pytest.LogCaptureFixture
) -> None:
    """Review of issue 14: `version=x` raised TypeError inside prometheus-client's
    choose_encoder: a 500 and a full traceback in the journal for every such scrape."""
    with caplog.at_level(logging.ERROR):
        answers = [raw_get(port_of(exporter), b"application/openmetrics-text; version=x")
                   for _ in range(20)]
    assert {answer.split(b"\r\n", 1)[0] for answer in answers} == {b"HTTP/1.0 200 OK"}
    assert b"Content-Type: text/plain; version=0.0.4" in answers[0]
    assert b"waagent_guard_up" in answers[0] or b"# HELP" in answers[0]
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_failing_exposition_is_a_500_counted_and_logged_once_a_minute(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]

    def broken(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("the registry broke")

    listener = socket.create_server(("127.0.0.1", 0))
    server = HttpServer(listener, broken, cap=4, clock=lambda: now[0])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = listener.getsockname()[1]
        with caplog.at_level(logging.ERROR):
            first = [raw_get(port, b"text/plain") for _ in range(30)]
            now[0] = 61.0
            raw_get(port, b"text/plain")
    finally:
        server.stop()
        thread.join(timeout=30)
        server.close()
    assert {answer.split(b"\r\n", 1)[0] for answer in first} == {
        b"HTTP/1.0 500 Internal Server Error"
    }
    assert server.rejected["app_error"] == 31
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2
    assert "the registry broke" in errors[0]
    assert "(and 29 more since the last such message)" in errors[1]


def test_odd_variants_cannot_keep_the_scrapers_answer_out_of_the_cache(
    exporter: Exporter, published: Published
) -> None:
    """Review of issue 14: 16 junk variants right after a publish filled the cache, and
    nothing more was cached until the next publish: every real scrape rendered again."""
    cache = exporter.app
    published.publish()
    for number in range(40):
        scrape(exporter.url + f"?name[]=junk_{number}")
    renders = cache.renders  # type: ignore[attr-defined]
    for _ in range(5):
        scrape(exporter.url)
    assert cache.renders == renders + 1  # type: ignore[attr-defined]


def test_the_server_counts_its_refusals_in_a_metric(
    exporter: Exporter, published: Published
) -> None:
    port = port_of(exporter)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"NOT HTTP\r\n\r\n")
        assert sock.recv(100).startswith(b"HTTP/1.0 400 ")
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(b"GET /metrics HTTP/1.1\r\n" + b"X: " + b"a" * 20000)
        except OSError:
            pass
        assert sock.recv(100).startswith(b"HTTP/1.0 431 ")
    published.publish()
    rejected = families(scrape(exporter.url)[2])["waagent_guard_http_rejected"]
    counts = {s.labels["reason"]: s.value for s in rejected.samples}
    assert counts["bad_request"] == 1 and counts["head_too_large"] == 1
    assert counts["head_timeout"] == 0


def test_a_silent_connection_is_closed_at_its_head_deadline() -> None:
    now = [0.0]
    listener = socket.create_server(("127.0.0.1", 0))
    server = HttpServer(listener, lambda e, s: [b""], cap=4, clock=lambda: now[0])
    try:
        with socket.create_connection(listener.getsockname(), timeout=30) as idle:
            server.serve_once(5)  # accepted, waiting for a request head
            assert server.open_connections == 1
            now[0] = 5.0
            server.serve_once(0)
            assert server.open_connections == 0
            assert server.rejected["head_timeout"] == 1
            assert idle.recv(10) == b""
    finally:
        server.close()


def test_at_the_cap_the_oldest_idle_connection_makes_room_after_its_grace() -> None:
    now = [0.0]
    listener = socket.create_server(("127.0.0.1", 0))
    app_calls: list[str] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        app_calls.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok\n"]

    server = HttpServer(listener, app, cap=2, clock=lambda: now[0])
    idle = [socket.create_connection(listener.getsockname(), timeout=30) for _ in range(2)]
    try:
        while server.open_connections < 2:
            server.serve_once(5)
        with socket.create_connection(listener.getsockname(), timeout=30) as honest:
            honest.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
            server.serve_once(0.2)  # full and the idle ones are young: it waits in the backlog
            assert app_calls == [] and server.rejected["evicted_idle"] == 0
            now[0] = EVICTION_GRACE_SECONDS
            server.serve_once(0)  # the grace is over: listen again
            while not app_calls:
                server.serve_once(5)
            answer = honest.recv(4096)
        assert answer.startswith(b"HTTP/1.0 200 OK") and answer.endswith(b"ok\n")
        assert app_calls == ["/metrics"]
        assert idle[0].recv(10) == b""  # the oldest idle connection made room
        assert server.rejected["evicted_idle"] == 1
    finally:
        for sock in idle:
            sock.close()
        server.close()


def test_a_client_that_does_not_read_its_answer_is_evicted_after_its_grace() -> None:
    now = [0.0]
    listener = socket.create_server(("127.0.0.1", 0))

    def big(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"x" * (32 << 20)]  # more than any socket buffer holds

    server = HttpServer(listener, big, cap=1, clock=lambda: now[0])
    try:
        with socket.create_connection(listener.getsockname(), timeout=30) as stalled:
            stalled.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # and never reads
            while server.open_connections < 1:
                server.serve_once(5)
            with socket.create_connection(listener.getsockname(), timeout=30) as honest:
                honest.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")
                server.serve_once(0.2)
                assert server.served == 1 and server.rejected["evicted_idle"] == 0
                now[0] = EVICTION_GRACE_SECONDS
                for _ in range(20):  # bounded: before the fix a writer was never evicted
                    server.serve_once(0.5)
                    if server.served == 2:
                        break
                assert server.served == 2 and server.rejected["evicted_idle"] == 1
    finally:
        server.close()


def test_the_cap_keeps_the_reserve_whatever_the_limit() -> None:
    assert connection_cap(1024, 20) == MAX_HTTP_CONNECTIONS
    assert connection_cap(400, 20) == 400 - 20 - FD_RESERVE
    assert connection_cap(200, 20) == 1  # too small for the reserve: one at a time
    assert connection_cap(1 << 20, 20) == MAX_HTTP_CONNECTIONS


def test_a_small_nofile_limit_gives_a_small_cap_and_a_warning(
    published: Published, caplog: pytest.LogCaptureFixture
) -> None:
    server = Exporter(MetricsSettings(port=0), guard_collector(published, checks=False),
                      config_path=Path("guard.toml"), soft_limit=open_fd_count() + FD_RESERVE + 4)
    try:
        assert 1 <= server.server.cap <= 8
        assert "raise LimitNOFILE=" in caplog.text
        assert scrape(server.url)[0] == 200
    finally:
        server.close()


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key, cert = tmp_path / "server.key", tmp_path / "server.crt"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "1", "-subj", "/CN=server", "-addext",
         "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )
    return key, cert


def test_a_stalled_tls_handshake_never_delays_other_scrapes(
    tmp_path: Path, published: Published
) -> None:
    key, cert = self_signed(tmp_path)
    settings = MetricsSettings(port=0, tls_cert=str(cert), tls_key=str(key))
    # A long head deadline: the scrape below must be served while the stalled
    # client still holds its (unfinished) handshake, not after it timed out.
    server = Exporter(settings, guard_collector(published, checks=False),
                      config_path=Path("guard.toml"), snapshot=published, head_timeout=600)
    port = port_of(server)
    stalled = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(3)]
    stalled[1].sendall(b"\x16\x03\x01\x00")  # the start of a ClientHello, never finished
    try:
        context = ssl.create_default_context(cafile=str(cert))
        for _ in range(5):
            with urllib.request.urlopen(server.url, context=context, timeout=30) as response:
                assert b"waagent_guard_build_info" in response.read()
        assert server.server.open_connections == 3  # the stalled ones still wait
        assert server.server.rejected["tls_handshake"] == 0
        with socket.create_connection(("127.0.0.1", port), timeout=30) as plain:
            plain.sendall(b"GET /metrics HTTP/1.1\r\n\r\n")  # plain HTTP on the TLS port
            try:
                answer = plain.recv(100)
            except ConnectionResetError:
                answer = b""
        assert b"200 OK" not in answer
        wait_for(lambda: server.server.rejected["tls_handshake"] == 1)
    finally:
        for sock in stalled:
            sock.close()
        server.close()


def test_a_bad_certificate_path_is_a_config_error_naming_the_keys(tmp_path: Path) -> None:
    from waagent_guard.errors import ConfigError

    settings = MetricsSettings(port=0, tls_cert=str(tmp_path / "missing.pem"),
                               tls_key=str(tmp_path / "missing.key"))
    with pytest.raises(ConfigError, match=r"metrics\.tls_cert/tls_key/tls_client_ca"):
        Exporter(settings, guard_collector(Published(), checks=False),
                 config_path=Path("guard.toml"))


def test_the_server_thread_survives_a_crashing_app(published: Published) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def crash(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        raise RuntimeError("boom")

    server = HttpServer(listener, crash, cap=4)
    try:
        with socket.create_connection(listener.getsockname(), timeout=30) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            server.serve_once(5)
            assert sock.recv(100).startswith(b"HTTP/1.0 500 ")
    finally:
        server.close()


def test_ipv6_loopback_is_served(published: Published) -> None:
    if not socket.has_ipv6 or not os.path.exists("/proc/net/if_inet6"):
        pytest.skip("no IPv6 on this machine")
    server = maybe_exporter(MetricsSettings(address="::1", port=0), published,
                            config_path=Path("guard.toml"))
    assert server is not None
    try:
        assert server.url.startswith("http://[::1]:")
        assert scrape(server.url)[0] == 200
    finally:
        server.close()
