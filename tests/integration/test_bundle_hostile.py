"""`bundle` against hostile outputs and guests: issue 13 item 1, issue 14 items 2 and 5."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest

from tests.integration.test_bundle_collect import EXT_LOG, bundle, members_of, planted_tree
from tests.secret_corpus import BLOCK_FORMS, CANARY, DER_PRIVATE_KEY, PFX_STORE, TEXT_FORMS
from waagent_guard.cli import main

SETTINGS = (
    "var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0/config/0.settings"
)


def _require_root(why: str) -> None:
    if os.geteuid() != 0:
        if os.environ.get("WG_REQUIRE_ALL") == "1":
            pytest.fail(f"WG_REQUIRE_ALL=1 but not root: {why}")
        pytest.skip(f"needs root: {why}")


def _make_node(path: Path, kind: str, tmp_path: Path) -> socket.socket | None:
    if kind == "directory":
        path.mkdir()
    elif kind == "symlink":
        target = tmp_path / "precious"
        target.write_text("keep me\n")
        path.symlink_to(target)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "socket":
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(path))
        return server
    elif kind == "device":
        _require_root("mknod of a character device")
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 7))  # same numbers as /dev/full
    return None


@pytest.mark.parametrize("kind", ["directory", "symlink", "fifo", "socket", "device"])
def test_bundle_never_replaces_an_output_path_that_is_not_a_regular_file(
    tmp_path: Path, kind: str
) -> None:
    root = planted_tree(tmp_path)
    out = tmp_path / "out"
    server = _make_node(out, kind, tmp_path)
    try:
        before = os.lstat(out)
        stderr = io.StringIO()
        assert main(["bundle", "--root", str(root), "-o", str(out)], stderr=stderr) == 73
        message = stderr.getvalue()
        assert message.count("\n") == 1 and f"-o {out}: is a" in message
        after = os.lstat(out)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
        if kind == "symlink":
            assert (tmp_path / "precious").read_text() == "keep me\n"
    finally:
        if server is not None:
            server.close()


def test_bundle_replaces_an_existing_regular_file_only_when_complete(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    out = tmp_path / "b.tar.gz"
    out.write_text("old")
    assert main(["bundle", "--root", str(root), "-o", str(out)], stdout=io.StringIO()) == 0
    assert members_of(out)


def test_a_full_disk_exits_73_with_one_line_and_leaves_nothing(tmp_path: Path) -> None:
    _require_root("mounting a size-limited tmpfs")
    root = planted_tree(tmp_path)
    noise = os.urandom(2 * 1024 * 1024).hex().encode()
    (root / "var/log/waagent.log").write_bytes(
        b"".join(noise[index : index + 63] + b"\n" for index in range(0, len(noise), 63))
    )
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)],
                   check=True, timeout=30)
    try:
        stderr = io.StringIO()
        code = main(["bundle", "--root", str(root), "-o", str(small / "b.tar.gz")], stderr=stderr)
        assert code == 73
        assert stderr.getvalue().count("\n") == 1 and "disk full" in stderr.getvalue()
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=True, timeout=30)


def _plant_every_form(root: Path) -> None:
    logs = root / EXT_LOG
    text = b"\n".join(TEXT_FORMS.values()) + b"\n"
    with open(root / "var/log/waagent.log", "ab") as handle:
        handle.write(text)
    for name, form in BLOCK_FORMS.items():
        (logs / f"{name}.log").write_bytes(b"INFO start\n" + form + b"\nINFO end\n")
    (logs / "certstore.log").write_bytes(BLOCK_FORMS["pem_certificate_store"])
    (logs / "store.pfx.log").write_bytes(PFX_STORE)
    (logs / "key.der.log").write_bytes(DER_PRIVATE_KEY)
    os.link(root / "var/lib/waagent/TransportPrivate.pem", logs / "hardlinked-key.log")
    (root / "var/log/cloud-init.log").write_bytes(
        b"2024 util.py[DEBUG]: Read user-data: {'users': [{'name': 'a', "
        b"'passwd': '$6$rounds=4096$CANARYsalt$CANARYhash'}], "
        b"'chpasswd': {'list': 'root:CANARY'}}\n" + text
    )
    (root / "etc/cloud/cloud.cfg.d").mkdir(parents=True)
    (root / "etc/cloud/cloud.cfg").write_bytes(BLOCK_FORMS["chpasswd_block"] + b"\n")
    (root / "etc/netplan").mkdir(parents=True)
    (root / "etc/netplan/50-wg.yaml").write_bytes(
        BLOCK_FORMS["netplan_wireguard"] + b"\n        private-key: CANARY+x=\n"
    )
    dropin = root / "lib/systemd/system/walinuxagent.service.d"
    dropin.mkdir(parents=True)
    (dropin / "proxy.conf").write_bytes(
        b"[Service]\nEnvironment=DB_PASSWORD=CANARY\n"
        b'Environment="http_proxy=http://u:p@CANARY@proxy:3128" "https_proxy=u:CANARY@proxy"\n'
    )


def test_every_secret_form_planted_in_a_guest_never_reaches_the_archive(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    _plant_every_form(root)
    out = tmp_path / "b.tar.gz"
    manifest = bundle(root, out, full=True)
    contents = members_of(out)
    leaked = sorted(name for name, data in contents.items() if CANARY in data)
    assert leaked == []
    sources = {member["source"] for member in manifest["members"]}
    assert {"/var/log/cloud-init.log", "/etc/cloud/cloud.cfg", "/etc/netplan/50-wg.yaml",
            "/lib/systemd/system/walinuxagent.service.d/proxy.conf"} <= sources
    by_source = {member["source"]: member for member in manifest["members"]}
    assert by_source[f"/{EXT_LOG}/store.pfx.log"]["redactions"] == {"der_material": 1}
    assert by_source[f"/{EXT_LOG}/hardlinked-key.log"]["redactions"] == {"pem_private_key": 1}


def test_extension_log_dir_from_the_guest_never_widens_what_is_collected(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    (root / "etc/waagent.conf").write_text("Extension.LogDir=/etc\nLib.Dir=/etc/../etc\n")
    (root / "etc/shadow").write_text("root:$6$CANARY:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:CANARY::\n")
    (root / "etc/ssh").mkdir()
    (root / "etc/ssh/ssh_host_ed25519_key").write_text("CANARY\n")
    out = tmp_path / "b.tar.gz"
    manifest = bundle(root, out)
    names = [name.split("/", 1)[1] for name in members_of(out)]
    assert not [name for name in names if name.startswith("etc/") and name not in (
        "etc/waagent.conf", "etc/hostname", "etc/os-release")]
    assert manifest["agent"]["extension_log_dir"] == "/var/log/azure"
    assert manifest["agent"]["lib_dir"] == "/var/lib/waagent"
    assert "Extension.LogDir=/etc is not below /var/log/" in manifest["agent"]["problem"]
    assert "Lib.Dir=/etc is not outside system directories" in manifest["agent"]["problem"]
    assert not any(CANARY in data for data in members_of(out).values())


def test_a_mutated_settings_file_is_redacted_whole_instead_of_failing_the_bundle(
    tmp_path: Path,
) -> None:
    root = planted_tree(tmp_path)
    (root / SETTINGS).write_bytes(b'{"runtimeSettings": [{"handlerSettings": '
                                  b'{"protectedSettings": "MIIBCANARY-unterminated\n')
    (root / "var/lib/waagent/ovf-env.xml").write_bytes(
        b"<Environment><UserPasswor>CANARY</UserPassword></Environment>\n"
    )
    out = tmp_path / "b.tar.gz"
    manifest = bundle(root, out)
    by_source = {member["source"]: member for member in manifest["members"]}
    for source in (f"/{SETTINGS}", "/var/lib/waagent/ovf-env.xml"):
        member = by_source[source]
        assert member["redactions"] == {"whole_file": 1}
        assert any(note.startswith("redacted as a whole") for note in member["notes"])
        assert members_of(out)[member["name"]].startswith(b"[REDACTED: whole file")
    assert not any(CANARY in data for data in members_of(out).values())


def test_doctor_bundle_on_a_file_that_is_not_an_archive_prints_one_line(tmp_path: Path) -> None:
    path = tmp_path / "hostname"
    path.write_text("myhost\n")
    stderr = io.StringIO()
    assert main(["doctor", "--bundle", str(path)], stderr=stderr, stdout=io.StringIO()) == 65
    assert stderr.getvalue().count("\n") == 1, stderr.getvalue()
    assert "not a bundle archive" in stderr.getvalue()
    json.dumps(stderr.getvalue())
