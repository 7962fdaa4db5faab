"""The one-pass verification (waagent_guard/bundle/verify.py, issue 15): every byte tarfile
writes is scanned before the compressor sees it, and only the runs the redactor's gate
passed as clean are not gated a second time."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.secret_corpus import ALL_FORMS
from waagent_guard.bundle.sources import MemberSink
from waagent_guard.bundle.verify import VerifyingWriter
from waagent_guard.bundle.writer import _add
from waagent_guard.errors import GuardError, SecretLeakError
from waagent_guard.redact import (
    DEFAULT_RULES,
    MIN_CLEAN_BYTES,
    LeakScanner,
    Redactor,
    Rule,
    find_leaks,
    gate_hits,
)

CLEAN_LINE = b"2024-01-01T00:00:00.000000Z INFO ExtHandler ExtHandler Goal state is in effect\n"
CLEAN_RUN = CLEAN_LINE * (2 * MIN_CLEAN_BYTES // len(CLEAN_LINE))
SAS = b"GET https://a.blob.core.windows.net/c/b.vhd?sv=2019&sig=CANARYsecret%2B1%3D&se=2\n"


def _spool(data: bytes, claims: Sequence[tuple[int, int]] = ()) -> MemberSink:
    sink = MemberSink(None)
    sink.write(data, claims)
    return sink


def _redacted_sink(data: bytes, rules: Sequence[Rule], chunk: int) -> MemberSink:
    redactor = Redactor(rules)
    sink = MemberSink(None)
    for start in range(0, len(data), chunk):
        out = redactor.feed(data[start:start + chunk])
        sink.write(out, redactor.clean_ranges(out))
    sink.write(redactor.finish())
    return sink


def _tar(members: Sequence[tuple[str, MemberSink]]) -> tuple[VerifyingWriter, bytes]:
    inner = io.BytesIO()
    verifier = VerifyingWriter(inner)
    with tarfile.open(fileobj=verifier, mode="w", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      copybufsize=4096) as archive:
        for name, sink in members:
            _add(archive, verifier, name, sink, 0)
    verifier.close()
    return verifier, inner.getvalue()


def test_the_redactor_vouches_only_for_the_object_it_returned() -> None:
    redactor = Redactor()
    out = redactor.feed(CLEAN_RUN + SAS + CLEAN_RUN)
    claims = redactor.clean_ranges(out)
    assert claims and all(end - start >= MIN_CLEAN_BYTES for start, end in claims)
    for start, end in claims:
        assert gate_hits(out, start, end) == []
        assert out[start - 1:start] in (b"", b"\n") and out[end - 1:end] == b"\n"
    assert sum(end - start for start, end in claims) == len(out) - len(SAS.split(b"?")[0]) - len(
        b"?[REDACTED]\n")
    assert redactor.clean_ranges(bytes(bytearray(out))) == []  # equal bytes, another object
    redactor.feed(CLEAN_LINE)
    assert redactor.clean_ranges(out) == []  # only the last output


def test_claimed_runs_are_not_gated_again_and_the_rest_is() -> None:
    sink = _redacted_sink(CLEAN_RUN + SAS + CLEAN_RUN, [], 1 << 20)  # no rules: sig= survives
    verifier = VerifyingWriter(io.BytesIO())
    with pytest.raises(SecretLeakError, match=r"top/log: a secret \(sas_signature\) survived"):
        with tarfile.open(fileobj=verifier, mode="w") as archive:  # type: ignore[call-overload]
            _add(archive, verifier, "top/log", sink, 0)
    verifier.close()
    clean = _redacted_sink(CLEAN_RUN * 40, DEFAULT_RULES, 1 << 20)
    verifier, data = _tar([("top/clean", clean)])
    assert verifier.skipped_bytes == clean.size
    # Gated: the 1 KiB overlap of each 4 KiB read, headers, padding and end blocks.
    assert verifier.gated_bytes < len(data) - clean.size + clean.size // 3


def test_a_claim_is_trusted_only_for_the_whole_lines_it_holds() -> None:
    # A claim that starts or ends inside a line (here: inside the SAS line) does not
    # cover that line: its bytes are gated and the secret found.
    data = CLEAN_RUN + SAS + CLEAN_RUN
    at = len(CLEAN_RUN) + 20
    for claim in [(0, at), (at, len(data)), (len(CLEAN_RUN) + 5, len(CLEAN_RUN) + len(SAS) - 5)]:
        scanner = LeakScanner()
        leak = scanner.feed(data, [claim]) or scanner.finish()
        assert leak is not None and leak.rule == "sas_signature", claim


def test_a_secret_in_a_member_name_is_caught_in_the_tar_header() -> None:
    name = "top/var/log/azure/Ext/run?sv=1&sig=CANARYsecret.log"
    with pytest.raises(SecretLeakError, match=r"the tar header of top/var/log/azure/Ext/run"):
        _tar([(name, _spool(b"fine\n"))])


def test_a_member_that_skipped_the_redactor_is_scanned_in_full() -> None:
    # MANIFEST.json and anything else spooled without the redactor carries no claims.
    for form in sorted(ALL_FORMS):
        data = b"x\n" + ALL_FORMS[form] + b"\n"
        if find_leaks(io.BytesIO(data)) is None:
            continue  # a form only the line rules know (no leak pattern)
        with pytest.raises(SecretLeakError, match=r"top/raw: a secret"):
            _tar([("top/ok", _spool(CLEAN_RUN)), ("top/raw", _spool(data))])


def test_content_written_past_the_spool_source_is_scanned_from_a_line_start() -> None:
    # tarfile handed bytes that are not the source's last read: scanned as "other"
    # bytes, with NUL read as a line end so a line-anchored rule sees the member start.
    verifier = VerifyingWriter(io.BytesIO())
    data = b"password: hunter2-CANARY\n"
    assert find_leaks(io.BytesIO(data)) is not None
    with pytest.raises(SecretLeakError, match="outside any redacted member content"):
        with tarfile.open(fileobj=verifier, mode="w") as archive:  # type: ignore[call-overload]
            info = tarfile.TarInfo("top/bypass")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        verifier.close()


def test_a_spool_changed_after_redaction_fails_the_crc_check() -> None:
    sink = _redacted_sink(CLEAN_RUN, DEFAULT_RULES, 1 << 20)
    sink.file.seek(100)
    sink.file.write(b"X")
    with pytest.raises(GuardError, match=r"top/log: the spooled member changed"):
        _tar([("top/log", sink)])


def test_every_byte_of_the_archive_passed_the_verifier() -> None:
    verifier, data = _tar([("top/a", _spool(CLEAN_RUN)), ("top/b", _spool(b""))])
    assert verifier.position == len(data)
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        assert archive.getnames() == ["top/a", "top/b"]
        member = archive.extractfile("top/a")
        assert member is not None and member.read() == CLEAN_RUN


_PIECE = st.one_of(
    st.sampled_from(sorted(ALL_FORMS.values())),
    st.just(CLEAN_RUN),
    st.sampled_from([CLEAN_LINE, b"\n", b" ", b"{", b"\"", b"\\", b"-----", b"sig"]),
    st.binary(max_size=8),
)
_RULE_SUBSETS = st.lists(st.sampled_from(DEFAULT_RULES), unique=True).map(
    lambda chosen: tuple(rule for rule in DEFAULT_RULES if rule in chosen))


@settings(max_examples=200, deadline=None)
@given(st.lists(_PIECE, max_size=25), _RULE_SUBSETS, st.sampled_from([7, 4096, 50_000, 1 << 20]),
       st.sampled_from([512, 10_000, 1 << 20]))
def test_skipping_claimed_runs_finds_what_the_full_scan_finds(
    pieces: list[bytes], rules: tuple[Rule, ...], chunk: int, read: int
) -> None:
    """Redacted with any subset of the rules (so secrets survive), fed in any chunks, read
    back in any sizes: the verification with the claims finds a leak exactly when
    `find_leaks` over the whole member does."""
    sink = _redacted_sink(b"".join(pieces), rules, chunk)
    sink.file.seek(0)
    whole = sink.file.read()
    expected = find_leaks(io.BytesIO(whole))
    verifier = VerifyingWriter(io.BytesIO())
    source = verifier.source("top/m", sink)
    sink.file.seek(0)
    scanner = LeakScanner()
    found = None
    while found is None and (data := source.read(read)):
        found = scanner.feed(data, source.clean_in_last())
    found = found or scanner.finish()
    assert (found is None) == (expected is None)
