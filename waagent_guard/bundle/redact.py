"""Streaming redaction of secrets, and the scanner that proves none survived.

The rules are data (`DEFAULT_RULES`): substitutions applied to each line, and
blocks (PEM private keys, `<UserPassword>`/`<CustomData>` elements,
`protectedSettings` objects) that may span lines. `Redactor` works line by line
on bytes with bounded memory: a line longer than `max_line_bytes` is replaced
by a marker as a whole (its content is only scanned for block tokens, so the
block state stays right). A stream that starts mid-file (a kept tail) holds
back a leading run of base64-looking lines until it knows they are not the
body of a key whose header was cut off.

`find_leaks` is the fail-closed check run over the finished archive: it looks
for what must never appear (private-key headers, `sig=` values,
non-redacted `protectedSettings`, `UserPassword`/`CustomData` content, secret
JSON values), independently of which rules were enabled while writing.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import BinaryIO, Callable, Optional, Union

log = logging.getLogger(__name__)

MARKER = b"[REDACTED]"
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
OVERLONG_RULE = "overlong_line"
HOLDBACK_RULE = "orphan_secret_tail"
_HOLDBACK_LIMIT_BYTES = 256 * 1024
_SCAN_CHUNK = 64 * 1024
_SCAN_OVERLAP = 1024  # longer than any leak pattern's match
_OVERLONG_OVERLAP = 512  # longer than any block token

Replacement = Union[bytes, Callable[["re.Match[bytes]"], bytes]]


@dataclass(frozen=True)
class SubstitutionRule:
    """A pattern replaced within one line; `leak` is what the scanner must never find."""

    name: str
    description: str
    pattern: re.Pattern[bytes]
    replacement: Replacement
    leak: Optional[re.Pattern[bytes]] = None


@dataclass(frozen=True)
class BlockRule:
    """Content between `begin` and `end` (possibly lines apart) replaced by the marker.

    With `keep_tokens` the begin and end tokens stay (`<UserPassword>[REDACTED]</UserPassword>`);
    without, the whole block becomes `[REDACTED: <name>]`. With `json_value` the end is found by
    bracket depth (a JSON object or array value) instead of the `end` pattern.
    """

    name: str
    description: str
    begin: re.Pattern[bytes]
    end: re.Pattern[bytes]
    keep_tokens: bool
    leak: Optional[re.Pattern[bytes]] = None
    json_value: bool = False


Rule = Union[SubstitutionRule, BlockRule]

# `sig=` at a parameter start: after a non-word byte, or after an encoded `&` (\u0026, %26).
_SIG = rb"(?:(?<![A-Za-z0-9_])|(?<=\\u0026)|(?<=%26))sig(?:=|%3[Dd])"
_SECRET_KEY_NAME = (
    rb"[A-Za-z0-9_.\-]{0,60}(?:password|passwd|pwd|secret|token|credential|connectionstring"
    rb"|signature|privatekey|private_key|apikey|api_key)[A-Za-z0-9_.\-]{0,60}"
    rb"|[A-Za-z0-9_.\-]{1,60}key"
)


def _drop_sas_query(match: re.Match[bytes]) -> bytes:
    query = match.group(2)
    if not re.search(_SIG, query, re.IGNORECASE):
        return match.group(0)
    # Keep a trailing run of backslashes: they escape the quote that closes a JSON string.
    trailing = query[len(query.rstrip(b"\\")):]
    return match.group(1) + b"?" + MARKER + trailing


PEM_PRIVATE_KEY = BlockRule(
    name="pem_private_key",
    description="PEM private-key blocks (-----BEGIN ... PRIVATE KEY----- to -----END ...-----)",
    begin=re.compile(rb"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"),
    end=re.compile(rb"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"),
    keep_tokens=False,
    leak=re.compile(rb"-----(?:BEGIN|END) [A-Z0-9 ]{0,40}PRIVATE KEY"),
)
OVF_SECRET_ELEMENT = BlockRule(
    name="ovf_secret_element",
    description="ovf-env.xml <UserPassword> and <CustomData> content",
    begin=re.compile(rb"<(?:\w{1,20}:)?(?:UserPassword|CustomData)(?:\s[^<>]{0,200})?(?<!/)>"),
    end=re.compile(rb"</(?:\w{1,20}:)?(?:UserPassword|CustomData)\s{0,10}>"),
    keep_tokens=True,
    leak=re.compile(
        rb"<(?:\w{1,20}:)?(?:UserPassword|CustomData)(?:\s[^<>]{0,200})?(?<!/)>"
        rb"(?!\[REDACTED\])"
        rb"|[A-Za-z0-9+/=]</(?:\w{1,20}:)?(?:UserPassword|CustomData)\s{0,10}>"
    ),
)
PROTECTED_SETTINGS_OBJECT = BlockRule(
    name="protected_settings",
    description="protectedSettings values that are JSON objects or arrays",
    begin=re.compile(rb'(\\*)"protectedSettings\\*"\s{0,20}:\s{0,20}(?=[\[{])'),
    end=re.compile(rb"(?!)"),
    keep_tokens=True,
    json_value=True,
)
SAS_URL = SubstitutionRule(
    name="sas_url",
    description="SAS query strings (kept: scheme, host, path; dropped: the query with sig=)",
    pattern=re.compile(rb"(?i)\b(https?:(?:\\?/){2}[^\s?\"'<>]{1,4096}?)\?([^\s\"'<>]{0,16384})"),
    replacement=_drop_sas_query,
)
SAS_SIGNATURE = SubstitutionRule(
    name="sas_signature",
    description="any remaining sig= value (escaped or partial URLs)",
    pattern=re.compile(b"(" + _SIG + rb")(?!\[REDACTED\])[^&\s\"'<>\\]+", re.IGNORECASE),
    replacement=lambda match: match.group(1) + MARKER,
    leak=re.compile(_SIG + rb"(?!\[REDACTED\])[^&\s\"'<>\\]", re.IGNORECASE),
)
PROTECTED_SETTINGS = SubstitutionRule(
    name="protected_settings",
    description='"protectedSettings" string values',
    pattern=re.compile(
        rb'((\\*)"protectedSettings\2"\s{0,20}:\s{0,20}\2")(?!\[REDACTED\]\2")'
        rb'(?:[^"\\]|\\.)+?(?=\2")'
    ),
    replacement=lambda match: match.group(1) + MARKER,
    leak=re.compile(
        rb'(\\*)"protectedSettings\1"\s{0,20}:\s{0,20}(?:\1"(?!\[REDACTED\]\1")(?!\1")|[\[{])'
    ),
)
JSON_SECRET_VALUE = SubstitutionRule(
    name="json_secret_value",
    description="password/secret/token/key-like JSON values",
    pattern=re.compile(
        rb'(?i)((\\*)"(?:' + _SECRET_KEY_NAME + rb')\2"\s{0,20}:\s{0,20}\2")'
        rb'(?!\[REDACTED\]\2")(?:[^"\\]|\\.)+?(?=\2")'
    ),
    replacement=lambda match: match.group(1) + MARKER,
    leak=re.compile(
        rb'(?i)(\\*)"(?:' + _SECRET_KEY_NAME + rb')\1"\s{0,20}:\s{0,20}\1"'
        rb'(?!\[REDACTED\]\1")(?!\1")'
    ),
)
URL_CREDENTIALS = SubstitutionRule(
    name="url_credentials",
    description="user:password@ in URLs (proxies)",
    pattern=re.compile(rb"(?i)\b([a-z][a-z0-9+.\-]{0,20}://[^/\s:@\"'<>]{1,200}:)"
                       rb"(?!\[REDACTED\]@)[^/\s@\"'<>]{1,200}@"),
    replacement=lambda match: match.group(1) + MARKER + b"@",
)
CONFIG_SECRET_LINE = SubstitutionRule(
    name="config_secret_line",
    description="password/psk/secret/token settings in key=value or YAML files",
    pattern=re.compile(
        rb"(?i)^(\s*[A-Za-z0-9_.\-]{0,60}(?:password|passwd|psk|secret|token)[A-Za-z0-9_.\-]{0,60}"
        rb"\s*[:=]\s*)(?!\[REDACTED\])(?!(?:y|n|yes|no|true|false|none)\s*$)(\S[^\r\n]*)"
    ),
    replacement=lambda match: match.group(1) + MARKER,
)

DEFAULT_RULES: tuple[Rule, ...] = (
    PEM_PRIVATE_KEY,
    OVF_SECRET_ELEMENT,
    PROTECTED_SETTINGS_OBJECT,
    SAS_URL,
    SAS_SIGNATURE,
    PROTECTED_SETTINGS,
    JSON_SECRET_VALUE,
    URL_CREDENTIALS,
    CONFIG_SECRET_LINE,
)

_BASE64_LINE = re.compile(rb"^\s*[A-Za-z0-9+/=]*\s*$")


def _json_value_end(data: bytes, state: list[int]) -> Optional[int]:
    """Index just past the JSON value whose scan state is [depth, in_string, escaped]."""
    depth, in_string, escaped = state
    for index, byte in enumerate(data):
        if in_string:
            if escaped:
                escaped = 0
            elif byte == 0x5C:  # backslash
                escaped = 1
            elif byte == 0x22:
                in_string = 0
        elif byte == 0x22:
            in_string = 1
        elif byte in (0x7B, 0x5B):
            depth += 1
        elif byte in (0x7D, 0x5D):
            depth -= 1
            if depth <= 0:
                state[:] = [0, 0, 0]
                return index + 1
    state[:] = [depth, in_string, escaped]
    return None


class Redactor:
    """Feed bytes, get redacted bytes back; `counts` says how many of each rule fired."""

    def __init__(
        self,
        rules: Sequence[Rule] = DEFAULT_RULES,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        starts_mid_stream: bool = False,
    ) -> None:
        self.blocks = tuple(rule for rule in rules if isinstance(rule, BlockRule))
        self.substitutions = tuple(rule for rule in rules if isinstance(rule, SubstitutionRule))
        self.max_line_bytes = max_line_bytes
        self.counts: Counter[str] = Counter()
        self._partial = bytearray()
        self._overlong = False
        self._overlong_tail = b""
        self._overlong_last: Optional[tuple[str, Optional[BlockRule]]] = None
        self._active: Optional[BlockRule] = None
        self._json_state = [0, 0, 0]
        self._holding = starts_mid_stream
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._held_overflow = False

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        start = 0
        while start < len(data):
            newline = data.find(b"\n", start)
            end = len(data) if newline < 0 else newline + 1
            piece = data[start:end]
            start = end
            if self._overlong:
                self._scan_overlong(piece)
                if newline >= 0:
                    out.append(self._finish_overlong())
                continue
            if len(self._partial) + len(piece) > self.max_line_bytes:
                self._overlong = True
                self._scan_overlong(bytes(self._partial) + piece)
                self._partial.clear()
                if newline >= 0:
                    out.append(self._finish_overlong())
                continue
            self._partial += piece
            if newline >= 0:
                line = bytes(self._partial)
                self._partial.clear()
                out.append(self._line(line))
        return b"".join(out)

    def finish(self, *, keep_partial_line: bool = True) -> bytes:
        """Flush the last line (no newline) and anything held back.

        `keep_partial_line=False` drops a last line cut by a size cap: a secret cut in half
        would no longer match the rules that redact it.
        """
        out: list[bytes] = []
        if self._overlong:
            out.append(self._finish_overlong())
        elif self._partial and not keep_partial_line:
            self._partial.clear()
        elif self._partial:
            line = bytes(self._partial)
            self._partial.clear()
            out.append(self._line(line))
        if self._held:
            out.append(b"".join(self._held))
            self._held.clear()
        return b"".join(out)

    # --- over-long lines: replaced whole; scanned only to keep the block state right
    def _scan_overlong(self, piece: bytes) -> None:
        window = self._overlong_tail + piece
        events: list[tuple[int, str, Optional[BlockRule]]] = []
        for rule in self.blocks:
            if rule.json_value:
                continue
            events += [(m.start(), "begin", rule) for m in rule.begin.finditer(window)]
            events += [(m.start(), "end", None) for m in rule.end.finditer(window)]
        if events:
            _, kind, last_rule = max(events, key=lambda event: event[0])
            self._overlong_last = (kind, last_rule)
        self._overlong_tail = window[-_OVERLONG_OVERLAP:]

    def _finish_overlong(self) -> bytes:
        if self._overlong_last is not None:
            kind, rule = self._overlong_last
            self._active = rule if kind == "begin" else None
        self._overlong = False
        self._overlong_tail = b""
        self._overlong_last = None
        self._stop_holding()
        self.counts[OVERLONG_RULE] += 1
        return MARKER[:-1] + f": line longer than {self.max_line_bytes} bytes]\n".encode()

    # --- ordinary lines
    def _line(self, line: bytes) -> bytes:
        if self._holding:
            return self._held_line(line)
        return self._redact_line(line)

    def _held_line(self, line: bytes) -> bytes:
        closing = [m for rule in self.blocks if not rule.json_value
                   for m in [rule.end.search(line)] if m is not None]
        if closing:
            cut = min(closing, key=lambda match: match.start())
            self._stop_holding()
            self.counts[HOLDBACK_RULE] += 1
            return MARKER + self._redact_line(line[cut.end():])
        if _BASE64_LINE.match(line):
            if self._held_overflow:
                return b""
            if self._held_bytes + len(line) <= _HOLDBACK_LIMIT_BYTES:
                self._held.append(line)
                self._held_bytes += len(line)
                return b""
            # A base64 run longer than any key we know: dropped until it ends.
            self._held_overflow = True
            self._held.clear()
            self.counts[HOLDBACK_RULE] += 1
            return MARKER + b"\n"
        held = b"".join(self._held)
        self._stop_holding()
        return held + self._redact_line(line)

    def _stop_holding(self) -> None:
        self._holding = False
        self._held_overflow = False
        self._held.clear()
        self._held_bytes = 0

    def _redact_line(self, line: bytes) -> bytes:
        out: list[bytes] = []
        rest = line
        while rest:
            if self._active is not None:
                end = self._block_end(self._active, rest)
                if end is None:
                    rest = b""
                    break
                token_start, token_end = end
                if self._active.keep_tokens:
                    out.append(rest[token_start:token_end])
                rest = rest[token_end:]
                self._active = None
                continue
            found = [(m, rule) for rule in self.blocks for m in [rule.begin.search(rest)]
                     if m is not None]
            if not found:
                out.append(rest)
                break
            match, rule = min(found, key=lambda pair: pair[0].start())
            out.append(rest[:match.start()])
            self.counts[rule.name] += 1
            if rule.keep_tokens:
                quote = match.group(1) + b'"' if rule.json_value else b""
                out.append(match.group(0) + quote + MARKER + quote)
            else:
                out.append(MARKER[:-1] + b": " + rule.name.encode() + b"]")
            rest = rest[match.end():]
            self._active = rule
            self._json_state = [0, 0, 0]
        text = b"".join(out)
        if not text:
            return b""
        for substitution in self.substitutions:
            text, count = self._substitute(substitution, text)
            if count:
                self.counts[substitution.name] += count
        return text

    def _block_end(self, rule: BlockRule, data: bytes) -> Optional[tuple[int, int]]:
        if rule.json_value:
            index = _json_value_end(data, self._json_state)
            return None if index is None else (index, index)
        match = rule.end.search(data)
        return None if match is None else (match.start(), match.end())

    @staticmethod
    def _substitute(rule: SubstitutionRule, text: bytes) -> tuple[bytes, int]:
        count = 0

        def replace(match: re.Match[bytes]) -> bytes:
            nonlocal count
            replacement = rule.replacement
            result = replacement if isinstance(replacement, bytes) else replacement(match)
            if result != match.group(0):
                count += 1
            return result

        return rule.pattern.sub(replace, text), count


def redact_bytes(data: bytes, rules: Sequence[Rule] = DEFAULT_RULES) -> tuple[bytes, Counter[str]]:
    """Redact a whole (small) buffer; for tests and short command output."""
    redactor = Redactor(rules)
    text = redactor.feed(data) + redactor.finish()
    return text, redactor.counts


@dataclass(frozen=True)
class Leak:
    rule: str
    offset: int  # byte offset in the member where the surviving secret starts


def leak_patterns(
    rules: Sequence[Rule] = DEFAULT_RULES,
) -> tuple[tuple[str, re.Pattern[bytes]], ...]:
    return tuple((rule.name, rule.leak) for rule in rules if rule.leak is not None)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while True:
        chunk = stream.read(_SCAN_CHUNK)
        if not chunk:
            return
        yield chunk


def find_leaks(stream: BinaryIO, rules: Sequence[Rule] = DEFAULT_RULES) -> Optional[Leak]:
    """The first secret pattern found in `stream` (read in bounded windows), or None."""
    patterns = leak_patterns(rules)
    window = b""
    window_offset = 0
    pending = next(_chunks(stream), None)
    iterator = _chunks(stream)
    while pending is not None:
        following = next(iterator, None)
        window += pending
        final = following is None
        limit = len(window) if final else len(window) - _SCAN_OVERLAP // 2
        for name, pattern in patterns:
            for match in pattern.finditer(window):
                if match.start() >= limit:
                    break
                if final or match.end() < len(window) - 64:
                    return Leak(name, window_offset + match.start())
        keep = window[-_SCAN_OVERLAP:]
        window_offset += len(window) - len(keep)
        window = keep
        pending = following
    return None
