"""The doctor's pure parsers: DHCP option 245, `ip route get`, iptables rules, unit files."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data" / "doctor"))

from doctor_support import SAS_SECRET, Guest, TcpListener, healthy_guest, settings_for

from waagent_guard.doctor.extfacts import extension_log_facts, scrub
from waagent_guard.doctor.netfacts import (
    decode_option_245,
    evaluate_firewall,
    parse_lease_option_245,
    parse_route_get,
)
from waagent_guard.doctor.probes import Outcome, ProbeTarget, probe
from waagent_guard.doctor.unitfacts import UnitFacts, unit_file_restart
from waagent_guard.sysroot import VMSNAPSHOT_NAME, Sysroot

WS = "168.63.129.16"


@pytest.mark.parametrize(("raw", "expected"), [
    ("a8:3f:81:10", WS),
    ("A83F8110", WS),
    ("a8:3f:81:1", "168.63.129.1"),
    ("168.63.129.16", WS),
    ("a8:3f:81", None),
    ("zz:zz:zz:zz", None),
    ("a83f81", None),
    ("nothex!!", None),
])
def test_option_245_encodings_decode(raw: str, expected: str) -> None:
    assert decode_option_245(raw) == expected


def test_the_last_lease_wins() -> None:
    text = ("lease {\n option unknown-245 a8:3f:81:10;\n}\n"
            "lease {\n option unknown-245 a8:3f:81:11;\n}\n")
    assert parse_lease_option_245(text) == "168.63.129.17"
    assert parse_lease_option_245("lease {}\n") is None


@pytest.mark.parametrize(("text", "ok", "device"), [
    ("168.63.129.16 via 10.0.0.1 dev eth0 src 10.0.0.4 uid 0\n    cache\n", True, "eth0"),
    ("unreachable 168.63.129.16 table main\n", False, None),
    ("", False, None),
    ("168.63.129.16 via 10.0.0.1\n", False, None),
])
def test_route_get_output(text: str, ok: bool, device: str) -> None:
    route = parse_route_get(text)
    assert (route.ok, route.device) == (ok, device)


def test_firewall_root_accept_before_drop_lets_root_in() -> None:
    rules = [f"-A OUTPUT -d {WS}/32 -p tcp -m owner --uid-owner 0 -j ACCEPT",
             f"-A OUTPUT -d {WS}/32 -p tcp -m conntrack --ctstate INVALID,NEW -j DROP"]
    assert evaluate_firewall(rules, WS).root_allowed is True


def test_firewall_drop_before_root_accept_blocks_root() -> None:
    rules = [f"-A OUTPUT -d {WS}/32 -p tcp -j REJECT --reject-with icmp-port-unreachable",
             f"-A OUTPUT -d {WS}/32 -p tcp -m owner --uid-owner 0 -j ACCEPT"]
    facts = evaluate_firewall(rules, WS)
    assert facts.root_allowed is False
    assert "REJECT" in (facts.blocking_rule or "")


def test_firewall_non_root_drop_does_not_block_root() -> None:
    rules = [f"-A OUTPUT -d {WS}/32 -p tcp -m owner ! --uid-owner 0 -j DROP"]
    assert evaluate_firewall(rules, WS).root_allowed is True
    assert evaluate_firewall(["-A OUTPUT -d 10.0.0.1/32 -j DROP"], WS).root_allowed is None


def test_unit_file_and_drop_ins_follow_systemd_precedence(tmp_path: Path) -> None:
    guest = Guest(tmp_path)
    guest.unit(restart="always")
    guest.write("/lib/systemd/system/walinuxagent.service.d/50-a.conf",
                "[Service]\nRestart=on-failure\n")
    guest.write("/etc/systemd/system/walinuxagent.service.d/90-z.conf",
                "[Unit]\nRestart=always\n[Service]\nRestart=\n")
    unit_file, restart, sources = unit_file_restart(Sysroot(tmp_path), "walinuxagent.service")
    assert unit_file == "/lib/systemd/system/walinuxagent.service"
    assert restart == "no"  # `Restart=` resets to the default
    assert len(sources) == 3


@pytest.mark.parametrize(("os_id", "command"), [
    ("ubuntu", "apt-get"), ("sles", "zypper"), ("azurelinux", "tdnf"), ("rhel", "dnf"),
])
def test_update_command_follows_the_distro(os_id: str, command: str) -> None:
    unit = UnitFacts("waagent.service", "systemd", None, None, None, None, (), "pkg", os_id)
    assert unit.update_command.startswith(command)
    assert unit.autorestart is None


def test_openrc_commands_use_rc_service() -> None:
    unit = UnitFacts("waagent.service", "openrc", None, None, None, None, (), "pkg")
    assert unit.command("start") == "rc-service waagent start"


def test_scrub_removes_every_url_query() -> None:
    text = f"GET https://a.blob.core.windows.net/c/b?sv=1&{SAS_SECRET} and http://h/p?x=1"
    cleaned = scrub(text)
    assert SAS_SECRET not in cleaned and "x=1" not in cleaned


def test_large_extension_log_is_read_from_its_tail(tmp_path: Path) -> None:
    guest = Guest(tmp_path)
    path = f"/var/log/azure/{VMSNAPSHOT_NAME}/extension.log"
    guest.write(path, "old error line\n" + "fine\n" * 100000 + "new failure line\n")
    facts = extension_log_facts(Sysroot(tmp_path), "/var/log/azure")
    assert facts.error_count == 1
    assert facts.last_errors == ("new failure line",)


def test_vmsnapshot_settings_without_blob_uri_give_no_storage_host(tmp_path: Path) -> None:
    from waagent_guard.doctor.extfacts import storage_target
    from waagent_guard.observe import observe

    guest = healthy_guest(tmp_path / "g")
    directory = guest.vmsnapshot(blob_host=None)
    settings = settings_for()
    for body in ('{"runtimeSettings": [{"handlerSettings": {"publicSettings": {}}}]}',
                 "not json", json.dumps({"runtimeSettings": "x"}), json.dumps([1])):
        guest.write(f"{directory}/config/1.settings", body)
        assert storage_target(settings, observe(Sysroot(guest.root), settings)) is None
    guest.remove(f"{directory}/config/1.settings")
    guest.remove(f"{directory}/config/0.settings")
    assert storage_target(settings, observe(Sysroot(guest.root), settings)) is None


def test_probe_by_host_name_resolves_it_first() -> None:
    with TcpListener(hang=False) as listener:
        result = probe(ProbeTarget("local", "localhost", listener.port), timeout=2.0)
    # localhost may resolve to ::1 first, where nothing listens: both prove the resolver ran.
    assert result.outcome in (Outcome.OK, Outcome.REFUSED)
