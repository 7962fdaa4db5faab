"""`waagent-guard bundle` against a planted-secrets tree: real files, real archives."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import tarfile
import tracemalloc
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.privileges import require_nobody_python
from waagent_guard.bundle import read_bundle
from waagent_guard.bundle.sources import CommandOutcome, open_regular
from waagent_guard.bundle.writer import TOTAL_CAP_REASON
from waagent_guard.cli import main
from waagent_guard.commands.bundle import BundleRequest, create_bundle
from waagent_guard.errors import GuardError, SecretLeakError, WriteError
from waagent_guard.redact import DEFAULT_RULES, SAS_SIGNATURE, SAS_URL
from waagent_guard.sysroot import Sysroot

DATA = Path(__file__).resolve().parent.parent / "data" / "bundle"
EXT_LOG = "var/log/azure/Microsoft.Azure.RecoveryServices.VMSnapshotLinux"


def guard_runner(
    argv: Sequence[str], timeout: float, stdout: BinaryIO, stderr: BinaryIO
) -> CommandOutcome:
    """Stands in for the guard's own status/doctor (a real subprocess is tested separately)."""
    stdout.write(
        json.dumps({"argv": list(argv), "note": "sig=CANARY-command-sig"}).encode() + b"\n"
    )
    return CommandOutcome(0)


def planted_tree(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    shutil.copytree(DATA / "tree", root, symlinks=True)
    rotated = (DATA / "rotated-waagent.log").read_bytes()
    (root / "var/log/waagent.log-20240101.gz").write_bytes(gzip.compress(rotated))
    with zipfile.ZipFile(
        root / "var/lib/waagent/history/2024-01-03T00-00-00__3.zip", "w"
    ) as archive:
        archive.writestr(
            "ExtensionsConfig.xml", "<Blob>https://a.blob/p?sv=1&amp;sig=CANARY-zip-sas</Blob>\n"
        )
        archive.writestr("Certificates.pem", "-----BEGIN PRIVATE KEY-----\nCANARY\n")
        archive.writestr("../evil.txt", "x\n")
    return root


def bundle(root: Path, out: Path, **request: object) -> dict:
    result = create_bundle(
        BundleRequest(output=out, **request),
        sysroot=Sysroot(root),  # type: ignore[arg-type]
        runner=guard_runner,
    )
    assert result.path == out
    return result.manifest


def members_of(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive, "r:*") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]


def test_planted_secrets_never_reach_the_archive_and_each_is_counted(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    out = tmp_path / "b.tar.gz"
    manifest = bundle(root, out)
    contents = members_of(out)
    leaked = [name for name, data in contents.items() if b"CANARY" in data]
    assert leaked == []
    by_source = {m["source"]: m for m in manifest["members"]}
    for source in [
        "/var/lib/waagent/ovf-env.xml",
        "/var/lib/waagent/ExtensionsConfig.3.xml",
        "/var/lib/waagent/waagent_status.json",
        "/etc/waagent.conf",
        "/var/log/waagent.log",
        f"/{EXT_LOG}/extension.log",
        f"/{EXT_LOG}/shell.log",
        "/var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0/config/0.settings",
        "/var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0/status/0.status",
        "/var/lib/waagent/history/2024-01-02T00-00-00__2/ExtensionsConfig.xml",
    ]:
        planted = (root / source.lstrip("/")).read_bytes().count(b"CANARY")
        assert sum(by_source[source]["redactions"].values()) == planted, source
    rotated = by_source["/var/log/waagent.log-20240101.gz"]
    assert rotated["name"].endswith("/var/log/waagent.log-20240101")
    assert rotated["redactions"] == {"pem_private_key": 1, "protected_settings": 1, "sas_url": 1}
    assert "decompressed from gzip; stored as plain text" in rotated["notes"]
    zipped = [m for m in manifest["members"] if m["source"].endswith("__3.zip")]
    assert [m["name"].split("/", 1)[1] for m in zipped] == [
        "var/lib/waagent/history/2024-01-03T00-00-00__3.zip/ExtensionsConfig.xml"
    ]
    skipped = {item["source"]: item["reason"] for item in manifest["skipped"]}
    for name in [
        "Certificates.pem",
        "TransportPrivate.pem",
        "Certificates.p7m",
        "1A2B3C.prv",
        "1A2B3C.crt",
        "CustomData",
    ]:
        assert skipped[f"/var/lib/waagent/{name}"] == "secret material, never collected"
    zip_name = "/var/lib/waagent/history/2024-01-03T00-00-00__3.zip"
    assert skipped[f"{zip_name}:Certificates.pem"] == "secret material, never collected"
    assert "unsafe name" in skipped[f"{zip_name}:../evil.txt"]


def test_archive_members_equal_the_manifest_with_hashes_modes_and_one_top_folder(
    tmp_path: Path,
) -> None:
    root = planted_tree(tmp_path)
    out = tmp_path / "b.tar.gz"
    manifest = bundle(root, out)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    with tarfile.open(out, "r:gz") as tar:
        infos = tar.getmembers()
    top = manifest["top"]
    assert top.startswith("planted-host-") and top.endswith("Z")
    names = [info.name for info in infos]
    assert sorted(names) == sorted(
        [m["name"] for m in manifest["members"]] + [f"{top}/MANIFEST.json"]
    )
    assert all(name.startswith(top + "/") for name in names)
    assert all(info.isfile() and info.mode == 0o600 for info in infos)
    contents = members_of(out)
    import hashlib

    for member in manifest["members"]:
        data = contents[member["name"]]
        assert member["size"] == len(data)
        assert member["sha256"] == hashlib.sha256(data).hexdigest()
    assert f"{top}/var/log/waagent.log" in names
    assert f"{top}/commands/waagent-guard-status.txt" in names
    assert f"{top}/commands/ls-alF-lib-dir.txt" in names
    assert b"Certificates.pem" in contents[f"{top}/commands/ls-alF-lib-dir.txt"]


def test_doctor_can_read_the_bundle_back(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    out = tmp_path / "b.tar.xz"
    manifest = bundle(root, out, xz=True)
    with read_bundle(out) as contents:
        assert contents.top == manifest["top"]
        assert contents.manifest["members"] == manifest["members"]
        assert contents.problems == []
        assert b"Azure Linux Agent Version" in contents.path("/var/log/waagent.log").read_bytes()
        assert contents.read_bytes("/etc/hostname") == b"planted-host\n"
        assert contents.sysroot.path("/etc/waagent.conf").is_file()
        extracted = contents.root
    assert not extracted.exists()


def test_symlinks_never_lead_out_of_the_collected_set(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    outside = tmp_path / "outside-secret.log"
    outside.write_text("CANARY-outside\n")
    (root / "etc/shadow").write_text("root:CANARY-shadow:1:0\n")
    logs = root / EXT_LOG
    (logs / "abs-host.log").symlink_to(outside)  # absolute: resolves inside the root, not the host
    (logs / "dotdot.log").symlink_to("../../../../../../../etc/shadow")  # clamps at the root
    (logs / "to-conf.log").symlink_to("/etc/waagent.conf")  # collected anyway: followed
    (logs / "loop.log").symlink_to("loop.log")
    (logs / "dir-link").symlink_to("/var/lib/waagent")
    (root / "var/log/azure/Linked").symlink_to("/etc")
    manifest = bundle(root, tmp_path / "b.tar.gz")
    contents = members_of(tmp_path / "b.tar.gz")
    assert not any(b"CANARY" in data for data in contents.values())
    skipped = {item["source"]: item["reason"] for item in manifest["skipped"]}
    assert "dangling" in skipped[f"/{EXT_LOG}/abs-host.log"]
    assert skipped[f"/{EXT_LOG}/dotdot.log"] == "secret material, never collected"
    assert "dangling or looping" in skipped[f"/{EXT_LOG}/loop.log"]
    assert "symlink to a dir" in skipped[f"/{EXT_LOG}/dir-link"]
    assert "symlink to a dir" in skipped["/var/log/azure/Linked"]
    followed = [m for m in manifest["members"] if m["source"] == f"/{EXT_LOG}/to-conf.log"]
    assert len(followed) == 1 and followed[0]["redactions"] == {"url_credentials": 1}


def test_fifos_and_sockets_are_never_opened(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    os.mkfifo(root / EXT_LOG / "pipe.log")
    manifest = bundle(root, tmp_path / "b.tar.gz")
    skipped = {item["source"]: item["reason"] for item in manifest["skipped"]}
    assert skipped[f"/{EXT_LOG}/pipe.log"] == "not a regular file (fifo), never read"


def test_a_2_gb_sparse_log_is_capped_to_its_tail_with_bounded_memory(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    log = root / "var/log/waagent.log"
    with open(log, "r+b") as handle:
        handle.truncate(2 * 1024**3)
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n2024-01-02T00:00:09Z INFO ExtHandler the newest line sig=CANARY-tail\n")
    peaks: list[int] = []

    def measure(message: str) -> None:
        # Peak since the previous entry: planning (before the first entry) reads no contents.
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.reset_peak()

    tracemalloc.start()
    try:
        result = create_bundle(
            BundleRequest(output=tmp_path / "b.tar.gz"),
            sysroot=Sysroot(root),
            runner=guard_runner,
            progress=measure,
        )
    finally:
        tracemalloc.stop()
    manifest = result.manifest
    assert max(peaks[1:]) < 16 * 1024 * 1024
    member = next(m for m in manifest["members"] if m["source"] == "/var/log/waagent.log")
    assert member["truncated"] is True
    assert member["size"] <= 30 * 1024 * 1024
    data = members_of(tmp_path / "b.tar.gz")[member["name"]]
    assert data.endswith(b"the newest line sig=[REDACTED]\n")
    assert b"CANARY" not in data


def test_permission_denied_files_are_skipped_when_run_as_nobody(tmp_path: Path) -> None:
    import subprocess
    import sys
    import tempfile

    require_nobody_python()
    shared = Path(tempfile.mkdtemp(prefix="bundle-nobody-"))
    try:
        shared.chmod(0o755)
        root = shared / "root"
        shutil.copytree(DATA / "tree", root)
        for path in [root, *root.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        secret = root / "var/lib/waagent/GoalState.3.xml"
        secret.chmod(0o600)
        outdir = shared / "out"
        outdir.mkdir()
        os.chown(outdir, 65534, 65534)
        out = outdir / "b.tar.gz"
        completed = subprocess.run(
            [
                "setpriv",
                "--reuid=nobody",
                "--regid=nogroup",
                "--clear-groups",
                sys.executable,
                "-m",
                "waagent_guard",
                "bundle",
                "--root",
                str(root),
                "-o",
                str(out),
            ],
            capture_output=True,
            timeout=120,
            env=dict(os.environ, HOME=str(shared)),
            check=False,
        )
        assert completed.returncode == 0, completed.stderr
        with read_bundle(out) as contents:
            skipped = {item["source"]: item["reason"] for item in contents.manifest["skipped"]}
            assert skipped["/var/lib/waagent/GoalState.3.xml"] == "unreadable: Permission denied"
            assert "var/lib/waagent/ExtensionsConfig.3.xml" in contents.members
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_file_deleted_between_stat_and_read_is_skipped(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    victim = root / "var/lib/waagent/GoalState.3.xml"

    def deleting_opener(path: Path) -> int:
        if path == victim:
            victim.unlink()
        return open_regular(path)

    result = create_bundle(
        BundleRequest(output=tmp_path / "b.tar.gz"),
        sysroot=Sysroot(root),
        runner=guard_runner,
        opener=deleting_opener,
    )
    skipped = {item["source"]: item["reason"] for item in result.manifest["skipped"]}
    assert skipped["/var/lib/waagent/GoalState.3.xml"] == "vanished before it was read"


def test_a_file_that_shrinks_or_grows_while_read_is_read_as_it_was(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    shrinking = root / "var/log/waagent.log"
    growing = root / EXT_LOG / "shell.log"

    def racing_opener(path: Path) -> int:
        fd = open_regular(path)
        if path == shrinking:
            os.truncate(path, 100)
        if path == growing:
            with open(path, "ab") as handle:
                handle.write(b"appended after the open\n")
        return fd

    result = create_bundle(
        BundleRequest(output=tmp_path / "b.tar.gz"),
        sysroot=Sysroot(root),
        runner=guard_runner,
        opener=racing_opener,
    )
    members = {m["source"]: m for m in result.manifest["members"]}
    assert members["/var/log/waagent.log"]["truncated"] is True
    assert any("shrank while read" in note for note in members["/var/log/waagent.log"]["notes"])
    data = members_of(tmp_path / "b.tar.gz")[members[f"/{EXT_LOG}/shell.log"]["name"]]
    assert b"appended" not in data


def test_a_file_replaced_between_stat_and_open_is_not_read(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    victim = root / "var/lib/waagent/GoalState.3.xml"

    def replacing_opener(path: Path) -> int:
        if path == victim:
            victim.rename(victim.with_name("kept-open-so-the-inode-stays-taken"))
            victim.write_text("replaced\n")
        return open_regular(path)

    result = create_bundle(
        BundleRequest(output=tmp_path / "b.tar.gz"),
        sysroot=Sysroot(root),
        runner=guard_runner,
        opener=replacing_opener,
    )
    skipped = {item["source"]: item["reason"] for item in result.manifest["skipped"]}
    assert skipped["/var/lib/waagent/GoalState.3.xml"] == "replaced while read, not read"


def test_a_full_disk_gives_a_write_error_and_leaves_no_file(tmp_path: Path) -> None:
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    root = planted_tree(tmp_path)
    noise = os.urandom(3 * 1024 * 1024).hex().encode()
    (root / "var/log/waagent.log").write_bytes(
        b"".join(noise[index : index + 63] + b"\n" for index in range(0, len(noise), 63))
    )
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True, timeout=30
    )
    try:
        with pytest.raises(WriteError) as raised:
            bundle(root, small / "b.tar.gz")
        assert "disk full" in raised.value.message
        assert "no bundle was left behind" in raised.value.message
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True, timeout=30)


def test_the_verification_pass_deletes_an_archive_with_a_surviving_secret(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    weakened = tuple(rule for rule in DEFAULT_RULES if rule not in (SAS_URL, SAS_SIGNATURE))
    with pytest.raises(SecretLeakError) as raised:
        create_bundle(
            BundleRequest(output=out / "b.tar.gz"),
            sysroot=Sysroot(root),
            runner=guard_runner,
            rules=weakened,
        )
    assert "sas_signature" in raised.value.message
    assert "/var/lib/waagent/ExtensionsConfig.3.xml" in raised.value.message
    assert os.listdir(out) == []


def test_a_secret_in_a_member_that_skips_the_redactor_deletes_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MANIFEST.json is written by the guard, not by the redactor: a command that could not
    # run has its error in its skip reason, redacted on its own (redact_text). Were that
    # forgotten, the verification, which scans it like every other byte, must catch it.
    from waagent_guard.bundle import writer

    monkeypatch.setattr(writer, "redact_text", lambda text: text)

    def failing_runner(argv: Sequence[str], timeout: float, stdout: BinaryIO,
                       stderr: BinaryIO) -> CommandOutcome:
        return CommandOutcome(None, "cannot fetch https://a.blob/p?sv=1&sig=CANARY-error-sig")

    root = planted_tree(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(SecretLeakError) as raised:
        create_bundle(BundleRequest(output=out / "b.tar.gz"), sysroot=Sysroot(root),
                      runner=failing_runner)
    assert "MANIFEST.json: a secret (sas_signature)" in raised.value.message
    assert os.listdir(out) == []


def test_an_archive_shorter_than_what_the_compressor_wrote_is_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from waagent_guard.bundle.compress import CompressingWriter

    monkeypatch.setattr(CompressingWriter, "raw_bytes",
                        property(lambda self: self._raw.written + 1))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(GuardError, match=r"the written archive has \d+ bytes, the compressor"):
        bundle(planted_tree(tmp_path), out / "b.tar.gz")
    assert os.listdir(out) == []


def test_commands_run_on_their_own_thread_while_files_are_read(tmp_path: Path) -> None:
    # The files come first in the plan; a file open waits until a command has started.
    # Run in turn (the old way) the first open would wait for nothing and fail.
    import threading

    started = threading.Event()
    waited: list[bool] = []

    def runner(argv: Sequence[str], timeout: float, stdout: BinaryIO,
               stderr: BinaryIO) -> CommandOutcome:
        started.set()
        return guard_runner(argv, timeout, stdout, stderr)

    def opener(path: Path) -> int:
        waited.append(started.wait(10 if all(waited) else 0))
        return open_regular(path)

    out = tmp_path / "out"
    out.mkdir()
    result = create_bundle(BundleRequest(output=out / "b.tar.gz"),
                           sysroot=Sysroot(planted_tree(tmp_path)), runner=runner, opener=opener)
    assert waited and all(waited)
    assert any(member["kind"] == "command" for member in result.manifest["members"])
    assert os.listdir(out) == ["b.tar.gz"]


def test_commands_passed_over_by_the_total_cap_do_not_hold_the_bundle(tmp_path: Path) -> None:
    calls: list[str] = []

    def runner(argv: Sequence[str], timeout: float, stdout: BinaryIO,
               stderr: BinaryIO) -> CommandOutcome:
        calls.append(" ".join(argv))
        return guard_runner(argv, timeout, stdout, stderr)

    root = planted_tree(tmp_path)
    (root / "var/log/waagent.log").write_bytes(b"INFO line\n" * 5000)
    out = tmp_path / "out"
    out.mkdir()
    result = create_bundle(BundleRequest(output=out / "b.tar.gz", max_total_bytes=8 * 1024),
                           sysroot=Sysroot(root), runner=runner)
    assert not any(member["kind"] == "command" for member in result.manifest["members"])
    assert any(item["reason"] == TOTAL_CAP_REASON and "status" in item["source"]
               for item in result.manifest["skipped"])
    assert os.listdir(out) == ["b.tar.gz"]


def test_the_total_cap_keeps_the_must_haves(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    (root / "var/log/waagent.log").write_bytes(b"INFO line\n" * 1000)
    (root / "var/log/waagent.log.1").write_bytes(b"INFO old line\n" * 2000)
    manifest = bundle(root, tmp_path / "b.tar.gz", max_total_bytes=20 * 1024)
    sources = {m["source"] for m in manifest["members"]}
    assert {
        "/var/log/waagent.log",
        "/var/lib/waagent/ovf-env.xml",
        f"/{EXT_LOG}/shell.log",
    } <= sources
    capped = [item for item in manifest["skipped"] if item["reason"] == TOTAL_CAP_REASON]
    assert capped
    assert manifest["total_bytes"] <= 20 * 1024
    rotated = next(m for m in manifest["members"] if m["source"] == "/var/log/waagent.log.1")
    assert rotated["truncated"] is True


def test_the_per_file_cap_keeps_the_tail_of_logs_and_the_head_of_the_rest(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    (root / "var/log/waagent.log").write_bytes(b"".join(b"line %05d\n" % n for n in range(1000)))
    (root / "etc/waagent.conf").write_bytes(b"".join(b"Key%05d=y\n" % n for n in range(1000)))
    manifest = bundle(root, tmp_path / "b.tar.gz", max_file_bytes=1000)
    contents = members_of(tmp_path / "b.tar.gz")
    top = manifest["top"]
    log = contents[f"{top}/var/log/waagent.log"]
    assert log.endswith(b"line 00999\n") and not log.startswith(b"line 00000")
    conf = contents[f"{top}/etc/waagent.conf"]
    assert conf.startswith(b"Key00000=y\n") and conf.endswith(b"\n")


def test_since_skips_extension_logs_not_modified_recently(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    os.utime(root / EXT_LOG / "shell.log", (1_000_000, 1_000_000))
    manifest = bundle(root, tmp_path / "b.tar.gz", since_seconds=3600.0)
    skipped = {item["source"]: item["reason"] for item in manifest["skipped"]}
    assert skipped[f"/{EXT_LOG}/shell.log"] == "not modified within --since"


def test_the_cli_writes_to_the_default_directory_with_mode_0600(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    (root / "etc/waagent-guard").mkdir()
    (root / "etc/waagent-guard/guard.toml").write_text('[bundle]\noutput_dir = "/srv/bundles"\n')
    stdout, stderr = io.StringIO(), io.StringIO()
    code = main(["bundle", "--root", str(root)], stdout=stdout, stderr=stderr)
    assert code == 0, stderr.getvalue()
    written = list((root / "srv/bundles").iterdir())
    assert len(written) == 1 and written[0].name.startswith("planted-host-")
    assert written[0].name.endswith(".tar.gz")
    assert stat.S_IMODE(written[0].stat().st_mode) == 0o600
    assert str(written[0]) in stdout.getvalue()
    with read_bundle(written[0]) as contents:
        status = json.loads(contents.read_bytes("commands/waagent-guard-status.txt"))
        assert isinstance(status, dict)


def test_the_cli_streams_a_verified_archive_to_stdout(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    raw = io.BytesIO()
    stdout = io.TextIOWrapper(raw)
    stderr = io.StringIO()
    code = main(
        ["bundle", "--root", str(root), "-o", "-", "--max-file-size", "1M"],
        stdout=stdout,
        stderr=stderr,
    )
    assert code == 0, stderr.getvalue()
    assert "bundle written to stdout" in stderr.getvalue()
    with tarfile.open(fileobj=io.BytesIO(raw.getvalue()), mode="r:gz") as tar:
        assert any(name.endswith("/MANIFEST.json") for name in tar.getnames())


def test_the_cli_refuses_a_directory_as_output(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    stderr = io.StringIO()
    assert main(["bundle", "--root", str(root), "-o", str(tmp_path)], stderr=stderr) == 73
    assert "is a directory" in stderr.getvalue()
