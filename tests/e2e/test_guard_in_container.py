"""End to end: our .deb, the real Debian agent (2.7.3.0) and a real systemd.

One container (booted with --private-network: only `lo`) per module; the tests
run in order and build on each other: install, observe, kill, lease verbose,
let systemd restart the agent, bundle, upgrade, purge.
"""

from __future__ import annotations

import json
import re
import shutil
import tarfile
import uuid

import pytest

from tests.e2e.conftest import ARTIFACTS, Debs
from tests.e2e.container import Container, wait_for
from waagent_guard.logsetup import MESSAGE_IDS

pytestmark = pytest.mark.e2e

AGENT = "walinuxagent.service"
GUARD = "waagent-guard.service"
AGENT_VERSION = "2.7.3.0"
MAX_EXPOSURE = 4.0
SECRET = f"WGE2E-SECRET-{uuid.uuid4().hex}"


def _active_pid(box: Container, unit: str, *, not_pid: int = 0) -> int:
    facts = box.show(unit, "ActiveState", "SubState", "MainPID")
    pid = int(facts["MainPID"])
    running = facts["ActiveState"] == "active" and facts["SubState"] == "running"
    return pid if running and pid not in (0, not_pid) else 0


def _guard_restarts(samples: dict[str, float]) -> float:
    return sum(v for k, v in samples.items() if k.startswith("waagent_guard_restarts_total"))


def _conf_value(box: Container, key: str) -> str:
    values = [
        line.split("=", 1)[1].split("#", 1)[0].strip()
        for line in box.path("/etc/waagent.conf").read_text().splitlines()
        if line.strip().startswith(f"{key}=") or line.strip().startswith(f"{key} =")
    ]
    return values[-1] if values else ""


def _agent_log(box: Container) -> str:
    """The agent's log ("" until the agent has created it: a loaded machine boots slowly)."""
    try:
        return box.path("/var/log/waagent.log").read_text(errors="replace")
    except FileNotFoundError:
        return ""


def _guard_journal(box: Container, **match: str) -> list[dict[str, str]]:
    """The guard's journal entries matching `match` (journalctl -o json)."""
    matches = [f"{key}={value}" for key, value in match.items()]
    result = box.run(
        ["journalctl", "--no-pager", "-o", "json", "-u", "waagent-guard", *matches],
        check=False, timeout=60,
    )
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def _verbose_lines(box: Container) -> int:
    log = _agent_log(box)
    return sum(1 for line in log.splitlines() if " VERBOSE " in line)


def test_container_sees_only_loopback(container: Container) -> None:
    links = container.run(["ip", "-o", "link", "show"]).stdout
    names = [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    assert names == ["lo"]
    inside = container.run(["ls", "/sys/class/net"]).stdout.split()
    assert inside == ["lo"]


def test_real_agent_runs_in_the_container(container: Container) -> None:
    pid = wait_for(lambda: _active_pid(container, AGENT), timeout=60, what=f"{AGENT} running")
    cmdline = container.run(["cat", f"/proc/{pid}/cmdline"]).stdout.split("\0")
    assert "-daemon" in cmdline
    wait_for(
        lambda: f"Azure Linux Agent Version:{AGENT_VERSION}"
        in _agent_log(container),
        timeout=60,
        what="the agent's start line in /var/log/waagent.log",
    )
    assert container.show(AGENT, "Restart")["Restart"] == "no"  # Debian's stock unit


def test_package_installs_enables_and_starts_the_guard(container: Container, debs: Debs) -> None:
    shutil.copyfile(debs.current, container.path("/root/waagent-guard.deb"))
    container.run(["dpkg", "-i", "/root/waagent-guard.deb"], timeout=300)

    assert container.run(["systemctl", "is-enabled", GUARD]).stdout.strip() == "enabled"
    wait_for(lambda: _active_pid(container, GUARD), timeout=90, what=f"{GUARD} active (READY=1)")
    facts = container.show(GUARD, "Type", "NotifyAccess", "WatchdogUSec", "Restart", "After")
    assert AGENT not in facts["After"].split()  # no ordering cycle with After=multi-user.target
    assert facts["Type"] == "notify"  # active/running for Type=notify means READY=1 arrived
    assert facts["Restart"] == "on-failure"
    assert facts["WatchdogUSec"] == "1min"
    conffiles = container.run(["dpkg-query", "-W", "-f=${Conffiles}", "waagent-guard"]).stdout
    assert "/etc/waagent-guard/guard.toml" in conffiles
    assert container.run(["waagent-guard", "--version"]).returncode == 0
    installed = container.run(["dpkg", "-L", "waagent-guard"]).stdout.split()
    assert "/usr/share/man/man1/waagent-guard.1.gz" in installed
    assert "/usr/share/man/man5/guard.toml.5.gz" in installed  # guard.toml(5)
    # dh_compress may gzip a long document: its name is kept either way.
    docs = "/usr/share/doc/waagent-guard/docs/"
    assert any(p.startswith(docs + "configuration.md") for p in installed)


def test_unit_exposure_is_at_most_four(container: Container) -> None:
    result = container.run(["systemd-analyze", "security", "--no-pager", GUARD], check=False)
    report = result.stdout + result.stderr
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "systemd-analyze-security.txt").write_text(report)
    match = re.search(r"Overall exposure level for waagent-guard\.service: (\d+(?:\.\d+)?)", report)
    assert match, report
    print(f"systemd-analyze security: exposure {match.group(1)}")
    assert float(match.group(1)) <= MAX_EXPOSURE


def test_metrics_report_the_agent_up_with_its_version(container: Container) -> None:
    def ready() -> dict[str, float]:
        samples = container.metrics()
        versions = [k for k in samples if k.startswith("waagent_info{")]
        up = samples.get("waagent_up") == 1.0
        known = any(f'daemon_version="{AGENT_VERSION}"' in k for k in versions)
        return samples if up and known else {}

    samples = wait_for(ready, timeout=90, what="waagent_up 1 and the daemon version in metrics")
    assert samples["waagent_up"] == 1.0


def test_package_ships_the_monitoring_kit_and_the_textfile_timer_works(
    container: Container,
) -> None:
    kit = "/usr/share/waagent-guard/monitoring"
    for path in ("rules/waagent-guard-alerts.yml", "rules/waagent-guard-records.yml",
                 "RUNBOOK.md", "dashboards/fleet.json", "dashboards/vm.json",
                 "scrape/azure_sd.yml", "systemd/waagent-guard-textfile.timer"):
        assert container.path(f"{kit}/{path}").is_file(), path
    # The node_exporter route, as the README wires it: link the units, start the service.
    textfile = "/var/lib/prometheus/node-exporter"
    container.run(["mkdir", "-p", textfile])
    container.run(["systemctl", "link", f"{kit}/systemd/waagent-guard-textfile.service"])
    container.run(["systemctl", "enable", "--now", f"{kit}/systemd/waagent-guard-textfile.timer"])
    container.run(["systemctl", "start", "waagent-guard-textfile.service"], timeout=120)
    text = container.path(f"{textfile}/waagent_guard.prom").read_text()
    for family in ("waagent_up 1.0", "waagent_backup_ready", "waagent_guard_check_status{",
                   "waagent_guard_process_resident_memory_bytes", "waagent_log_readable 1.0"):
        assert family in text, family
    assert container.run(["systemctl", "is-active", "waagent-guard-textfile.timer"]
                         ).stdout.strip() == "active"
    container.run(["systemctl", "disable", "--now", "waagent-guard-textfile.timer"])


def test_guard_restarts_the_killed_agent_and_counts_it(container: Container) -> None:
    before = _guard_restarts(container.metrics())
    pid = _active_pid(container, AGENT)
    assert pid
    container.run(["kill", "-9", str(pid)])

    new_pid = wait_for(
        lambda: _active_pid(container, AGENT, not_pid=pid),
        timeout=120,
        what=f"the guard to bring {AGENT} back after kill -9",
    )
    assert new_pid != pid
    wait_for(
        lambda: _guard_restarts(container.metrics()) >= before + 1,
        timeout=60,
        what="waagent_guard_restarts_total to count the restart",
    )
    # Issue 10 item 4: the killed agent leaves its pidfile naming its dead PID; that is a
    # crash (process_gone), and removing the leftover pidfile is one of its steps.
    samples = container.metrics()
    assert samples.get('waagent_guard_restarts_total{reason="process_gone"}', 0) >= 1, samples
    assert samples.get('waagent_guard_restarts_total{reason="stale_pidfile"}', 0) == 0, samples
    pidfile = wait_for(
        lambda: container.run(["cat", "/var/run/waagent.pid"], check=False).stdout.strip()
        or None,
        timeout=60, what="the new agent's pidfile",
    )
    assert int(pidfile) == new_pid
    # The restart decision reached the real journal through systemd-python's
    # JournalHandler (native protocol, not stderr) with its structured fields.
    entries = wait_for(
        lambda: _guard_journal(container, MESSAGE_ID=MESSAGE_IDS["restart"]) or None,
        timeout=60, what="the restart decision in the journal",
    )
    entry = entries[-1]
    assert entry["_TRANSPORT"] == "journal", entry
    assert entry["SYSLOG_IDENTIFIER"] == "waagent-guard", entry
    assert entry["PRIORITY"] == "4", entry
    assert (entry["WG_DECISION"], entry["WG_REASON"]) == ("restart", "process_gone"), entry
    assert entry["WG_ACTION"] in ("start", "restart"), entry
    assert entry["LOGGER"] == "waagent_guard.daemon.restarts", entry
    assert entry["MESSAGE"].startswith(f"{entry['WG_ACTION']}: "), entry
    stale = _guard_journal(container, MESSAGE_ID=MESSAGE_IDS["stale_pidfile"])
    assert stale and stale[-1]["WG_REASON"] == "process_gone", stale


def test_verbose_lease_turns_verbose_on_then_reverts(container: Container) -> None:
    pid = wait_for(lambda: _active_pid(container, AGENT), timeout=60, what=f"{AGENT} running")
    verbose_before = _verbose_lines(container)
    container.run(["waagent-guard", "verbose", "on", "--for", "60s"], timeout=120)

    assert _conf_value(container, "Logs.Verbose") == "y"
    restarted = wait_for(
        lambda: _active_pid(container, AGENT, not_pid=pid),
        timeout=60,
        what="the agent restarted with Logs.Verbose=y",
    )
    wait_for(
        lambda: _verbose_lines(container) > verbose_before,
        timeout=90,
        what="real VERBOSE lines in /var/log/waagent.log",
    )
    wait_for(
        lambda: _conf_value(container, "Logs.Verbose") in ("n", ""),
        timeout=150,
        what="the guard to revert Logs.Verbose when the 60s lease ends",
    )
    wait_for(
        lambda: _active_pid(container, AGENT, not_pid=restarted),
        timeout=60,
        what="the agent restarted after the revert",
    )


def test_ensure_autorestart_lets_systemd_restart_the_agent(container: Container) -> None:
    container.run(["waagent-guard", "agent", "ensure-autorestart"], timeout=120)
    dropins = list(container.path("/etc/systemd/system/walinuxagent.service.d").glob("*.conf"))
    assert any("Restart=" in p.read_text() for p in dropins), dropins
    assert container.show(AGENT, "Restart")["Restart"] in ("always", "on-failure")

    guard_before = _guard_restarts(container.metrics())
    n_before = int(container.show(AGENT, "NRestarts")["NRestarts"])
    pid = wait_for(lambda: _active_pid(container, AGENT), timeout=60, what=f"{AGENT} running")
    container.run(["kill", "-9", str(pid)])

    wait_for(
        lambda: int(container.show(AGENT, "NRestarts")["NRestarts"]) > n_before
        and _active_pid(container, AGENT, not_pid=pid),
        timeout=90,
        what="systemd itself to restart the agent (NRestarts grows)",
    )
    samples = wait_for(
        lambda: (s := container.metrics()).get("waagent_unit_restarts", 0) > n_before and s,
        timeout=60,
        what="the guard to record the unit's own restart (waagent_unit_restarts)",
    )
    assert samples.get("waagent_unit_autorestart") == 1.0
    assert _guard_restarts(samples) == guard_before  # the guard only recorded it


def _plant_secrets(box: Container) -> None:
    lib = box.path("/var/lib/waagent")
    (lib / "TransportPrivate.pem").write_text(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n")
    (lib / "Certificates.pem").write_text(f"-----BEGIN PRIVATE KEY-----\n{SECRET}\n")
    (lib / "ovf-env.xml").write_text(
        f"<Environment><CustomData>{SECRET}</CustomData>"
        f"<UserPassword>{SECRET}</UserPassword></Environment>\n"
    )
    handler = lib / "Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0"
    (handler / "config").mkdir(parents=True, exist_ok=True)
    sas = f"https://acct.blob.core.windows.net/c/b?sv=2020-08-04&se=2030&sp=rw&sig={SECRET}"
    (handler / "config" / "0.settings").write_text(
        '{"runtimeSettings":[{"handlerSettings":{"publicSettings":'
        f'{{"logsBlobUri":"{sas}"}},"protectedSettings":"{SECRET}"}}}}]}}\n'
    )
    (lib / "ExtensionsConfig.1.xml").write_text(f"<StatusUploadBlob>{sas}</StatusUploadBlob>\n")
    for path in lib.rglob("*"):
        if path.is_file():
            path.chmod(0o600)


def test_bundle_has_the_real_log_and_conf_but_no_planted_secret(container: Container) -> None:
    _plant_secrets(container)
    container.run(["waagent-guard", "bundle", "-o", "/root/bundle.tar.gz"], timeout=300)

    archive = container.path("/root/bundle.tar.gz")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(archive, ARTIFACTS / "bundle.tar.gz")
    with tarfile.open(archive) as bundle:
        members = {m.name: bundle.extractfile(m) for m in bundle.getmembers() if m.isfile()}
        contents = {name: file.read() for name, file in members.items() if file is not None}
    log = [data for name, data in contents.items() if name.endswith("waagent.log")]
    conf = [data for name, data in contents.items() if name.endswith("waagent.conf")]
    assert log and any(f"Azure Linux Agent Version:{AGENT_VERSION}".encode() in d for d in log)
    assert conf and any(b"Logs.Verbose" in d for d in conf)
    leaked = [name for name, data in contents.items() if SECRET.encode() in data]
    assert not leaked, f"planted secret found in {leaked}"
    assert not any(SECRET in name for name in contents)


def test_upgrade_restarts_the_guard_and_keeps_an_edited_conffile(
    container: Container, debs: Debs
) -> None:
    conffile = container.path("/etc/waagent-guard/guard.toml")
    edited = conffile.read_text() + "\n# edited by the end-to-end test\n"
    conffile.write_text(edited)
    old_pid = _active_pid(container, GUARD)
    assert old_pid
    shutil.copyfile(debs.upgrade, container.path("/root/waagent-guard-upgrade.deb"))

    container.run(["dpkg", "-i", "/root/waagent-guard-upgrade.deb"], timeout=300)

    assert conffile.read_text() == edited
    leftovers = [p.name for p in conffile.parent.iterdir() if p.name != "guard.toml"]
    assert not leftovers
    version = container.run(["dpkg-query", "-W", "-f=${Version}", "waagent-guard"]).stdout
    assert version.endswith("+e2e1")
    wait_for(
        lambda: _active_pid(container, GUARD, not_pid=old_pid),
        timeout=90,
        what="the guard restarted by the upgrade",
    )


def test_purge_removes_the_unit_and_files(container: Container) -> None:
    container.run(["dpkg", "--purge", "waagent-guard"], timeout=300)

    for inside in (
        "/lib/systemd/system/waagent-guard.service",
        "/usr/bin/waagent-guard",
        "/usr/lib/waagent-guard",
        "/etc/waagent-guard",
        "/var/lib/waagent-guard",
    ):
        assert not container.path(inside).exists(), inside
    assert container.show(GUARD, "LoadState")["LoadState"] == "not-found"
    assert _active_pid(container, AGENT)  # the agent keeps running without the guard
