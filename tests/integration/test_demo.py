"""The README's main job: `waagent-guard demo` runs the guard against the demo guest."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

from tests.integration.guard_harness import free_port, wait_for


def test_demo_serves_metrics_and_stops_by_itself() -> None:
    directory = Path(tempfile.mkdtemp(prefix="wg-demo-", dir="/tmp")) / "guest"
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "waagent_guard", "demo", "--dir", str(directory), "--port",
         str(port), "--duration", "6s"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        def scrape() -> str:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return str(r.read().decode())
            except OSError:
                return ""

        text = wait_for(lambda: "waagent_up 1.0" in (t := scrape()) and t, what="the demo agent up")
        assert 'waagent_info{daemon_version="2.7.3.0"' in str(text)
        banner = process.stdout.readline() + process.stdout.readline()  # type: ignore[union-attr]
        status_line = process.stdout.readline()  # type: ignore[union-attr]
        # The printed command works as printed in another shell, without the venv on PATH.
        assert status_line.startswith("status:     ")
        shown = subprocess.run(
            ["/bin/sh", "-c", status_line.removeprefix("status:     ")],
            capture_output=True, text=True, timeout=60, check=False,
            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"},
        )
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.startswith("waagent-guard status: healthy")
        rest = process.stdout.read()  # type: ignore[union-attr]  # EOF: --duration ends it
        process.wait(timeout=30)
        output = banner + status_line + rest
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert f"metrics:    http://127.0.0.1:{port}/metrics" in output
    assert f"status --root {directory}\n" in output
    assert "kill -9" in output
    assert "cannot read the guest time zone" not in output  # the guest has etc/localtime
    assert not (directory / "var/run/waagent.pid").exists()  # the demo stopped its agent


def test_demo_refuses_a_directory_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    result = subprocess.run(
        [sys.executable, "-m", "waagent_guard", "demo", "--dir", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 64
    assert "not empty" in result.stderr


def test_demo_tool_reports_usage_and_agent_state(tmp_path: Path) -> None:
    def tool(*argv: str) -> int:
        return subprocess.run([sys.executable, "-m", "waagent_guard.demo.guestctl", *argv],
                              capture_output=True, timeout=60, check=False).returncode

    assert tool("bogus") == 64
    assert tool("is-running", str(tmp_path)) == 3
    assert tool("stop", str(tmp_path)) == 0


def test_a_bundle_of_the_demo_guest_contains_no_canary(tmp_path: Path) -> None:
    """Every secret in the demo is a CANARY; what is not a secret (a thumbprint) is not one."""
    import tarfile

    from waagent_guard.demo.simagent import lay_demo_guest

    root = lay_demo_guest(tmp_path / "guest")
    settings = root / (
        "var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0/"
        "config/0.settings"
    )
    assert "CANARY" in settings.read_text()  # the secrets are planted ...
    archive = tmp_path / "b.tar.gz"
    result = subprocess.run(
        [sys.executable, "-m", "waagent_guard", "bundle", "--root", str(root), "-o", str(archive)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    with tarfile.open(archive) as tar:
        leaked = [m.name for m in tar if m.isfile()
                  and b"CANARY" in tar.extractfile(m).read()]  # type: ignore[union-attr]
    assert leaked == []  # ... and none reaches the bundle, the thumbprint included
