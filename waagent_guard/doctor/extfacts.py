"""VMSnapshot facts for the doctor: its extension.log failures and the storage host it uses.

The storage host comes from the handler's newest `config/<seq>.settings`
(publicSettings `logsBlobUri` / `statusBlobUri`, which are SAS URLs): only the
host name is kept, the URL itself never leaves this module.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

from waagent_guard.fsutil import read_file
from waagent_guard.observe import Observation
from waagent_guard.redact import redact_text
from waagent_guard.settings import Settings
from waagent_guard.sysroot import VMSNAPSHOT_NAME, Sysroot

log = logging.getLogger(__name__)

EXTENSION_LOG_TAIL_BYTES = 256 * 1024
MAX_SETTINGS_BYTES = 1024 * 1024
SHOWN_ERROR_LINES = 5
_ERROR_LINE = re.compile(r"(?i)\b(error|exception|traceback|failed|failure)\b")
_URL_QUERY = re.compile(r"(https?://[^\s?#'\"<>]+)\?[^\s'\"<>]*")
_SETTINGS_NAME = re.compile(r"^(\d+)\.settings$")
BLOB_URI_KEYS = ("logsBlobUri", "statusBlobUri")


@dataclass(frozen=True)
class ExtensionLogFacts:
    path: str  # host path
    exists: bool
    error_count: int = 0
    last_errors: tuple[str, ...] = ()


@dataclass(frozen=True)
class StorageTarget:
    host: str
    source: str  # where the host came from, for the evidence


def scrub(text: str) -> str:
    """Redact a line (`waagent_guard.redact`), then drop every URL query before it is shown."""
    return _URL_QUERY.sub(r"\1?[REDACTED]", redact_text(text))


def _tail(path: Path, limit: int) -> str:
    data, truncated = read_file(path, limit, oversize="tail")
    if truncated:
        data = data.partition(b"\n")[2]  # drop the partial first line
    return data.decode("utf-8", "replace")


def extension_log_facts(sysroot: Sysroot, log_dir: str, name: str = VMSNAPSHOT_NAME
                        ) -> ExtensionLogFacts:
    host_path = f"{log_dir.rstrip('/')}/{name}/extension.log"
    path = sysroot.path(host_path)
    try:
        text = _tail(path, EXTENSION_LOG_TAIL_BYTES)
    except OSError:
        return ExtensionLogFacts(host_path, False)
    errors = [line.strip() for line in text.splitlines() if _ERROR_LINE.search(line)]
    shown = tuple(scrub(line)[:300] for line in errors[-SHOWN_ERROR_LINES:])
    return ExtensionLogFacts(host_path, True, len(errors), shown)


def _newest_settings(config_dir: Path) -> Optional[Path]:
    try:
        names = os.listdir(config_dir)
    except OSError:
        return None
    numbered = [(int(m.group(1)), n) for n in names if (m := _SETTINGS_NAME.match(n))]
    if not numbered:
        return None
    return config_dir / max(numbered)[1]


def _blob_host(document: Any) -> Optional[str]:
    runtime = document.get("runtimeSettings") if isinstance(document, dict) else None
    if not isinstance(runtime, list):
        return None
    for entry in runtime:
        handler = entry.get("handlerSettings") if isinstance(entry, dict) else None
        public = handler.get("publicSettings") if isinstance(handler, dict) else None
        if not isinstance(public, dict):
            continue
        for key in BLOB_URI_KEYS:
            value = public.get(key)
            if isinstance(value, str) and value:
                host = urlsplit(value).hostname
                if host:
                    return host
    return None


def storage_target(settings: Settings, observation: Observation) -> Optional[StorageTarget]:
    """The storage host to probe: `doctor.storage_host`, else VMSnapshot's blob URI host."""
    if settings.doctor.storage_host:
        return StorageTarget(settings.doctor.storage_host, "doctor.storage_host")
    handler = observation.lib.handler(VMSNAPSHOT_NAME)
    if handler is None:
        return None
    path = _newest_settings(handler.directory / "config")
    if path is None:
        return None
    try:
        document = json.loads(read_file(path, MAX_SETTINGS_BYTES)[0])
    except (OSError, ValueError, RecursionError) as error:
        log.debug("cannot read %s: %s", path, error)
        return None
    host = _blob_host(document)
    if host is None:
        return None
    return StorageTarget(host, f"{observation.sysroot.host_path(path)} (publicSettings blob URI)")
