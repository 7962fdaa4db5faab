"""Redaction rules and the leak scanner, on bytes in memory."""

from __future__ import annotations

import io

from hypothesis import given, settings
from hypothesis import strategies as st

from waagent_guard.redact import (
    DEFAULT_RULES,
    HOLDBACK_RULE,
    OVERLONG_RULE,
    Redactor,
    find_leaks,
    redact_bytes,
)


def redact(text: bytes) -> bytes:
    return redact_bytes(text)[0]


def test_sas_url_keeps_scheme_host_and_path_and_drops_the_query() -> None:
    out, counts = redact_bytes(
        b"get https://a.blob.core.windows.net/c/b.txt?sv=1&sr=b&sig=SECRET%3d&se=2 ok\n"
    )
    assert out == b"get https://a.blob.core.windows.net/c/b.txt?[REDACTED] ok\n"
    assert counts == {"sas_url": 1}


def test_url_without_a_signature_keeps_its_query() -> None:
    text = b"https://md.blob.core.windows.net/x/abcd?snapshot=2019-06-06T23:53:14Z\n"
    assert redact(text) == text


def test_signature_after_an_encoded_ampersand_is_redacted() -> None:
    out = redact(b'"u": "https:\\/\\/a.blob\\/p?sv=1\\u0026sig=SECRET\\u0026se=2"\n')
    assert b"SECRET" not in out
    out = redact(b"x=sv%3D1%26sig%3DSECRET%26se%3D2\n")
    assert b"SECRET" not in out


def test_xml_escaped_sas_url_is_redacted() -> None:
    out = redact(b"<Blob>https://a.blob/p?sv=1&amp;sig=SECRET&amp;se=1</Blob>\n")
    assert out == b"<Blob>https://a.blob/p?[REDACTED]</Blob>\n"


def test_bare_sig_parameter_is_redacted() -> None:
    out, counts = redact_bytes(b"params sv=1&sig=SECRET&se=2\n")
    assert out == b"params sv=1&sig=[REDACTED]&se=2\n"
    assert counts == {"sas_signature": 1}


def test_protected_settings_strings_are_redacted_plain_and_escaped() -> None:
    out, counts = redact_bytes(
        b'{"protectedSettings": "MIIB+SECRET==", "publicSettings": {}}\n'
        b'"{\\"protectedSettings\\": \\"SECRET\\"}"\n'
    )
    assert b"SECRET" not in out
    assert b'"protectedSettings": "[REDACTED]"' in out
    assert b'\\"protectedSettings\\": \\"[REDACTED]\\"' in out
    assert counts == {"protected_settings": 2}


def test_protected_settings_object_is_redacted_until_its_bracket_closes() -> None:
    out = redact(
        b'{"protectedSettings": {"a": "SECRET1",\n "b": ["}", "SECRET2"]\n}, "next": 1}\nafter\n'
    )
    assert b"SECRET" not in out
    assert b'"protectedSettings": "[REDACTED]"' in out
    assert out.endswith(b', "next": 1}\nafter\n')


def test_pem_private_key_block_spanning_lines_is_replaced_whole() -> None:
    text = (
        b"before\n-----BEGIN RSA PRIVATE KEY-----\nMIIE\nSECRET\n"
        b"-----END RSA PRIVATE KEY-----\nafter\n"
    )
    out, counts = redact_bytes(text)
    assert out == b"before\n[REDACTED: pem_private_key]\nafter\n"
    assert counts == {"pem_private_key": 1}


def test_pem_block_fed_one_byte_at_a_time_is_still_redacted() -> None:
    text = b"x -----BEGIN PRIVATE KEY-----\nSECRET\n-----END PRIVATE KEY----- y\n"
    redactor = Redactor()
    out = b"".join(redactor.feed(text[index : index + 1]) for index in range(len(text)))
    out += redactor.finish()
    assert out == b"x [REDACTED: pem_private_key] y\n"


def test_certificate_stores_are_redacted_too() -> None:
    text = b"-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----\n"
    assert redact_bytes(text) == (b"[REDACTED: pem_block]\n", {"pem_block": 1})


def test_user_password_and_multiline_custom_data_keep_their_tags() -> None:
    text = (
        b"<UserPassword>SECRET</UserPassword>\n<ns:CustomData>\nSECRET\nSECRET\n</ns:CustomData>\n"
        b"<CustomData/>\n"
    )
    out, counts = redact_bytes(text)
    assert out == (
        b"<UserPassword>[REDACTED]</UserPassword>\n<ns:CustomData>[REDACTED]"
        b"</ns:CustomData>\n<CustomData/>\n"
    )
    assert counts == {"ovf_secret_element": 2}


def test_secret_like_json_values_are_redacted_and_plain_key_fields_stay() -> None:
    text = (
        b'{"storageAccountKey": "S1", "adminPassword": "S2", "sasToken": "S3", '
        b'"Key": "kernelVersion", "Value": "5.15", "password": "", "locale": "en"}\n'
    )
    out, counts = redact_bytes(text)
    assert out == (
        b'{"storageAccountKey": "[REDACTED]", "adminPassword": "[REDACTED]", '
        b'"sasToken": "[REDACTED]", "Key": "kernelVersion", "Value": "5.15", '
        b'"password": "", "locale": "en"}\n'
    )
    assert counts == {"json_secret_value": 3}


def test_json_value_with_an_escaped_quote_is_redacted_whole() -> None:
    out = redact(b'{"password": "ab\\"SECRET"}\n')
    assert out == b'{"password": "[REDACTED]"}\n'


def test_proxy_credentials_and_config_secret_lines_are_redacted() -> None:
    out = redact(
        b"HttpProxy.Host=http://user:SECRET@proxy\nwifi_psk: SECRET\n"
        b"Provisioning.DeleteRootPassword=y\n"
    )
    assert out == (
        b"HttpProxy.Host=http://user:[REDACTED]@proxy\nwifi_psk: [REDACTED]\n"
        b"Provisioning.DeleteRootPassword=y\n"
    )


def test_overlong_line_is_replaced_and_the_buffer_stays_bounded() -> None:
    redactor = Redactor(max_line_bytes=1024)
    out = b""
    for _ in range(200):
        out += redactor.feed(b"A" * 65536)
        assert len(redactor._partial) <= 1024
    out += redactor.feed(b"SECRET\nnext line\n") + redactor.finish()
    assert out == b"[REDACTED: line longer than 1024 bytes]\nnext line\n"
    assert redactor.counts == {OVERLONG_RULE: 1}


def test_overlong_line_that_opens_a_pem_block_keeps_the_block_open() -> None:
    redactor = Redactor(max_line_bytes=100)
    text = (
        b"a" * 150
        + b"-----BEGIN RSA PRIVATE KEY-----"
        + b"b" * 50
        + b"\nSECRET\n-----END RSA PRIVATE KEY-----\nok\n"
    )
    out = redactor.feed(text) + redactor.finish()
    assert b"SECRET" not in out
    assert out.endswith(b"\nok\n")


def test_overlong_line_that_closes_a_block_ends_it() -> None:
    redactor = Redactor(max_line_bytes=100)
    text = b"<CustomData>\nSECRET\n" + b"c" * 200 + b"</CustomData>\nvisible\n"
    out = redactor.feed(text) + redactor.finish()
    assert b"SECRET" not in out and out.endswith(b"visible\n")


def test_stream_starting_inside_a_pem_body_drops_the_orphan_lines() -> None:
    redactor = Redactor(starts_mid_stream=True)
    out = redactor.feed(b"TUlJRQ==\nU0VDUkVU\n-----END RSA PRIVATE KEY-----\nINFO fine\n")
    out += redactor.finish()
    assert out == b"[REDACTED]\nINFO fine\n"
    assert redactor.counts == {HOLDBACK_RULE: 1}


def test_stream_starting_with_ordinary_lines_releases_them() -> None:
    redactor = Redactor(starts_mid_stream=True)
    out = redactor.feed(b"word\nINFO fine\n") + redactor.feed(b"more\n") + redactor.finish()
    assert out == b"word\nINFO fine\nmore\n"


def test_stream_starting_with_a_huge_base64_run_drops_all_of_it() -> None:
    redactor = Redactor(starts_mid_stream=True)
    line = b"QUJD" * 16 + b"\n"
    out = b"".join(redactor.feed(line) for _ in range(6000)) + redactor.feed(b"INFO x\n")
    assert out == b"[REDACTED]\nINFO x\n"


def test_held_lines_are_flushed_at_the_end() -> None:
    redactor = Redactor(starts_mid_stream=True)
    assert redactor.feed(b"abc\n") == b""
    assert redactor.finish() == b"abc\n"


def test_a_last_line_cut_by_a_cap_can_be_dropped() -> None:
    redactor = Redactor()
    out = redactor.feed(b'ok\n"protectedSettings": "MII') + redactor.finish(keep_partial_line=False)
    assert out == b"ok\n"


def test_find_leaks_names_each_kind_of_surviving_secret() -> None:
    cases = {
        b"-----BEGIN OPENSSH PRIVATE KEY-----": "pem_private_key",
        b"https://a/b?sv=1&sig=abc": "sas_signature",
        b'"protectedSettings": "abc"': "protected_settings",
        b'"protectedSettings": {"a": 1}': "protected_settings",
        b"<UserPassword>x</UserPassword>": "ovf_secret_element",
        b"abc</CustomData>": "ovf_secret_element",
        b'"clientSecret": "abc"': "json_secret_value",
    }
    for text, rule in cases.items():
        leak = find_leaks(io.BytesIO(b"prefix\n" + text + b"\n"))
        assert leak is not None and leak.rule == rule, text


def test_find_leaks_accepts_redacted_text() -> None:
    text = redact(
        b'https://a/b?sig=x "protectedSettings": "y" <UserPassword>z</UserPassword> "token": "t"\n'
    )
    assert find_leaks(io.BytesIO(text)) is None


def test_find_leaks_sees_a_secret_that_straddles_chunks() -> None:
    for offset in range(65536 - 20, 65536 + 5):
        data = b"x" * offset + b"&sig=abcdef " + b"y" * 70000
        leak = find_leaks(io.BytesIO(data))
        assert leak is not None and leak.offset == offset + 1


def test_find_leaks_does_not_flag_a_marker_at_a_chunk_edge() -> None:
    for offset in range(65536 - 20, 65536 + 5):
        data = b"x" * offset + b"&sig=[REDACTED] " + b"y" * 70000
        assert find_leaks(io.BytesIO(data)) is None


_SECRETS = st.sampled_from(
    [
        b"https://h.blob.core.windows.net/c/b?sv=1&sig=CANARY&se=2",
        b'"protectedSettings": "CANARY"',
        b"<UserPassword>CANARY</UserPassword>",
        b"-----BEGIN PRIVATE KEY-----\nCANARY\n-----END PRIVATE KEY-----",
        b'{"accountKey": "CANARY"}',
        b"<CustomData>\nCANARY\n</CustomData>",
    ]
)
_FILLER = st.binary(max_size=40).map(lambda data: data.replace(b"CANARY", b""))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_FILLER, _SECRETS), max_size=6), st.integers(1, 50))
def test_planted_secrets_never_survive_whatever_the_chunking(
    pieces: list[tuple[bytes, bytes]], chunk: int
) -> None:
    text = b"".join(
        filler.replace(b"\n", b" ") + b"\n" + secret + b"\n" for filler, secret in pieces
    )
    redactor = Redactor(DEFAULT_RULES)
    out = b"".join(
        redactor.feed(text[index : index + chunk]) for index in range(0, len(text), chunk)
    )
    out += redactor.finish()
    assert b"CANARY" not in out
    assert find_leaks(io.BytesIO(out)) is None
