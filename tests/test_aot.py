"""The ahead-of-time build: keyed by the source tree, cached, and optional."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest

from athens import aot


def test_the_build_key_is_stable() -> None:
    assert aot.build_key() == aot.build_key()


def test_a_finished_build_is_found_in_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aot, "cache_roots", lambda: [tmp_path / "a", tmp_path / "b"])
    done = tmp_path / "b" / f"aot-{aot.build_key()}"
    for role in aot.ROLES:
        aot.role_dir(done, role).mkdir(parents=True)
        (aot.role_dir(done, role) / aot.TABLE_FILE).write_text("{}")
    assert aot.ensure() == done


def test_a_failed_build_leaves_the_processes_to_numba(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(aot, "cache_roots", lambda: [tmp_path])
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the build's child fails
    with caplog.at_level(logging.WARNING, "athens.aot"):
        assert aot.ensure() is None
    assert "not built ahead of time" in caplog.text
    assert list(tmp_path.iterdir()) == []  # nothing half-built left


def test_what_a_build_leaves_in_its_temporary_directory_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The toolchain leaves compiler probes in the temporary directory; a
    # build child's is a scratch directory of the build, removed with it.
    record = tmp_path / "tmpdirs"
    child = tmp_path / "child.sh"
    child.write_text(f'#!/bin/sh\necho "$TMPDIR" >> {record}\ntouch "$TMPDIR/temp.o"\n')
    child.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(child))
    build = tmp_path / "build"
    build.mkdir()
    assert aot._build_roles(build, "key") is None
    used = sorted(Path(line) for line in record.read_text().split())
    assert used == sorted(aot.role_dir(build, role) / aot.SCRATCH for role in aot.ROLES)
    assert not any(d.exists() for d in used)
    assert all((aot.role_dir(build, role) / "build.log").exists() for role in aot.ROLES)


def test_a_systemd_cache_directory_comes_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CACHE_DIRECTORY", str(tmp_path))
    assert aot.cache_roots()[0] == tmp_path / "aot"


def test_older_builds_are_removed(tmp_path: Path) -> None:
    for name in ("aot-old", "aot-new"):
        (tmp_path / name).mkdir()
    aot._prune(tmp_path, keep="aot-new")
    assert [p.name for p in tmp_path.iterdir()] == ["aot-new"]
