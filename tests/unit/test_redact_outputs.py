"""Every known secret form through every output that shows guest text (issues 13.4, 14.2)."""

from __future__ import annotations

import io
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.secret_corpus import ALL_FORMS, BLOCK_FORMS, CANARY, TEXT_FORMS
from waagent_guard.agent.logevents import redact_sas
from waagent_guard.doctor.extfacts import scrub
from waagent_guard.logsetup import configure_cli_logging, configure_daemon_logging
from waagent_guard.redact import (
    DEFAULT_RULES,
    Redactor,
    SubstitutionRule,
    find_leaks,
    gate_matches,
    redact_bytes,
    redact_text,
    redact_value,
)


def _framed(form: bytes) -> bytes:
    return b"INFO before\n" + form + b"\nINFO after\n"


@pytest.mark.parametrize("name", sorted(ALL_FORMS))
def test_every_form_is_redacted_whole_and_passes_verification(name: str) -> None:
    out, counts = redact_bytes(_framed(ALL_FORMS[name]))
    assert CANARY not in out
    assert counts
    assert find_leaks(io.BytesIO(out)) is None
    assert out.endswith(b"INFO after\n")


@pytest.mark.parametrize("name", sorted(ALL_FORMS))
@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_every_form_is_redacted_whatever_the_chunking(name: str, chunk: int) -> None:
    data = _framed(ALL_FORMS[name])
    redactor = Redactor()
    out = b"".join(redactor.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    out += redactor.finish()
    assert CANARY not in out


@pytest.mark.parametrize(
    "name",
    ["pem_private_key", "pem_certificate_store", "putty_key", "der_private_key", "pfx_store",
     "der_ec_key", "der_certificate", "smime_p7m", "ssh2_key", "base64_der_inline"],
)
def test_verification_fails_closed_on_key_and_certificate_material(name: str) -> None:
    assert find_leaks(io.BytesIO(_framed(ALL_FORMS[name]))) is not None


@pytest.mark.parametrize("name", ["der_private_key", "pfx_store", "der_certificate"])
def test_a_binary_store_is_recognised_by_its_bytes_as_a_whole_file(name: str) -> None:
    out, counts = redact_bytes(ALL_FORMS[name])
    assert out == b"[REDACTED: der_material, whole file]\n"
    assert counts == {"der_material": 1}


@pytest.mark.parametrize("name", sorted(TEXT_FORMS))
def test_doctor_scrub_log_events_and_redact_text_use_the_one_redaction(name: str) -> None:
    text = TEXT_FORMS[name].decode("utf-8", "surrogateescape")
    for redacted in (redact_text(text), scrub(text), redact_sas(text)):
        assert "CANARY" not in redacted


def test_redact_text_leaves_ordinary_text_alone() -> None:
    text = "2024-01-01T00:00:00Z INFO ExtHandler Agent WALinuxAgent-2.9.1.1 is running"
    assert redact_text(text) is text


@pytest.mark.parametrize("name", sorted(TEXT_FORMS))
def test_the_guard_own_cli_log_lines_are_redacted(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_cli_logging()
    try:
        logging.getLogger("waagent_guard.redaction_outputs").warning(
            "read %s", TEXT_FORMS[name].decode("utf-8", "surrogateescape")
        )
        assert "CANARY" not in capsys.readouterr().err
    finally:
        logging.getLogger().handlers.clear()


def test_the_daemon_log_lines_and_journal_fields_are_redacted() -> None:
    stream = io.StringIO()
    handler = configure_daemon_logging("info", environ={}, stream=stream)
    try:
        for form in TEXT_FORMS.values():
            logging.getLogger("waagent_guard.redaction_outputs").info(
                "msg %s", form.decode("utf-8", "surrogateescape"),
                extra={"WG_REASON": form.decode("utf-8", "surrogateescape")},
            )
        record = logging.LogRecord("x", logging.INFO, "f", 1, "%s", ("sig=CANARY",), None)
        record.WG_REASON = "Authorization: Bearer CANARY"
        assert handler.filter(record)
        assert "CANARY" not in record.getMessage() and "CANARY" not in record.WG_REASON
    finally:
        logging.getLogger().handlers.clear()
    assert "CANARY" not in stream.getvalue()
    assert stream.getvalue().count("\n") == len(TEXT_FORMS)


def test_every_substitution_fires_only_on_lines_the_gate_matches() -> None:
    for form in ALL_FORMS.values():
        for line in form.split(b"\n"):
            for rule in DEFAULT_RULES:
                if isinstance(rule, SubstitutionRule) and rule.pattern.search(line):
                    assert gate_matches(line), (rule.name, line)
                if rule.leak is not None and rule.leak.search(line):
                    assert gate_matches(line), (rule.name, line)


_PIECES = st.sampled_from([*(form for form in ALL_FORMS.values()), b"x", b" ", b"=", b":",
                           b"\"", b"'", b"\\", b"&quot;", b"%3D", b"/", b"@", b"\n"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(_PIECES, st.binary(max_size=12)), max_size=12))
def test_lines_the_gate_passes_are_left_byte_for_byte(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    redact_bytes(data)
    for line in data.split(b"\n"):
        if line and not gate_matches(line) and b"\n" + line + b"\n" in b"\n" + data + b"\n":
            # an ungated line stays unless a block or binary run around it swallowed it
            assert all(not (isinstance(rule, SubstitutionRule) and rule.pattern.search(line))
                       for rule in DEFAULT_RULES)


def test_secrets_spread_over_block_forms_never_survive_a_stream_that_starts_mid_file() -> None:
    for name, form in BLOCK_FORMS.items():
        data = b"tail of an older line\n" + form + b"\nINFO after\n"
        redactor = Redactor(starts_mid_stream=True)
        out = redactor.feed(data) + redactor.finish()
        assert CANARY not in out, name


def test_a_traceback_quoting_a_secret_is_redacted_in_the_daemon_log() -> None:
    """An exception message carries guest text; the formatter renders it after filters."""
    stream = io.StringIO()
    configure_daemon_logging("info", environ={}, stream=stream)
    try:
        for form in ALL_FORMS.values():
            try:
                raise ValueError(form.decode("utf-8", "surrogateescape"))
            except ValueError:
                logging.getLogger("waagent_guard.redaction_outputs").exception("failed")
    finally:
        logging.getLogger().handlers.clear()
    assert "ValueError" in stream.getvalue()
    assert "CANARY" not in stream.getvalue()


def test_redact_value_reaches_every_string_of_a_report() -> None:
    document = {"handler_state": "params sv=1&sig=CANARY&se=2", "n": 3,
                "list": [("Authorization: Bearer CANARYx", None)],
                "proxy": "http://user:CANARYpw@proxy.example:3128"}
    redacted = redact_value(document)
    assert "CANARY" not in repr(redacted)
    assert redacted["n"] == 3 and isinstance(redacted["list"][0], tuple)
