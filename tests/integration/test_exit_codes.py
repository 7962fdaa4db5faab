"""Exit codes and messages a person meets: permission problems 77, usage errors name the flag."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.privileges import require_nobody_python
from waagent_guard.cli import main
from waagent_guard.demo.simagent import lay_demo_guest
from waagent_guard.errors import EX_NOPERM, EX_USAGE


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "waagent_guard", *argv],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "HOME": "/nonexistent"},
    )


@pytest.fixture
def open_guest() -> Iterator[Path]:
    """A demo guest everyone may read but only root may write (pytest's tmp is 0700)."""
    require_nobody_python()
    top = Path(tempfile.mkdtemp(prefix="wg-exit-", dir="/tmp"))
    try:
        root = lay_demo_guest(top / "guest")
        os.chmod(top, 0o755)
        for directory, _dirs, files in os.walk(root):
            os.chmod(directory, 0o755)
            for name in files:
                os.chmod(Path(directory) / name, 0o644)
        yield root
    finally:
        shutil.rmtree(top)


def test_an_unreadable_guard_toml_is_a_permission_problem(open_guest: Path) -> None:
    config = open_guest / "etc/waagent-guard/guard.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("[restart]\nenabled = true\n")
    config.chmod(0o600)
    for argv in (["status"], ["config", "check"], ["config", "show"], ["metrics"]):
        result = as_nobody(*argv, "--root", str(open_guest))
        assert result.returncode == EX_NOPERM, (argv, result.stderr)
        # one line (under `make test`, coverage may add its own complaint as nobody)
        assert (
            f"waagent-guard: {config}: permission denied; run as root or make it readable "
            "(chmod 0644)"
        ) in result.stderr.splitlines()
        assert "internal error" not in result.stderr


def test_ensure_autorestart_without_permission_exits_77(open_guest: Path) -> None:
    result = as_nobody("agent", "ensure-autorestart", "--root", str(open_guest))
    assert result.returncode == EX_NOPERM, result.stderr
    assert "walinuxagent.service.d: cannot create the directory (Permission denied)" \
        in result.stderr


def test_a_textfile_directory_without_permission_exits_77(open_guest: Path) -> None:
    result = as_nobody("metrics", "--textfile", str(open_guest / "var/log"),
                       "--root", str(open_guest))
    assert result.returncode == EX_NOPERM, result.stderr
    assert "waagent_guard.prom" in result.stderr and "run as root" in result.stderr


def test_demo_dir_naming_a_file_is_a_usage_error(tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    code, _out, err = run("demo", "--dir", str(afile))
    assert code == EX_USAGE
    assert err == f"waagent-guard: --dir {afile}: not a directory; pass a new or empty directory\n"


def test_demo_port_out_of_range_names_the_flag() -> None:
    code, _out, err = run("demo", "--port", "99999")
    assert code == EX_USAGE
    assert "argument --port: 99999 is not a TCP port (0-65535" in err
    assert "guard.toml" not in err


def test_demo_busy_port_names_the_flag() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _out, err = run("demo", "--port", str(port), "--duration", "5s")
    assert code == EX_USAGE
    assert err.startswith(f"waagent-guard: --port {port}: cannot listen on 127.0.0.1:{port}")
    assert "guard.toml" not in err


@pytest.mark.parametrize("group,action", [
    ("verbose", "on"), ("config", "check"), ("agent", "ensure-autorestart"),
])
def test_a_bare_group_prints_its_actions(group: str, action: str) -> None:
    code, _out, err = run(group)
    assert code == EX_USAGE
    assert err.startswith(f"usage: waagent-guard {group} ")
    assert action in err
    assert "COMMAND" not in err  # not the top-level help


def test_verbose_status_json_has_a_schema(tmp_path: Path) -> None:
    root = lay_demo_guest(tmp_path / "guest")
    code, out, _err = run("verbose", "status", "--json", "--root", str(root))
    assert code == 0
    document = json.loads(out)
    assert document["schema"] == "waagent-guard/verbose-status/v1"
    assert document["logs_verbose"] is False
