"""Torture: waagent.conf edits and the log tailer under faults (issue 14 items 3, 4, 6).

- kill -9 of a guard process in the middle of lease edits (300+), then of the real
  daemon: never a torn waagent.conf, no temporary file left once the next guard starts;
- another program replacing waagent.conf during lease toggles: no lost update;
- 100 log rotations of each kind under a ~12,000 lines/s writer: lost 0, doubled 0;
- ENOSPC on the conf, state and output directories (a 64 KiB tmpfs in a private mount
  namespace): a clear message, nothing half-written;
- a read-only root (a read-only bind mount in a private mount namespace): `verbose on`
  fails naming the path; `status` and `doctor` still work.
Every process is the suite's own and is ended by PID.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.torture.conftest import report
from tests.torture.rotation_harness import run_rotations
from waagent_guard.agent.conf import parse_conf
from waagent_guard.demo.simagent import lay_demo_guest

KILLS = int(os.environ.get("WG_TORTURE_KILLS", "320"))
ROTATIONS = int(os.environ.get("WG_TORTURE_ROTATIONS", "100"))
TOGGLES = int(os.environ.get("WG_TORTURE_TOGGLES", "3000"))
ROOT_ONLY = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) for a private mount namespace",
)


@pytest.fixture
def guest() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="wg-files-", dir="/tmp"))
    try:
        yield lay_demo_guest(top / "g")
    finally:
        shutil.rmtree(top, ignore_errors=True)


def wait_dead(pid: int) -> None:
    """Until `pid` (a grandchild, reaped by its parent) is a zombie or gone."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return
        if fields[0] in ("Z", "X"):
            return
        time.sleep(0.001)
    raise AssertionError(f"pid {pid} did not die")


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(".waagent.conf."))


# --- kill -9 during lease edits -----------------------------------------------------------

# Imports the guard once, then forks one child per round that toggles the lease in a
# loop (the guard's own code, as `verbose on/off` runs it); the test kills the child.
TOGGLER = r"""
import os, sys
from pathlib import Path
from waagent_guard.agent.conf import set_conf_value
from waagent_guard.lease import GuardState, begin_lease, end_lease
from waagent_guard.sysroot import Sysroot
root = Sysroot(Path(sys.argv[1]))
conf = root.path("/etc/waagent.conf")
child = None
while True:
    command = sys.stdin.readline().strip()
    if child is not None:
        os.waitpid(child, 0)  # the test killed it
        child = None
    if command != "go":
        break
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(writer)
        os.read(reader, 1)  # wait until the parent told the test our pid
        # Starting: the first edit removes what a killed guard left (and normalises).
        set_conf_value(conf, "Logs.Verbose", "n", sysroot=root)
        os.write(1, b"edited\n")
        state = GuardState()
        while True:
            state, _ = begin_lease(conf, state, 2e9, 3600, "", "torture", sysroot=root)
            state, _ = end_lease(conf, state, sysroot=root)
    os.close(reader)
    print(child, flush=True)
    os.write(writer, b"x")
    os.close(writer)
"""


def test_kill_9_during_lease_edits_never_tears_the_file_nor_leaves_temp_files(
    guest: Path,
) -> None:
    conf = guest / "etc/waagent.conf"
    original = conf.read_bytes()
    verbose = parse_conf(original).with_value("Logs.Verbose", "y").render()
    server = subprocess.Popen(
        [sys.executable, "-c", TOGGLER, str(guest)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdin is not None and server.stdout is not None
    torn = 0
    left_by_kills = 0
    kills_with_temp = 0
    left_after_next_start = 0
    previous: list[str] = []
    rng = random.Random(14)
    started = time.monotonic()
    try:
        for _ in range(KILLS):
            server.stdin.write("go\n")
            server.stdin.flush()
            child = int(server.stdout.readline())
            assert server.stdout.readline().strip() == "edited"  # its first edit is done
            left_after_next_start += sum(1 for name in previous if (conf.parent / name).exists())
            time.sleep(rng.uniform(0.0, 0.02))
            os.kill(child, signal.SIGKILL)
            wait_dead(child)
            data = conf.read_bytes()
            torn += data not in (original, verbose)
            previous = temp_files(conf.parent)
            left_by_kills += len(previous)
            kills_with_temp += bool(previous)
        server.stdin.write("stop\n")
        server.stdin.flush()
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    # The daemon's start removes what the last kill left.
    if not previous:
        (conf.parent / ".waagent.conf.4194303.deadbeef.tmp").write_bytes(b"half")
        previous = temp_files(conf.parent)
    from waagent_guard.agent.conf import clean_stale_edits
    from waagent_guard.sysroot import Sysroot

    clean_stale_edits(conf, Sysroot(guest))
    left_after_next_start += len(temp_files(conf.parent))
    report(
        "files.kill9_lease_edits",
        f"{KILLS} kill -9 of a guard process mid-toggle in {time.monotonic() - started:.0f} s: "
        f"torn files {torn}, temp files left by the kills {left_by_kills} (in {kills_with_temp} "
        f"kills), left after the next start {left_after_next_start}",
    )
    assert torn == 0
    assert left_after_next_start == 0


def toggle_over_the_socket(root: Path, stop: threading.Event) -> None:
    """`verbose on/off` requests to the daemon until it is gone (or `stop`)."""
    from waagent_guard.daemon.control import request

    socket_path = root / "run/waagent-guard/control.sock"
    while not stop.is_set():
        for op in ("verbose_on", "verbose_off"):
            try:
                request(socket_path, {"op": op, "duration": 3600, "restart": False}, timeout=5)
            except Exception:
                return


def test_kill_9_of_the_real_daemon_during_lease_edits(tmp_path: Path) -> None:
    """The daemon itself, killed while it serves `verbose on/off`; its next start cleans."""
    from tests.integration.guard_harness import Daemon, Guest

    guest = Guest()
    rounds = int(os.environ.get("WG_TORTURE_DAEMON_KILLS", "12"))
    conf = guest.root / "etc/waagent.conf"
    original = conf.read_bytes()
    verbose = parse_conf(original).with_value("Logs.Verbose", "y").render()
    torn = 0
    left_at_kill = 0
    left_after_start = 0
    planted = conf.parent / ".waagent.conf.4194303.cafef00d.tmp"
    rng = random.Random(6)
    try:
        for _ in range(rounds):
            planted.write_bytes(b"left by an earlier kill")
            daemon = Daemon(guest)
            try:
                daemon.wait_notify("READY=1")
                left_after_start += len(temp_files(conf.parent))
                stop = threading.Event()
                thread = threading.Thread(target=toggle_over_the_socket, args=(guest.root, stop))
                thread.start()
                time.sleep(rng.uniform(0.05, 0.5))
                daemon.process.kill()
                daemon.process.wait(timeout=20)
                stop.set()
                thread.join(timeout=60)
            finally:
                if daemon.process.poll() is None:
                    daemon.process.kill()
                daemon.stop()
            torn += conf.read_bytes() not in (original, verbose)
            left_at_kill += len(temp_files(conf.parent))
    finally:
        guest.cleanup()
    report(
        "files.kill9_daemon",
        f"{rounds} kill -9 of the daemon serving verbose on/off: torn files {torn}, temp "
        f"files after its next start {left_after_start} (one planted before each start)",
    )
    assert torn == 0
    assert left_after_start == 0


# --- another writer replacing waagent.conf -------------------------------------------------

OTHER_WRITER = r"""
import os, sys, time
conf, stop = sys.argv[1], sys.argv[2]
last = lost = writes = 0
while not os.path.exists(stop):
    lines = open(conf, "rb").read().split(b"\n")
    seen = [int(l.split(b"=")[1]) for l in lines if l.startswith(b"Other.Counter=")]
    if seen and seen[0] < last:
        lost += 1  # our previous replacement was overwritten with older content
    last += 1
    new = b"\n".join(b"Other.Counter=%d" % last if l.startswith(b"Other.Counter=") else l
                     for l in lines)
    with open(conf + ".other", "wb") as handle:
        handle.write(new)
    os.replace(conf + ".other", conf)
    writes += 1
    time.sleep(0.0005)
print(writes, lost, flush=True)
"""


def test_a_concurrent_replacing_writer_loses_no_update(tmp_path: Path) -> None:
    from waagent_guard.errors import WriteError
    from waagent_guard.lease import GuardState, begin_lease, end_lease

    conf = tmp_path / "waagent.conf"
    conf.write_bytes(b"# conf\nOther.Counter=0\nLogs.Verbose=n\nExtensions.Enabled=y\n")
    stop = tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", OTHER_WRITER, str(conf), str(stop)],
        stdout=subprocess.PIPE, text=True,
    )
    state = GuardState()
    gave_up = 0
    started = time.monotonic()
    try:
        for _ in range(TOGGLES):
            try:
                state, _ = begin_lease(conf, state, 2e9, 3600, "", "torture")
                state, _ = end_lease(conf, state)
            except WriteError:
                gave_up += 1  # bounded retries, then a clear error: the file is theirs
                state = GuardState()
    finally:
        stop.touch()
        output = writer.communicate(timeout=30)[0].split()
    writes, lost = int(output[0]), int(output[1])
    report(
        "files.concurrent_writer",
        f"{TOGGLES} lease toggles against a writer replacing waagent.conf {writes} times in "
        f"{time.monotonic() - started:.0f} s: lost updates {lost}, toggles given up after "
        f"{10} retries {gave_up}",
    )
    assert lost == 0
    assert writes > 100
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".waagent.conf.")]


# --- log rotations under a heavy writer -----------------------------------------------------


@pytest.mark.parametrize("kind", ["rename", "gzip", "delete", "copytruncate"])
def test_rotations_under_a_heavy_writer_lose_and_double_nothing(
    tmp_path: Path, kind: str
) -> None:
    result = run_rotations(tmp_path, kind, rotations=ROTATIONS)
    report(f"files.rotation.{kind}", result.figure())
    assert result.written > ROTATIONS * 1000
    assert (result.lost, result.doubled) == (0, 0)


# --- ENOSPC and a read-only root --------------------------------------------------------------


def in_private_namespace(script: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `script` (sh) as root in a private mount namespace: its mounts vanish with it."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-euc", script],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


GUARD = f"{sys.executable} -m waagent_guard"


@ROOT_ONLY
def test_enospc_on_the_conf_directory_fails_cleanly(guest: Path) -> None:
    etc = guest / "etc"
    before = (etc / "waagent.conf").read_bytes()
    result = in_private_namespace(
        f"""
        cp -a {etc} {guest}/etc.saved
        mount -t tmpfs -o size=64k tmpfs {etc}
        cp -a {guest}/etc.saved/. {etc}/
        head -c 1m /dev/zero > {etc}/filler 2>/dev/null || true
        set +e
        {GUARD} verbose on --no-restart --root {guest}
        echo "exit=$?"
        ls -a {etc}
        cat {etc}/waagent.conf > {guest}/conf.after
        """
    )
    output = result.stdout + result.stderr
    assert "exit=73" in output, output
    assert "waagent.conf: write failed (disk full); the original is unchanged" in output
    assert "Traceback" not in output
    assert ".waagent.conf." not in result.stdout  # no temporary file left behind
    assert (guest / "conf.after").read_bytes() == before
    report("files.enospc.conf", "verbose on with /etc full: exit 73 'disk full; the original "
           "is unchanged', no temp file, waagent.conf intact")


@ROOT_ONLY
def test_enospc_on_the_state_directory_fails_before_touching_the_conf(guest: Path) -> None:
    state_dir = guest / "var/lib/waagent-guard"
    state_dir.mkdir(parents=True, exist_ok=True)
    before = (guest / "etc/waagent.conf").read_bytes()
    result = in_private_namespace(
        f"""
        mount -t tmpfs -o size=64k tmpfs {state_dir}
        head -c 1m /dev/zero > {state_dir}/filler 2>/dev/null || true
        set +e
        {GUARD} verbose on --no-restart --root {guest}
        echo "exit=$?"
        ls -a {state_dir}
        """
    )
    output = result.stdout + result.stderr
    assert "exit=73" in output, output
    assert "state.json: write failed (disk full)" in output
    assert "Traceback" not in output
    assert "state.json" not in result.stdout.split("exit=73")[1]  # neither file nor temp file
    assert (guest / "etc/waagent.conf").read_bytes() == before  # the lease never started
    report("files.enospc.state", "verbose on with the state directory full: exit 73 'disk "
           "full', no state file or temp file, waagent.conf untouched")


@ROOT_ONLY
def test_enospc_on_the_output_directory_fails_cleanly(guest: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    result = in_private_namespace(
        f"""
        mount -t tmpfs -o size=64k tmpfs {out}
        head -c 1m /dev/zero > {out}/filler 2>/dev/null || true
        set +e
        {GUARD} metrics --textfile {out} --root {guest}
        echo "metrics-exit=$?"
        {GUARD} bundle -o {out}/support.tar.gz --root {guest}
        echo "bundle-exit=$?"
        ls -a {out}
        """,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert "metrics-exit=73" in output, output
    assert "bundle-exit=73" in output, output
    assert "disk full" in output
    assert "Traceback" not in output
    listing = result.stdout.split("bundle-exit=73")[1].split()
    assert sorted(listing) == [".", "..", "filler"], listing  # nothing half-written
    report("files.enospc.output", "metrics --textfile and bundle -o into a full directory: "
           "exit 73 'disk full', nothing half-written left")


@ROOT_ONLY
def test_a_read_only_root_refuses_edits_clearly_and_still_reports(guest: Path) -> None:
    result = in_private_namespace(
        f"""
        mount --bind {guest} {guest}
        mount -o remount,bind,ro {guest}
        set +e
        {GUARD} verbose on --no-restart --root {guest}
        echo "verbose-exit=$?"
        {GUARD} status --root {guest} >/dev/null
        echo "status-exit=$?"
        {GUARD} doctor --root {guest} >/dev/null
        echo "doctor-exit=$?"
        """
    )
    output = result.stdout + result.stderr
    assert "verbose-exit=73" in output or "verbose-exit=77" in output, output
    assert "Read-only file system" in output
    assert f"{guest}/var/lib/waagent-guard" in output or "/etc/waagent.conf" in output
    assert "Traceback" not in output
    status = int(output.split("status-exit=")[1].split()[0])
    doctor = int(output.split("doctor-exit=")[1].split()[0])
    assert status in (0, 1, 2, 3, 4), output
    assert doctor in (0, 1, 2), output
    report("files.readonly_root", f"verbose on under a read-only root: refused naming the path "
           f"(no traceback); status exit {status}, doctor exit {doctor} (they still report)")


@ROOT_ONLY
def test_a_read_only_etc_refuses_the_edit_naming_the_conf_and_owes_no_lease(guest: Path) -> None:
    etc = guest / "etc"
    (guest / "var/lib/waagent-guard").mkdir(parents=True, exist_ok=True)
    before = (etc / "waagent.conf").read_bytes()
    result = in_private_namespace(
        f"""
        mount --bind {etc} {etc}
        mount -o remount,bind,ro {etc}
        set +e
        {GUARD} verbose on --no-restart --root {guest}
        echo "verbose-exit=$?"
        {GUARD} verbose status --root {guest}
        """
    )
    output = result.stdout + result.stderr
    assert "verbose-exit=73" in output, output
    assert f"cannot create a temporary file in {etc}: Read-only file system" in output
    assert "lease: none" in output  # the failed edit left no lease to revert
    assert "Traceback" not in output
    assert (etc / "waagent.conf").read_bytes() == before
    report("files.readonly_etc", "verbose on with a read-only /etc: exit 73 naming "
           "/etc/waagent.conf's directory, no lease recorded, file intact")


def test_the_daemons_log_feed_counts_every_line_across_rotations() -> None:
    """The real daemon follows a log rotated every way under the heavy writer:
    waagent_log_records_total must end equal to the lines written."""
    from tests.integration.guard_harness import Daemon, Guest, wait_for

    guest = Guest(overrides={"agent": {"log_path": "/var/log/heavy/waagent.log"}})
    directory = guest.root / "var/log/heavy"
    directory.mkdir(parents=True)
    (directory / "waagent.log").touch()
    rotations = max(1, ROTATIONS // 4)
    written = 0
    daemon = Daemon(guest)
    try:
        daemon.wait_notify("READY=1")
        def counted() -> float:
            return daemon.metric('waagent_log_records_total{level="INFO"}') or 0.0

        def settle(base: int) -> Callable[[int], None]:
            # copytruncate: the daemon must have read what is there before the truncate
            # (the window no reader can close otherwise). The last record stays open
            # until the next header line arrives, hence the - 1.
            def wait(delivered: int) -> None:
                wait_for(lambda: counted() >= base + delivered - 1, timeout=30,
                         what="the daemon catching up before the truncate")
            return wait

        for kind in ("rename", "gzip", "delete", "copytruncate"):
            result = run_rotations(directory, kind, rotations=rotations, settle=settle(written))
            written += result.written
            assert (result.lost, result.doubled) == (0, 0), result.figure()
        with open(directory / "waagent.log", "a") as log:  # completes the last record
            log.write("2024-01-01T00:00:01.000000Z INFO ExtHandler ExtHandler the end\n")
        try:
            wait_for(lambda: counted() >= written, timeout=60, what="the daemon's count")
        except AssertionError:
            pass
        total = counted()
    finally:
        daemon.stop()
        guest.cleanup()
    report(
        "files.rotation.daemon_feed",
        f"the daemon following {4 * rotations} rotations ({rotations} of each kind) under "
        f"the heavy writer: {written} lines written, waagent_log_records_total {total:.0f}",
    )
    assert total == written
