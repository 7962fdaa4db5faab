"""Probes against loopback stand-ins: WireServer, HostGAPlugin, IMDS, storage, proxy, bad ones."""

from __future__ import annotations

import errno
import socket
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "doctor"))

from doctor_support import (
    SAS_SECRET,
    Endpoints,
    Guest,
    TcpListener,
    closed_port,
    endpoints,
    healthy_guest,
    healthy_sources,
    http_server,
    settings_for,
)

from waagent_guard.doctor.facts import ProbePlan, gather_facts, probe_decision
from waagent_guard.doctor.findings import Finding, Status
from waagent_guard.doctor.probes import (
    Outcome,
    ProbeTarget,
    Proxy,
    _classify,
    probe,
    run_probes,
    strip_query,
    targets_from_url,
)
from waagent_guard.doctor.runner import run_checks
from waagent_guard.settings import Settings
from waagent_guard.sysroot import AZURE_ASSET_TAG, DMI_CHASSIS_ASSET_TAG, Sysroot

PROBES = ProbePlan(True, "--probe given")


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    return healthy_guest(tmp_path / "guest")


@pytest.fixture
def live() -> Any:
    with endpoints() as servers:
        yield servers


def diagnose(guest: Guest, settings: Settings, **sources: Any) -> dict[str, Finding]:
    facts = gather_facts(Sysroot(guest.root), settings, PROBES, healthy_sources(**sources),
                         offline=False)
    return {finding.code: finding for finding in run_checks(facts, settings)}


def test_all_endpoints_reachable_pass(guest: Guest, live: Endpoints) -> None:
    findings = diagnose(guest, live.settings())
    for code in ("WG-NET-001", "WG-NET-002", "WG-NET-003", "WG-NET-004"):
        assert findings[code].status is Status.OK, findings[code].summary
    assert live.wireserver.requests[0][0] == "/?comp=versions"
    assert live.hostgaplugin.requests[0][0] == "/health"
    assert live.imds.requests[0][1]["Metadata"] == "true"
    assert live.storage.accepted == 1
    assert findings["WG-NET-005"].status is Status.SKIPPED


def test_storage_host_comes_from_vmsnapshot_settings_without_the_sas(
        guest: Guest, live: Endpoints) -> None:
    finding = diagnose(guest, live.settings())["WG-NET-004"]
    assert finding.evidence["target"] == f"127.0.0.1:{live.storage.port}"
    assert "1.settings" in finding.evidence["host_source"]
    assert SAS_SECRET not in repr(finding.to_dict())


def test_storage_host_setting_overrides_vmsnapshot(guest: Guest, live: Endpoints) -> None:
    guest.vmsnapshot(blob_host="storage.invalid")
    finding = diagnose(guest, live.settings(storage_host="127.0.0.1"))["WG-NET-004"]
    assert finding.status is Status.OK
    assert finding.evidence["host_source"] == "doctor.storage_host"


def test_storage_goes_through_the_configured_proxy_with_connect(
        guest: Guest, live: Endpoints) -> None:
    guest.conf(HttpProxy_Host="127.0.0.1", HttpProxy_Port=str(live.proxy.port))
    findings = diagnose(guest, live.settings())
    assert findings["WG-NET-004"].status is Status.OK
    assert findings["WG-NET-004"].evidence["via_proxy"] == f"127.0.0.1:{live.proxy.port}"
    assert live.proxy.connects == [f"127.0.0.1:{live.storage.port}"]
    assert findings["WG-NET-005"].status is Status.OK
    # IMDS and the WireServer are never proxied.
    assert len(live.imds.requests) == 1 and len(live.wireserver.requests) == 1


def test_proxy_down_is_explained(guest: Guest, live: Endpoints) -> None:
    guest.conf(HttpProxy_Host="127.0.0.1", HttpProxy_Port=str(closed_port()))
    findings = diagnose(guest, live.settings())
    storage = findings["WG-NET-004"]
    assert storage.status is Status.FAIL
    assert storage.evidence["outcome"] == "proxy-down"
    assert "proxy" in storage.summary and "refused" in storage.summary
    assert findings["WG-NET-005"].status is Status.FAIL


def test_proxy_rejecting_the_tunnel_is_explained() -> None:
    with http_server(connect_status=403) as proxy, TcpListener(hang=False) as storage:
        result = probe(ProbeTarget("storage", "127.0.0.1", storage.port, via_proxy=True),
                       proxy=Proxy("127.0.0.1", proxy.port), timeout=2.0)
    assert result.outcome is Outcome.PROXY_REJECTED
    assert "403" in result.detail


def test_refused_wireserver_fails_with_the_reason(guest: Guest, live: Endpoints) -> None:
    finding = diagnose(guest, live.settings(wireserver_port=closed_port()))["WG-NET-001"]
    assert finding.status is Status.FAIL
    assert finding.evidence["outcome"] == "refused"
    assert "nothing listens" in finding.summary


def test_non_root_wireserver_failure_with_agent_firewall_is_a_warning(
        guest: Guest, live: Endpoints) -> None:
    finding = diagnose(guest, live.settings(wireserver_port=closed_port()),
                       euid=lambda: 1000)["WG-NET-001"]
    assert finding.status is Status.WARN
    assert "only lets root" in finding.summary


def test_imds_without_the_metadata_header_is_an_http_error(live: Endpoints) -> None:
    target = ProbeTarget("imds", "127.0.0.1", live.imds.port, "/metadata")
    result = probe(target, timeout=2.0)
    assert result.outcome is Outcome.HTTP_ERROR
    assert result.http_status == 400


def test_http_error_status_is_a_warning(guest: Guest, live: Endpoints) -> None:
    settings = live.settings(hostgaplugin_port=live.wireserver.port)  # /health -> 404 there
    finding = diagnose(guest, settings)["WG-NET-002"]
    assert finding.status is Status.WARN
    assert finding.evidence["http_status"] == 404


def test_a_peer_that_closes_at_once_is_reset_or_bad_response() -> None:
    with TcpListener(hang=False) as closer:
        result = probe(ProbeTarget("x", "127.0.0.1", closer.port, "/"), timeout=2.0)
    assert result.outcome in (Outcome.RESET, Outcome.BAD_RESPONSE)


def test_a_peer_that_answers_garbage_is_a_bad_response() -> None:
    with TcpListener(hang=True, banner=b"SSH-2.0-OpenSSH_9.2\r\n") as ssh:
        result = probe(ProbeTarget("x", "127.0.0.1", ssh.port, "/"), timeout=2.0)
    assert result.outcome is Outcome.BAD_RESPONSE
    assert "SSH-2.0" in result.detail


def test_hanging_endpoint_times_out_within_the_probe_timeout() -> None:
    with TcpListener(hang=True) as hang:
        result = probe(ProbeTarget("x", "127.0.0.1", hang.port, "/"), timeout=0.3)
    assert result.outcome is Outcome.TIMEOUT


def test_doctor_with_every_endpoint_hanging_finishes_in_time(guest: Guest) -> None:
    with TcpListener(hang=True) as hang:
        guest.conf(HttpProxy_Host="127.0.0.1", HttpProxy_Port=str(hang.port))
        settings = settings_for(wireserver_port=hang.port, hostgaplugin_port=hang.port,
                                imds_url=f"http://127.0.0.1:{hang.port}/metadata",
                                storage_port=hang.port, timeout_seconds=3.0)
        started = time.monotonic()
        findings = diagnose(guest, settings)
        elapsed = time.monotonic() - started
    print(f"doctor with all endpoints hanging took {elapsed:.2f} s")
    assert elapsed < 10  # sanity bound only; the design target is < 5 s
    for code in ("WG-NET-001", "WG-NET-002", "WG-NET-003", "WG-NET-004"):
        assert findings[code].status is Status.FAIL
    assert findings["WG-NET-001"].evidence["outcome"] == "timeout"
    assert findings["WG-NET-004"].evidence["outcome"] == "timeout"
    assert findings["WG-NET-005"].status is Status.WARN  # accepts, but never opens the tunnel


def test_run_probes_with_no_targets_returns_nothing() -> None:
    assert run_probes([]) == {}


@pytest.mark.parametrize(("error", "outcome"), [
    (ConnectionRefusedError(), Outcome.REFUSED),
    (TimeoutError(), Outcome.TIMEOUT),
    (ConnectionResetError(), Outcome.RESET),
    (socket.gaierror(-2, "Name or service not known"), Outcome.DNS),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), Outcome.NO_ROUTE),
    (OSError(errno.EHOSTUNREACH, "No route to host"), Outcome.NO_ROUTE),
    (OSError(errno.EPERM, "Operation not permitted"), Outcome.BLOCKED),
    (OSError(errno.EIO, "I/O error"), Outcome.ERROR),
])
def test_socket_errors_are_classified(error: OSError, outcome: Outcome) -> None:
    assert _classify(error) is outcome


def test_urls_are_shown_without_their_query() -> None:
    url = f"https://acct.blob.core.windows.net/c/b?sv=2020&{SAS_SECRET}"
    assert strip_query(url) == "https://acct.blob.core.windows.net/c/b"
    assert strip_query(f"acct/c?{SAS_SECRET}") == "acct/c"
    target = targets_from_url("imds", "http://127.0.0.1:8080/metadata/instance?api-version=1")
    assert target.http_path == "/metadata/instance?api-version=1"
    assert target.display() == "http://127.0.0.1:8080/metadata/instance"


def test_imds_url_must_be_plain_http() -> None:
    with pytest.raises(ValueError, match="http://"):
        targets_from_url("imds", "https://127.0.0.1/metadata")


# -- the safety rule ---------------------------------------------------------------------------


def test_probes_never_run_under_root_by_default(tmp_path: Path) -> None:
    root = Sysroot(tmp_path)
    (tmp_path / DMI_CHASSIS_ASSET_TAG.lstrip("/")).parent.mkdir(parents=True)
    (tmp_path / DMI_CHASSIS_ASSET_TAG.lstrip("/")).write_text(AZURE_ASSET_TAG + "\n")
    plan = probe_decision(root, "auto")
    assert not plan.run
    assert "--root" in plan.reason


def test_probe_flags_and_settings_decide_in_order(tmp_path: Path) -> None:
    root = Sysroot(tmp_path)
    assert probe_decision(root, "auto", probe_flag=True).run
    assert not probe_decision(root, "always", probe_flag=True, no_probe_flag=True).run
    assert probe_decision(root, "always").run
    assert not probe_decision(root, "never").run
    assert probe_decision(root, "never", probe_flag=True).run


def test_host_that_is_not_azure_runs_no_probes() -> None:
    plan = probe_decision(Sysroot(Path("/")), "auto")
    assert not plan.run  # this build machine is not an Azure VM
    assert "not an Azure VM" in plan.reason


def test_azure_host_runs_probes(tmp_path: Path) -> None:
    class AzureHost(Sysroot):
        @property
        def is_host(self) -> bool:
            return True

    assert probe_decision(AzureHost(tmp_path), "auto", azure=lambda sysroot: True).run
