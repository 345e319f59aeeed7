"""Runs the upstream PromQL conformance files through the engine.

Fails on any failing case not listed in expected_failures.txt, and on any
listed case that now passes (so the list cannot rot).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from athens.query.memquerier import MemQuerier
from athens.query.promqltest import Runner, main

# The upstream files live in shared/ beside the checkout (CI has it there too);
# ATHENS_PROMQL_TESTDATA points elsewhere.
TESTDATA = Path(
    os.environ.get(
        "ATHENS_PROMQL_TESTDATA",
        Path(__file__).resolve().parents[2].parent / "shared" / "promql-testdata",
    )
)
FILES = sorted(TESTDATA.glob("*.test")) if TESTDATA.is_dir() else []
EXPECTED = Path(__file__).with_name("expected_failures.txt")


def _expected_failures() -> set[str]:
    out = set()
    for line in EXPECTED.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.add(line.split()[0])
    return out


@pytest.mark.skipif(not FILES, reason=f"{TESTDATA} is absent")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_conformance_file(path: Path) -> None:
    allowed = {k for k in _expected_failures() if k.startswith(path.name + ":")}
    report = Runner(MemQuerier, range_check=True, at_check=True).run_file(str(path))
    failed = {f"{path.name}:{line}": msg for line, msg in report.failed}
    unexpected = {k: v for k, v in failed.items() if k not in allowed}
    assert not unexpected, "\n".join(f"{k}: {v}" for k, v in sorted(unexpected.items()))
    fixed = allowed - set(failed)
    assert not fixed, f"now passing, remove from expected_failures.txt: {sorted(fixed)}"


@pytest.mark.skipif(not FILES, reason=f"{TESTDATA} is absent")
def test_float_cases_mostly_run() -> None:
    """The runner must not skip its way to green: most float cases execute."""
    passed = skipped = 0
    for path in FILES:
        rep = Runner(MemQuerier).run_file(str(path))
        passed += rep.passed + len(rep.failed)
        skipped += len(rep.skipped)
    assert passed >= 1250
    assert skipped <= 960


def test_main_reports_failure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "t.test"
    f.write_text(
        "load 1m\n  m{a=\"1\"} 1 2 3\n\n"
        "eval instant at 2m m\n  m{a=\"1\"} 3\n\n"
        "eval instant at 2m m\n  m{a=\"1\"} 4\n"
    )
    assert main([str(f)]) == 1
    out = capsys.readouterr().out
    assert "1 passed, 1 failed" in out


def test_runner_uses_given_storage(tmp_path: Path) -> None:
    """The storage seam: loads go through the factory's object."""
    made: list[MemQuerier] = []

    def factory() -> MemQuerier:
        q = MemQuerier()
        made.append(q)
        return q

    f = tmp_path / "t.test"
    f.write_text("load 1m\n  m 1 2\n\neval instant at 1m m\n  m 2\n\nclear\n")
    rep = Runner(factory).run_file(str(f))
    assert rep.passed == 1
    assert len(made) == 2


@pytest.mark.skipif(not FILES, reason=f"{TESTDATA} is absent")
def test_conformance_through_the_real_shard(tmp_path: Path) -> None:
    """The same files with the storage engine behind the seam instead of MemQuerier."""
    shard_mod = pytest.importorskip("athens.shards.shard")
    made = []

    def factory():  # type: ignore[no-untyped-def]
        s = shard_mod.Shard(tmp_path / str(len(made)), shard_mod.ShardConfig(wal_fsync="off"))
        s.open()
        made.append(s)
        return s

    failed = []
    allowed = _expected_failures()
    try:
        for path in FILES:
            rep = Runner(factory).run_file(str(path))
            failed += [f"{path.name}:{line}: {msg}" for line, msg in rep.failed
                       if f"{path.name}:{line}" not in allowed]
    finally:
        for s in made:
            s.close()
    assert not failed, "\n".join(failed[:20])
