"""Row 6: `waagent-guard bundle` wall time and peak RSS for a big support tree vs
`tar czf` of the same files.

The tree is the demo guest grown to ~1 GB (quick: 50 MB) under /var/tmp: rotated
agent logs and extension logs of real lines, extension directories with status
files. The bundle runs with caps lifted so it collects everything; tar then packs
exactly the files the bundle's manifest lists. Deleted afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import tarfile
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any, Callable

from bench.box import Box
from bench.common import GUARD, ratio, time_runs, write_result
from bench.corpus import write_log

logger = logging.getLogger(__name__)

MB = 1024 * 1024
EXTENSIONS = (
    "Microsoft.Azure.Monitor.AzureMonitorLinuxAgent",
    "Microsoft.OSTCExtensions.VMAccessForLinux",
    "Microsoft.Azure.Extensions.CustomScript",
    "Microsoft.CPlat.Core.RunCommandLinux",
)


def grow_tree(guest: Path, total_bytes: int) -> int:
    """Add logs of real lines and extension directories until the tree has `total_bytes`."""
    per_file = max(MB, total_bytes // 12)
    written = 0
    files: list[Path] = [guest / "var/log/waagent.log.1"]
    for name in EXTENSIONS:
        ext_logs = guest / "var/log/azure" / name
        ext_logs.mkdir(parents=True, exist_ok=True)
        files += [ext_logs / "extension.log", ext_logs / "CommandExecution.log"]
        lib = guest / "var/lib/waagent" / f"{name}-1.2.3"
        (lib / "status").mkdir(parents=True, exist_ok=True)
        (lib / "config").mkdir(parents=True, exist_ok=True)
        for seq in range(20):
            (lib / "status" / f"{seq}.status").write_text(
                json.dumps(
                    [
                        {
                            "status": {
                                "status": "success",
                                "operation": "Enable",
                                "formattedMessage": {"message": "ok " * 50},
                            }
                        }
                    ]
                )
            )
        (lib / "config" / "HandlerState").write_text("Enabled")
        (lib / "HandlerManifest.json").write_text('[{"handlerManifest": {}}]')
    seed = 1
    while written < total_bytes:
        for path in files:
            if written >= total_bytes:
                break
            _, size = write_log(
                path.with_name(path.name + (f".{seed}" if seed > 1 else "")),
                size_bytes=min(per_file, total_bytes - written),
                seed=seed,
            )
            written += size
        seed += 1
    return written


def components(sample: bytes) -> dict[str, Any]:
    """CPU milliseconds per MB of `sample` for each stage of a bundle, and the alternatives.

    In-process (`time.process_time`), on the same machine as the run; the stages a bundle
    runs on every byte are: the redaction gate and rules (`Redactor.feed`), sha256 of the
    member, deflate at level 6 (tar czf's gzip does the same), and the verification of the
    redacted stream (`LeakScanner` with the redactor's clean runs, as the bundle runs it).
    The full scan (`find_leaks` of every byte) and inflate are what the read-back
    verification used to cost. The compiled regex alternation of the gate words (the
    obvious one-pass gate) is measured too, to show why the gate uses `bytes.find`.
    """
    from waagent_guard.redact import GATE_WORDS, LeakScanner, Redactor, find_leaks, gate_hits

    lowered = sample.lower()
    chunks = [sample[i : i + MB] for i in range(0, len(sample), MB)]
    alternation = re.compile(b"|".join(re.escape(word) for word in GATE_WORDS))
    alternation_i = re.compile(alternation.pattern, re.IGNORECASE)
    deflated = zlib.compress(sample, 6)

    def redact() -> None:
        redactor = Redactor()
        for chunk in chunks:
            redactor.feed(chunk)
        redactor.finish()

    redactor = Redactor()
    outputs = [(out, redactor.clean_ranges(out)) for out in map(redactor.feed, chunks)]

    def verify_claims() -> None:
        scanner = LeakScanner()
        for out, clean in outputs:
            scanner.feed(out, clean)
        scanner.finish()

    small = sample[: 8 * MB]  # the regex gates are slow: a slice is enough
    small_lowered = small.lower()
    whole = len(sample)
    stages: dict[str, tuple[Callable[[], object], int]] = {
        "redact (gate + rules on gated lines)": (redact, whole),
        "gate alone (bytes.find per word, 1 MiB chunks)": (
            lambda: [gate_hits(c) for c in chunks], whole),
        "one bytes.find word over the text": (lambda: lowered.find(b"token"), whole),
        "sha256": (lambda: hashlib.sha256(sample).digest(), whole),
        "deflate level 6 (tar czf's gzip -6)": (lambda: zlib.compress(sample, 6), whole),
        "deflate level 9 (tarfile's w:gz default)": (lambda: zlib.compress(sample, 9), whole),
        "verify scan of the redacted stream, clean runs skipped (as bundle runs it)": (
            verify_claims, whole),
        "crc32 (spool and read-back check, twice per byte)": (
            lambda: zlib.crc32(sample), whole),
        "inflate (the old read-back, no longer run)": (lambda: zlib.decompress(deflated), whole),
        "verify scan of every byte (find_leaks, the old read-back)": (
            lambda: find_leaks(io.BytesIO(sample)), whole),
        "regex alternation gate, lowered text": (
            lambda: sum(1 for _ in alternation.finditer(small_lowered)), len(small)),
        "regex alternation gate, re.IGNORECASE": (
            lambda: sum(1 for _ in alternation_i.finditer(small)), len(small)),
    }
    result: dict[str, Any] = {"sample_bytes": whole, "cpu_ms_per_mb": {}}
    for name, (stage, size) in stages.items():
        started = time.process_time()
        stage()
        result["cpu_ms_per_mb"][name] = round((time.process_time() - started) * 1000 * MB / size, 2)
    return result


def _sample(guest: Path, sources: list[str], size: int) -> bytes:
    parts: list[bytes] = []
    for source in sources:
        with (guest / source).open("rb") as handle:
            parts.append(handle.read(size - sum(map(len, parts))))
        if sum(map(len, parts)) >= size:
            break
    return b"".join(parts)


def run(*, quick: bool, box: Box) -> list[Path]:
    from waagent_guard.demo.guestctl import prepare_guest

    size = 10 * MB if quick else 1024 * MB
    # One run in full mode too: at today's ~20x of tar one run of 1 GB takes minutes,
    # and a miss that size is far above the machine's noise.
    runs = 1
    with tempfile.TemporaryDirectory(prefix="wg-bench-bundle-", dir="/var/tmp") as scratch:
        work = Path(scratch)
        guest = prepare_guest(work / "guest", 0).resolve()
        grown = grow_tree(guest, size)
        config = guest / "etc/waagent-guard/guard.toml"
        out = work / "bundle.tar.gz"
        bundle = time_runs(
            [
                GUARD,
                "bundle",
                "-o",
                out,
                "--max-file-size",
                "4G",
                "--max-total-size",
                "8G",
                "--root",
                guest,
                "--config",
                config,
            ],
            runs=runs,
            timeout=3600,
        )
        with tarfile.open(out) as archive:
            manifest_member = next(
                m for m in archive.getmembers() if m.name.endswith("MANIFEST.json")
            )
            extracted = archive.extractfile(manifest_member)
            assert extracted is not None
            manifest = json.loads(extracted.read())
        sources = sorted(
            {
                m["source"].lstrip("/")
                for m in manifest.get("members", [])
                if m.get("kind") == "file" and m.get("source")
            }
        )
        sources = [s for s in sources if (guest / s).is_file()]
        listing = work / "files.txt"
        listing.write_text("\n".join(sources) + "\n")
        collected = sum((guest / s).stat().st_size for s in sources)
        bundle_bytes = out.stat().st_size
        tar_out = work / "tar.tar.gz"
        tar = time_runs(
            ["tar", "czf", tar_out, "-C", guest, "-T", listing], runs=runs, timeout=3600
        )
        tar_bytes = tar_out.stat().st_size
        sample = _sample(guest, sorted(sources, key=lambda s: -(guest / s).stat().st_size),
                         (4 if quick else 64) * MB)
        stage_costs = components(sample)
        del sample
    ours = bundle["seconds"]["median"]
    anchor = tar["seconds"]["median"]
    peak = bundle["max_rss_bytes"]["max"]
    time_ratio = ratio(ours, anchor)
    return [
        write_result(
            "bundle",
            quick=quick,
            data={
                "what": "bundle wall time and peak RSS vs tar czf of the same files",
                "tree_bytes_added": grown,
                "files_in_bundle": len(sources),
                "collected_bytes": collected,
                "guard": {**bundle, "archive_bytes": bundle_bytes},
                "anchor_tar_czf": {**tar, "archive_bytes": tar_bytes},
                "ratio_time": time_ratio,
                "components": stage_costs,
                "cpu_seconds_note": "components: CPU per MB of the biggest collected files, "
                "in-process, same run",
                "goal": "<= 1.5x tar's time; peak RSS <= 80 MB",
                "goal_met": time_ratio is not None and time_ratio <= 1.5 and peak <= 80 * MB,
            },
        )
    ]
