"""Editing waagent.conf: one line changed, every other byte kept, written atomically."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from waagent_guard.agent.conf import (
    ConfDocument,
    agent_config,
    conf_path,
    load_conf,
    parse_conf,
    set_conf_value,
)
from waagent_guard.errors import ConfigError, InputError
from waagent_guard.sysroot import Sysroot

DATA = Path(__file__).resolve().parent.parent / "data" / "conf"

# --- editing in memory --------------------------------------------------------------------


def test_set_key_updates_last_duplicate_only() -> None:
    data = b"# head\nLogs.Verbose=y # first\nA=1\nLogs.Verbose = y\nB=2\n"
    edited = parse_conf(data).with_value("Logs.Verbose", "n")
    assert edited.render() == b"# head\nLogs.Verbose=y # first\nA=1\nLogs.Verbose=n\nB=2\n"
    assert edited.get("Logs.Verbose") == "n"


def test_set_key_keeps_crlf_of_the_rewritten_line() -> None:
    edited = parse_conf(b"A=1\r\nLogs.Verbose=y\r\nB=2\r\n").with_value("Logs.Verbose", "n")
    assert edited.render() == b"A=1\r\nLogs.Verbose=n\r\nB=2\r\n"


def test_set_key_on_unterminated_last_line_keeps_it_unterminated() -> None:
    edited = parse_conf(b"A=1\nLogs.Verbose=y").with_value("Logs.Verbose", "n")
    assert edited.render() == b"A=1\nLogs.Verbose=n"


def test_commented_key_is_not_edited_but_a_new_line_is_appended() -> None:
    data = b"# Lib.Dir=/var/lib/waagent\nA=1\n"
    edited = parse_conf(data).with_value("Lib.Dir", "/data")
    assert edited.render() == data + b"Lib.Dir=/data\n"


def test_append_adds_missing_final_newline_first() -> None:
    edited = parse_conf(b"A=1").with_value("Logs.Verbose", "y")
    assert edited.render() == b"A=1\nLogs.Verbose=y\n"


def test_append_uses_crlf_in_a_crlf_file() -> None:
    edited = parse_conf(b"A=1\r\nB=2").with_value("Logs.Verbose", "y")
    assert edited.render() == b"A=1\r\nB=2\r\nLogs.Verbose=y\r\n"


def test_append_after_unterminated_quoted_value_uses_lf_to_keep_its_value() -> None:
    document = parse_conf(b'A=1\r\nB="2"')
    edited = document.with_value("C", "3")
    assert edited.render() == b'A=1\r\nB="2"\nC=3\r\n'
    assert edited.get("B") == document.get("B") == "2"


def test_append_to_empty_document_writes_one_line() -> None:
    assert ConfDocument(lines=()).with_value("Logs.Verbose", "y").render() == b"Logs.Verbose=y\n"


def test_unset_removes_last_active_line_and_falls_back_to_earlier_duplicate() -> None:
    document = parse_conf(b"Lib.Dir=/a\n# x\nLib.Dir=/b\r\nC=1")
    edited = document.with_value("Lib.Dir", None)
    assert edited.render() == b"Lib.Dir=/a\n# x\nC=1"
    assert edited.get("Lib.Dir") == "/a"
    assert edited.with_value("Lib.Dir", None).get("Lib.Dir") is None


def test_unset_of_absent_key_changes_nothing() -> None:
    document = parse_conf(b"A=1\n")
    assert document.with_value("Logs.Verbose", None) is document


def test_value_none_text_sets_the_agent_default() -> None:
    edited = parse_conf(b"HttpProxy.Host=proxy\n").with_value("HttpProxy.Host", "None")
    assert edited.render() == b"HttpProxy.Host=None\n"
    assert edited.get("HttpProxy.Host") is None


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "the key is empty"),
        ("Logs.Verbose=y", "contains '='"),
        ("#Logs.Verbose", "contains '#'"),
        ("Logs Verbose", "contains ' '"),
        ("Logs.Verbose\n", "contains '\\n'"),
        ("Logs\x00", "contains '\\x00'"),
        ("Lib.\udcff", "cannot be written as UTF-8"),
    ],
)
def test_bad_keys_are_refused_with_the_reason(key: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=r"waagent\.conf") as caught:
        parse_conf(b"A=1\n").with_value(key, "y")
    assert reason in caught.value.message


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("y # on", "'#'"),
        ("y\nLib.Dir=/x", "a newline"),
        ("y\r", "a carriage return"),
        ("y\x00", "a NUL byte"),
        (" y", "starts or ends with whitespace or a double quote"),
        ('"y"', "starts or ends with whitespace or a double quote"),
        ("y\x1c", "starts or ends with whitespace"),
        ("\udcff", "cannot be written as UTF-8"),
    ],
)
def test_bad_values_are_refused_naming_the_key(value: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_conf(b"A=1\n").with_value("Logs.Verbose", value)
    assert "Logs.Verbose" in caught.value.message
    assert reason in caught.value.message


# --- editing the file ---------------------------------------------------------------------


def test_set_conf_value_edits_a_shipped_file_minimally(tmp_path: Path) -> None:
    original = (DATA / "ubuntu.waagent.conf").read_bytes()
    path = tmp_path / "waagent.conf"
    path.write_bytes(original)
    assert set_conf_value(path, "Logs.Verbose", "y") == ("n", "y")
    after = path.read_bytes()
    assert after == original.replace(b"\nLogs.Verbose=n\n", b"\nLogs.Verbose=y\n")
    assert agent_config(load_conf(path)).logs_verbose is True
    assert sorted(os.listdir(tmp_path)) == ["waagent.conf"]


def test_set_conf_value_appends_and_unsets(tmp_path: Path) -> None:
    original = (DATA / "debian-packaged.waagent.conf").read_bytes()
    path = tmp_path / "waagent.conf"
    path.write_bytes(original)
    assert set_conf_value(path, "HttpProxy.Host", "10.0.0.5") == (None, "10.0.0.5")
    assert path.read_bytes() == original + b"HttpProxy.Host=10.0.0.5\n"
    assert set_conf_value(path, "HttpProxy.Host", None) == ("10.0.0.5", None)
    assert path.read_bytes() == original


def test_set_conf_value_keeps_mode_and_owner(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"Logs.Verbose=n\n")
    os.chmod(path, 0o640)
    if os.geteuid() == 0:
        os.chown(path, 1234, 2345)
    before = os.stat(path)
    set_conf_value(path, "Logs.Verbose", "y")
    after = os.stat(path)
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # replaced by rename, not rewritten in place


def test_unchanged_content_is_not_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"Logs.Verbose=y\n")
    inode = os.stat(path).st_ino
    assert set_conf_value(path, "Logs.Verbose", "y") == ("y", "y")
    assert set_conf_value(path, "Lib.Dir", None) == (None, None)
    assert os.stat(path).st_ino == inode


def test_missing_file_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    with pytest.raises(InputError, match="agent's config is missing") as caught:
        set_conf_value(path, "Logs.Verbose", "y")
    assert str(path) in caught.value.message
    assert not path.exists()


def test_directory_where_the_file_belongs_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.mkdir()
    with pytest.raises(InputError, match="is a directory"):
        set_conf_value(path, "Logs.Verbose", "y")


def test_refused_value_leaves_file_and_directory_untouched(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"Logs.Verbose=n\n")
    with pytest.raises(ConfigError):
        set_conf_value(path, "Logs.Verbose", "y # yes")
    assert path.read_bytes() == b"Logs.Verbose=n\n"
    assert os.listdir(tmp_path) == ["waagent.conf"]


def test_failed_write_leaves_the_file_and_no_temporary_file(tmp_path: Path) -> None:
    # A real child process whose file-size limit is below the file's size: the temporary
    # copy cannot be written (EFBIG), as when a disk fills up mid-write.
    path = tmp_path / "waagent.conf"
    original = b"# " + b"x" * 8000 + b"\nLogs.Verbose=n\n"
    path.write_bytes(original)
    script = (
        "import resource, signal, sys\n"
        "from pathlib import Path\n"
        "from waagent_guard.agent.conf import set_conf_value\n"
        "from waagent_guard.errors import WriteError\n"
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)\n"
        "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))\n"
        "try:\n"
        "    set_conf_value(Path(sys.argv[1]), 'Logs.Verbose', 'y')\n"
        "except WriteError as error:\n"
        "    print(error)\n"
        "    sys.exit(3)\n"
        "finally:\n"
        "    # lift the limit again so coverage (if any) can save its data at exit\n"
        "    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert "the original is unchanged" in result.stdout
    assert path.read_bytes() == original
    assert os.listdir(tmp_path) == ["waagent.conf"]


def test_symlinked_file_is_edited_through_the_link(tmp_path: Path) -> None:
    target = tmp_path / "oem" / "waagent.conf"
    target.parent.mkdir()
    target.write_bytes(b"Logs.Verbose=n\n")
    link = tmp_path / "waagent.conf"
    link.symlink_to(target)
    set_conf_value(link, "Logs.Verbose", "y")
    assert link.is_symlink()
    assert target.read_bytes() == b"Logs.Verbose=y\n"
    assert sorted(os.listdir(target.parent)) == ["waagent.conf"]


def test_non_utf8_bytes_elsewhere_survive_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "waagent.conf"
    path.write_bytes(b"# caf\xe9\r\nLogs.Verbose=n\r\n\xff")
    set_conf_value(path, "Logs.Verbose", "y")
    assert path.read_bytes() == b"# caf\xe9\r\nLogs.Verbose=y\r\n\xff"


# --- finding the file ---------------------------------------------------------------------


def test_conf_path_honours_the_override_under_the_sysroot(tmp_path: Path) -> None:
    sysroot = Sysroot(tmp_path)
    assert conf_path(sysroot, "/opt/agent/waagent.conf") == tmp_path / "opt/agent/waagent.conf"


def test_conf_path_without_override_searches_per_distro(tmp_path: Path) -> None:
    sysroot = Sysroot(tmp_path)
    assert conf_path(sysroot, None) == tmp_path / "etc/waagent.conf"
    oem = tmp_path / "usr/share/oem/waagent.conf"
    oem.parent.mkdir(parents=True)
    oem.write_bytes(b"")
    assert conf_path(sysroot, None) == oem


def test_conf_path_refuses_a_relative_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"agent\.conf_path: must be an absolute path"):
        conf_path(Sysroot(tmp_path), "etc/waagent.conf")
