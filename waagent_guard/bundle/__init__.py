"""The support bundle: the troubleshooting guide's log set, secrets redacted, verified.

Modules: `catalogue` (what to collect, as data), `redact` (rules and the leak
scanner), `walk` (file listing under a sysroot), `plan` (pure planning),
`sources` (bounded, redacted reads), `writer` (tar, manifest, verify, publish),
`archive` (verification and `read_bundle` for `doctor --bundle`), `command`
(the CLI handler).
"""

from __future__ import annotations

from waagent_guard.bundle.archive import BundleContents, read_bundle

__all__ = ["BundleContents", "read_bundle"]
