"""Hostile trees and files under --root: each parse failure is a reported problem (issue 14 #5).

Each file the guard reads is replaced by each hostile node (FIFO, /dev/zero and
/dev/urandom links, a directory, a symlink loop) and `status`, `doctor`,
`metrics` and `bundle` run in-process under a watchdog: the exit code must be a
documented one (0/1/2/4 or a sysexits usage/config/input code), never 70, an
exception or a hang. Then the crashes the issue names, one regression test
each, and a seeded sample of the fuzzer (tests/fuzzing.py; `make torture` runs
2,000 cases).
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path

import pytest

from tests import fuzzing
from waagent_guard.agent.conf import agent_config, parse_conf
from waagent_guard.agent.extensions import scan_lib_dir
from waagent_guard.agent.log import guest_timezone
from waagent_guard.agent.process import (
    PIDFILE_INVALID,
    ProcessScanError,
    check_pidfile,
    find_agent_processes,
)
from waagent_guard.cli import main
from waagent_guard.commands.bundle import host_name
from waagent_guard.errors import ConfigError
from waagent_guard.settings import load_settings
from waagent_guard.sysroot import Sysroot
from waagent_guard.timeutil import iso_utc

VMSNAPSHOT = "var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0"
READ_FILES = (
    "etc/waagent.conf", "var/log/waagent.log", "var/run/waagent.pid", "etc/localtime",
    "etc/os-release", "etc/hostname", "etc/waagent-guard/guard.toml",
    "var/lib/dhcp/dhclient.eth0.leases", "proc/100/cmdline", "proc/100/stat",
    "proc/100/status", "proc/stat", "proc/meminfo",
    "var/log/azure/Microsoft.Azure.RecoveryServices.VMSnapshotLinux/extension.log",
    f"{VMSNAPSHOT}/config/HandlerState", f"{VMSNAPSHOT}/config/HandlerStatus",
    f"{VMSNAPSHOT}/status/1.status", f"{VMSNAPSHOT}/config/1.settings",
    "var/lib/waagent-guard/state.json",
)
NODES = {
    "fifo": fuzzing.m_fifo,
    "dev_zero": lambda path, rng: _link(path, "/dev/zero"),
    "dev_urandom": lambda path, rng: _link(path, "/dev/urandom"),
    "directory": fuzzing.m_directory,
    "loop": lambda path, rng: _link(path, path.name),
}


def _link(path: Path, target: str) -> str:
    fuzzing._replace(path)
    path.symlink_to(target)
    return target


@pytest.fixture(autouse=True)
def _fuzz_worker_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in the fuzz worker: the bundle's status/doctor commands run in-process."""
    from waagent_guard.commands import bundle
    from waagent_guard.doctor import facts

    assert bundle.create_bundle.__kwdefaults__ is not None
    monkeypatch.setitem(bundle.create_bundle.__kwdefaults__, "runner",
                        fuzzing.in_process_runner)
    monkeypatch.setattr(facts, "CPU_SAMPLE_SECONDS", 0.0)


def _tree(tmp_path: Path, kind: str = "healthy") -> Path:
    root = tmp_path / "root"
    fuzzing.build_base(kind, root)
    return root


def _verdicts(root: Path, out: Path,
              commands: tuple[str, ...] = fuzzing.COMMANDS) -> dict[str, str]:
    out.mkdir(exist_ok=True)
    outcomes = [fuzzing.run_command(command, root, out, timeout=20.0) for command in commands]
    return {o.command: o.verdict if o.verdict == "ok" else f"{o.verdict}: {o.kind}"
            for o in outcomes}


@pytest.mark.parametrize("node", sorted(NODES))
@pytest.mark.parametrize("target", READ_FILES)
def test_a_hostile_node_where_a_file_is_read_is_a_problem_not_a_crash_or_hang(
    tmp_path: Path, target: str, node: str
) -> None:
    root = _tree(tmp_path)
    NODES[node](root / target, random.Random(0))
    verdicts = _verdicts(root, tmp_path / "out", ("status", "doctor", "metrics"))
    assert verdicts == {"status": "ok", "doctor": "ok", "metrics": "ok"}


@pytest.mark.parametrize("node", sorted(NODES))
def test_the_bundle_survives_every_read_file_replaced_by_a_hostile_node(
    tmp_path: Path, node: str
) -> None:
    root = _tree(tmp_path)
    for target in READ_FILES:
        if target != "etc/waagent-guard/guard.toml":  # a broken config is exit 78, checked above
            NODES[node](root / target, random.Random(0))
    assert _verdicts(root, tmp_path / "out", ("bundle",)) == {"bundle": "ok"}


def test_status_reports_an_unreadable_agent_process_as_unknown(tmp_path: Path) -> None:
    """A directory where /proc/PID/cmdline should be: not seen is "unknown" (exit 4)."""
    root = _tree(tmp_path)
    fuzzing.m_directory(root / "proc/100/cmdline", random.Random(0))
    out = io.StringIO()
    code = main(["status", "--root", str(root), "--json"], stdout=out, stderr=io.StringIO())
    assert code == 4
    assert json.loads(out.getvalue())["health"] == "unknown"


# -- the crashes issue 14 item 5 names, one regression test each ------------------------------


@pytest.mark.parametrize("moment", [2**40, -(2**40), 1e18, float("nan"), float("inf"),
                                    -1.0, 253402300800.0])
def test_iso_utc_shows_an_absurd_timestamp_as_absent(moment: float) -> None:
    assert iso_utc(moment) is None


def test_iso_utc_still_formats_real_times() -> None:
    assert iso_utc(0) == "1970-01-01T00:00:00Z"
    assert iso_utc(253402300799.0) == "9999-12-31T23:59:59Z"


@pytest.mark.parametrize("cut", [0, 4, 20, 44, 60, 200, -1])
def test_a_truncated_or_nul_localtime_is_utc(tmp_path: Path, cut: int) -> None:
    data = fuzzing.TZIF.read_bytes()
    path = tmp_path / "localtime"
    path.write_bytes(b"\0" * 64 if cut == -1 else data[:cut])
    assert str(guest_timezone(path)) == "UTC"


def test_a_localtime_link_with_a_nul_or_dotdot_zone_is_utc(tmp_path: Path) -> None:
    path = tmp_path / "localtime"
    path.symlink_to("/usr/share/zoneinfo/../../../etc/passwd")
    assert str(guest_timezone(path)) == "UTC"


@pytest.mark.parametrize("document", [b"[" * 100000 + b"]" * 100000,
                                      b'{"a":' * 5000 + b"1" + b"}" * 5000,
                                      b'[{"status": {"status": "success", "code": ' + b"9" * 5000
                                      + b"}}]"])
def test_deep_or_out_of_range_json_in_extension_files_is_a_problem(
    tmp_path: Path, document: bytes
) -> None:
    root = _tree(tmp_path)
    lib = root / "var/lib/waagent"
    (root / VMSNAPSHOT / "status/1.status").write_bytes(document)
    (root / VMSNAPSHOT / "config/HandlerStatus").write_bytes(document)
    state = scan_lib_dir(lib, now=fuzzing._load_doctor_support().NOW)
    handler = state.handler("Microsoft.Azure.RecoveryServices.VMSnapshotLinux")
    assert handler is not None
    assert any("malformed JSON" in problem for problem in handler.problems), handler.problems
    assert _verdicts(root, tmp_path / "out") == dict.fromkeys(fuzzing.COMMANDS, "ok")


@pytest.mark.parametrize("content", [b"100100100100100100100100100", b"100\n100\n",
                                     b"100" * 2000, b"9" * 4000, b"\xff100", b"100\0"])
def test_check_pidfile_on_repeated_or_garbage_content_is_invalid(
    tmp_path: Path, content: bytes
) -> None:
    root = _tree(tmp_path)
    pidfile = root / "var/run/waagent.pid"
    pidfile.write_bytes(content)
    state = check_pidfile(pidfile, root / "proc")
    assert state.state == PIDFILE_INVALID


@pytest.mark.parametrize("node", sorted(NODES))
def test_check_pidfile_on_a_hostile_node_is_invalid_and_never_blocks(
    tmp_path: Path, node: str
) -> None:
    pidfile = tmp_path / "waagent.pid"
    NODES[node](pidfile, random.Random(0))
    assert check_pidfile(pidfile, tmp_path).state == PIDFILE_INVALID


@pytest.mark.parametrize("node", ["directory", "loop"])
@pytest.mark.parametrize("name", ["cmdline", "stat", "status"])
def test_a_directory_or_loop_where_a_proc_file_should_be_is_a_scan_error(
    tmp_path: Path, node: str, name: str
) -> None:
    root = _tree(tmp_path)
    NODES[node](root / "proc/100" / name, random.Random(0))
    with pytest.raises(ProcessScanError, match="/proc/100"):
        find_agent_processes(root / "proc")


@pytest.mark.parametrize("value", ["/\0etc", "/var/lib/\0", "relative/\0"])
def test_a_nul_in_a_path_from_waagent_conf_uses_the_default_and_says_so(value: str) -> None:
    document = parse_conf(f"Lib.Dir={value}\nExtension.LogDir={value}\n".encode())
    config = agent_config(document)
    assert config.lib_dir == "/var/lib/waagent"
    assert config.extension_log_dir == "/var/log/azure"
    assert any("Lib.Dir holds a NUL byte" in problem for problem in document.problems)


def test_a_nul_in_lib_dir_under_root_is_not_a_crash(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    with open(root / "etc/waagent.conf", "ab") as handle:
        handle.write(b"Lib.Dir=/\0etc\nExtension.LogDir=/\0etc\n")
    assert _verdicts(root, tmp_path / "out") == dict.fromkeys(fuzzing.COMMANDS, "ok")


@pytest.mark.parametrize("name", ["Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.\udcff",
                                  "Microsoft.Azure.RecoveryServices.VMSnapshotLinux-"
                                  "99999999999999999999999.0",
                                  "-Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0",
                                  "Microsoft.Azure.RecoveryServices.VMSnapshotLinux-" + "1." * 100,
                                  "Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0\n"])
def test_flipped_handler_directory_names_are_scanned_without_crashing(
    tmp_path: Path, name: str
) -> None:
    root = _tree(tmp_path)
    os.rename(root / VMSNAPSHOT, root / "var/lib/waagent" / name)
    scan_lib_dir(root / "var/lib/waagent", now=0.0)
    assert _verdicts(root, tmp_path / "out") == dict.fromkeys(fuzzing.COMMANDS, "ok")


@pytest.mark.parametrize("target", ["/dev/zero", "/dev/urandom"])
def test_dev_zero_links_never_swallow_memory(tmp_path: Path, target: str) -> None:
    """MemoryError on /dev/zero links: settings, /proc readers, host_name."""
    (tmp_path / "guard.toml").symlink_to(target)
    with pytest.raises(ConfigError, match="character device"):
        load_settings(tmp_path / "guard.toml")
    root = _tree(tmp_path)
    for name in ("etc/hostname", "proc/stat", "proc/meminfo", "proc/100/status"):
        _link(root / name, target)
    assert host_name(Sysroot(root)) == "unknown-host"
    assert _verdicts(root, tmp_path / "out", ("status", "metrics")) == {"status": "ok",
                                                                        "metrics": "ok"}


# -- the fuzzer's seeded sample (the torture suite runs 2,000 cases) ---------------------------

SAMPLE_SEED = 14
SAMPLE_CASES = 60


def test_a_seeded_sample_of_fuzzed_trees_has_no_crash_and_no_hang() -> None:
    stats = fuzzing.campaign(SAMPLE_SEED, SAMPLE_CASES, timeout=30.0)
    assert stats.cases == SAMPLE_CASES
    assert stats.runs == SAMPLE_CASES * len(fuzzing.COMMANDS)
    assert dict(stats.kinds) == {}, stats.examples


def test_the_mutator_is_deterministic(tmp_path: Path) -> None:
    first = fuzzing.case_tree(7, 5, tmp_path / "a")[1]
    (tmp_path / "b").mkdir()
    second = fuzzing.case_tree(7, 5, tmp_path / "b")[1]
    assert first == second


def test_status_and_doctor_never_show_a_secret_quoted_by_guest_files(tmp_path: Path) -> None:
    """Found by the secret-corpus torture: HandlerState, proxy credentials, a cmdline."""
    root = _tree(tmp_path)
    (root / VMSNAPSHOT / "config/HandlerState").write_bytes(b"params sv=1&sig=CANARY&se=2")
    with open(root / "etc/waagent.conf", "a", encoding="utf-8") as handle:
        handle.write("HttpProxy.Host=http://user:CANARYpw@proxy.example\nHttpProxy.Port=3128\n")
    (root / "proc/100/cmdline").write_bytes(
        b"python3\0-u\0" + str(root / "usr/sbin/waagent").encode()
        + b"\0-daemon\0GET https://a.blob.core.windows.net/c/b?sv=1&sig=CANARY&se=2\0")
    for argv in (["status", "--json"], ["status"], ["doctor", "--no-probe"],
                 ["doctor", "--no-probe", "--json"]):
        out = io.StringIO()
        code = main([*argv, "--root", str(root)], stdout=out, stderr=out)
        assert code in fuzzing.OK_EXITS
        assert "CANARY" not in out.getvalue(), argv


@pytest.mark.parametrize("node", ["fifo", "dev_zero", "directory"])
def test_doctor_bundle_refuses_an_archive_path_that_is_not_a_regular_file(
    tmp_path: Path, node: str
) -> None:
    path = tmp_path / "bundle.tar.gz"
    NODES[node](path, random.Random(0))
    err = io.StringIO()
    with fuzzing._alarm(20.0):
        code = main(["doctor", "--bundle", str(path)], stdout=io.StringIO(), stderr=err)
    assert code == 65
    assert "not a regular file" in err.getvalue() and err.getvalue().count("\n") == 1


def test_a_lib_dir_name_too_long_for_the_filesystem_is_not_a_crash(tmp_path: Path) -> None:
    """Found by the 2,000-tree torture run: Path.exists() raised ENAMETOOLONG in doctor."""
    root = _tree(tmp_path)
    with open(root / "etc/waagent.conf", "a", encoding="utf-8") as handle:
        handle.write("Lib.Dir=/" + "a" * 5000 + "\n")
    assert _verdicts(root, tmp_path / "out") == dict.fromkeys(fuzzing.COMMANDS, "ok")
