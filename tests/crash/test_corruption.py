"""Damaged files are caught by their checksums, logged, and do not take the shard down."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from athens.model.matchers import Matcher, MatchOp
from athens.shards.shard import Shard
from crash import workload

SEED = 99
ALL = [Matcher(MatchOp.RE, "__name__", ".+")]


def _write(path: Path, batches: int) -> None:
    """Append and seal as the crash writer does (but leave the last 15 batches
    in the WAL only), then drop the shard unclosed."""
    sh = Shard(path, workload.config(SEED))
    sh.open()
    for k in range(batches):
        sh.append(workload.make_batch(SEED, k))
        if k < batches - 15:
            sh.flush_tick(k * 10)
    sh.wal.sync()


def _wal_files(path: Path) -> list[Path]:
    return sorted((p for p in (path / "wal").iterdir() if p.name.isdigit() and p.stat().st_size),
                  key=lambda p: int(p.name))


def test_torn_wal_tail_drops_only_the_torn_write(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path, 60)
    last = _wal_files(tmp_path)[-1]
    size = last.stat().st_size
    with open(last, "r+b") as f:
        f.truncate(size - 7)  # inside the last record
    with caplog.at_level(logging.WARNING):
        newest = workload.check(tmp_path, SEED, acked=-1)
    assert newest == 58  # batch 59 was the torn write
    assert "torn record" in caplog.text


def test_flipped_wal_byte_is_detected_and_the_shard_opens(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write(tmp_path, 60)
    wal = _wal_files(tmp_path)
    assert len(wal) >= 2
    victim = wal[-2]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x40
    victim.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        newest = workload.check(tmp_path, SEED, acked=-1)  # a consistent prefix survives
    assert newest < 59
    assert "bad or torn record" in caplog.text
    assert list((tmp_path / "wal" / "corrupt").iterdir())  # later segments kept aside


@pytest.mark.parametrize("where", ["data", "index"])
def test_corrupted_segment_byte_is_moved_aside_and_the_rest_serves(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, where: str
) -> None:
    _write(tmp_path, 120)
    segs = sorted((tmp_path / "segments").glob("*.seg"))
    assert len(segs) >= 2
    victim = segs[0]
    data = bytearray(victim.read_bytes())
    pos = 20 if where == "data" else len(data) - 40 - 8
    data[pos] ^= 0x01
    victim.write_bytes(bytes(data))
    sh = Shard(tmp_path, workload.config(SEED))
    with caplog.at_level(logging.ERROR):
        sh.open()
    assert "is corrupt" in caplog.text and "CRC" in caplog.text
    assert (tmp_path / "corrupt" / victim.name).exists()
    st = sh.stats()
    assert st["segments_corrupt"] == 1 and st["segments"] == len(segs) - 1
    # The rest is served and the shard still takes writes.
    got = {s.labels: s for s in sh.select(ALL, -(2**62), 2**62)}
    prog = got[workload.PROGRESS].ts
    assert prog[-1] == 119 * workload.STEP_MS and len(prog) < 120
    r = sh.append(workload.make_batch(SEED, 120))
    assert r.accepted > 0
    assert np.all(np.diff(sh.select([Matcher(MatchOp.EQ, "__name__", "progress")], 0, 2**62)[0].ts) > 0)
