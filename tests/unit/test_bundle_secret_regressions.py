"""Secrets that reached a finished bundle (an adversarial review, 2026-12-03): a kept
tail's leading base64-looking lines, a failed command's stderr in MANIFEST.json, and a
secret in a member's name quoted by the leak error. Each test failed before its fix."""

from __future__ import annotations

import json
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import pytest

from tests.integration.test_bundle_collect import planted_tree
from waagent_guard.bundle.sources import CommandOutcome
from waagent_guard.commands.bundle import BundleRequest, create_bundle
from waagent_guard.redact import Redactor
from waagent_guard.sysroot import Sysroot

# Lines made of base64 characters and '=' only: a kept tail holds them back, then
# emits them without running a single rule (Redactor._held_line / finish).
HELD_SECRETS = [b"token=CANARYtoken", b"AccountKey=CANARYkey==", b"apikey=CANARY",
                b"Secret=CANARY", b"SharedAccessKey=CANARY="]


@pytest.mark.parametrize("line", HELD_SECRETS)
@pytest.mark.parametrize("then", [b"an ordinary log line\n", b""])  # _held_line / finish
def test_a_kept_tail_redacts_its_leading_base64_looking_lines(line: bytes,
                                                                      then: bytes) -> None:
    redactor = Redactor(starts_mid_stream=True)
    out = redactor.feed(line + b"\n" + then) + redactor.finish()
    # Before the fix the line came out as it went in: for token/AccountKey/apikey/
    # SharedAccessKey no leak pattern matches either and the bundle was published; for
    # Secret= (and password=, a MIIB... DER line) the whole bundle was deleted instead
    # (a hostile log tail could make every bundle fail).
    assert b"CANARY" not in out


def test_a_kept_tail_leaks_through_a_whole_bundle(tmp_path: Path) -> None:
    root = planted_tree(tmp_path)
    filler = b"2024-01-01T00:00:00.000000Z INFO ExtHandler filler line\n"
    tail = b"token=CANARYtoken1\nAccountKey=CANARYkey2==\n" + filler * 100
    (root / "var/log/waagent.log").write_bytes(filler * 500 + tail)
    out = tmp_path / "b.tar.gz"
    # The kept tail starts 5 bytes before `tail`: in the last filler line, skipped.
    create_bundle(BundleRequest(output=out, max_file_bytes=len(tail) + 5), sysroot=Sysroot(root),
                  runner=_ok_runner)
    with tarfile.open(out) as archive:
        leaked = [m.name for m in archive if m.isfile()
                  and b"CANARY" in archive.extractfile(m).read()]  # type: ignore[union-attr]
    assert leaked == []


def _ok_runner(argv: Sequence[str], timeout: float, stdout: BinaryIO,
               stderr: BinaryIO) -> CommandOutcome:
    stdout.write(b"ok\n")
    return CommandOutcome(0)


def _failing_status(argv: Sequence[str], timeout: float, stdout: BinaryIO,
                    stderr: BinaryIO) -> CommandOutcome:
    if "status" in argv and "--json" in argv:
        stderr.write(b"Traceback ...\nValueError: Password=CANARYpw AccountKey=CANARYkey\n")
        return CommandOutcome(3)
    return _ok_runner(argv, timeout, stdout, stderr)


def test_a_failed_commands_stderr_in_the_manifest_is_redacted(tmp_path: Path) -> None:
    """Skipped.reason carries the last stderr line of a command outside ok_returncodes
    into MANIFEST.json; it is redacted like the .stderr.txt member."""
    root = planted_tree(tmp_path)
    out = tmp_path / "b.tar.gz"
    result = create_bundle(BundleRequest(output=out), sysroot=Sysroot(root),
                           runner=_failing_status)
    assert b"CANARY" not in json.dumps(result.manifest).encode()


def test_the_leak_error_never_quotes_the_secret_in_a_member_name() -> None:
    """docs/SECURITY.md: exits 70 "naming the member and the rule but never the secret",
    also when the secret is in the member's name."""
    import io

    from waagent_guard.bundle.sources import MemberSink
    from waagent_guard.bundle.verify import VerifyingWriter
    from waagent_guard.bundle.writer import _add
    from waagent_guard.errors import SecretLeakError

    sink = MemberSink(None)
    sink.write(b"fine\n")
    verifier = VerifyingWriter(io.BytesIO())
    with pytest.raises(SecretLeakError) as caught:
        with tarfile.open(fileobj=verifier, mode="w",  # type: ignore[call-overload]
                          format=tarfile.PAX_FORMAT) as archive:
            _add(archive, verifier, "top/var/log/azure/Ext/dl?sv=1&sig=CANARYsecret.log", sink, 0)
        verifier.close()
    assert "CANARY" not in caught.value.message
