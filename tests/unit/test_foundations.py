from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from waagent_guard.cli import main
from waagent_guard.errors import WriteError
from waagent_guard.fsutil import atomic_write, read_bounded
from waagent_guard.sysroot import AZURE_ASSET_TAG, Sysroot


def run_cli(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_sysroot_resolves_host_paths_under_the_root(tmp_path: Path) -> None:
    root = Sysroot(tmp_path)
    assert root.path("/etc/waagent.conf") == tmp_path / "etc/waagent.conf"
    assert root.host_path(tmp_path / "etc/waagent.conf") == "/etc/waagent.conf"
    assert root.proc == tmp_path / "proc"
    assert not root.is_host
    assert Sysroot().path("/etc/x") == Path("/etc/x")
    assert Sysroot().is_host
    with pytest.raises(ValueError, match="absolute"):
        root.path("etc/x")


def test_sysroot_finds_the_per_distro_config(tmp_path: Path) -> None:
    root = Sysroot(tmp_path)
    assert root.find_waagent_conf() == tmp_path / "etc/waagent.conf"
    coreos = tmp_path / "usr/share/oem/waagent.conf"
    coreos.parent.mkdir(parents=True)
    coreos.write_text("Logs.Verbose=n\n")
    assert root.find_waagent_conf() == coreos


def test_azure_is_recognised_by_its_asset_tag(tmp_path: Path) -> None:
    from waagent_guard.doctor.facts import is_azure

    root = Sysroot(tmp_path)
    assert not is_azure(root)
    tag = tmp_path / "sys/class/dmi/id/chassis_asset_tag"
    tag.parent.mkdir(parents=True)
    tag.write_text(AZURE_ASSET_TAG + "\n")
    assert is_azure(root)
    tag.unlink()
    tag.symlink_to("/dev/zero")  # refused by the one reader, never read
    assert not is_azure(root)


def test_atomic_write_keeps_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "waagent.conf"
    target.write_bytes(b"old\n")
    os.chmod(target, 0o640)
    atomic_write(target, b"new\n")
    assert target.read_bytes() == b"new\n"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["waagent.conf"]


def test_atomic_write_into_a_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(WriteError, match="cannot create a temporary file"):
        atomic_write(tmp_path / "gone" / "file", b"x")


def test_read_bounded_reports_truncation(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abcdef")
    assert read_bounded(path, 10) == (b"abcdef", False)
    assert read_bounded(path, 3) == (b"abc", True)


def test_cli_without_a_command_prints_help_and_fails() -> None:
    code, _, err = run_cli()
    assert code == 64
    assert "COMMAND" in err


def test_cli_rejects_a_root_that_is_not_a_directory(tmp_path: Path) -> None:
    code, _, err = run_cli("status", "--root", str(tmp_path / "nope"))
    assert code == 64
    assert "--root" in err and "not a directory" in err


def test_config_check_reports_the_bad_key_with_exit_78(tmp_path: Path) -> None:
    config = tmp_path / "guard.toml"
    config.write_text("[metrics]\nprot = 1\n")
    code, _, err = run_cli("config", "check", str(config))
    assert code == 78
    assert f"{config}: metrics.prot: unknown key" in err


def test_config_check_accepts_a_valid_file(tmp_path: Path) -> None:
    config = tmp_path / "guard.toml"
    config.write_text("[metrics]\nport = 9000\n")
    assert run_cli("config", "check", str(config))[:2] == (0, f"{config}: OK\n")


def test_config_check_without_a_file_says_defaults_apply(tmp_path: Path) -> None:
    code, out, _ = run_cli("config", "check", "--root", str(tmp_path))
    assert code == 0
    assert "defaults" in out


def test_config_show_prints_effective_values_with_defaults(tmp_path: Path) -> None:
    config = tmp_path / "guard.toml"
    config.write_text("[restart]\nmax_restarts = 9\n")
    code, out, _ = run_cli("config", "show", "--config", str(config))
    assert code == 0
    assert "max_restarts = 9" in out
    assert "window_seconds = 1800" in out


def test_bad_duration_flag_is_a_usage_error() -> None:
    code, _, err = run_cli("verbose", "on", "--for", "soon")
    assert code == 64
    assert "invalid duration 'soon'" in err


def test_version_flag_prints_the_version() -> None:
    code, out, _ = run_cli("--version")
    assert code == 0
    assert out.startswith("waagent-guard ")


def test_global_options_before_the_subcommand_are_kept(tmp_path: Path) -> None:
    from waagent_guard.cli import build_parser

    args = build_parser().parse_args(["--root", str(tmp_path), "--debug", "status"])
    assert (args.root, args.debug) == (str(tmp_path), True)
    args = build_parser().parse_args(["status", "--root", str(tmp_path)])
    assert args.root == str(tmp_path)


def test_a_reader_that_leaves_is_not_an_error(tmp_path: Path) -> None:
    class ClosedPipe(io.StringIO):
        def write(self, text: str) -> int:
            raise BrokenPipeError

    code = main(["config", "show", "--root", str(tmp_path)], stdout=ClosedPipe(),
                stderr=io.StringIO())
    assert code == 0
