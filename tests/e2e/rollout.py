"""Helpers for the fleet rollout tests: packages of two versions, throwaway
signing keys, publishing with `packaging/build-repo`, and the Debian `rpm`
tool for a container.

Keys are generated at test time in a temporary GNUPGHOME (no passphrase, RSA
3072, user id `...@example.invalid`) and deleted with it: no private key
material is ever committed.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest

from tests.e2e.conftest import REPO, _clean_env, _newest_input_mtime

UPGRADE_OUT = REPO / "out" / "upgrade"


def bump(version: str) -> str:
    """The next patch version: 0.1.0 -> 0.1.1 (what the tests publish as the upgrade)."""
    match = re.fullmatch(r"(.*?)(\d+)", version)
    if match is None:
        raise ValueError(f"cannot bump version {version!r}")
    return f"{match.group(1)}{int(match.group(2)) + 1}"


def tree_version() -> str:
    text = (REPO / "pyproject.toml").read_text()
    match = re.search(r'^version = "([^"]+)"', text, re.M)
    assert match, "pyproject.toml has no version"
    return match.group(1)


def _newest(directory: Path, pattern: str) -> Optional[Path]:
    found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def built(kind: str, version: str, out: Path) -> Path:
    """`make deb|rpm` (with PKG_VERSION when `version` is not the tree's), rebuilt when stale."""
    pattern = (
        f"waagent-guard_{version}_*.deb" if kind == "deb" else f"waagent-guard-{version}-*.rpm"
    )
    found = _newest(out, pattern)
    if found is None or found.stat().st_mtime < _newest_input_mtime():
        variables = [f"{kind.upper()}_OUT={out}"]
        if version != tree_version():
            variables.append(f"PKG_VERSION={version}")
        result = subprocess.run(
            ["make", "-C", str(REPO), kind, *variables],
            capture_output=True,
            text=True,
            timeout=1200,
            env=_clean_env(),
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(
                f"make {kind} {variables} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
            )
        found = _newest(out, pattern)
    assert found is not None, f"make {kind} left no {pattern} in {out}"
    return found


@dataclass(frozen=True)
class Packages:
    version: str
    upgrade_version: str
    deb: Path
    rpm: Path
    deb_upgrade: Path
    rpm_upgrade: Path


def packages() -> Packages:
    version = tree_version()
    upgrade = bump(version)
    return Packages(
        version=version,
        upgrade_version=upgrade,
        deb=built("deb", version, REPO / "out" / "deb"),
        rpm=built("rpm", version, REPO / "out" / "rpm"),
        deb_upgrade=built("deb", upgrade, UPGRADE_OUT / "deb"),
        rpm_upgrade=built("rpm", upgrade, UPGRADE_OUT / "rpm"),
    )


@dataclass(frozen=True)
class Key:
    home: Path  # GNUPGHOME holding the secret key
    fingerprint: str

    def env(self) -> dict[str, str]:
        return {**_clean_env(), "GNUPGHOME": str(self.home)}

    def gpg(self, *args: str, stdin: Optional[bytes] = None) -> bytes:
        return subprocess.run(
            ["gpg", "--batch", "--yes", *args],
            input=stdin,
            capture_output=True,
            env=self.env(),
            check=True,
            timeout=120,
        ).stdout


def throwaway_key(home: Path, name: str) -> Key:
    """A fresh signing key in `home` (created 0700), for this test run only."""
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = Key(home, "")
    key.gpg(
        "--passphrase", "", "--quick-gen-key",
        f"{name} (throwaway test key) <{name}@example.invalid>", "rsa3072", "sign", "never",
    )  # fmt: skip
    listing = key.gpg("--with-colons", "--list-secret-keys").decode()
    fingerprint = next(
        line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")
    )
    return Key(home, fingerprint)


def publish(site: Path, state: Path, key: Key, files: Sequence[Path], url: str = "") -> str:
    """`packaging/build-repo` (what `make repo` runs); its output."""
    env = key.env()
    if url:
        env["REPO_URL"] = url
    result = subprocess.run(
        [str(REPO / "packaging" / "build-repo"), str(site), str(state), key.fingerprint,
         *map(str, files)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )  # fmt: skip
    if result.returncode != 0:
        pytest.fail(f"build-repo failed:\n{result.stdout}\n{result.stderr}")
    for path in [site, *site.rglob("*")]:  # apt's _apt user reads file: sources
        path.chmod(0o755 if path.is_dir() else 0o644)
    return result.stdout


def rpm_tool_debs(cache: Path, root: Path) -> list[Path]:
    """Debian's `rpm` and what it needs beyond `root`'s packages, downloaded once
    (network) into `cache`/rpm-tool-debs with the host's apt lists (the host
    and the root are both Debian 12)."""
    target = cache / "rpm-tool-debs"
    stamp = target / ".complete"
    target.mkdir(parents=True, exist_ok=True)
    with (cache / ".rpm-tool.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            simulate = subprocess.run(
                ["apt-get", "-s", "-o", f"Dir::State::status={root}/var/lib/dpkg/status",
                 "--no-install-recommends", "install", "rpm"],
                capture_output=True, text=True, timeout=120, check=False,
                env={**os.environ, "LC_ALL": "C"},
            )  # fmt: skip
            names = re.findall(r"^Inst (\S+)", simulate.stdout, re.M)
            if simulate.returncode != 0 or "rpm" not in names:
                pytest.fail(
                    "cannot resolve Debian's rpm for the container with the host's apt lists "
                    f"(run apt-get update):\n{simulate.stdout}\n{simulate.stderr}"
                )
            download = subprocess.run(
                ["apt-get", "download", *names], cwd=target, capture_output=True, text=True,
                timeout=600, check=False,
            )  # fmt: skip
            if download.returncode != 0:
                pytest.fail(f"apt-get download {names} failed:\n{download.stderr}")
            stamp.write_text("\n".join(names) + "\n")
    return sorted(target.glob("*.deb"))
