"""waagent.conf under faults (issue 14 item 3), on real files in tmp_path.

Stale temporary files of a guard killed mid-edit, symlinks inside a --root tree,
another program replacing the file during a lease toggle, and byte-exact lease
undo for any content.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import waagent_guard.agent.conf as conf_module
from waagent_guard.agent.conf import (
    MAX_EDIT_ATTEMPTS,
    clean_stale_edits,
    load_conf,
    set_conf_value,
)
from waagent_guard.cli import main
from waagent_guard.errors import InputError, WriteError
from waagent_guard.fsutil import atomic_write
from waagent_guard.lease import GuardState, begin_lease, end_lease
from waagent_guard.sysroot import MAX_LINK_HOPS, Sysroot

NOW = 1_700_000_000.0
HOUR = 3600.0
CONF = b"# the agent's config\nLogs.Verbose=n\nExtensions.Enabled=y\n"


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --- stale temporary files --------------------------------------------------------------


def test_temp_files_of_a_killed_guard_are_removed_before_the_next_edit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    stale = [
        tmp_path / ".waagent.conf.k2j4_x9a.tmp",  # the name before issue 14 (no pid)
        tmp_path / f".waagent.conf.{dead_pid()}.abcd1234.tmp",
    ]
    for path in stale:
        path.write_bytes(b"half an edit")
    with caplog.at_level(logging.WARNING):
        set_conf_value(conf, "Logs.Verbose", "y")
    assert [path for path in stale if path.exists()] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["waagent.conf"]
    for path in stale:
        assert str(path) in caplog.text


def test_only_the_guards_own_regular_temp_files_of_that_file_are_removed(tmp_path: Path) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    live = tmp_path / f".waagent.conf.{os.getppid()}.abcd1234.tmp"  # a writer still running
    kept = [
        live,
        tmp_path / ".waagent.conf.bak",
        tmp_path / "waagent.conf.abcd1234.tmp",
        tmp_path / ".waagent.conf.abcd12345.tmp",
        tmp_path / ".other.conf.abcd1234.tmp",
        tmp_path / ".waagent.conf.ABCD1234.tmp",
    ]
    for path in kept:
        path.write_bytes(b"x")
    target = tmp_path / "precious"
    target.write_bytes(b"not ours")
    link = tmp_path / ".waagent.conf.linkxxxx.tmp"
    link.symlink_to(target)
    directory = tmp_path / ".waagent.conf.dirxxxxx.tmp"
    directory.mkdir()
    removed = clean_stale_edits(conf)
    assert removed == []
    assert all(path.exists() for path in kept)
    assert link.is_symlink() and target.read_bytes() == b"not ours"
    assert directory.is_dir()


def test_clean_stale_edits_looks_beside_the_file_a_link_points_to(tmp_path: Path) -> None:
    root = Sysroot(tmp_path / "root")
    real = root.path("/etc/agent/waagent.conf")
    real.parent.mkdir(parents=True)
    real.write_bytes(CONF)
    root.path("/etc/waagent.conf").symlink_to("/etc/agent/waagent.conf")
    stale = real.parent / ".waagent.conf.zzzzzzzz.tmp"
    stale.write_bytes(b"")
    assert clean_stale_edits(root.path("/etc/waagent.conf"), root) == [stale]


def test_a_failed_write_leaves_no_temp_file_and_the_new_names_carry_the_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []
    real_replace = os.replace

    def spy(source: Any, destination: Any) -> None:
        seen.append(Path(source).name)
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", spy)
    atomic_write(tmp_path / "waagent.conf", b"A=1\n")
    assert seen and seen[0].startswith(f".waagent.conf.{os.getpid()}.")


# --- symlinks inside --root -------------------------------------------------------------


@pytest.fixture
def host_and_root(tmp_path: Path) -> tuple[Path, Sysroot]:
    """A 'host' file at an absolute path X and a root whose etc/waagent.conf -> X."""
    host = tmp_path / "host" / "agent.conf"
    host.parent.mkdir(parents=True)
    host.write_bytes(b"Logs.Verbose=n\nHOST=1\n")
    root = Sysroot(tmp_path / "root")
    inside = root.path(str(host))  # the same absolute path, inside the root
    inside.parent.mkdir(parents=True)
    inside.write_bytes(CONF)
    root.path("/etc").mkdir(parents=True)
    root.path("/etc/waagent.conf").symlink_to(host)  # absolute target
    return host, root


def test_an_absolute_link_in_the_root_is_edited_inside_the_root_not_on_the_host(
    host_and_root: tuple[Path, Sysroot]
) -> None:
    host, root = host_and_root
    link = root.path("/etc/waagent.conf")
    state, changed = begin_lease(link, GuardState(), NOW, HOUR, "", "root", sysroot=root)
    assert changed
    assert host.read_bytes() == b"Logs.Verbose=n\nHOST=1\n"  # the host's file: untouched
    inside = root.path(str(host))
    assert load_conf(inside).get("Logs.Verbose") == "y"
    assert link.is_symlink() and os.readlink(link) == str(host)  # the link is kept
    end_lease(link, state, sysroot=root)
    assert inside.read_bytes() == CONF
    assert host.read_bytes() == b"Logs.Verbose=n\nHOST=1\n"


def test_verbose_on_under_root_follows_the_link_inside_the_root(
    host_and_root: tuple[Path, Sysroot]
) -> None:
    host, root = host_and_root
    code, _out, err = run_cli("verbose", "on", "--for", "60", "--no-restart", "--root",
                             str(root.root))
    assert code == 0, err
    assert host.read_bytes() == b"Logs.Verbose=n\nHOST=1\n"
    assert load_conf(root.path(str(host))).get("Logs.Verbose") == "y"
    code, _out, err = run_cli("verbose", "off", "--no-restart", "--root", str(root.root))
    assert code == 0, err
    assert root.path(str(host)).read_bytes() == CONF


def test_dot_dot_in_a_link_cannot_climb_above_the_root(tmp_path: Path) -> None:
    outside = tmp_path / "waagent.conf"
    outside.write_bytes(b"Logs.Verbose=n\nOUTSIDE=1\n")
    root = Sysroot(tmp_path / "a" / "b" / "root")
    root.path("/etc").mkdir(parents=True)
    inside = root.path("/waagent.conf")
    inside.write_bytes(CONF)
    root.path("/etc/waagent.conf").symlink_to("../../../../../waagent.conf")
    set_conf_value(root.path("/etc/waagent.conf"), "Logs.Verbose", "y", sysroot=root)
    assert outside.read_bytes() == b"Logs.Verbose=n\nOUTSIDE=1\n"
    assert load_conf(inside).get("Logs.Verbose") == "y"


def test_a_link_loop_is_a_clear_error_naming_the_path(tmp_path: Path) -> None:
    root = Sysroot(tmp_path)
    root.path("/etc").mkdir()
    root.path("/etc/waagent.conf").symlink_to("/etc/b")
    root.path("/etc/b").symlink_to("waagent.conf")
    with pytest.raises(InputError, match=rf"/etc/waagent.conf: more than {MAX_LINK_HOPS} sym"):
        set_conf_value(root.path("/etc/waagent.conf"), "Logs.Verbose", "y", sysroot=root)
    code, _out, err = run_cli("verbose", "on", "--no-restart", "--root", str(tmp_path))
    assert code == InputError.exit_code
    assert "/etc/waagent.conf: more than" in err and "Traceback" not in err


def test_a_dangling_link_in_the_root_is_not_found_and_nothing_is_created(tmp_path: Path) -> None:
    root = Sysroot(tmp_path)
    root.path("/etc").mkdir()
    root.path("/etc/waagent.conf").symlink_to("/nowhere/waagent.conf")
    with pytest.raises(InputError, match="not found"):
        set_conf_value(root.path("/etc/waagent.conf"), "Logs.Verbose", "y", sysroot=root)
    assert not root.path("/nowhere").exists()


# --- another writer replacing the file ---------------------------------------------------


def replace_with(path: Path, data: bytes) -> None:
    temp = path.with_name("other-writer.tmp")
    temp.write_bytes(data)
    os.replace(temp, path)


def test_a_replacement_between_our_read_and_our_rename_is_read_again_and_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    theirs = CONF + b"Added.By.Them=1\n"
    calls = []
    real_atomic_write = conf_module.atomic_write

    def racing_write(path: Path, data: bytes, **options: Any) -> None:
        calls.append(path)
        if len(calls) == 1:
            replace_with(conf, theirs)  # lands after our read, before our rename
        real_atomic_write(path, data, **options)

    monkeypatch.setattr(conf_module, "atomic_write", racing_write)
    begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    assert conf.read_bytes() == theirs.replace(b"Logs.Verbose=n", b"Logs.Verbose=y")
    assert len(calls) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["waagent.conf"]


def test_an_in_place_rewrite_during_the_edit_is_noticed_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    calls = []
    real_atomic_write = conf_module.atomic_write

    def racing_write(path: Path, data: bytes, **options: Any) -> None:
        calls.append(path)
        if len(calls) == 1:
            with open(conf, "ab") as handle:  # same inode, bigger
                handle.write(b"Appended=1\n")
        real_atomic_write(path, data, **options)

    monkeypatch.setattr(conf_module, "atomic_write", racing_write)
    set_conf_value(conf, "Logs.Verbose", "y")
    assert conf.read_bytes().endswith(b"Appended=1\n")
    assert load_conf(conf).get("Logs.Verbose") == "y"


def test_a_writer_that_never_stops_is_a_clear_error_and_our_edit_is_not_applied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    real_atomic_write = conf_module.atomic_write
    count = [0]

    def always_racing(path: Path, data: bytes, **options: Any) -> None:
        count[0] += 1
        replace_with(conf, CONF + f"Their.Edit={count[0]}\n".encode())
        real_atomic_write(path, data, **options)

    pauses: list[float] = []
    monkeypatch.setattr(conf_module, "atomic_write", always_racing)
    with pytest.raises(WriteError, match="changed the file 10 times") as raised:
        conf_module.edit_conf(conf, lambda d: d.with_value("Logs.Verbose", "y"),
                              pause=pauses.append)
    assert str(conf) in raised.value.message
    assert count[0] == MAX_EDIT_ATTEMPTS and len(pauses) == MAX_EDIT_ATTEMPTS
    assert conf.read_bytes() == CONF + f"Their.Edit={MAX_EDIT_ATTEMPTS}\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["waagent.conf"]


def test_end_lease_keeps_a_value_someone_set_while_it_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    real_atomic_write = conf_module.atomic_write
    calls = []

    def racing_write(path: Path, data: bytes, **options: Any) -> None:
        calls.append(path)
        if len(calls) == 1:
            replace_with(conf, CONF.replace(b"Logs.Verbose=n", b"Logs.Verbose=y\nLogs.Verbose=n"))
        real_atomic_write(path, data, **options)

    monkeypatch.setattr(conf_module, "atomic_write", racing_write)
    end_lease(conf, state)
    assert load_conf(conf).get("Logs.Verbose") == "n"
    assert b"Logs.Verbose=y\nLogs.Verbose=n" in conf.read_bytes()


# --- on/off gives back the exact bytes ----------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"A=1\n#Logs.Verbose=y",  # the case the property test found (issue 14)
        b"#Logs.Verbose=y",
        b"A=1\r\nB=2",
        b'A=1\r\nK="v"',
        b"A=1\n#c\r",
        b"",
        b"Logs.Verbose = n  # quiet, please\nA=1\n",
        b"Logs.Verbose=None",
        b"Logs.Verbose=y\nLogs.Verbose=n\r\n",
        b"Logs.Verbose=\"n\"\r",
    ],
)
def test_on_then_off_restores_the_exact_bytes(tmp_path: Path, data: bytes) -> None:
    conf = tmp_path / "waagent.conf"
    conf.write_bytes(data)
    state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
    assert load_conf(conf).get("Logs.Verbose") == "y"
    end_lease(conf, state)
    assert conf.read_bytes() == data


conf_line = st.one_of(
    st.builds(
        lambda indent, key, spaces, value, comment: (
            indent + key + spaces + "=" + spaces + value + comment
        ).encode("utf-8"),
        st.sampled_from(["", "", " ", "#", "# "]),
        st.sampled_from(["Logs.Verbose", "Logs.Verbose", "Lib.Dir", "A"]),
        st.sampled_from(["", "", " "]),
        st.one_of(st.sampled_from(["y", "n", "None", '"y"', '"n"', ""]), st.text(max_size=6)),
        st.sampled_from(["", "", " # note", "#x", "\r"]),
    ),
    st.binary(max_size=10),
)
conf_bytes = st.one_of(
    st.binary(max_size=120),
    st.builds(
        lambda lines, eols, final: b"".join(
            line + eols[index % len(eols)] for index, line in enumerate(lines)
        )[: None if final else -1 or None],
        st.lists(conf_line, max_size=8),
        st.lists(st.sampled_from([b"\n", b"\r\n", b"\r"]), min_size=1, max_size=3),
        st.booleans(),
    ),
)


@settings(max_examples=150, deadline=None)
@given(conf_bytes)
def test_on_then_off_restores_the_exact_bytes_for_any_content(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        conf = Path(directory) / "waagent.conf"
        conf.write_bytes(data)
        state, _ = begin_lease(conf, GuardState(), NOW, HOUR, "", "root")
        assert load_conf(conf).get("Logs.Verbose") == "y"
        end_lease(conf, state)
        assert conf.read_bytes() == data


def test_a_failed_lease_edit_restores_the_state_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from waagent_guard.lease import load_state

    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    state_path = tmp_path / "state.json"

    def full_disk(path: Path, data: bytes, **options: Any) -> None:
        raise WriteError(f"{path}: write failed (disk full); the original is unchanged")

    monkeypatch.setattr(conf_module, "atomic_write", full_disk)
    with pytest.raises(WriteError, match="disk full"):
        begin_lease(conf, GuardState(), NOW, HOUR, "", "root", state_path=state_path)
    assert load_state(state_path).verbose_lease is None
    assert conf.read_bytes() == CONF


def test_a_replacement_after_the_last_check_is_swapped_back_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The microseconds between the final comparison and the rename: the rename is an
    exchange, the displaced file is checked, and theirs is given back."""
    import waagent_guard.fsutil as fsutil

    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    theirs = CONF + b"Added.By.Them=1\n"
    real_exchange = fsutil.exchange_paths
    calls = []

    def racing_exchange(first: Path, second: Path) -> bool:
        calls.append(1)
        if len(calls) == 1:
            replace_with(conf, theirs)  # after `before_replace` looked
        return real_exchange(first, second)

    monkeypatch.setattr(fsutil, "exchange_paths", racing_exchange)
    set_conf_value(conf, "Logs.Verbose", "y")
    assert conf.read_bytes() == theirs.replace(b"Logs.Verbose=n", b"Logs.Verbose=y")
    assert len(calls) >= 3  # ours in, theirs back, then ours on their content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["waagent.conf"]


def test_a_newer_file_landing_during_the_swap_back_is_the_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import waagent_guard.fsutil as fsutil

    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    real_exchange = fsutil.exchange_paths
    calls = []

    def racing_exchange(first: Path, second: Path) -> bool:
        calls.append(1)
        if len(calls) == 1:
            replace_with(conf, CONF + b"Them=1\n")
        elif len(calls) == 2:
            replace_with(conf, CONF + b"Them=2\n")  # lands before the swap back
        return real_exchange(first, second)

    monkeypatch.setattr(fsutil, "exchange_paths", racing_exchange)
    set_conf_value(conf, "Logs.Verbose", "y")
    assert conf.read_bytes() == (CONF + b"Them=2\n").replace(b"Logs.Verbose=n", b"Logs.Verbose=y")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["waagent.conf"]


def test_a_directory_fsync_failure_after_the_rename_keeps_the_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Review of issue 14: an EIO syncing the directory after the rename said "the
    original is unchanged" and the lease was rolled back while waagent.conf said y:
    Logs.Verbose=y for good. The edit stands, the lease with it, and a warning says
    the rename may not survive a crash."""
    import errno

    import waagent_guard.fsutil as fsutil
    from waagent_guard.lease import load_state

    conf = tmp_path / "etc" / "waagent.conf"
    conf.parent.mkdir()
    conf.write_bytes(CONF)
    state_path = tmp_path / "state.json"
    real_sync = fsutil.fsync_directory

    def eio_in_etc(directory: Path) -> None:
        if Path(directory) == conf.parent:
            raise OSError(errno.EIO, "Input/output error")
        real_sync(directory)

    monkeypatch.setattr(fsutil, "fsync_directory", eio_in_etc)
    with caplog.at_level(logging.WARNING, logger="waagent_guard.fsutil"):
        _, changed = begin_lease(conf, GuardState(), NOW, HOUR, "", "root", state_path=state_path)
    assert changed
    assert b"Logs.Verbose=y" in conf.read_bytes()
    assert load_state(state_path).verbose_lease is not None
    assert "syncing its directory failed (Input/output error)" in caplog.text
    assert sorted(p.name for p in conf.parent.iterdir()) == ["waagent.conf"]


def test_a_failed_lease_edit_that_did_land_keeps_its_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Belt and braces: whatever fails after the file says y, the lease that puts it
    back is kept."""
    from waagent_guard.lease import load_state

    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    state_path = tmp_path / "state.json"

    def lands_then_fails(path: Path, data: bytes, **options: Any) -> None:
        Path(path).write_bytes(data)
        raise WriteError(f"{path}: something failed after the rename")

    monkeypatch.setattr(conf_module, "atomic_write", lands_then_fails)
    with pytest.raises(WriteError):
        begin_lease(conf, GuardState(), NOW, HOUR, "", "root", state_path=state_path)
    assert load_state(state_path).verbose_lease is not None
    monkeypatch.undo()
    end_lease(conf, load_state(state_path))
    assert conf.read_bytes() == CONF


def test_a_landed_lease_edit_keeps_its_lease_when_the_file_cannot_be_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review: the re-read after a failure failing too (EIO, EMFILE) rolled the lease
    back under a file that says y. Unreadable is "maybe y": the lease stays (end_lease
    drops a lease whose file is not y)."""
    import waagent_guard.lease as lease_module
    from waagent_guard.lease import load_state

    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    state_path = tmp_path / "state.json"
    real_load = lease_module.load_conf
    calls = []

    def lands_then_fails(path: Path, data: bytes, **options: Any) -> None:
        Path(path).write_bytes(data)
        raise WriteError(f"{path}: something failed after the rename")

    def unreadable_after_the_edit(path: Path, *args: Any, **kwargs: Any) -> Any:
        calls.append(path)
        if len(calls) > 1:
            raise WriteError(f"{path}: cannot read it (Input/output error)")
        return real_load(path, *args, **kwargs)

    monkeypatch.setattr(conf_module, "atomic_write", lands_then_fails)
    monkeypatch.setattr(lease_module, "load_conf", unreadable_after_the_edit)
    with pytest.raises(WriteError):
        begin_lease(conf, GuardState(), NOW, HOUR, "", "root", state_path=state_path)
    assert load_state(state_path).verbose_lease is not None


def test_a_failed_swap_back_never_deletes_the_other_writers_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exchange put theirs at our temporary name; when giving it back fails, the
    temporary name holds their file: it stays there, it is not "our temp file"."""
    import errno

    import waagent_guard.fsutil as fsutil

    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    theirs = CONF + b"Added.By.Them=1\n"
    real_exchange = fsutil.exchange_paths
    calls = []

    def failing_swap_back(first: Path, second: Path) -> bool:
        calls.append(1)
        if len(calls) == 1:
            replace_with(conf, theirs)
            return real_exchange(first, second)
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(fsutil, "exchange_paths", failing_swap_back)
    with pytest.raises(WriteError) as raised:
        set_conf_value(conf, "Logs.Verbose", "y")
    message = str(raised.value)
    assert "unchanged" not in message  # ours landed: saying "unchanged" was a lie
    assert "could not be put back (Input/output error)" in message
    kept = [p for p in tmp_path.iterdir() if p.name != "waagent.conf"]
    assert [p.read_bytes() for p in kept] == [theirs]
    assert kept[0].name.startswith("waagent.conf.displaced-") and kept[0].name in message
    assert b"Logs.Verbose=y" in conf.read_bytes()
    # Not a name the next start's clean-up of interrupted edits removes.
    assert clean_stale_edits(conf) == []
    assert kept[0].exists()


def test_a_failed_removal_of_the_replaced_copy_is_a_warning_not_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import errno

    import waagent_guard.fsutil as fsutil

    conf = tmp_path / "waagent.conf"
    conf.write_bytes(CONF)
    real_unlink = os.unlink
    failed = []

    def eio_once(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).endswith(".tmp") and not failed:
            failed.append(path)
            raise OSError(errno.EIO, "Input/output error")
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(fsutil.os, "unlink", eio_once)
    with caplog.at_level(logging.WARNING, logger="waagent_guard.fsutil"):
        set_conf_value(conf, "Logs.Verbose", "y")
    assert b"Logs.Verbose=y" in conf.read_bytes()
    assert "the replaced copy" in caplog.text and failed
