"""`make repo` and `make deb|rpm PKG_VERSION=` refuse bad input with one clear message."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_REPO = REPO / "packaging" / "build-repo"
SET_VERSION = REPO / "packaging" / "set-version"
TOOLS = ("gpg", "reprepro", "createrepo_c", "rpmsign")


def _run(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700, exist_ok=True)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "GNUPGHOME": str(home), "LC_ALL": "C"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)


def test_build_repo_without_a_key_names_the_flag(tmp_path: Path) -> None:
    result = _run([str(BUILD_REPO), str(tmp_path / "site"), str(tmp_path / "state"), ""], tmp_path)
    assert result.returncode == 1
    assert "REPO_KEY=" in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "site").exists()  # nothing half-written


@pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS), reason=f"needs {TOOLS}")
def test_build_repo_with_an_unknown_key_says_where_it_looked(tmp_path: Path) -> None:
    deb = tmp_path / "waagent-guard_0.1.0_amd64.deb"
    deb.write_bytes(b"")
    result = _run(
        [str(BUILD_REPO), str(tmp_path / "site"), str(tmp_path / "state"), "NOSUCHKEY", str(deb)],
        tmp_path,
    )
    assert result.returncode == 1
    assert "REPO_KEY=NOSUCHKEY: no such secret key in" in result.stderr
    assert str(tmp_path / "gnupg") in result.stderr
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize("version", ["", "v1", "1.0;rm", "1 0"])
def test_set_version_refuses_what_is_not_a_version(tmp_path: Path, version: str) -> None:
    result = _run([str(SET_VERSION), str(tmp_path), version], tmp_path)
    assert result.returncode == 2
    assert "is not a package version" in result.stderr
