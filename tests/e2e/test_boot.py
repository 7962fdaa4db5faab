"""End to end: the guard baked into an image before its first boot, then rebooted.

The way image builders bake a VM image: the .deb is installed into the
container's root with `apt-get install ./waagent-guard_*.deb` in a chroot, with
no network (`unshare --net`) and a policy-rc.d that forbids starting anything,
BEFORE the system ever boots. Then the container is booted and powered off
again several times (a boot takes about a second): after every boot the guard
and Debian's agent (whose unit has `After=multi-user.target`) are active, the
journal holds no ordering-cycle line, and the guard did not touch the agent
while systemd was still starting it. Last, an upgrade to a higher version and
one more reboot. Issue 10 item 1.

`WG_E2E_BOOT_DEB=/path/to.deb` boots that package instead of `make deb`'s
(used to reproduce the bug with an older unit).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ARTIFACTS, Debs
from tests.e2e.container import Container, ContainerError, wait_for

pytestmark = pytest.mark.e2e

AGENT = "walinuxagent.service"
GUARD = "waagent-guard.service"
BOOTS = 5
# PID 1 computes the boot transaction before journald runs: in a container (no
# /dev/kmsg) its lines about a cycle reach no log at all (the guard is just
# `inactive (dead)`). So each boot also asks `systemd-analyze verify
# multi-user.target`, which builds the same start transaction and prints them.
# What systemd logs when it has to break an ordering cycle (src/core/transaction.c).
CYCLE_MARKERS = ("ordering cycle", "transaction order is cyclic", "to break ordering cycle")
CHROOT_PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"


def bake(root: Path, deb: Path) -> None:
    """Install `deb` into the never-booted `root` as an image builder does (no network)."""
    # apt wants the canonical file name of a local package (name_version_arch.deb).
    fields = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    info = dict(line.split(": ", 1) for line in fields.splitlines() if ": " in line)
    name = f"{info['Package']}_{info['Version']}_{info['Architecture']}.deb"
    target = root / "root" / name
    shutil.copyfile(deb, target)
    policy = root / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    script = (
        'mount -t proc proc "$1/proc" && '
        f'chroot "$1" env -i {CHROOT_PATH} DEBIAN_FRONTEND=noninteractive '
        'apt-get install -y -q "/root/$2"'
    )
    try:
        # A private mount namespace: /proc is unmounted when the command ends.
        result = subprocess.run(
            ["unshare", "--net", "--mount", "--fork", "sh", "-ec", script, "bake",
             str(root), name],
            capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
    finally:
        policy.unlink()
        target.unlink()
    if result.returncode != 0:
        raise ContainerError(
            f"apt-get install ./{name} in the chroot failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        )


def cycle_lines(journal: str) -> list[str]:
    return [
        line for line in journal.splitlines()
        if any(marker in line.lower() for marker in CYCLE_MARKERS)
    ]


def _state(box: Container, unit: str) -> dict[str, str]:
    return box.show(unit, "ActiveState", "SubState", "Job", "MainPID")


def _guard_restarts(box: Container) -> float:
    samples = box.metrics()
    return sum(v for k, v in samples.items() if k.startswith("waagent_guard_restarts_total"))


def check_boot(box: Container, number: int) -> dict[str, str]:
    """The facts of one boot; raises with the evidence when one is wrong."""
    journal = box.journal_text()
    verify = box.run(
        ["systemd-analyze", "verify", "--no-pager", "multi-user.target"], check=False, timeout=60
    )
    (box.artifacts / f"journal-boot-{number}.txt").write_text(journal)
    (box.artifacts / f"verify-boot-{number}.txt").write_text(verify.stdout + verify.stderr)
    cycles = cycle_lines(journal) + cycle_lines(verify.stdout + verify.stderr)
    guard = _state(box, GUARD)
    if guard["ActiveState"] != "active":
        # A start job still queued or running may finish; a dead unit with no job never does.
        try:
            wait_for(
                lambda: _state(box, GUARD)["ActiveState"] == "active" or None,
                timeout=30, what=f"{GUARD} active after boot {number}",
            )
        except ContainerError:
            raise ContainerError(
                f"boot {number}: {GUARD} is {guard} after boot; ordering-cycle lines: {cycles}"
            ) from None
    wait_for(
        lambda: _state(box, AGENT)["SubState"] == "running" or None,
        timeout=60, what=f"{AGENT} running after boot {number}",
    )
    assert not cycles, f"boot {number}: systemd broke an ordering cycle:\n" + "\n".join(cycles)
    # The agent was started by systemd, not by the guard racing the boot transaction.
    wait_for(lambda: box.metrics() or None, timeout=60, what="the guard's metrics")
    restarts = _guard_restarts(box)
    assert restarts == 0, f"boot {number}: the guard restarted the agent during boot"
    return {"guard": "active", "agent": "running", "cycles": str(len(cycles))}


@pytest.fixture(scope="module")
def image(base_root: Path, debs: Debs) -> Iterator[Container]:
    """A copy of the cached root with the guard baked in, never booted yet."""
    deb = Path(os.environ.get("WG_E2E_BOOT_DEB") or debs.current)
    artifacts = ARTIFACTS / "test_boot"
    shutil.rmtree(artifacts, ignore_errors=True)
    workdir = Path(tempfile.mkdtemp(prefix="wg-e2e-boot-", dir="/var/tmp"))
    box = Container(base_root, workdir, artifacts, machine=f"wg-e2e-boot-{os.getpid()}")
    try:
        box.prepare()
        bake(box.root, deb)
        yield box
    finally:
        box.poweroff()
        box.remove()


def test_guard_and_agent_start_at_every_boot_without_an_ordering_cycle(
    image: Container,
) -> None:
    box = image
    assert box.path("/lib/systemd/system/waagent-guard.service").is_file()
    wants = box.path("/etc/systemd/system/multi-user.target.wants/waagent-guard.service")
    assert wants.is_symlink(), "the package enables the guard"
    results = []
    for number in range(1, BOOTS + 2):  # the first boot, then BOOTS reboots
        box.boot()
        try:
            results.append(check_boot(box, number))
        finally:
            box.save_artifacts()
            box.poweroff()
    print(f"boots: {len(results)}, guard active and agent running after each, no cycle")
    assert len(results) == BOOTS + 1


def test_upgrade_then_reboot_keeps_the_guard_starting(image: Container, debs: Debs) -> None:
    box = image
    box.boot()
    try:
        check_boot(box, 100)
        shutil.copyfile(debs.upgrade, box.path("/root/waagent-guard-upgrade.deb"))
        box.run(["dpkg", "-i", "/root/waagent-guard-upgrade.deb"], timeout=300)
        version = box.run(["dpkg-query", "-W", "-f=${Version}", "waagent-guard"]).stdout
        assert version.endswith("+e2e1")
    finally:
        box.poweroff()
    box.boot()
    try:
        check_boot(box, 101)
        assert box.run(["systemctl", "is-enabled", GUARD]).stdout.strip() == "enabled"
    finally:
        box.save_artifacts()
        box.poweroff()
