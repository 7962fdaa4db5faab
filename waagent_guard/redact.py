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

import bisect
import logging
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Optional, Union

log = logging.getLogger(__name__)

MARKER = b"[REDACTED]"
DEFAULT_MAX_LINE_BYTES = 1024 * 1024
OVERLONG_RULE = "overlong_line"
HOLDBACK_RULE = "orphan_secret_tail"
WHOLE_FILE_RULE = "whole_file"
_HOLDBACK_LIMIT_BYTES = 256 * 1024
_SCAN_CHUNK = 1024 * 1024
_SCAN_OVERLAP = 1024  # longer than any leak pattern's match
_OVERLONG_OVERLAP = 512  # longer than any block token
# Clean runs shorter than this are not reported (gating them again costs less than
# keeping their offsets; the verification's memory stays bounded).
MIN_CLEAN_BYTES = 4096

Replacement = Union[bytes, Callable[["re.Match[bytes]"], bytes]]


class LazyPattern:
    """A bytes regular expression compiled when it is first used.

    Importing this module used to compile about fifty patterns: 25 ms of every `status`
    and `doctor` run (docs/PERFORMANCE.md, row 8), which redact a few strings that meet
    one or two rules. The rules' patterns are compiled on first use instead; after that,
    each method is the compiled pattern's own (bound into the instance: no extra call).
    """

    def __init__(self, pattern: bytes, flags: int = 0) -> None:
        self.pattern = pattern
        self.flags = flags

    def compiled(self) -> re.Pattern[bytes]:
        compiled = re.compile(self.pattern, self.flags)
        self.__dict__.update(  # later calls go straight to the compiled pattern
            search=compiled.search, match=compiled.match, fullmatch=compiled.fullmatch,
            finditer=compiled.finditer, sub=compiled.sub, compiled=lambda: compiled,
        )
        return compiled

    def search(self, string: bytes, pos: int = 0,
               endpos: int = sys.maxsize) -> Optional[re.Match[bytes]]:
        return self.compiled().search(string, pos, endpos)

    def match(self, string: bytes, pos: int = 0,
              endpos: int = sys.maxsize) -> Optional[re.Match[bytes]]:
        return self.compiled().match(string, pos, endpos)

    def fullmatch(self, string: bytes, pos: int = 0,
                  endpos: int = sys.maxsize) -> Optional[re.Match[bytes]]:
        return self.compiled().fullmatch(string, pos, endpos)

    def finditer(self, string: bytes, pos: int = 0,
                 endpos: int = sys.maxsize) -> Iterator[re.Match[bytes]]:
        return self.compiled().finditer(string, pos, endpos)

    def sub(self, repl: Replacement, string: bytes, count: int = 0) -> bytes:
        return self.compiled().sub(repl, string, count)

    def __repr__(self) -> str:
        return f"LazyPattern({self.pattern!r}, {self.flags})"


def _lazy(pattern: bytes, flags: int = 0) -> LazyPattern:
    return LazyPattern(pattern, flags)


Regex = Union["re.Pattern[bytes]", LazyPattern]
Anchor = Union[bytes, Regex]
LeakCheck = tuple[str, Regex, tuple[Anchor, ...]]  # rule name, leak, anchors


@dataclass(frozen=True)
class SubstitutionRule:
    """A pattern replaced within one line; `leak` is what the scanner must never find."""

    name: str
    description: str
    pattern: Regex
    replacement: Replacement
    leak: Optional[Regex] = None
    # Every change the pattern makes, and every leak match, contains one of these: a
    # lower-cased literal or (a pattern) a base64 DER run. Empty: the rule always runs.
    anchors: tuple[Anchor, ...] = ()


@dataclass(frozen=True)
class BlockRule:
    """Content between `begin` and `end` (possibly lines apart) replaced by the marker.

    With `keep_tokens` the begin and end tokens stay (`<UserPassword>[REDACTED]</UserPassword>`);
    without, the whole block becomes `[REDACTED: <name>]`. With `json_value` the end is found by
    bracket depth (a JSON object or array value) instead of the `end` pattern.
    """

    name: str
    description: str
    begin: Regex
    end: Regex
    keep_tokens: bool
    leak: Optional[Regex] = None
    json_value: bool = False
    indented: bool = False  # ends at the first non-blank line indented no deeper than the begin
    continues: Optional[Regex] = None  # stays open while whole lines match this
    anchors: tuple[Anchor, ...] = ()  # as for SubstitutionRule: every begin or leak match holds one


Rule = Union[SubstitutionRule, BlockRule]

# `sig=` at a parameter start: after a non-word byte, or after an encoded `&`/`?`
# (\u0026, \u003f, %26, %3F, and their double-encoded %2526, %253F).
_SIG = (rb"(?:(?<![A-Za-z0-9_])|(?<=u0026)|(?<=u003[fF])|(?<=%26)|(?<=%3[fF])|(?<=2526)"
        rb"|(?<=253[fF]))sig(?:=|%3[Dd]|%253[Dd]|\\u003[dD])")
_SECRET_WORDS = (rb"password|passwd|passphrase|pwd|secret|token|credential|connectionstring"
                 rb"|signature|privatekey|private_key|private-key|apikey|api_key|psk"
                 rb"|authorization|accountkey|sharedaccesskey|presharedkey|preshared_key"
                 rb"|preshared-key")
_SECRET_KEY_NAME = (
    rb"[A-Za-z0-9_.\-]{0,60}(?:" + _SECRET_WORDS + rb")[A-Za-z0-9_.\-]{0,60}"
    rb"|[A-Za-z0-9_.\-]{1,60}key|sig|private|shared"
)
_NOT_A_VALUE = rb"(?!(?:y|n|yes|no|true|false|none|null)\s*$)"

# Each rule's anchors (see `SubstitutionRule.anchors`), read off its pattern: a literal
# every match must contain, lower-cased (the rules are case-insensitive where it matters;
# a case-sensitive rule anchored by its lower-cased literal only runs more often).
GATE_BASE64 = re.compile(rb"M[A-I][A-Za-z0-9+/]{62}")
_SIG_ANCHORS = (b"sig=", b"sig%3d", b"sig%253d", b"sig\\u003d")  # _SIG's four endings
_SECRET_WORD_ANCHORS = tuple(_SECRET_WORDS.split(b"|"))  # literal alternatives
# _SECRET_KEY_NAME: a secret word, or ...key, or exactly sig/private/shared. A bare `sig`
# key is quoted: "sig" in JSON, 'sig' in a repr, &quot;sig&quot; in XML (a log line that
# says `signal` meets none of these rules). Config lines take no bare `sig` key.
_CONFIG_KEY_ANCHORS = (*_SECRET_WORD_ANCHORS, b"key", b"private", b"shared")
_JSON_KEY_ANCHORS = (*_CONFIG_KEY_ANCHORS, b'"sig')
_QUOTED_KEY_ANCHORS = (*_CONFIG_KEY_ANCHORS, b"'sig", b";sig")


def _drop_sas_query(match: re.Match[bytes]) -> bytes:
    query = match.group(2)
    if not re.search(_SIG, query, re.IGNORECASE):
        return match.group(0)
    # Keep a trailing run of backslashes: they escape the quote that closes a JSON string.
    trailing = query[len(query.rstrip(b"\\")):]
    return match.group(1) + b"?" + MARKER + trailing


def _keep_group_one(match: re.Match[bytes]) -> bytes:
    return match.group(1) + MARKER


PEM_PRIVATE_KEY = BlockRule(
    name="pem_private_key",
    description="PEM and SSH2 private-key blocks (-----BEGIN ... PRIVATE KEY----- to -----END)",
    begin=_lazy(rb"-{4,5} ?BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{4,5}"),
    end=_lazy(rb"-{4,5} ?END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)? ?-{4,5}"),
    keep_tokens=False,
    leak=_lazy(rb"-{4,5} ?(?:BEGIN|END) [A-Z0-9 ]{0,40}PRIVATE KEY"),
    anchors=(b"----",),
)
PEM_BLOCK = BlockRule(
    name="pem_block",
    description="every other PEM block: certificate stores, PKCS#7, CSRs, parameters",
    begin=_lazy(rb"-----BEGIN [A-Z0-9 #]{1,40}-----"),
    end=_lazy(rb"-----END [A-Z0-9 #]{1,40}-----"),
    keep_tokens=False,
    leak=_lazy(rb"-----(?:BEGIN|END) [A-Z0-9 #]{1,40}-----"),
    anchors=(b"----",),
)
PUTTY_PRIVATE_KEY = BlockRule(
    name="putty_private_key",
    description="PuTTY .ppk keys (PuTTY-User-Key-File-N: to the Private-MAC/Hash line)",
    begin=_lazy(rb"PuTTY-User-Key-File-\d{1,3}:"),
    end=_lazy(rb"Private-(?:MAC|Hash):[^\r\n]*"),
    keep_tokens=False,
    leak=_lazy(rb"PuTTY-User-Key-File-\d|Private-Lines:|Private-(?:MAC|Hash):\s*[^\s\[]"),
    anchors=(b"putty-user-key-file-", b"private-"),
)
OVF_SECRET_ELEMENT = BlockRule(
    name="ovf_secret_element",
    description="ovf-env.xml <UserPassword> and <CustomData> content",
    begin=_lazy(rb"(?i)<(?:\w{1,20}:)?(?:UserPassword|CustomData)(?:\s[^<>]{0,200})?(?<!/)>"),
    end=_lazy(rb"(?i)</(?:\w{1,20}:)?(?:UserPassword|CustomData)\s{0,10}>"),
    keep_tokens=True,
    leak=_lazy(
        rb"(?i)<(?:\w{1,20}:)?(?:UserPassword|CustomData)(?:\s[^<>]{0,200})?(?<!/)>"
        rb"(?!\[REDACTED\])"
        rb"|[A-Za-z0-9+/=]</(?:\w{1,20}:)?(?:UserPassword|CustomData)\s{0,10}>"
    ),
    anchors=(b"userpassword", b"customdata"),
)
PROTECTED_SETTINGS_OBJECT = BlockRule(
    name="protected_settings",
    description="protectedSettings values that are JSON objects or arrays (any case, &quot;)",
    begin=_lazy(rb'(?i)(\\*"|&quot;)protectedSettings(?:\\*"|&quot;)\s{0,20}:\s{0,20}'
                     rb"(?=[\[{])"),
    end=_lazy(rb"(?!)"),
    keep_tokens=True,
    json_value=True,
    anchors=(b"protectedsettings",),
)
CHPASSWD_BLOCK = BlockRule(
    name="chpasswd",
    description="cloud-init chpasswd: the rest of the line and the lines indented below it",
    begin=_lazy(rb"(?i)chpasswd['\"]?\s{0,10}:"),
    end=_lazy(rb"(?!)"),
    keep_tokens=True,
    leak=_lazy(rb"(?i)chpasswd['\"]?\s{0,10}:\s{0,10}(?!\[REDACTED\])(?![0-9]{1,12}\b)(?=\S)"),
    indented=True,
    anchors=(b"chpasswd",),
)
BASE64_DER_RUN = BlockRule(
    name="base64_der",
    description="a line of base64 DER and the base64 lines that continue it (p7m, PFX, certs)",
    begin=_lazy(rb"^\s*M[A-I][A-Za-z0-9+/]{62,}={0,2}\s*$"),
    end=_lazy(rb"(?!)"),
    keep_tokens=False,
    continues=_lazy(rb"^\s*[A-Za-z0-9+/]{4,}={0,2}\s*$"),
    anchors=(GATE_BASE64,),
)
SAS_URL = SubstitutionRule(
    name="sas_url",
    description="SAS query strings (kept: scheme, host, path; dropped: the query with sig=)",
    pattern=_lazy(rb"(?i)\b(https?:(?:\\?/){2}[^\s?\"'<>]{1,4096}?)\?([^\s\"'<>]{0,16384})"),
    replacement=_drop_sas_query,
    anchors=_SIG_ANCHORS,
)
SAS_SIGNATURE = SubstitutionRule(
    name="sas_signature",
    description="any remaining sig= value (escaped, URL-encoded or partial URLs)",
    pattern=_lazy(b"(" + _SIG + rb")(?!\[REDACTED\])[^&\s\"'<>\\]+", re.IGNORECASE),
    replacement=_keep_group_one,
    leak=_lazy(_SIG + rb"(?!\[REDACTED\])[^&\s\"'<>\\]", re.IGNORECASE),
    anchors=_SIG_ANCHORS,
)
AUTHORIZATION = SubstitutionRule(
    name="authorization",
    description="Authorization header values and bearer tokens (plain, JSON, Python repr)",
    pattern=_lazy(
        rb"(?i)((?:\bauthorization(?:\\*[\"']|&quot;)?\s{0,20}[:=]\s{0,20}(?:\\*[\"']|&quot;)?"
        rb"\s{0,20}(?:[A-Za-z\-]{1,30}\s{1,5})?|\bbearer\s{1,5}))(?!\[REDACTED\])(?![0-9]{1,12}\b)"
        rb"[^\s\"'\\,;&<>]+"
    ),
    replacement=_keep_group_one,
    leak=_lazy(
        rb"(?i)(?:\bauthorization(?:\\*[\"']|&quot;)?\s{0,20}[:=]\s{0,20}(?:\\*[\"']|&quot;)?"
        rb"\s{0,20}|\bbearer\s{1,5})(?!(?:[A-Za-z\-]{1,30}\s{1,5})?\[REDACTED\])(?![0-9]{1,12}\b)"
        rb"[^\s\"'\\,;&<>\[]"
    ),
    anchors=(b"authorization", b"bearer"),
)
PROTECTED_SETTINGS = SubstitutionRule(
    name="protected_settings",
    description='"protectedSettings" string values (any case)',
    pattern=_lazy(
        rb'(?i)((\\*)"protectedSettings\2"\s{0,20}:\s{0,20}\2")(?!\[REDACTED\]\2")'
        rb'(?:[^"\\]|\\.)+?(?=\2")'
    ),
    replacement=_keep_group_one,
    leak=_lazy(
        rb'(?i)(\\*)"protectedSettings\1"\s{0,20}:\s{0,20}(?:\1"(?!\[REDACTED\]\1")(?!\1")|[\[{])'
    ),
    anchors=(b"protectedsettings",),
)
PROTECTED_SETTINGS_QUOT = SubstitutionRule(
    name="protected_settings",
    description="protectedSettings string values inside XML (&quot; escaping)",
    pattern=_lazy(
        rb"(?i)(&quot;protectedSettings&quot;\s{0,20}:\s{0,20}&quot;)(?!\[REDACTED\]&quot;)"
        rb"(?:\\&quot;|\\[^&]|(?!&quot;)[^\\])+?(?=&quot;)"
    ),
    replacement=_keep_group_one,
    leak=_lazy(rb"(?i)&quot;protectedSettings&quot;\s{0,20}:\s{0,20}"
                    rb"(?:&quot;(?!\[REDACTED\]&quot;)(?!&quot;)|[\[{])"),
    anchors=(b"protectedsettings",),
)
JSON_SECRET_VALUE = SubstitutionRule(
    name="json_secret_value",
    description="password/secret/token/key-like JSON values",
    pattern=_lazy(
        rb'(?i)((\\*)"(?:' + _SECRET_KEY_NAME + rb')\2"\s{0,20}:\s{0,20}\2")'
        rb'(?!\[REDACTED\]\2")(?:[^"\\]|\\.)+?(?=\2")'
    ),
    replacement=_keep_group_one,
    leak=_lazy(
        rb'(?i)(\\*)"(?:' + _SECRET_KEY_NAME + rb')\1"\s{0,20}:\s{0,20}\1"'
        rb'(?!\[REDACTED\]\1")(?!\1")'
    ),
    anchors=_JSON_KEY_ANCHORS,
)
QUOTED_SECRET_VALUE = SubstitutionRule(
    name="json_secret_value",
    description="the same values in Python reprs ('k': 'v') and XML-escaped JSON (&quot;)",
    pattern=_lazy(
        rb"(?i)('(?:" + _SECRET_KEY_NAME + rb")'\s{0,20}:\s{0,20}')(?!\[REDACTED\]')[^']+"
        rb"|(&quot;(?:" + _SECRET_KEY_NAME + rb")&quot;\s{0,20}:\s{0,20}&quot;)"
        rb"(?!\[REDACTED\]&quot;)(?:(?!&quot;).)+"
    ),
    replacement=lambda match: (match.group(1) or match.group(2)) + MARKER,
    leak=_lazy(
        rb"(?i)'(?:" + _SECRET_KEY_NAME + rb")'\s{0,20}:\s{0,20}'(?!\[REDACTED\]')(?!')"
        rb"|&quot;(?:" + _SECRET_KEY_NAME + rb")&quot;\s{0,20}:\s{0,20}&quot;"
        rb"(?!\[REDACTED\]&quot;)(?!&quot;)"
    ),
    anchors=_QUOTED_KEY_ANCHORS,
)
URL_CREDENTIALS = SubstitutionRule(
    name="url_credentials",
    description="user:password@ in URLs and proxy settings (with or without a scheme)",
    pattern=_lazy(
        rb"(?i)((?:\b[a-z][a-z0-9+.\-]{0,20}://|(?<![A-Za-z0-9_.%:/\\\-]))"
        rb"[A-Za-z0-9_.%\-]{1,200}:)(?!\[REDACTED\]@)[^/\s\"'<>]{0,200}@(?=[A-Za-z0-9\[])"
    ),
    replacement=lambda match: match.group(1) + MARKER + b"@",
    leak=_lazy(
        rb"(?i)(?:\b[a-z][a-z0-9+.\-]{0,20}://|(?<![A-Za-z0-9_.%:/\\\-]))[A-Za-z0-9_.%\-]{1,200}:"
        rb"(?!\[REDACTED\]@)[^/\s\"'<>\[]{1,200}@(?=[A-Za-z0-9\[])"
    ),
    anchors=(b"@",),
)
PASSWORD_HASH = SubstitutionRule(
    name="password_hash",
    description="crypt(3) password hashes ($1$, $2b$, $5$, $6$, $y$, argon2)",
    pattern=_lazy(rb"(?<![A-Za-z0-9$])\$(?:1|2[abxy]?|5|6|7|y|gy|argon2(?:id|i|d)?|sha1|md5)"
                       rb"\$(?!\[REDACTED\])[^\s\"'<>,;]{4,}"),
    replacement=MARKER,
    leak=_lazy(rb"(?<![A-Za-z0-9$])\$(?:1|2[abxy]?|5|6|7|y|gy|argon2(?:id|i|d)?|sha1|md5)"
                    rb"\$(?!\[REDACTED\])[^\s\"'<>,;]{4,}"),
    anchors=(b"$",),
)
INLINE_SECRET_ASSIGNMENT = SubstitutionRule(
    name="secret_assignment",
    description="NAME=value anywhere in a line when NAME is secret-like (connection strings, env)",
    pattern=_lazy(
        rb"(?i)((?:" + _SECRET_WORDS + rb")[A-Za-z0-9_.\-]{0,30}\s{0,5}=\s{0,5})"
        rb"(?!\[REDACTED\])(?!(?:y|n|yes|no|true|false|none)(?:[\s;\"',&]|$))[^;\s\"'<>&\\,]+"
    ),
    replacement=_keep_group_one,
    anchors=_SECRET_WORD_ANCHORS,
)
SYSTEMD_ENVIRONMENT = SubstitutionRule(
    name="secret_assignment",
    description="Environment= lines of units and drop-ins that set anything secret-like",
    pattern=_lazy(
        rb"(?i)^(\s*Environment\s*=\s*)(?!\[REDACTED\])"
        rb"(?=[^\r\n]*(?:" + _SECRET_WORDS + rb"|key))[^\r\n]+"
    ),
    replacement=_keep_group_one,
    anchors=(*_SECRET_WORD_ANCHORS, b"key"),
)
CONFIG_SECRET_LINE = SubstitutionRule(
    name="config_secret_line",
    description="password/psk/secret/token/private-key settings in key=value, YAML or INI files",
    pattern=_lazy(
        rb"(?i)(?:^|(?<=[\s,;{]))(\s*(?:-\s{1,10})?(?:[A-Za-z0-9_.\-]{0,60}(?:" + _SECRET_WORDS
        + rb"|presharedkey|preshared-key|preshared_key)[A-Za-z0-9_.\-]{0,60}"
        rb"|private|shared|key)\s*[:=]\s*)(?!\[REDACTED\])" + _NOT_A_VALUE + rb"(\S[^\r\n]*)"
    ),
    replacement=_keep_group_one,
    leak=_lazy(
        rb"(?i)^\s*(?:-\s{1,10})?(?:[A-Za-z0-9_.\-]{0,60}(?:password|passwd|secret|psk"
        rb"|privatekey|private-key|private_key|presharedkey)[A-Za-z0-9_.\-]{0,60}|private|shared)"
        rb"\s*[:=]\s*(?!\[REDACTED\])" + _NOT_A_VALUE + rb"(?![\"'{\[]|&quot;)\S",
        re.MULTILINE,
    ),
    anchors=_CONFIG_KEY_ANCHORS,
)
BASE64_DER = SubstitutionRule(
    name="base64_der",
    description="base64 DER (certificates, keys, PKCS#7/#12 stores) of 64+ characters",
    pattern=_lazy(rb"(?<![A-Za-z0-9+/])M[A-I][A-Za-z0-9+/]{62,}={0,2}"),
    replacement=MARKER,
    leak=_lazy(rb"(?<![A-Za-z0-9+/])M[A-I][A-Za-z0-9+/]{62,}"),
    anchors=(GATE_BASE64,),
)

DEFAULT_RULES: tuple[Rule, ...] = (
    PEM_PRIVATE_KEY,
    PEM_BLOCK,
    PUTTY_PRIVATE_KEY,
    OVF_SECRET_ELEMENT,
    PROTECTED_SETTINGS_OBJECT,
    CHPASSWD_BLOCK,
    BASE64_DER_RUN,
    SAS_URL,
    SAS_SIGNATURE,
    AUTHORIZATION,
    PROTECTED_SETTINGS,
    PROTECTED_SETTINGS_QUOT,
    JSON_SECRET_VALUE,
    QUOTED_SECRET_VALUE,
    URL_CREDENTIALS,
    PASSWORD_HASH,
    SYSTEMD_ENVIRONMENT,
    INLINE_SECRET_ASSIGNMENT,
    CONFIG_SECRET_LINE,
    BASE64_DER,
)

# Binary key/certificate material, recognised by its bytes: an ASN.1 OID of the
# RSA/PKCS (1.2.840.113549), EC (1.2.840.10045), Edwards (1.3.101.11x), SEC
# (1.3.132) or NIST (2.16.840) arcs, or a version INTEGER followed by a key field
# (PKCS#1, SEC1, PKCS#12). Control bytes like these never occur in text.
DER_RULE = "der_material"
_DER_SIGNATURE = re.compile(
    rb"\x06[\x03-\x0b](?:\x2a\x86\x48|\x2b\x65[\x6e-\x71]|\x2b\x81\x04|\x60\x86\x48)"
    rb"|\x02\x01[\x00-\x03][\x02\x04\x30]"
)
_DER_ANCHORS: tuple[Anchor, ...] = (b"\x06", b"\x02\x01")
_DER_HEAD = re.compile(rb"\x30[\x81-\x84]|\x30[\x00-\x7f]\x02\x01[\x00-\x03]")

# The gate: every rule above (and every leak pattern) can only match a line that
# contains one of these lower-cased literals or a 64-character base64 DER run: each rule's
# anchors contain one (tests/unit/test_redact_gate.py). Literal searches (`bytes.find`)
# over a whole chunk run at C speed, so lines without any of them are copied untouched
# and only the few others meet the rules whose anchors they hold. Words are cut to at
# most five letters (`ecret` for secret): CPython searches longer needles in big buffers
# with its two-way algorithm, about twice as slow here (0.7 vs 0.33 ms/MB per word).
GATE_WORDS: tuple[bytes, ...] = (
    b"sig", b"pass", b"pwd", b"ecret", b"token", b"cred", b"key", b"otect",
    b"omdat", b"psk", b"earer", b"horiz", b"rivat", b"hared",
    b"nstri", b"@", b"----", b"$", b"\x06", b"\x02\x01",
)


def gate_hits(data: bytes, start: int = 0, end: Optional[int] = None) -> list[int]:
    """Sorted offsets in data[start:end] where a gate literal (or base64 DER run) starts.

    At least one offset on every line that holds a gate literal (not every occurrence:
    after a hit the search for that literal resumes on the next line).
    """
    end = len(data) if end is None else end
    whole = start == 0 and end == len(data)
    lowered = data.lower() if whole else data[start:end].lower()
    find = lowered.find
    hits: list[int] = []
    for word in GATE_WORDS:
        index = find(word)
        while index >= 0:
            hits.append(start + index)
            index = find(b"\n", index)
            if index < 0:
                break
            index = find(word, index + 1)
    hits += [match.start() for match in GATE_BASE64.finditer(data, start, end)]
    hits.sort()
    return hits


def gate_matches(line: bytes) -> bool:
    lowered = line.lower()
    return any(word in lowered for word in GATE_WORDS) or bool(GATE_BASE64.search(line))


class AnchorIndex:
    """Which of several anchor sets a line holds, with one look for each distinct anchor.

    `present(line, lowered)` is a bit mask; `fires(i, mask)` says whether set `i` (in the
    order given) is among them. An empty set always fires. A literal anchor is looked for
    only when the gate word it contains is in the line (most gated lines hold one word).
    """

    def __init__(self, anchor_sets: Sequence[Sequence[Anchor]]) -> None:
        bits: dict[Anchor, int] = {}
        self.masks: list[int] = []
        for anchors in anchor_sets:
            mask = 0
            for anchor in anchors:
                mask |= 1 << bits.setdefault(anchor, len(bits))
            self.masks.append(mask if anchors else -1)
        groups: dict[bytes, list[tuple[bytes, int]]] = {}
        for anchor, bit in bits.items():
            if isinstance(anchor, bytes):
                word = next((word for word in GATE_WORDS if word in anchor), b"")
                groups.setdefault(word, []).append((anchor, 1 << bit))
        self._groups = list(groups.items())  # b"" (no gate word in it): always looked for
        self._patterns = [(anchor, 1 << bit) for anchor, bit in bits.items()
                          if not isinstance(anchor, bytes)]

    def present(self, line: bytes, lowered: bytes) -> int:
        mask = 0
        for word, literals in self._groups:
            if word in lowered:
                for literal, bit in literals:
                    if literal in lowered:
                        mask |= bit
        for pattern, bit in self._patterns:
            if pattern.search(line):
                mask |= bit
        return mask

    def fires(self, index: int, present: int) -> bool:
        mask = self.masks[index]
        return mask < 0 or bool(mask & present)


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


@dataclass(frozen=True)
class _Plan:
    blocks: tuple[BlockRule, ...]
    substitutions: tuple[int, ...]  # indices into Redactor.substitutions, in order
    leaks: tuple[LeakCheck, ...]


_PLAN_CACHE = 1024  # distinct anchor combinations remembered per Redactor


class Redactor:
    """Feed bytes, get redacted bytes back; `counts` says how many of each rule fired.

    Fast path: while no block is open, whole runs of complete lines are searched once
    with `GATE_WORDS`; only the lines it matches go through the rules (and are re-checked
    with the leak patterns: `leaked` names the first rule whose secret survived, so a
    caller can drop the whole member instead of failing the whole bundle).
    """

    def __init__(
        self,
        rules: Sequence[Rule] = DEFAULT_RULES,
        *,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
        starts_mid_stream: bool = False,
        leak_rules: Optional[Sequence[Rule]] = None,
        gated: bool = True,
    ) -> None:
        self.blocks = tuple(rule for rule in rules if isinstance(rule, BlockRule))
        self.substitutions = tuple(rule for rule in rules if isinstance(rule, SubstitutionRule))
        self.leaks = leak_checks(rules if leak_rules is None else leak_rules)
        # One index over the block rules, then the substitutions, then the leak checks.
        self._anchors = AnchorIndex([*(rule.anchors for rule in self.blocks),
                                     *(rule.anchors for rule in self.substitutions),
                                     *(anchors for _, _, anchors in self.leaks)])
        self._first_substitution = len(self.blocks)
        self._first_leak = len(self.blocks) + len(self.substitutions)
        self._plans: dict[int, _Plan] = {}
        self.max_line_bytes = max_line_bytes
        self.gated = gated
        self.counts: Counter[str] = Counter()
        self.leaked: Optional[str] = None
        self._partial = bytearray()
        self._overlong = False
        self._overlong_tail = b""
        self._overlong_last: Optional[tuple[str, Optional[BlockRule]]] = None
        self._active: Optional[BlockRule] = None
        self._indent = 0
        self._json_state = [0, 0, 0]
        self._holding = starts_mid_stream
        self._held: list[bytes] = []
        self._held_bytes = 0
        self._held_overflow = False
        self._head: Optional[bytearray] = None if starts_mid_stream else bytearray()
        self._binary = False  # inside DER material: drop lines until text resumes
        # (data, start, covered end, hits) of the fast path's current `feed` call
        self._hits: Optional[tuple[bytes, int, int, list[int]]] = None
        self._whole = False  # the stream is key/certificate material: drop everything
        # The pieces of the current `feed` output that the fast path copied because the
        # gate found nothing in them (indices into its `out` list), and, for the last
        # output returned, their (start, end) offsets in it: see `clean_ranges`.
        self._clean_pieces: list[int] = []
        self._last_output: Optional[bytes] = None
        self._last_clean: list[tuple[int, int]] = []

    def feed(self, data: bytes) -> bytes:
        self._last_output = None
        if self._head is not None:
            self._head += data
            if len(self._head) < 16:
                return b""
            data = bytes(self._head)
            self._head = None
            self._sniff(data)
        if self._whole:
            return b""
        out: list[bytes] = []
        start = 0
        size = len(data)
        while start < size:
            if self._fast():
                last = data.rfind(b"\n", start, start + self.max_line_bytes)
                if last >= 0:
                    start = self._fast_region(data, start, last + 1, out)
                    continue
            newline = data.find(b"\n", start)
            end = size if newline < 0 else newline + 1
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
        self._hits = None  # never keeps the caller's chunk alive
        return self._output(out)

    def _output(self, out: list[bytes]) -> bytes:
        """Join `out`; remember which byte ranges of the result the gate passed as clean."""
        result = b"".join(out)
        clean: list[tuple[int, int]] = []
        if self._clean_pieces:
            pieces = iter(self._clean_pieces)
            wanted = next(pieces)
            position = 0
            for index, piece in enumerate(out):
                if index == wanted:
                    if len(piece) >= MIN_CLEAN_BYTES:
                        clean.append((position, position + len(piece)))
                    wanted = next(pieces, -1)
                position += len(piece)
            self._clean_pieces = []
        self._last_output = result
        self._last_clean = clean
        return result

    def clean_ranges(self, output: bytes) -> list[tuple[int, int]]:
        """(start, end) ranges of `output` in which the gate found no literal at all.

        Only for the very object the last `feed` returned (anything else gets none): the
        verification skips those bytes, since `gate_hits` on them gave nothing, and on the
        same bytes it gives nothing again. Only runs of at least `MIN_CLEAN_BYTES`.
        """
        if output is not self._last_output:
            return []
        return self._last_clean

    def _fast(self) -> bool:
        return self.gated and not (self._partial or self._overlong or self._active is not None
                    or self._holding or self._binary)

    def _fast_region(self, data: bytes, start: int, end: int, out: list[bytes]) -> int:
        """Copy lines the gate does not match; run the rules on those it does."""
        position = start
        hits = self._region_hits(data, start, end)
        for index in range(bisect.bisect_left(hits, start), len(hits)):
            hit = hits[index]
            if hit >= end:
                break
            if hit < position:
                continue
            line_start = max(data.rfind(b"\n", start, hit) + 1, position)
            line_end = data.find(b"\n", hit, end) + 1
            self._clean_pieces.append(len(out))
            out.append(data[position:line_start])
            out.append(self._redact_line(data[line_start:line_end]))
            position = line_end
            if not self._fast():
                return position
        self._clean_pieces.append(len(out))
        out.append(data[position:end])
        return end

    def _region_hits(self, data: bytes, start: int, end: int) -> list[int]:
        """`gate_hits` of data[start:end], each byte of `data` scanned once per `feed`.

        The fast path leaves at every block (a PEM key, a `protectedSettings` object) and
        comes back after it: scanning the rest of the window again each time made a log
        with a block every few lines quadratic (a 3 MB log took 25 s). Regions start and
        end at line boundaries and no gate literal holds a newline, so the hits of
        [a, b) followed by those of [b, c) are exactly the hits of [a, c).
        """
        cached = self._hits
        if cached is not None and cached[0] is data and cached[1] <= start:
            _, first, covered, hits = cached
            if end > covered:
                hits = hits + gate_hits(data, covered, end)
                self._hits = (data, first, end, hits)
            return hits
        hits = gate_hits(data, start, end)
        self._hits = (data, start, end, hits)
        return hits

    def _sniff(self, head: bytes) -> None:
        if _DER_HEAD.match(head) and (_DER_SIGNATURE.search(head, 0, 64)
                                      or (head[:1] == b"\x30" and head[1:2] >= b"\x81")):
            self._whole = True

    def finish(self, *, keep_partial_line: bool = True) -> bytes:
        """Flush the last line (no newline) and anything held back.

        `keep_partial_line=False` drops a last line cut by a size cap: a secret cut in half
        would no longer match the rules that redact it.
        """
        if self._head is not None:
            head = bytes(self._head)
            self._head = None
            self._sniff(head)
            if not self._whole:
                return self.feed(head) + self.finish(keep_partial_line=keep_partial_line)
        if self._whole:
            self._whole = False
            self._partial.clear()
            self.counts[DER_RULE] += 1
            return MARKER[:-1] + b": " + DER_RULE.encode() + b", whole file]\n"
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
            held = list(self._held)
            self._stop_holding()
            out.append(self._release(held))
        return b"".join(out)

    # --- over-long lines: replaced whole; scanned only to keep the block state right
    def _scan_overlong(self, piece: bytes) -> None:
        window = self._overlong_tail + piece
        events: list[tuple[int, str, Optional[BlockRule]]] = []
        for rule in self.blocks:
            if rule.json_value or rule.indented or rule.continues is not None:
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
        if self._binary:
            if _looks_binary(line):
                return b""
            self._binary = False
        if self._holding:
            return self._held_line(line)
        return self._redact_line(line)

    def _held_line(self, line: bytes) -> bytes:
        closing = [m for rule in self.blocks
                   if not (rule.json_value or rule.indented or rule.continues is not None)
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
        held = list(self._held)
        self._stop_holding()
        return self._release(held) + self._redact_line(line)

    def _release(self, held: list[bytes]) -> bytes:
        """Held lines that turned out not to be a cut key's body: redacted like any line
        (`token=...` or `AccountKey=...==` is made of base64 characters too)."""
        return b"".join(self._redact_line(line) for line in held)

    def _stop_holding(self) -> None:
        self._holding = False
        self._held_overflow = False
        self._held.clear()
        self._held_bytes = 0

    def _redact_line(self, line: bytes) -> bytes:
        if self._active is not None and self._active.indented:
            stripped = line.strip()
            indent = len(line) - len(line.lstrip(b" \t-"))
            if not stripped or indent > self._indent:
                return b""
            self._active = None
        elif self._active is not None and self._active.continues is not None:
            if self._active.continues.match(line):
                return b""
            self._active = None
        if ((not self.gated or b"\x06" in line or b"\x02\x01" in line)
                and _DER_SIGNATURE.search(line)):
            self._binary = True
            self.counts[DER_RULE] += 1
            return MARKER[:-1] + b": " + DER_RULE.encode() + b"]\n"
        out: list[bytes] = []
        rest = line
        present: Optional[int] = None  # anchors in `line` (rest is a suffix: a superset)
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
            if present is None:
                present = self._present(rest)
            found = [(m, rule) for rule in self._plan(present).blocks
                     for m in [rule.begin.search(rest)] if m is not None]
            if not found:
                out.append(rest)
                break
            match, rule = min(found, key=lambda pair: pair[0].start())
            out.append(rest[:match.start()])
            self.counts[rule.name] += 1
            if rule.continues is not None:
                out.append(MARKER[:-1] + b": " + rule.name.encode() + b"]"
                           + line[len(line.rstrip(b"\r\n")):])
                self._active = rule
                rest = b""
                break
            if rule.indented:
                out.append(match.group(0) + b" " + MARKER + line[len(line.rstrip(b"\r\n")):])
                self._indent = len(line) - len(line.lstrip(b" \t-"))
                # A block when the key starts the line, or when nothing follows it (a YAML
                # block quoted mid-line, e.g. in a log message: its lines are indented below).
                tail = rest[match.end():].strip()
                self._active = rule if (not rest[:match.start()].strip(b" \t-")
                                        or tail in (b"", b"|", b">", b"|-", b">-")) else None
                rest = b""
                break
            if rule.keep_tokens:
                quote = match.group(1) if rule.json_value else b""
                out.append(match.group(0) + quote + MARKER + quote)
            else:
                out.append(MARKER[:-1] + b": " + rule.name.encode() + b"]")
            rest = rest[match.end():]
            self._active = rule
            self._json_state = [0, 0, 0]
        if len(out) == 1 and out[0] is line:
            text = line  # no block touched it: the anchors found above still hold
        else:
            text = b"".join(out)
            if not text:
                return b""
            present = None
        if present is None:
            present = self._present(text)
        # A rule whose anchors the text lacks cannot change it: skipping it gives the same
        # bytes and counts as running every rule (tests/unit/test_redact_gate.py).
        substitutions = self._plan(present).substitutions
        position = 0
        while position < len(substitutions):
            number = substitutions[position]
            substitution = self.substitutions[number]
            position += 1
            result, count = self._substitute(substitution, text)
            if count:
                self.counts[substitution.name] += count
                text = result
                present = self._present(text)
                substitutions = tuple(later for later in self._plan(present).substitutions
                                      if later > number)
                position = 0
        if self.leaked is None:
            for name, pattern, _ in self._plan(present).leaks:
                if pattern.search(text):
                    self.leaked = name
                    break
        return text

    def _present(self, text: bytes) -> int:
        return self._anchors.present(text, text.lower()) if self.gated else -1

    def _plan(self, present: int) -> _Plan:
        """The block rules, substitutions (by number) and leak checks whose anchors fired."""
        plan = self._plans.get(present)
        if plan is None:
            fires = self._anchors.fires
            plan = _Plan(
                tuple(rule for index, rule in enumerate(self.blocks) if fires(index, present)),
                tuple(number for number in range(len(self.substitutions))
                      if fires(self._first_substitution + number, present)),
                tuple(check for index, check in enumerate(self.leaks, self._first_leak)
                      if fires(index, present)),
            )
            if len(self._plans) < _PLAN_CACHE:
                self._plans[present] = plan
        return plan

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


def _looks_binary(line: bytes) -> bool:
    """Not UTF-8 text, or control bytes other than tab/CR/LF/ESC."""
    if _CONTROL.search(line):
        return True
    try:
        line.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1a\x1c-\x1f\x7f]")


def redact_bytes(data: bytes, rules: Sequence[Rule] = DEFAULT_RULES) -> tuple[bytes, Counter[str]]:
    """Redact a whole (small) buffer; for tests and short command output."""
    redactor = Redactor(rules)
    text = redactor.feed(data) + redactor.finish()
    return text, redactor.counts


@dataclass(frozen=True)
class Leak:
    rule: str
    offset: int  # byte offset in the member where the surviving secret starts


def leak_checks(rules: Sequence[Rule] = DEFAULT_RULES) -> tuple[LeakCheck, ...]:
    """(rule name, leak pattern, the rule's anchors) for every rule with a leak pattern."""
    return tuple((rule.name, rule.leak, rule.anchors) for rule in rules if rule.leak is not None)


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    while True:
        chunk = stream.read(_SCAN_CHUNK)
        if not chunk:
            return
        yield chunk


def find_leaks(stream: BinaryIO, rules: Sequence[Rule] = DEFAULT_RULES, *,
               gated: bool = True) -> Optional[Leak]:
    """The first secret pattern found in `stream` (read in bounded windows), or None.

    Only the lines the gate matches are searched, and on each only the leak patterns
    whose rule's anchors it holds (every leak match holds a gate word and one of its
    rule's anchors), plus binary key/certificate material by its bytes. `gated=False`
    searches every line with every pattern: the reference the tests compare with.
    """
    scanner = LeakScanner(rules, gated=gated)
    chunks = _chunks(stream)
    pending = next(chunks, None)
    while pending is not None:
        following = next(chunks, None)
        leak = scanner.feed(pending, final=following is None)
        if leak is not None:
            return leak
        pending = following
    return scanner.finish()


class LeakScanner:
    """`find_leaks` fed chunk by chunk: one member (or any byte stream) from its start.

    `feed(chunk, clean)` may name (start, end) ranges of `chunk` in which the gate
    found nothing (`Redactor.clean_ranges`): they are not gated again. Every other
    byte is, and the lines the gate matches are searched with the leak patterns exactly
    as `find_leaks` does. A range is trusted only for its whole lines (the partial lines
    at its edges are gated), so a wrong range can only claim lines it holds completely.
    """

    def __init__(self, rules: Sequence[Rule] = DEFAULT_RULES, *, gated: bool = True) -> None:
        self._checks = (*leak_checks(rules), (DER_RULE, _DER_SIGNATURE, _DER_ANCHORS))
        self._index = AnchorIndex([anchors for _, _, anchors in self._checks])
        self.gated = gated
        self._window = b""
        self._offset = 0  # stream offset of self._window[0]
        self._head = b""  # the first bytes, until there are two (the DER header check)
        self._started = False
        self.gated_bytes = 0  # bytes gate_hits looked at (the tests count them)

    def feed(self, chunk: bytes, clean: Sequence[tuple[int, int]] = (), *,
             final: bool = False) -> Optional[Leak]:
        """Scan `chunk`; `final`: it is the last one (then `finish` has nothing left)."""
        if not chunk:
            return None
        leak = self._start(chunk)
        if leak is not None:
            return leak
        keep = len(self._window)
        window = self._window + chunk
        leak = self._scan(window, final, [(keep + a, keep + b) for a, b in clean])
        if final:
            self._window = b""
        return leak

    def finish(self) -> Optional[Leak]:
        if not self._started and self._head:
            leak = self._check_head(self._head)
            if leak is not None:
                return leak
        window, self._window = self._window, b""
        return self._scan(window, True, []) if window else None

    def _start(self, chunk: bytes) -> Optional[Leak]:
        if self._started:
            return None
        self._head += chunk[:2]
        if len(self._head) < 2:
            return None
        self._started = True
        return self._check_head(self._head)

    @staticmethod
    def _check_head(head: bytes) -> Optional[Leak]:
        if _DER_HEAD.match(head) and head[1:2] >= b"\x81":
            return Leak(DER_RULE, 0)
        return None

    def _hits(self, window: bytes, clean: list[tuple[int, int]]) -> list[int]:
        if not self.gated:
            return _line_starts(window)
        hits: list[int] = []
        position = 0
        for start, end in clean:
            # Trust whole lines only: [start, end) shrinks to the lines it holds entirely.
            if start > 0 and window[start - 1] != 0x0A:
                start = window.find(b"\n", start, end) + 1 or end
            if end < len(window) and window[end - 1] != 0x0A:
                end = window.rfind(b"\n", start, end) + 1 or start
            if end <= start or start < position:
                continue
            if start > position:
                hits += gate_hits(window, position, start)
                self.gated_bytes += start - position
            position = end
        hits += gate_hits(window, position, len(window))
        self.gated_bytes += len(window) - position
        return hits

    def _scan(self, window: bytes, final: bool, clean: list[tuple[int, int]]) -> Optional[Leak]:
        index, checks = self._index, self._checks
        limit = len(window) if final else len(window) - _SCAN_OVERLAP // 2
        checked = -1
        for hit in self._hits(window, clean):
            if hit >= limit:
                break
            if hit < checked:
                continue
            line_start = window.rfind(b"\n", 0, hit) + 1
            line_end = window.find(b"\n", hit)
            line_end = len(window) if line_end < 0 else line_end + 1
            checked = line_end
            line = window[line_start:line_end]
            present = index.present(line, line.lower()) if self.gated else -1
            for number, (name, pattern, _) in enumerate(checks):
                if not index.fires(number, present):
                    continue
                for match in pattern.finditer(window, line_start, line_end):
                    if match.start() >= limit:
                        break
                    if final or match.end() < len(window) - 64:
                        return Leak(name, self._offset + match.start())
        keep = window[-_SCAN_OVERLAP:]
        self._offset += len(window) - len(keep)
        self._window = keep
        return None


def _line_starts(data: bytes) -> list[int]:
    starts = [0]
    index = data.find(b"\n")
    while index >= 0:
        starts.append(index + 1)
        index = data.find(b"\n", index + 1)
    return starts


def redact_text(text: str) -> str:
    """The same redaction for one piece of text shown to a person (doctor, status, logs)."""
    if not gate_matches(text.encode("utf-8", "surrogateescape")):
        return text
    data, _ = redact_bytes(text.encode("utf-8", "surrogateescape"))
    return data.decode("utf-8", "surrogateescape").rstrip("\n") + (
        "\n" if text.endswith("\n") else "")


def redact_value(value: Any) -> Any:
    """Every string inside a JSON-like value (dicts, lists, tuples) through `redact_text`.

    Reports built from guest files (status, doctor findings) pass through this once,
    before they are rendered as text or JSON: a secret quoted by any field is gone
    from both, and is never split by line wrapping first.
    """
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(item) for item in value)
    return value


class RedactingFilter(logging.Filter):
    """A logging filter that redacts each record's message and string `extra=` fields.

    Installed on every handler `logsetup` attaches, so no log or journal line of the
    guard carries a secret even when a message quotes a guest file.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string is the handler's problem, not ours
            return True
        redacted = redact_text(message)
        if redacted != message or record.args:
            record.msg = redacted
            record.args = None
        for name, value in list(record.__dict__.items()):
            if name.isupper() and isinstance(value, str):
                setattr(record, name, redact_text(value))
        if record.exc_info and not record.exc_text:
            # The formatter would render the traceback after this filter: an exception
            # message quoting a guest file would reach the log unredacted.
            record.exc_text = redact_text(logging.Formatter().formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True
