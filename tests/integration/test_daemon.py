"""The real daemon process against a demo guest and its simulated agent: wiring only.

The decisions (budget and give-up, stale pidfiles, lease expiry and revert after a
restart of the guard, reload of each section, bad durations) are tested in-process with
fake clocks in tests/unit/daemon/; what stays here needs the real process: READY after
the port is bound, watchdog pings, the agent's exit seen through its pidfd, SIGTERM,
a control request from the CLI, TLS, the doctor's export, resource growth, hostile logs.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Callable

from tests.integration.guard_harness import Daemon, Guest, wait_for

MakeGuest = Callable[..., Guest]
MakeDaemon = Callable[..., Daemon]


def ready_daemon(make_guest: MakeGuest, make_daemon: MakeDaemon, *args: str,
                 extra: dict[str, dict[str, object]] | None = None) -> tuple[Guest, Daemon]:
    guest = make_guest(*args, extra=extra)
    assert guest.run_tool("start", *args) == 0
    wait_for(guest.agent_pid, what="the simulated agent's pidfile")
    daemon = make_daemon(guest)
    daemon.wait_notify("READY=1")
    return guest, daemon


def test_ready_is_sent_after_the_metrics_port_is_bound(make_guest: MakeGuest,
                                                      make_daemon: MakeDaemon) -> None:
    _guest, daemon = ready_daemon(make_guest, make_daemon)
    ready = daemon.wait_notify("READY=1")
    assert any(line.startswith("STATUS=agent healthy") for line in ready.split("\n"))
    samples = daemon.scrape()  # bound before READY: this must not fail
    assert samples["waagent_up"] == 1.0
    assert samples['waagent_info{daemon_version="2.7.3.0",goal_state_version="2.15.0.1",unit="command"}'] == 1.0  # noqa: E501
    assert samples['waagent_guard_restarts_total{reason="process_gone"}'] == 0.0
    assert samples["waagent_vmsnapshot_version_ok"] == 1.0


def test_watchdog_pings_come_from_the_loop(make_guest: MakeGuest, make_daemon: MakeDaemon) -> None:
    _guest, daemon = ready_daemon(make_guest, make_daemon)
    daemon.wait_notify("WATCHDOG=1", timeout=5)


def test_kill_9_of_the_agent_is_restarted_and_counted(make_guest: MakeGuest,
                                                     make_daemon: MakeDaemon) -> None:
    guest, daemon = ready_daemon(make_guest, make_daemon)
    first = guest.agent_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)
    second = wait_for(lambda: (pid := guest.agent_pid()) and pid != first and pid,
                      what="a new agent pid")
    assert second != first
    # A crash counts as a crash (issue 10 item 4), even with the pidfile left behind.
    wait_for(lambda: daemon.metric('waagent_guard_restarts_total{reason="process_gone"}') == 1.0,
             what="the restart to be counted as process_gone")
    assert daemon.metric('waagent_guard_restarts_total{reason="stale_pidfile"}') == 0.0
    wait_for(lambda: daemon.metric("waagent_up") == 1.0, what="waagent_up 1")
    assert "agent daemon process gone" in daemon.output()


def test_sigterm_stops_cleanly_and_removes_the_control_socket(make_guest: MakeGuest,
                                                            make_daemon: MakeDaemon) -> None:
    guest, daemon = ready_daemon(make_guest, make_daemon)
    control = guest.root / "run/waagent-guard/control.sock"
    assert control.exists()
    assert control.stat().st_mode & 0o777 == 0o600
    assert daemon.stop() == 0
    assert any("STOPPING=1" in message.split("\n") for message in daemon.messages)
    assert not control.exists()


def test_verbose_lease_on_then_off_through_the_real_daemon(make_guest: MakeGuest,
                                                          make_daemon: MakeDaemon) -> None:
    """Wiring only: a long lease (no race with the machine's speed) and `verbose off`.
    The revert AT EXPIRY is tested in-process with a fake clock
    (tests/unit/daemon/test_guard_decisions.py::test_verbose_lease_reverts_at_expiry_with_a_fake_clock)."""
    from waagent_guard.cli import main

    guest, daemon = ready_daemon(make_guest, make_daemon)
    before = guest.conf_text()
    first = guest.agent_pid()
    assert main(["verbose", "on", "--for", "1h", "--reason", "ticket 42", "--root",
                 str(guest.root)]) == 0
    assert "Logs.Verbose=y" in guest.conf_text()
    second = wait_for(lambda: guest.agent_pid() not in (None, first) and guest.agent_pid(),
                      what="the agent restarted")
    wait_for(lambda: daemon.metric('waagent_guard_restarts_total{reason="manual"}') == 1.0,
             what="the manual restart counted")
    assert main(["verbose", "off", "--root", str(guest.root)]) == 0
    assert guest.conf_text() == before
    wait_for(lambda: guest.agent_pid() not in (None, second), what="the agent restarted again")
    wait_for(lambda: daemon.metric('waagent_guard_restarts_total{reason="manual"}') == 2.0,
             what="both manual restarts counted")
    assert daemon.metric("waagent_guard_restart_gave_up") == 0.0


def test_verbose_without_a_daemon_edits_directly_and_warns(make_guest: MakeGuest, capsys) -> None:
    from waagent_guard.cli import main

    guest = make_guest()
    assert main(["verbose", "on", "--for", "1h", "--no-restart", "--root", str(guest.root)]) == 0
    assert "nothing reverts" in capsys.readouterr().err
    assert "Logs.Verbose=y" in guest.conf_text()
    assert main(["verbose", "status", "--root", str(guest.root)]) == 0
    assert "lease: until" in capsys.readouterr().out
    assert main(["verbose", "off", "--no-restart", "--root", str(guest.root)]) == 0
    assert "Logs.Verbose=y" not in guest.conf_text()


def test_no_fd_or_thread_growth_after_a_thousand_events(make_guest: MakeGuest,
                                                        make_daemon: MakeDaemon) -> None:
    guest, daemon = ready_daemon(make_guest, make_daemon)
    pid = daemon.process.pid
    log = guest.root / "var/log/waagent.log"

    def counts() -> tuple[int, int]:
        return (len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task")))

    daemon.scrape()
    baseline = counts()
    with open(log, "a") as handle:
        for number in range(1000):
            handle.write(f"2026-11-26T05:00:00.000000Z INFO ExtHandler ExtHandler event {number}\n")
            handle.flush()
            if number % 100 == 0:
                (guest.root / "etc/waagent.conf").touch()
    wait_for(lambda: (daemon.metric('waagent_log_records_total{level="INFO"}') or 0) >= 1000,
             what="the events to be read")
    daemon.scrape()
    after = counts()
    assert after[0] <= baseline[0] + 2, (baseline, after)
    assert after[1] <= baseline[1] + 2, (baseline, after)


def test_doctor_checks_are_exported_by_the_daemon(make_guest: MakeGuest,
                                                 make_daemon: MakeDaemon) -> None:
    _guest, daemon = ready_daemon(make_guest, make_daemon)
    samples = wait_for(lambda: (s := daemon.scrape()).get("waagent_backup_ready") is not None and s,
                       what="the first doctor run")
    assert isinstance(samples, dict)
    statuses = {k: v for k, v in samples.items() if k.startswith("waagent_guard_check_status")}
    assert len(statuses) >= 20
    assert set(statuses.values()) <= {0.0, 1.0, 2.0, 3.0, 4.0}
    assert samples["waagent_guard_doctor_last_run_timestamp_seconds"] > 0


def test_metrics_over_tls_with_a_client_certificate(make_guest: MakeGuest,
                                                   make_daemon: MakeDaemon,
                                                   tmp_path: Path) -> None:
    import ssl
    import subprocess
    import urllib.request

    def self_signed(name: str) -> tuple[Path, Path]:
        key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.crt"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-days", "1", "-subj", f"/CN={name}", "-addext",
             "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True, timeout=60,
        )
        return key, cert

    server_key, server_cert = self_signed("server")
    client_key, client_cert = self_signed("client")
    tls = {"metrics": {"tls_cert": str(server_cert), "tls_key": str(server_key),
                       "tls_client_ca": str(client_cert)}}
    guest, _daemon = ready_daemon(make_guest, make_daemon, extra=tls)
    url = f"https://127.0.0.1:{guest.port}/metrics"
    context = ssl.create_default_context(cafile=str(server_cert))
    context.load_cert_chain(str(client_cert), str(client_key))
    with urllib.request.urlopen(url, context=context, timeout=5) as response:
        assert b"waagent_up 1.0" in response.read()
    anonymous = ssl.create_default_context(cafile=str(server_cert))
    try:
        with urllib.request.urlopen(url, context=anonymous, timeout=5) as response:
            response.read()
        refused = False
    except (ssl.SSLError, OSError):
        refused = True
    assert refused, "a client without a certificate must be refused"


def test_the_daemon_survives_its_log_turning_into_a_device(make_guest: MakeGuest,
                                                           make_daemon: MakeDaemon) -> None:
    guest, daemon = ready_daemon(make_guest, make_daemon)
    log = guest.root / "var/log/waagent.log"
    log.unlink()
    log.symlink_to("/dev/null")
    (guest.root / "var/log/other.log").write_text("an event in /var/log\n")
    first = guest.agent_pid()
    assert first is not None
    os.kill(first, signal.SIGKILL)  # the guard must still do its job
    wait_for(lambda: guest.agent_pid() not in (None, first), what="the agent restarted")
    assert daemon.process.poll() is None
    wait_for(lambda: "cannot read the agent log" in daemon.output(),
             what="the guard to say it cannot read the log")
    assert daemon.process.poll() is None
