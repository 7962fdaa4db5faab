"""Fixtures for the end-to-end tests: the built .debs, the cached root, the container.

The container tests need root, debootstrap, systemd-nspawn and nsenter. Without
them they SKIP with the reason, unless WG_E2E=required (CI), where they FAIL.
On a failure the container's journal and console log are attached to the report
and kept under out/e2e-artifacts/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.e2e.container import Container

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("WG_E2E_CACHE", "/var/cache/waagent-guard-e2e"))
ARTIFACTS = Path(os.environ.get("WG_E2E_ARTIFACTS", REPO / "out" / "e2e-artifacts"))
DEB_OUT = REPO / "out" / "deb"
TOOLS = ("debootstrap", "systemd-nspawn", "nsenter", "unshare", "dpkg-deb", "dpkg-buildpackage")
# Sources whose change makes a built .deb stale.
DEB_INPUTS = ("waagent_guard", "packaging", "systemd", "pyproject.toml")


def e2e_unavailable_reason() -> Optional[str]:
    """Why the container tests cannot run here, or None."""
    if os.geteuid() != 0:
        return "end-to-end tests need root (debootstrap, systemd-nspawn)"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        return (
            f"end-to-end tests need {', '.join(missing)}: "
            "apt-get install debootstrap systemd-container dpkg-dev debhelper util-linux"
        )
    return None


def require_e2e() -> None:
    reason = e2e_unavailable_reason()
    if reason is None:
        return
    if os.environ.get("WG_E2E") == "required":
        pytest.fail(f"WG_E2E=required but {reason}", pytrace=False)
    pytest.skip(reason)


def _newest_input_mtime() -> float:
    newest = 0.0
    for name in DEB_INPUTS:
        path = REPO / name
        files = [path] if path.is_file() else (p for p in path.rglob("*") if p.is_file())
        for file in files:
            if "__pycache__" not in file.parts:
                newest = max(newest, file.stat().st_mtime)
    return newest


def _clean_env() -> dict[str, str]:
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("COV_", "COVERAGE", "PYTEST", "VIRTUAL_ENV"))
    }


@dataclass(frozen=True)
class Debs:
    current: Path  # what `make deb` built
    upgrade: Path  # the same package with a higher version: exercises an upgrade


def _repack_with_version(deb: Path, version: str, out: Path) -> Path:
    with tempfile.TemporaryDirectory() as scratch:
        tree = Path(scratch) / "tree"
        subprocess.run(["dpkg-deb", "-R", str(deb), str(tree)], check=True, timeout=120)
        control = tree / "DEBIAN" / "control"
        lines = [
            f"Version: {version}" if line.startswith("Version: ") else line
            for line in control.read_text().splitlines()
        ]
        control.write_text("\n".join(lines) + "\n")
        target = out / f"waagent-guard_{version}_upgrade.deb"
        subprocess.run(
            ["dpkg-deb", "--root-owner-group", "-b", str(tree), str(target)],
            check=True,
            capture_output=True,
            timeout=300,
        )
    return target


@pytest.fixture(scope="session")
def debs() -> Debs:
    """The .deb from `make deb` (rebuilt when sources are newer) and an upgrade of it."""
    require_e2e()
    built = sorted(DEB_OUT.glob("waagent-guard_*.deb"), key=lambda p: p.stat().st_mtime)
    if not built or built[-1].stat().st_mtime < _newest_input_mtime():
        result = subprocess.run(
            ["make", "-C", str(REPO), "deb"],
            capture_output=True,
            text=True,
            timeout=1200,
            env=_clean_env(),
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"make deb failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        built = sorted(DEB_OUT.glob("waagent-guard_*.deb"), key=lambda p: p.stat().st_mtime)
    current = built[-1]
    version = subprocess.run(
        ["dpkg-deb", "-f", str(current), "Version"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    upgrade_dir = REPO / "out" / "deb-upgrade"
    shutil.rmtree(upgrade_dir, ignore_errors=True)
    upgrade_dir.mkdir(parents=True)
    return Debs(current, _repack_with_version(current, f"{version}+e2e1", upgrade_dir))


@pytest.fixture(scope="session")
def base_root() -> Path:
    """The cached Debian 12 root with the real agent (built once, ~1 minute)."""
    require_e2e()
    result = subprocess.run(
        [str(REPO / "tests" / "e2e" / "build-root.sh"), str(CACHE)],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"building the e2e root failed:\n{result.stdout}\n{result.stderr}")
    return CACHE / "root"


@pytest.fixture(scope="module")
def container(base_root: Path, request: pytest.FixtureRequest) -> Iterator[Container]:
    """A booted copy of the root; powered off and removed after the module."""
    artifacts = ARTIFACTS / request.module.__name__.rsplit(".", 1)[-1]
    shutil.rmtree(artifacts, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix="wg-e2e-", dir="/var/tmp"))
    box = Container(base_root, workdir, artifacts)
    try:
        box.prepare()
        box.boot()
        yield box
        box.save_artifacts()
    finally:
        box.poweroff()
        box.remove()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    box = getattr(item, "funcargs", {}).get("container")
    if not report.failed or not isinstance(box, Container):
        return
    try:
        artifacts = box.save_artifacts()
        journal = box.journal_text()
    except Exception as error:  # evidence collection must not hide the failure
        report.sections.append(("e2e evidence", f"could not collect: {error!r}"))
        return
    report.sections.append(("container journal (tail)", "\n".join(journal.splitlines()[-200:])))
    report.sections.append(("container console (tail)", box.console_text()[-6000:]))
    report.sections.append(("e2e artifacts", f"full logs kept in {artifacts}"))
