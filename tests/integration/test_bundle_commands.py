"""Command outputs in a bundle: the runner, filters, failures, and the guard's own subprocess."""

from __future__ import annotations

import io
import sys
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from waagent_guard.bundle.plan import CommandEntry, Plan
from waagent_guard.bundle.sources import CommandOutcome, run_command
from waagent_guard.bundle.writer import BundleWriter
from waagent_guard.commands.bundle import TerminalProgress, agent_units, host_name, read_agent_paths
from waagent_guard.sysroot import Sysroot

IPTABLES = b"""-P INPUT ACCEPT
-A OUTPUT -d 168.63.129.16/32 -p tcp -m tcp --dport 53 -j ACCEPT
-A OUTPUT -d 10.0.0.1/32 -j ACCEPT
-A OUTPUT -d 168.63.129.16/32 -p tcp -m owner --uid-owner 0 -j ACCEPT
"""


def entry(
    name: str,
    argv: Sequence[str],
    *,
    line_filter: str | None = None,
    ok: tuple[int, ...] | None = None,
    timeout: float = 10.0,
) -> CommandEntry:
    return CommandEntry(
        name, 1, tuple(argv), f"commands/{name}.txt", timeout, line_filter, ok, 1024 * 1024
    )


def write(
    tmp_path: Path, entries: list[CommandEntry], runner=run_command
) -> tuple[dict, dict[str, bytes]]:  # type: ignore[no-untyped-def]
    writer = BundleWriter(Sysroot(tmp_path), runner=runner)
    out = tmp_path / "b.tar.gz"
    result = writer.write(
        Plan(tuple(entries), ()),
        top="h-1",
        work_dir=tmp_path,
        max_total_bytes=10 * 1024 * 1024,
        destination=out,
    )
    with tarfile.open(out) as archive:
        members = {m.name: archive.extractfile(m).read() for m in archive}  # type: ignore[union-attr]
    return result.manifest, members


def test_firewall_rules_are_filtered_to_the_wireserver_and_outputs_redacted(tmp_path: Path) -> None:
    calls: list[tuple[tuple[str, ...], float]] = []

    def runner(
        argv: Sequence[str], timeout: float, stdout: BinaryIO, stderr: BinaryIO
    ) -> CommandOutcome:
        calls.append((tuple(argv), timeout))
        if argv[0] == "iptables":
            stdout.write(IPTABLES)
        else:
            stdout.write(b"Fetching https://a.blob/x?sv=1&sig=SECRET\n")
            stderr.write(b"warning: something\n")
        return CommandOutcome(3)

    manifest, members = write(
        tmp_path,
        [
            entry("iptables-security", ["iptables", "-S"], line_filter=r"168\.63\.129\.16"),
            entry("journal", ["journalctl", "-u", "x"]),
        ],
        runner,
    )
    assert members["h-1/commands/iptables-security.txt"] == (
        b"-A OUTPUT -d 168.63.129.16/32 -p tcp -m tcp --dport 53 -j ACCEPT\n"
        b"-A OUTPUT -d 168.63.129.16/32 -p tcp -m owner --uid-owner 0 -j ACCEPT\n"
    )
    assert members["h-1/commands/journal.txt"] == b"Fetching https://a.blob/x?[REDACTED]\n"
    assert members["h-1/commands/journal.stderr.txt"] == b"warning: something\n"
    journal = next(m for m in manifest["members"] if m["name"] == "h-1/commands/journal.txt")
    assert journal["notes"] == ["exit status 3"] and journal["redactions"] == {"sas_url": 1}
    assert calls[0] == (("iptables", "-S"), 10.0)


def test_missing_commands_timeouts_and_guard_failures_are_skipped_with_reasons(
    tmp_path: Path,
) -> None:
    manifest, members = write(
        tmp_path,
        [
            entry("missing", ["/nonexistent/waagent-guard-test-binary"]),
            entry("slow", [sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5),
            entry(
                "broken-guard",
                [
                    sys.executable,
                    "-c",
                    "import sys; sys.stderr.write('boom: module broken'); sys.exit(70)",
                ],
                ok=(0, 1, 2),
            ),
            entry("fine", [sys.executable, "-c", "import os; print(os.environ['LC_ALL'])"]),
        ],
    )
    reasons = {item["item"]: item["reason"] for item in manifest["skipped"]}
    assert (
        reasons["missing"] == "not run: /nonexistent/waagent-guard-test-binary: command not found"
    )
    assert reasons["slow"] == "not run: timed out after 0.5 s"
    assert reasons["broken-guard"] == "failed with exit status 70: boom: module broken"
    assert members["h-1/commands/fine.txt"] == b"C\n"
    assert sorted(members) == ["h-1/MANIFEST.json", "h-1/commands/fine.txt"]


def test_the_guards_own_status_runs_as_a_real_subprocess(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    argv = [sys.executable, "-m", "waagent_guard", "status", "--json", "--root", str(tmp_path)]
    manifest, members = write(tmp_path, [entry("waagent-guard-status", argv, ok=(0, 1, 2))])
    status = members.get("h-1/commands/waagent-guard-status.txt")
    skipped = [item["reason"] for item in manifest["skipped"]]
    assert (status is not None and status.lstrip().startswith(b"{")) or skipped


def test_agent_paths_units_and_host_name_come_from_the_tree(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/waagent.conf").write_text(
        "Lib.Dir=/data/waagent\nExtension.LogDir=/var/log/custom\n"
    )
    (tmp_path / "etc/hostname").write_text("my host!\n")
    (tmp_path / "usr/lib/systemd/system").mkdir(parents=True)
    (tmp_path / "usr/lib/systemd/system/waagent.service").write_text("[Service]\n")
    sysroot = Sysroot(tmp_path)
    paths = read_agent_paths(sysroot)
    assert (paths.lib_dir, paths.extension_log_dir, paths.problem) == (
        "/data/waagent",
        "/var/log/custom",
        None,
    )
    assert agent_units(sysroot) == ("waagent.service",)
    assert host_name(sysroot) == "my_host"
    empty = Sysroot(tmp_path / "nothing")
    assert agent_units(empty) == ("walinuxagent.service", "waagent.service")
    assert host_name(empty) == "unknown-host"


def test_progress_rewrites_one_line_and_clears_it() -> None:
    stream = io.StringIO()
    progress = TerminalProgress(stream)
    progress("bundle: 1/2 a")
    progress("bundle: 2/2 b")
    progress("")
    assert stream.getvalue() == "\r\x1b[Kbundle: 1/2 a\r\x1b[Kbundle: 2/2 b\r\x1b[K"
