"""`waagent-guard doctor` end to end: --root trees, loopback probes, --json, --bundle, exits."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Optional

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "doctor"))

from doctor_support import SAS_SECRET, Endpoints, Guest, endpoints, healthy_guest

from waagent_guard.cli import main

LOOPBACK_TOML = """\
[doctor]
wireserver = "127.0.0.1"
wireserver_port = {wireserver}
hostgaplugin_port = {hostgaplugin}
imds_url = "http://127.0.0.1:{imds}/metadata/instance?api-version=2021-02-01"
storage_port = {storage}
timeout_seconds = 2.0
"""


def write_config(tmp_path: Path, live: Optional[Endpoints] = None) -> Path:
    ports = {"wireserver": 9, "hostgaplugin": 9, "imds": 9, "storage": 9}
    if live is not None:
        ports = {"wireserver": live.wireserver.port, "hostgaplugin": live.hostgaplugin.port,
                 "imds": live.imds.port, "storage": live.storage.port}
    path = tmp_path / "guard.toml"
    path.write_text(LOOPBACK_TOML.format(**ports))
    return path


def doctor(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(["doctor", *args], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def guest(tmp_path: Path) -> Guest:
    return healthy_guest(tmp_path / "guest")


def test_healthy_tree_under_root_exits_zero_without_probes(guest: Guest, tmp_path: Path) -> None:
    code, out, _ = doctor("--root", str(guest.root), "--config", str(write_config(tmp_path)),
                          "--json")
    document = json.loads(out)
    assert code == 0, [f for f in document["findings"] if f["status"] not in ("ok", "skipped")]
    assert document["schema"] == "waagent-guard/doctor/v1"
    assert document["probes"]["ran"] is False
    assert "--root" in document["probes"]["reason"]
    assert document["backup_ready"] is True
    assert document["root"] == str(guest.root)


def test_probe_flag_runs_probes_against_loopback_endpoints(guest: Guest, tmp_path: Path) -> None:
    with endpoints() as live:
        guest.conf(HttpProxy_Host="127.0.0.1", HttpProxy_Port=str(live.proxy.port))
        code, out, _ = doctor("--root", str(guest.root), "--config",
                              str(write_config(tmp_path, live)), "--json", "--probe")
        connects = list(live.proxy.connects)
    document = json.loads(out)
    statuses = {f["code"]: f["status"] for f in document["findings"]}
    assert code == 0
    assert document["probes"] == {"ran": True, "reason": "--probe given"}
    assert all(statuses[c] == "ok" for c in ("WG-NET-001", "WG-NET-002", "WG-NET-003",
                                               "WG-NET-004", "WG-NET-005"))
    assert connects == [f"127.0.0.1:{live.storage.port}"]
    assert SAS_SECRET not in out


def test_no_probe_wins_over_probe(guest: Guest, tmp_path: Path) -> None:
    _, out, _ = doctor("--root", str(guest.root), "--config", str(write_config(tmp_path)),
                       "--json", "--probe", "--no-probe")
    assert json.loads(out)["probes"] == {"ran": False, "reason": "--no-probe given"}


def test_broken_agent_exits_two_with_remedies_in_the_report(guest: Guest, tmp_path: Path) -> None:
    guest.remove("/proc/100/cmdline")
    guest.conf(Extensions_Enabled="n")
    guest.unit(restart="no")
    code, out, _ = doctor("--root", str(guest.root), "--config", str(write_config(tmp_path)))
    assert code == 2
    assert "FAIL  WG-AGENT-001" in out
    assert "fix: Start the agent: sudo systemctl start walinuxagent.service" in out
    assert "Extensions.Enabled=y in" in out
    assert "backup ready: no" in out
    assert out.index("Cause 2:") < out.index("General health")


def test_warnings_only_exit_one(guest: Guest, tmp_path: Path) -> None:
    guest.conf(AutoUpdate_Enabled="n")
    code, _, _ = doctor("--root", str(guest.root), "--config", str(write_config(tmp_path)))
    assert code == 1


def make_bundle(guest: Guest, path: Path, extra: tuple[tarfile.TarInfo, ...] = ()) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for file in sorted(guest.root.rglob("*")):
            relative = file.relative_to(guest.root)
            if file.is_file() and "proc" not in relative.parts:
                archive.add(file, arcname=f"waagent-guard-bundle-vm1/{relative}")
        for member in extra:
            archive.addfile(member, io.BytesIO(b"x" * member.size))
    return path


def test_bundle_is_diagnosed_offline(guest: Guest, tmp_path: Path) -> None:
    bundle = make_bundle(guest, tmp_path / "bundle.tar.gz")
    code, out, _ = doctor("--bundle", str(bundle), "--config", str(write_config(tmp_path)),
                          "--json")
    document = json.loads(out)
    statuses = {f["code"]: f["status"] for f in document["findings"]}
    assert document["root"] == f"bundle:{bundle}"
    assert document["probes"]["ran"] is False
    assert statuses["WG-EXT-003"] == "ok"  # VMSnapshot read from the bundle
    assert statuses["WG-AGENT-001"] == "skipped"  # no processes in a bundle
    assert statuses["WG-SYS-002"] == "skipped"  # the free space would be this machine's
    assert code == 0


def test_bundle_ignores_probe_always_from_the_config(guest: Guest, tmp_path: Path) -> None:
    bundle = make_bundle(guest, tmp_path / "bundle.tar.gz")
    config = write_config(tmp_path)
    config.write_text(config.read_text() + 'probe = "always"\n')
    _, out, _ = doctor("--bundle", str(bundle), "--config", str(config), "--json")
    assert json.loads(out)["probes"]["ran"] is False
    assert "bundle" in json.loads(out)["probes"]["reason"]


def test_bundle_with_path_traversal_writes_nothing_outside(guest: Guest, tmp_path: Path) -> None:
    evil = tarfile.TarInfo("../../evil.txt")
    evil.size = 1
    link = tarfile.TarInfo("waagent-guard-bundle-vm1/etc/passwd-link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/passwd"
    bundle = make_bundle(guest, tmp_path / "evil.tar.gz", (evil, link))
    code, _, _ = doctor("--bundle", str(bundle), "--config", str(write_config(tmp_path)))
    assert code in (0, 1, 2)
    assert not (tmp_path.parent / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()


def test_bundle_and_root_exclude_each_other(guest: Guest, tmp_path: Path) -> None:
    code, _, err = doctor("--bundle", "x.tar.gz", "--root", str(guest.root))
    assert code == 64
    assert "--bundle and --root" in err


def test_missing_bundle_is_an_input_error(tmp_path: Path) -> None:
    code, _, err = doctor("--bundle", str(tmp_path / "none.tar.gz"), "--config",
                          str(write_config(tmp_path)))
    assert code == 65
    assert "none.tar.gz" in err


def test_doctor_runs_as_a_real_subprocess(guest: Guest, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "waagent_guard", "doctor", "--root", str(guest.root),
         "--config", str(write_config(tmp_path)), "--no-probe", "--json"],
        capture_output=True, text=True, timeout=60, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["summary"]["fail"] == 0


def test_all_hanging_endpoints_end_to_end(guest: Guest, tmp_path: Path) -> None:
    import time

    from doctor_support import TcpListener

    with TcpListener(hang=True) as hang:
        config = tmp_path / "hang.toml"
        config.write_text(LOOPBACK_TOML.format(wireserver=hang.port, hostgaplugin=hang.port,
                                               imds=hang.port, storage=hang.port)
                          .replace("timeout_seconds = 2.0", "timeout_seconds = 4.5"))
        started = time.monotonic()
        code, out, _ = doctor("--root", str(guest.root), "--config", str(config), "--probe",
                              "--json")
        elapsed = time.monotonic() - started
    print(f"doctor --probe with every endpoint hanging: {elapsed:.2f} s")
    assert elapsed < 10  # sanity bound only
    assert code == 2
    results: dict[str, Any] = {f["code"]: f for f in json.loads(out)["findings"]}
    assert results["WG-NET-003"]["evidence"]["outcome"] == "timeout"
