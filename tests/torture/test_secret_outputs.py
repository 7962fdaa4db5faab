"""Torture: the secret corpus through every output (issue 14 item 6).

Every form of tests/secret_corpus.py is planted where a guest has such text
(waagent.log errors, the extension's log, its status message, HandlerState, a
process's command line, waagent.conf's proxy) and every output is read:
`status --json`, `doctor` (text and JSON), `metrics` (label values included),
the support bundle (`--full`, every member) and the daemon's log lines
(logsetup's RedactingFilter, message, arguments and journal fields). A leak is
any CANARY in any output; the figure counts forms, outputs and leaks.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest

from tests import fuzzing
from tests.secret_corpus import ALL_FORMS, BLOCK_FORMS, CANARY, TEXT_FORMS
from tests.torture.conftest import report
from waagent_guard.cli import main
from waagent_guard.logsetup import configure_daemon_logging

VMSNAPSHOT = "var/lib/waagent/Microsoft.Azure.RecoveryServices.VMSnapshotLinux-1.0.9220.0"
EXT_LOG = "var/log/azure/Microsoft.Azure.RecoveryServices.VMSnapshotLinux"


def _text(form: bytes) -> str:
    return form.decode("utf-8", "surrogateescape")


def _plant(root: Path) -> None:
    lines = [f"2024-09-30T04:59:{n % 60:02d}.000000Z ERROR ExtHandler ExtHandler "
             f"Event: {_text(form)}" for n, form in enumerate(TEXT_FORMS.values())]
    with open(root / "var/log/waagent.log", "a", encoding="utf-8",
              errors="surrogateescape") as handle:
        handle.write("\n".join(lines) + "\n")
    with open(root / EXT_LOG / "extension.log", "ab") as handle:
        for form in TEXT_FORMS.values():
            handle.write(b"2024/09/30 04:59:00 ERROR:[Microsoft.Azure.RecoveryServices."
                         b"VMSnapshotLinux-1.0] failed: " + form + b"\n")
        for name, form in BLOCK_FORMS.items():
            (root / EXT_LOG / f"{name}.log").write_bytes(b"INFO start\n" + form + b"\nINFO end\n")
    message = " | ".join(_text(form) for form in TEXT_FORMS.values())
    document = [{"status": {"status": "error", "operation": "Enable", "code": "1",
                            "formattedMessage": {"message": message}}}]
    (root / VMSNAPSHOT / "status/1.status").write_text(json.dumps(document), encoding="utf-8")
    (root / VMSNAPSHOT / "config/HandlerState").write_bytes(TEXT_FORMS["sas_bare"])
    argv = ["python3", "-u", str(root / "usr/sbin/waagent"), "-daemon",
            *(_text(form) for form in list(TEXT_FORMS.values())[:20])]
    (root / "proc/100/cmdline").write_bytes(
        b"".join(a.encode("utf-8", "surrogateescape") + b"\0" for a in argv))
    with open(root / "etc/waagent.conf", "a", encoding="utf-8") as handle:
        handle.write("HttpProxy.Host=http://user:CANARYpw@proxy.example\nHttpProxy.Port=3128\n")


def _run(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue() + err.getvalue()


@pytest.fixture
def planted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from waagent_guard.commands import bundle
    from waagent_guard.doctor import facts

    assert bundle.create_bundle.__kwdefaults__ is not None
    monkeypatch.setitem(bundle.create_bundle.__kwdefaults__, "runner",
                        fuzzing.in_process_runner)
    monkeypatch.setattr(facts, "CPU_SAMPLE_SECONDS", 0.0)
    root = tmp_path / "root"
    fuzzing.build_base("healthy", root)
    _plant(root)
    return root


def test_the_secret_corpus_never_reaches_any_output(planted: Path, tmp_path: Path) -> None:
    root = str(planted)
    outputs: dict[str, bytes] = {}
    for name, argv in {
        "status --json": ["status", "--root", root, "--json"],
        "status": ["status", "--root", root],
        "doctor": ["doctor", "--root", root, "--no-probe"],
        "doctor --json": ["doctor", "--root", root, "--no-probe", "--json"],
        "metrics": ["metrics", "--root", root],
    }.items():
        code, text = _run(argv)
        assert code in fuzzing.OK_EXITS, (name, code, text[-500:])
        outputs[name] = text.encode("utf-8", "surrogateescape")
    archive = tmp_path / "b.tar.gz"
    code, text = _run(["bundle", "--root", root, "--full", "-o", str(archive)])
    assert code == 0, text
    with tarfile.open(archive) as bundle:
        for member in bundle.getmembers():
            extracted = bundle.extractfile(member)
            if extracted is not None:
                outputs[f"bundle:{member.name.split('/', 1)[-1]}"] = extracted.read()
    outputs["daemon log"] = _daemon_log_lines()
    leaks = {name: data.count(CANARY) for name, data in outputs.items() if CANARY in data}
    members = sum(1 for name in outputs if name.startswith("bundle:"))
    report("secret-corpus", f"{len(ALL_FORMS)} forms planted; 5 command outputs, {members} "
                            f"bundle members, daemon log lines: {sum(leaks.values())} leaks")
    assert leaks == {}


def _daemon_log_lines() -> bytes:
    stream = io.StringIO()
    handler = configure_daemon_logging("debug", environ={}, stream=stream)
    logger = logging.getLogger("waagent_guard.torture")
    try:
        for form in ALL_FORMS.values():
            text = _text(form)
            logger.warning("read %s", text, extra={"WG_REASON": text})
            logger.info(text)
            try:
                raise ValueError(text)
            except ValueError:
                logger.exception("failed on %s", text)
            record = logging.LogRecord("x", logging.INFO, "f", 1, "%s", (text,), None)
            record.WG_REASON = text
            handler.filter(record)
            stream.write(record.getMessage() + str(record.WG_REASON) + "\n")
    finally:
        logging.getLogger().handlers.clear()
    return stream.getvalue().encode("utf-8", "surrogateescape")
