"""Reading archives back: hostile archives for `read_bundle`.

The verification of a bundle being written is tests/unit/test_bundle_verify.py."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from waagent_guard.bundle.archive import read_bundle
from waagent_guard.errors import InputError


def make_tar(
    path: Path, members: list[tuple[str, bytes]], *, links: list[tuple[str, str]] = ()
) -> Path:  # type: ignore[assignment]
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name, target in links:
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            archive.addfile(info)
    return path


def test_read_bundle_ignores_traversal_absolute_and_link_members(tmp_path: Path) -> None:
    archive = make_tar(
        tmp_path / "evil.tar.gz",
        [
            ("top/MANIFEST.json", b'{"members": []}'),
            ("top/var/log/waagent.log", b"ok\n"),
            ("top/../../escape.txt", b"x"),
            ("/etc/passwd-owned", b"x"),
            ("other/file", b"x"),
        ],
        links=[("top/var/log/link", "/etc/shadow")],
    )
    with read_bundle(archive, temp_parent=tmp_path) as contents:
        assert contents.top == "top"
        assert contents.members == ("MANIFEST.json", "var/log/waagent.log")
        assert contents.manifest == {"members": []}
        assert len(contents.problems) == 4
        assert contents.path("/var/log/waagent.log").read_bytes() == b"ok\n"
        assert not (contents.root / "var/log/link").exists()
        with pytest.raises(KeyError):
            contents.read_bytes("var/log/link")
    assert not (tmp_path / "escape.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["evil.tar.gz"]


def test_read_bundle_rejects_duplicates_and_oversized_archives(tmp_path: Path) -> None:
    duplicate = make_tar(tmp_path / "dup.tar.gz", [("top/a", b"1"), ("top/a", b"2")])
    with pytest.raises(InputError, match="duplicate member"):
        read_bundle(duplicate, temp_parent=tmp_path)
    big = make_tar(tmp_path / "big.tar.gz", [("top/a", b"x" * 1000)])
    with pytest.raises(InputError, match="more than 100 bytes"):
        read_bundle(big, max_total_bytes=100, temp_parent=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.tar.gz", "dup.tar.gz"]


def test_read_bundle_reports_missing_and_broken_manifests(tmp_path: Path) -> None:
    with read_bundle(make_tar(tmp_path / "a.tar.gz", [("top/x", b"1")])) as contents:
        assert contents.problems == ["MANIFEST.json: missing"]
    with read_bundle(make_tar(tmp_path / "b.tar.gz", [("top/MANIFEST.json", b"{")])) as contents:
        assert contents.problems[0].startswith("MANIFEST.json: not valid JSON")


def test_read_bundle_names_the_file_when_it_is_not_an_archive(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such bundle"):
        read_bundle(tmp_path / "missing.tar.gz")
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tar at all")
    with pytest.raises(InputError, match="not a bundle archive"):
        read_bundle(junk)
