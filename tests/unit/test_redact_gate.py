"""The redaction gate is a superset of every rule (issue 15, the bundle row).

Lines the gate does not pass are copied untouched, and on the lines it passes only
the rules whose anchors the line holds run; the archive's read-back (`find_leaks`)
uses the same gate. So a gate miss would be a redaction miss and a verification
miss at once. These tests prove, for every rule and every secret form we know, that
the gate and the rule's own anchors fire whenever the rule would change a line or
find a leak; and that gated redaction and verification give exactly the bytes,
counts and findings of running every rule on every line.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.secret_corpus import ALL_FORMS, CANARY
from waagent_guard.redact import (
    DEFAULT_RULES,
    GATE_BASE64,
    GATE_WORDS,
    AnchorIndex,
    BlockRule,
    Redactor,
    SubstitutionRule,
    find_leaks,
    gate_matches,
)


def _variants(line: bytes) -> Iterator[bytes]:
    """The line as written, and in other cases (the rules ignore case where guests do)."""
    yield line
    yield line.upper()
    yield line.lower()
    yield line.swapcase()


def _corpus_lines() -> Iterator[tuple[str, bytes]]:
    for name, form in sorted(ALL_FORMS.items()):
        for line in form.split(b"\n"):
            for variant in _variants(line):
                yield name, variant
                yield name, variant + b"\n"


def _substitute(rule: SubstitutionRule, text: bytes) -> bytes:
    return Redactor._substitute(rule, text)[0]


def _fires(rule: SubstitutionRule | BlockRule, line: bytes) -> bool:
    """Whether the redactor's own index (the production path) lets `rule` run on `line`."""
    index = AnchorIndex([rule.anchors])
    return index.fires(0, index.present(line, line.lower()))


def test_every_rule_has_anchors_and_each_holds_a_gate_word() -> None:
    """Structural: a line with a rule's anchor always passes the gate."""
    for rule in DEFAULT_RULES:
        assert rule.anchors, rule.name
        for anchor in rule.anchors:
            if isinstance(anchor, bytes):
                assert anchor == anchor.lower(), (rule.name, anchor)
                assert any(word in anchor for word in GATE_WORDS), (rule.name, anchor)
            else:
                assert anchor is GATE_BASE64, rule.name


@pytest.mark.parametrize("rule", DEFAULT_RULES, ids=lambda rule: f"{rule.name}-{id(rule) % 997}")
def test_the_gate_and_the_rule_anchors_fire_wherever_the_rule_matches_a_corpus_line(
    rule: SubstitutionRule | BlockRule,
) -> None:
    matched = 0
    for name, line in _corpus_lines():
        patterns: list[re.Pattern[bytes]] = []
        if isinstance(rule, SubstitutionRule):
            if _substitute(rule, line) != line:
                patterns.append(rule.pattern)
        else:
            patterns.append(rule.begin)
        if rule.leak is not None:
            patterns.append(rule.leak)
        for pattern in patterns:
            if pattern.search(line):
                matched += 1
                assert gate_matches(line), (rule.name, name, line)
                assert _fires(rule, line), (rule.name, name, line)
    assert matched, f"no corpus form exercises {rule.name}"


def test_each_substitution_sees_its_anchors_in_the_text_the_previous_rules_left() -> None:
    """Rules run in order on each other's output: check the anchors at every step."""
    substitutions = [rule for rule in DEFAULT_RULES if isinstance(rule, SubstitutionRule)]
    for name, line in _corpus_lines():
        text = line
        for rule in substitutions:
            result = _substitute(rule, text)
            if result != text:
                assert _fires(rule, text), (rule.name, name, text)
                assert gate_matches(text), (rule.name, name, text)
            text = result
        for rule in DEFAULT_RULES:
            if rule.leak is not None and rule.leak.search(text):
                assert _fires(rule, text), (rule.name, name, text)


def _redact(data: bytes, chunk: int, *, gated: bool, mid: bool) -> tuple[bytes, dict[str, int],
                                                                         str | None]:
    redactor = Redactor(DEFAULT_RULES, gated=gated, starts_mid_stream=mid)
    out = b"".join(redactor.feed(data[i : i + chunk]) for i in range(0, len(data), chunk))
    out += redactor.finish()
    return out, dict(redactor.counts), redactor.leaked


def _flip_case(data: bytes, mask: int) -> bytes:
    return bytes(byte ^ 0x20 if 0x41 <= (byte & 0xDF) <= 0x5A and (mask >> (i % 31)) & 1 else byte
                 for i, byte in enumerate(data))


_WORDS = [*GATE_WORDS, b"sig=", b"%3D", b"\\u0026", b"&quot;", b"Environment=", b"chpasswd:",
          b"<UserPassword>", b"</CustomData>", b"-----BEGIN CERTIFICATE-----", b"MII" + b"A" * 70,
          b'"password": "', b"'token': '", b"http://u:p@h", b"$6$salt$hash", b" = ", b": "]
_PIECE = st.one_of(
    st.sampled_from(sorted(ALL_FORMS.values())),
    st.tuples(st.sampled_from(sorted(ALL_FORMS.values())), st.integers(0, 2**31 - 1)).map(
        lambda pair: _flip_case(*pair)),
    st.sampled_from(_WORDS),
    st.sampled_from([b"\n", b" ", b"\t", b"  - ", b"\r\n", b"{", b"}", b"\"", b"'", b"\\"]),
    st.text(max_size=30).map(lambda text: text.encode("utf-8")),
    st.binary(max_size=16),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_PIECE, max_size=30), st.sampled_from([1, 7, 64, 4096, 1 << 20]), st.booleans())
def test_gated_redaction_equals_running_every_rule_on_every_line(
    pieces: list[bytes], chunk: int, mid: bool
) -> None:
    data = b"".join(pieces)
    gated = _redact(data, chunk, gated=True, mid=mid)
    ungated = _redact(data, chunk, gated=False, mid=mid)
    assert gated == ungated


@settings(max_examples=300, deadline=None)
@given(st.lists(_PIECE, max_size=30))
def test_gated_verification_finds_what_checking_every_line_finds(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    assert find_leaks(io.BytesIO(data)) == find_leaks(io.BytesIO(data), gated=False)
    out, _, _ = _redact(data, 4096, gated=True, mid=False)
    assert find_leaks(io.BytesIO(out)) == find_leaks(io.BytesIO(out), gated=False)


def test_gated_and_ungated_agree_on_the_whole_corpus_framed_in_log_lines() -> None:
    data = b"".join(b"2024-01-01T00:00:00Z INFO signal 15 to $system x\n" + form + b"\n"
                    for form in ALL_FORMS.values())
    gated = _redact(data, 65536, gated=True, mid=False)
    assert gated == _redact(data, 65536, gated=False, mid=False)
    assert CANARY not in gated[0]


def test_a_block_every_few_lines_scans_each_byte_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The torture fuzz (case 1361, waagent.log repeated 5,000 times: a PEM key and a
    protectedSettings object every few lines) took 25 s to bundle 3 MB: the fast path
    left at every block and scanned the rest of its 1 MiB window again each time."""
    import waagent_guard.redact as redact_module

    unit = (b"2024-01-02T00:00:00.000001Z INFO Daemon Azure Linux Agent Version: 2.9.1.1\n"
            b"2024-01-02T00:00:01.000001Z INFO ExtHandler Settings: "
            b'{"protectedSettings": "CANARY-x", "publicSettings": {}}\n'
            b"2024-01-02T00:00:03.000001Z ERROR ExtHandler Certificate dump:\n"
            + ALL_FORMS["pem_private_key"] + b"\n"
            + b"2024-01-02T00:00:04.000001Z INFO ExtHandler done\n")
    data = unit * 2000
    scanned = []
    real = redact_module.gate_hits

    def counting(chunk: bytes, start: int = 0, end: int | None = None) -> list[int]:
        scanned.append((len(chunk) if end is None else end) - start)
        return real(chunk, start, end)

    monkeypatch.setattr(redact_module, "gate_hits", counting)
    gated = _redact(data, 1 << 20, gated=True, mid=False)
    assert sum(scanned) <= 2 * len(data)
    monkeypatch.undo()
    assert gated == _redact(data, 1 << 20, gated=False, mid=False)
    assert CANARY not in gated[0]
