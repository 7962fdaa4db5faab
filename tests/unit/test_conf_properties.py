"""Properties of the waagent.conf parser and editor over arbitrary input."""

from __future__ import annotations

from typing import Optional

from hypothesis import given
from hypothesis import strategies as st

from waagent_guard.agent.conf import ConfDocument, parse_conf

KEYS = ["Logs.Verbose", "Lib.Dir", "HttpProxy.Host", "A", "Extensions.GoalStatePeriod"]

# Lines that look like a real waagent.conf, including the awkward parts: comments, spaces
# around '=', quotes, end-of-line comments, CR before LF, "None", non-UTF-8 bytes.
conf_line = st.one_of(
    st.builds(
        lambda indent, key, spaces, value, comment: (
            indent + key + spaces + "=" + spaces + value + comment
        ).encode("utf-8"),
        st.sampled_from(["", "", " ", "#", "# "]),
        st.sampled_from(KEYS),
        st.sampled_from(["", "", " "]),
        st.one_of(st.sampled_from(["y", "n", "None", '"q v"', "a=b", ""]), st.text(max_size=8)),
        st.sampled_from(["", "", " # note", "#x"]),
    ),
    st.binary(max_size=12),
)
conf_bytes = st.one_of(
    st.binary(max_size=200),
    st.builds(
        lambda lines, eol, final: eol.join(lines) + (eol if final else b""),
        st.lists(conf_line, max_size=12),
        st.sampled_from([b"\n", b"\r\n"]),
        st.booleans(),
    ),
)
valid_key = st.one_of(
    st.sampled_from(KEYS),
    st.text(min_size=1, max_size=10).filter(
        lambda key: not any(char in "=#\0" or char.isspace() for char in key)
    ),
)
valid_value = st.one_of(
    st.sampled_from(["y", "n", "None", "", "/var/lib/waagent", "a=b"]),
    st.text(max_size=12).filter(
        lambda value: (
            not any(char in "#\n\r\0" for char in value)
            and value == value.strip()
            and value == value.strip('" ')
        )
    ),
)


def effective_values(document: ConfDocument) -> dict[str, Optional[str]]:
    values: dict[str, Optional[str]] = {}
    for line in document.lines:
        if line.key is not None:
            values[line.key] = line.value
    return values


@given(st.binary(max_size=2000))
def test_parse_then_render_is_byte_identical_for_any_bytes(data: bytes) -> None:
    assert parse_conf(data).render() == data


@given(conf_bytes)
def test_parse_then_render_is_byte_identical_for_conf_like_bytes(data: bytes) -> None:
    document = parse_conf(data)
    assert document.render() == data
    assert [line.number for line in document.lines] == list(range(1, len(document.lines) + 1))


@given(conf_bytes, valid_key, valid_value)
def test_set_gives_the_new_value_and_leaves_every_other_key_alone(
    data: bytes, key: str, value: str
) -> None:
    before = parse_conf(data)
    after = before.with_value(key, value)
    assert after.get(key) == (None if value == "None" else value)
    old, new = effective_values(before), effective_values(after)
    new.pop(key)
    old.pop(key, None)
    assert new == old
    if len(after.lines) == len(before.lines):
        changed = [i for i, line in enumerate(before.lines) if line.raw != after.lines[i].raw]
        assert len(changed) <= 1
    else:
        assert len(after.lines) == len(before.lines) + 1
        assert after.lines[-1].raw.rstrip(b"\r\n") == f"{key}={value}".encode()
        assert [line.raw.rstrip(b"\r\n") for line in after.lines[:-1]] == [
            line.raw.rstrip(b"\r\n") for line in before.lines
        ]


@given(conf_bytes, valid_key)
def test_unset_falls_back_to_the_earlier_duplicate_or_none(data: bytes, key: str) -> None:
    before = parse_conf(data)
    values = [line.value for line in before.lines if line.key == key]
    after = before.with_value(key, None)
    assert after.get(key) == (values[-2] if len(values) >= 2 else None)
    old, new = effective_values(before), effective_values(after)
    old.pop(key, None)
    new.pop(key, None)
    assert new == old
    # Removing the only line leaves a comment: the agent refuses an empty file.
    assert len(after.lines) == max(len(before.lines) - (1 if values else 0), 1 if values else 0)
    assert after.render() or not before.render()


@given(conf_bytes, valid_key, valid_value)
def test_setting_twice_is_the_same_as_setting_once(data: bytes, key: str, value: str) -> None:
    once = parse_conf(data).with_value(key, value)
    assert once.with_value(key, value).render() == once.render()
