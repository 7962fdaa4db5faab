"""Every doctor check on a guest sysroot tree: one healthy scenario and the broken ones."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "doctor"))

from doctor_support import (
    MEMINFO_FULL,
    NOW,
    PROC_STAT_BUSY_LATER,
    PROC_STAT_IDLE,
    SAS_SECRET,
    FakeRunner,
    FakeStatvfs,
    Guest,
    healthy_guest,
    healthy_sources,
    samples,
    settings_for,
)

from waagent_guard.doctor.facts import ProbePlan, gather_facts
from waagent_guard.doctor.findings import Finding, Status, backup_ready, exit_code
from waagent_guard.doctor.runner import CHECKS, DoctorRunner, check_codes, run_checks
from waagent_guard.execute import CommandResult
from waagent_guard.service.state import UnitState
from waagent_guard.settings import Settings
from waagent_guard.sysroot import VMSNAPSHOT_NAME, Sysroot

NO_PROBES = ProbePlan(False, "tests run no probes here")


class FakeManager:
    def __init__(self, state: UnitState, name: str = "systemd",
                 unit: str = "walinuxagent.service") -> None:
        self.name = name
        self.unit = unit
        self._state = state

    def state(self) -> UnitState:
        return self._state


def diagnose(guest: Guest, *, settings: Optional[Settings] = None, offline: bool = False,
             **sources: Any) -> dict[str, Finding]:
    settings = settings or settings_for()
    facts = gather_facts(Sysroot(guest.root), settings, NO_PROBES, healthy_sources(**sources),
                         offline=offline)
    return {finding.code: finding for finding in run_checks(facts, settings)}


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    return healthy_guest(tmp_path / "guest")


def test_healthy_guest_passes_every_check_that_runs(guest: Guest) -> None:
    findings = diagnose(guest)
    bad = {code: (f.status, f.summary) for code, f in findings.items()
           if f.status not in (Status.OK, Status.SKIPPED)}
    assert bad == {}
    assert exit_code(findings.values()) == 0
    assert backup_ready(findings.values())
    assert set(findings) == set(check_codes())


def test_every_catalogue_code_has_a_check_function() -> None:
    assert set(CHECKS) == set(check_codes())


def test_every_cause_of_the_guide_has_checks() -> None:
    from waagent_guard.doctor.catalogue import CATALOGUE

    assert {item.cause for item in CATALOGUE} == {0, 1, 2, 3, 4}


def test_remedies_name_the_distros_unit(guest: Guest) -> None:
    findings = diagnose(guest)
    assert "systemctl restart walinuxagent.service" in findings["WG-EXT-001"].remedy
    assert "{" not in findings["WG-AGENT-005"].remedy


# -- cause 2: the agent ------------------------------------------------------------------------


def test_missing_daemon_fails_agent_running_and_backup_readiness(guest: Guest) -> None:
    guest.remove("/proc/100/cmdline")
    findings = diagnose(guest)
    assert findings["WG-AGENT-001"].status is Status.FAIL
    assert findings["WG-AGENT-002"].status is Status.SKIPPED
    assert not backup_ready(findings.values())


def test_daemon_outside_a_failed_unit_is_a_warning(guest: Guest) -> None:
    manager = FakeManager(UnitState("failed", "failed", result="signal", restart="always"))
    findings = diagnose(guest, manager=manager)
    assert findings["WG-AGENT-001"].status is Status.WARN
    assert "failed" in findings["WG-AGENT-001"].summary


def test_dead_unit_and_no_daemon_names_the_unit_state(guest: Guest) -> None:
    guest.remove("/proc/100/cmdline")
    manager = FakeManager(UnitState("failed", "failed", result="signal", restart="no"))
    finding = diagnose(guest, manager=manager)["WG-AGENT-001"]
    assert finding.status is Status.FAIL
    assert "walinuxagent.service is failed/failed (result signal)" in finding.summary
    assert "sudo systemctl start walinuxagent.service" in finding.remedy


def test_offline_tree_without_proc_skips_process_checks(guest: Guest, tmp_path: Path) -> None:
    import shutil

    shutil.rmtree(guest.path("/proc"))
    findings = diagnose(guest, offline=True)
    assert findings["WG-AGENT-001"].status is Status.SKIPPED
    assert findings["WG-AGENT-003"].status is Status.SKIPPED
    assert findings["WG-SNAP-004"].status is Status.SKIPPED
    assert findings["WG-NET-006"].status is Status.SKIPPED


def test_missing_exthandler_fails(guest: Guest) -> None:
    guest.remove("/proc/101/cmdline")
    assert diagnose(guest)["WG-AGENT-002"].status is Status.FAIL


def test_missing_exthandler_just_after_daemon_start_is_a_warning(guest: Guest) -> None:
    guest.remove("/proc/101/cmdline")
    boot = 1727670000  # btime of the fake /proc/stat; the daemon started 10 s after boot
    finding = diagnose(guest, clock=lambda: boot + 10 + 30)["WG-AGENT-002"]
    assert finding.status is Status.WARN


def test_disable_agent_skips_the_exthandler_check_with_the_reason(guest: Guest) -> None:
    guest.remove("/proc/101/cmdline")
    guest.write("/var/lib/waagent/disable_agent", "")
    finding = diagnose(guest)["WG-AGENT-002"]
    assert finding.status is Status.SKIPPED
    assert "disable_agent" in finding.summary


def test_pidfile_naming_another_process_fails(guest: Guest) -> None:
    guest.process(555, ["/usr/sbin/sshd", "-D"])
    guest.write("/var/run/waagent.pid", "555\n")
    finding = diagnose(guest)["WG-AGENT-003"]
    assert finding.status is Status.FAIL
    assert "rm -f /var/run/waagent.pid" in finding.remedy


def test_pidfile_of_a_dead_process_warns_and_of_the_agent_passes(guest: Guest) -> None:
    guest.write("/var/run/waagent.pid", "4242\n")
    assert diagnose(guest)["WG-AGENT-003"].status is Status.WARN
    guest.write("/var/run/waagent.pid", "100\n")
    assert diagnose(guest)["WG-AGENT-003"].status is Status.OK


def test_unit_with_restart_no_fails_autorestart(guest: Guest) -> None:
    guest.unit(restart=None)
    finding = diagnose(guest)["WG-AGENT-004"]
    assert finding.status is Status.FAIL
    assert "Restart=no" in finding.summary
    assert "waagent-guard agent ensure-autorestart" in finding.remedy


def test_drop_in_restart_always_fixes_autorestart(guest: Guest) -> None:
    guest.unit(restart="no")
    guest.write("/etc/systemd/system/walinuxagent.service.d/10-restart.conf",
                "[Service]\nRestart=always\nRestartSec=5\n")
    finding = diagnose(guest)["WG-AGENT-004"]
    assert finding.status is Status.OK
    drop_in = "/etc/systemd/system/walinuxagent.service.d/10-restart.conf"
    assert drop_in in finding.evidence["set_by"]


def test_live_unit_state_wins_over_the_files(guest: Guest) -> None:
    manager = FakeManager(UnitState("active", "running", main_pid=100, restart="no"))
    assert diagnose(guest, manager=manager)["WG-AGENT-004"].status is Status.FAIL


def test_sysv_agent_warns_that_nothing_restarts_it(guest: Guest) -> None:
    manager = FakeManager(UnitState("active", "running"), name="sysv", unit="walinuxagent")
    finding = diagnose(guest, manager=manager)["WG-AGENT-004"]
    assert finding.status is Status.WARN
    assert "service walinuxagent start" in diagnose(guest, manager=manager)["WG-AGENT-001"].remedy


def test_no_unit_file_skips_autorestart(guest: Guest) -> None:
    guest.remove("/lib/systemd/system/walinuxagent.service")
    assert diagnose(guest)["WG-AGENT-004"].status is Status.SKIPPED


def test_blacklisted_agent_version_warns(guest: Guest) -> None:
    guest.write("/var/lib/waagent/WALinuxAgent-2.12.0.2/error.json",
                json.dumps({"was_fatal": True, "reason": "crashed 3 times"}))
    finding = diagnose(guest)["WG-AGENT-005"]
    assert finding.status is Status.WARN
    assert "2.12.0.2" in finding.summary


def test_versions_are_reported_from_the_log(guest: Guest) -> None:
    finding = diagnose(guest)["WG-AGENT-005"]
    assert finding.status is Status.OK
    assert finding.evidence["daemon_version"] == "2.9.1.1"


def test_unknown_versions_warn(guest: Guest) -> None:
    guest.write("/var/log/waagent.log", "")
    for pid in (100, 101):
        guest.remove(f"/proc/{pid}/cmdline")
    assert diagnose(guest)["WG-AGENT-005"].status is Status.WARN


def test_autoupdate_off_warns(guest: Guest) -> None:
    guest.conf(AutoUpdate_Enabled="n")
    assert diagnose(guest)["WG-AGENT-006"].status is Status.WARN


def test_verbose_logging_without_a_lease_warns_and_with_a_lease_passes(guest: Guest) -> None:
    guest.conf(Logs_Verbose="y")
    assert diagnose(guest)["WG-AGENT-007"].status is Status.WARN
    lease = {"active": True, "expires_at": "2024-09-30T06:00:00Z"}
    assert diagnose(guest, verbose_lease=lease)["WG-AGENT-007"].status is Status.OK


# -- cause 3: VMSnapshot -------------------------------------------------------------------------


def test_extensions_disabled_fails(guest: Guest) -> None:
    guest.conf(Extensions_Enabled="n")
    findings = diagnose(guest)
    assert findings["WG-EXT-001"].status is Status.FAIL
    assert not backup_ready(findings.values())


def test_vmsnapshot_not_installed_warns_and_skips_the_rest(guest: Guest) -> None:
    import shutil

    shutil.rmtree(guest.path(f"/var/lib/waagent/{VMSNAPSHOT_NAME}-1.0.9220.0"))
    findings = diagnose(guest)
    assert findings["WG-EXT-002"].status is Status.WARN
    for code in ("WG-EXT-003", "WG-EXT-004", "WG-EXT-005"):
        assert findings[code].status is Status.SKIPPED
    assert findings["WG-NET-004"].status is Status.SKIPPED


def test_missing_lib_dir_warns(tmp_path: Path) -> None:
    guest = Guest(tmp_path / "empty")
    guest.conf()
    assert diagnose(guest)["WG-EXT-002"].status is Status.WARN


def test_vmsnapshot_versions_compare_as_integer_tuples(guest: Guest) -> None:
    import shutil

    shutil.rmtree(guest.path(f"/var/lib/waagent/{VMSNAPSHOT_NAME}-1.0.9220.0"))
    guest.vmsnapshot("1.0.90.0")
    finding = diagnose(guest)["WG-EXT-003"]
    assert finding.status is Status.FAIL
    assert "VMSnapshotLinux" in finding.remedy
    guest.vmsnapshot("1.0.9117.0")  # newer dir: 9117 > 91 as integers, though "9117" < "91.0"
    assert diagnose(guest)["WG-EXT-003"].status is Status.OK


@pytest.mark.parametrize(("state", "handler_status", "expected"), [
    ("FailedUpgrade", "Ready", Status.FAIL),
    ("Installed", "Ready", Status.WARN),
    ("Enabled", "NotReady", Status.WARN),
    ("Enabled", "Ready", Status.OK),
])
def test_vmsnapshot_handler_state(guest: Guest, state: str, handler_status: str,
                                  expected: Status) -> None:
    guest.vmsnapshot(state=state, handler_status=handler_status)
    finding = diagnose(guest)["WG-EXT-004"]
    assert finding.status is expected
    if expected is not Status.OK:
        assert state in finding.remedy or expected is Status.WARN


@pytest.mark.parametrize(("status", "mtime", "expected"), [
    ("error", NOW - 60, Status.FAIL),
    ("warning", NOW - 60, Status.WARN),
    ("transitioning", NOW - 7200, Status.WARN),
    ("transitioning", NOW - 60, Status.OK),
    ("success", NOW - 60, Status.OK),
])
def test_vmsnapshot_last_status(guest: Guest, status: str, mtime: float,
                                expected: Status) -> None:
    guest.vmsnapshot(status=status, status_mtime=mtime,
                     message=f"upload to https://x.blob/c?sv=1&{SAS_SECRET} failed")
    finding = diagnose(guest)["WG-EXT-005"]
    assert finding.status is expected
    assert SAS_SECRET not in json.dumps(finding.to_dict())


def test_vmsnapshot_without_status_file_warns(guest: Guest) -> None:
    guest.remove(f"/var/lib/waagent/{VMSNAPSHOT_NAME}-1.0.9220.0/status/1.status")
    assert diagnose(guest)["WG-EXT-005"].status is Status.WARN


def test_vmsnapshot_failures_in_waagent_log_warn(guest: Guest) -> None:
    with guest.path("/var/log/waagent.log").open("a") as log:
        log.write(f"2024-09-30T04:50:00.000000Z ERROR ExtHandler ExtHandler Event: "
                  f"name={VMSNAPSHOT_NAME}, op=Enable, message=upload to "
                  f"https://acct.blob.core.windows.net/c/b?sv=1&{SAS_SECRET} failed, duration=0\n")
    finding = diagnose(guest)["WG-EXT-006"]
    assert finding.status is Status.WARN
    assert SAS_SECRET not in json.dumps(finding.to_dict())


def test_old_vmsnapshot_failures_in_waagent_log_pass(guest: Guest) -> None:
    with guest.path("/var/log/waagent.log").open("a") as log:
        log.write(f"2024-09-01T04:50:00.000000Z ERROR ExtHandler ExtHandler Event: "
                  f"name={VMSNAPSHOT_NAME}, op=Enable, message=boom, duration=0\n")
    assert diagnose(guest)["WG-EXT-006"].status is Status.OK


def test_errors_in_the_extension_log_warn_without_sas(guest: Guest) -> None:
    guest.write(f"/var/log/azure/{VMSNAPSHOT_NAME}/extension.log",
                f"2024/09/30 04:40:00 snapshot failed: https://a.blob/c?sv=1&{SAS_SECRET}\n")
    finding = diagnose(guest)["WG-EXT-006"]
    assert finding.status is Status.WARN
    assert SAS_SECRET not in json.dumps(finding.to_dict())
    assert finding.evidence["extension_log_error_lines"] == 1


# -- cause 1: network facts that need no probe ---------------------------------------------------


def test_probes_not_run_are_skipped_with_the_reason(guest: Guest) -> None:
    finding = diagnose(guest)["WG-NET-001"]
    assert finding.status is Status.SKIPPED
    assert "tests run no probes here" in finding.summary


def test_no_route_to_the_wireserver_fails(guest: Guest) -> None:
    runner = FakeRunner({"ip": CommandResult(2, "", "RTNETLINK answers: Network is unreachable")})
    finding = diagnose(guest, runner=runner)["WG-NET-006"]
    assert finding.status is Status.FAIL
    assert "Network is unreachable" in finding.summary


def test_missing_ip_tool_is_explained(guest: Guest) -> None:
    from waagent_guard.errors import ServiceError

    def runner(argv: Any, *, timeout: float) -> CommandResult:
        raise ServiceError(f"`{argv[0]}`: {argv[0]} not found; install it")

    findings = diagnose(guest, runner=runner)
    assert findings["WG-NET-006"].summary.endswith("ip is not installed")
    assert findings["WG-NET-007"].summary == "iptables is not installed"


def test_firewall_rule_blocking_root_fails(guest: Guest) -> None:
    rules = "-A OUTPUT -d 168.63.129.16/32 -j DROP\n"
    runner = FakeRunner({"ip": CommandResult(0, "168.63.129.16 dev eth0 src 10.0.0.4\n", ""),
                         "iptables": CommandResult(0, rules, "")})
    finding = diagnose(guest, runner=runner, settings=settings_for(wireserver="168.63.129.16"))
    assert finding["WG-NET-007"].status is Status.FAIL


def test_firewall_enabled_without_rules_warns(guest: Guest) -> None:
    runner = FakeRunner({"ip": CommandResult(0, "x dev eth0\n", ""),
                         "iptables": CommandResult(0, "-P OUTPUT ACCEPT\n", "")})
    findings = diagnose(guest, runner=runner, settings=settings_for(wireserver="168.63.129.16"))
    assert findings["WG-NET-007"].status is Status.WARN


def test_agent_firewall_rules_pass(guest: Guest) -> None:
    findings = diagnose(guest, settings=settings_for(wireserver="168.63.129.16"))
    assert findings["WG-NET-007"].status is Status.OK


def test_firewall_rules_need_root(guest: Guest) -> None:
    finding = diagnose(guest, euid=lambda: 1000)["WG-NET-007"]
    assert finding.status is Status.SKIPPED
    assert "root" in finding.summary


def test_recent_goal_state_errors_warn(guest: Guest) -> None:
    with guest.path("/var/log/waagent.log").open("a") as log:
        log.write("2024-09-30T04:55:51.771876Z ERROR ExtHandler ExtHandler Error fetching the "
                  "goal state: [ProtocolError] GET http://168.63.129.16/machine/ -- timed out\n")
    finding = diagnose(guest)["WG-NET-008"]
    assert finding.status is Status.WARN
    assert "goal_state_fetch_failed" in finding.summary


def test_missing_log_skips_the_log_check(guest: Guest) -> None:
    guest.remove("/var/log/waagent.log")
    assert diagnose(guest)["WG-NET-008"].status is Status.SKIPPED


# -- cause 4 --------------------------------------------------------------------------------------


def test_unknown_wireserver_endpoint_warns(guest: Guest) -> None:
    guest.remove("/var/lib/waagent/WireServerEndpoint")
    guest.remove("/var/lib/dhcp/dhclient.eth0.leases")
    assert diagnose(guest)["WG-SNAP-001"].status is Status.WARN


def test_networkd_lease_option_245_is_enough(guest: Guest) -> None:
    guest.remove("/var/lib/waagent/WireServerEndpoint")
    guest.remove("/var/lib/dhcp/dhclient.eth0.leases")
    guest.write("/run/systemd/netif/leases/2", "ADDRESS=10.0.0.4\nOPTION_245=A83F8110\n")
    finding = diagnose(guest)["WG-SNAP-001"]
    assert finding.status is Status.OK
    assert finding.evidence["dhcp_option_245"] == ["168.63.129.16"]


def test_static_addressing_without_lease_fails(guest: Guest) -> None:
    guest.remove("/var/lib/dhcp/dhclient.eth0.leases")
    guest.write("/etc/network/interfaces",
                "auto eth0\niface eth0 inet static\n  address 10.0.0.4\n")
    finding = diagnose(guest)["WG-SNAP-002"]
    assert finding.status is Status.FAIL
    assert "/etc/network/interfaces:2" in finding.evidence["static_config"][0]


@pytest.mark.parametrize("text", [
    "network:\n  ethernets:\n    eth0:\n      dhcp4: false\n",
])
def test_static_netplan_with_a_lease_warns(guest: Guest, text: str) -> None:
    guest.write("/etc/netplan/50-cloud-init.yaml", text)
    assert diagnose(guest)["WG-SNAP-002"].status is Status.WARN


def test_no_lease_file_warns(guest: Guest) -> None:
    guest.remove("/var/lib/dhcp/dhclient.eth0.leases")
    assert diagnose(guest)["WG-SNAP-002"].status is Status.WARN


def test_busy_cpu_now_warns(guest: Guest) -> None:
    finding = diagnose(guest, cpu_stat=samples(PROC_STAT_IDLE, PROC_STAT_BUSY_LATER))["WG-SNAP-003"]
    assert finding.status is Status.WARN
    assert finding.evidence["percent"] > 90


def test_cpu_sustained_over_the_window_fails(guest: Guest) -> None:
    settings = settings_for(sustained_seconds=60)
    now = [NOW]
    runner = DoctorRunner(Sysroot(guest.root), settings, plan=NO_PROBES,
                          sources=healthy_sources(clock=lambda: now[0]))
    for offset in (0, 30, 60):
        runner.observe_pressure(NOW - 60 + offset, 97.0, 10.0)
    runner.sources.cpu_stat = samples(PROC_STAT_IDLE, PROC_STAT_BUSY_LATER)
    findings = {f.code: f for f in runner.run()}
    assert findings["WG-SNAP-003"].status is Status.FAIL
    assert findings["WG-SNAP-004"].status is Status.OK
    assert not runner.backup_ready


def test_full_memory_warns(guest: Guest) -> None:
    guest.write("/proc/meminfo", MEMINFO_FULL)
    finding = diagnose(guest)["WG-SNAP-004"]
    assert finding.status is Status.WARN
    assert finding.evidence["available_bytes"] == 200000 * 1024


def test_unreadable_proc_stat_skips_cpu(guest: Guest) -> None:
    finding = diagnose(guest, cpu_stat=lambda: None)["WG-SNAP-003"]
    assert finding.status is Status.SKIPPED
    assert "/proc/stat" in finding.summary


def test_identical_cpu_samples_skip_cpu(guest: Guest) -> None:
    finding = diagnose(guest, cpu_stat=samples(PROC_STAT_IDLE))["WG-SNAP-003"]
    assert finding.status is Status.SKIPPED


# -- general -------------------------------------------------------------------------------------


def test_missing_waagent_conf_warns(guest: Guest) -> None:
    guest.remove("/etc/waagent.conf")
    assert diagnose(guest)["WG-SYS-001"].status is Status.WARN


def test_conf_problems_warn(guest: Guest) -> None:
    guest.path("/etc/waagent.conf").write_bytes(b"Logs.Verbose=\xff\n")
    finding = diagnose(guest)["WG-SYS-001"]
    assert finding.status is Status.WARN


@pytest.mark.parametrize(("free", "expected"), [
    (100 * 1024**2, Status.FAIL),
    (300 * 1024**2, Status.WARN),
    (10 * 1024**3, Status.OK),
])
def test_free_space_floor(guest: Guest, free: int, expected: Status) -> None:
    findings = diagnose(guest, statvfs=FakeStatvfs(free_bytes=free))
    assert findings["WG-SYS-002"].status is expected
    assert findings["WG-SYS-003"].status is expected


def test_statvfs_failure_skips_free_space(guest: Guest) -> None:
    def broken(path: str) -> Any:
        raise PermissionError(13, "Permission denied")

    assert diagnose(guest, statvfs=broken)["WG-SYS-002"].status is Status.SKIPPED


# -- the runner ----------------------------------------------------------------------------------


def test_a_broken_check_becomes_an_error_and_the_run_goes_on(guest: Guest) -> None:
    settings = settings_for()
    facts = gather_facts(Sysroot(guest.root), settings, NO_PROBES, healthy_sources())

    def broken(facts: Any, settings: Any) -> Any:
        raise RuntimeError("boom")

    checks = {**CHECKS, "WG-AGENT-006": broken}
    findings = {f.code: f for f in run_checks(facts, settings, checks=checks)}
    assert findings["WG-AGENT-006"].status is Status.ERROR
    assert "boom" in findings["WG-AGENT-006"].summary
    assert findings["WG-AGENT-007"].status is Status.OK
    assert exit_code(findings.values()) == 1


def test_run_checks_can_run_only_some_codes(guest: Guest) -> None:
    settings = settings_for()
    facts = gather_facts(Sysroot(guest.root), settings, NO_PROBES, healthy_sources())
    findings = run_checks(facts, settings, only=["WG-EXT-001"])
    assert [f.code for f in findings] == ["WG-EXT-001"]
    with pytest.raises(ValueError, match="WG-NOPE"):
        run_checks(facts, settings, only=["WG-NOPE"])


def test_doctor_runner_records_durations_and_timestamps(guest: Guest) -> None:
    runner = DoctorRunner(Sysroot(guest.root), settings_for(), plan=NO_PROBES,
                          sources=healthy_sources(), clock=lambda: NOW)
    findings = runner.run()
    assert all(f.checked_at == NOW and f.duration_seconds >= 0 for f in findings)
    assert runner.backup_ready


@pytest.mark.parametrize("content", ["0\n", "-1\n"])
def test_pidfile_the_agent_reads_as_alive_fails_with_the_reason(
    guest: Guest, content: str
) -> None:
    """Issue 12 item 9: `0` and `-1` name no process, yet the agent's kill(pid, 0) succeeds."""
    guest.write("/var/run/waagent.pid", content)
    finding = diagnose(guest)["WG-AGENT-003"]
    assert finding.status is Status.FAIL
    assert "exits at start" in finding.summary
